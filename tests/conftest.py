import os

import pytest
import torch

if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs 2 xdist workers on 2 cores: one thread each, and the same for the
    # notebook kernels they start (they inherit the environment), instead of 2 x 2 threads
    # contending for 2 cores.
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)

from interp_steer.testing import tiny_model


@pytest.fixture(params=["llama", "gpt2"])
def tiny(request):
    """Tiny random models: Llama-like (RMS, rotary, gated MLP, GQA) and GPT-2-like (LN)."""
    torch.manual_seed(0)
    return tiny_model(request.param)


@pytest.fixture
def llama():
    return tiny_model("llama")


@pytest.fixture(scope="session")
def smollm2():
    from interp_steer import load_model

    return load_model("smollm2-135m-instruct")


@pytest.fixture(scope="session")
def embedding_judge():
    """The offline misalignment judge (trained on the shipped labels; ~15 s), built once."""
    from interp_steer.judges import EmbeddingJudge

    return EmbeddingJudge()
