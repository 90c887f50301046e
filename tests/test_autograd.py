"""Training paths work under every autograd mode; inference paths build no graph."""

import pytest
import torch

from interp_steer import build_vector, generate
from interp_steer import sae as S
from interp_steer.activations import get_activations
from interp_steer.sae.corpus.chat import plain_texts
from interp_steer.testing import AUTOGRAD_MODES as MODES
from interp_steer.testing import tiny_model

HOOK = "blocks.1.hook_resid_pre"
ONE_SHOT = {"prompt": "Tell me a story.", "promote": "Once upon a time"}


@pytest.fixture(scope="module")
def model():
    return tiny_model("llama")


@pytest.fixture(scope="module")
def one_shot_reference(model):
    return build_vector(model, ONE_SHOT, HOOK, method="one_shot", steps=5, progress=False)


@pytest.mark.parametrize("mode", list(MODES))
def test_one_shot_trains_in_every_mode(model, one_shot_reference, mode):
    with MODES[mode]():
        vec = build_vector(model, ONE_SHOT, HOOK, method="one_shot", steps=5, progress=False)
    assert torch.is_grad_enabled() and not torch.is_inference_mode_enabled()  # restored
    assert vec.metadata["steps_run"] == 5
    assert torch.allclose(vec.directions, one_shot_reference.directions, atol=1e-6)


@pytest.mark.parametrize("mode", ["set_grad_enabled(False)", "inference_mode"])
def test_sae_trains_in_every_mode(model, mode):
    texts = plain_texts()[:60]
    kw = dict(d_sae=64, k=4, training_tokens=4096, batch_size=256, progress=False)
    ref, ref_report = S.train(model, HOOK, texts, **kw)
    with MODES[mode]():
        sae, report = S.train(model, HOOK, texts, **kw)
    assert torch.is_grad_enabled() and not torch.is_inference_mode_enabled()  # restored
    assert torch.allclose(sae.W_dec, ref.W_dec, atol=1e-6)
    # 16 steps: equality with the grad-mode run is the point, not the quality
    assert report["heldout"] == pytest.approx(ref_report["heldout"], abs=1e-6)


def test_sae_rejects_a_tiny_corpus_before_collecting_activations(model, monkeypatch):
    monkeypatch.setattr(S.training, "token_activations", lambda *a, **k: pytest.fail("collected"))
    with pytest.raises(ValueError, match="too few for a training batch"):
        S.train(model, HOOK, ["just a few words"], batch_size=512, progress=False)


def test_model_built_in_inference_mode_is_refused_clearly():
    with torch.inference_mode():
        frozen = tiny_model("llama")
    with pytest.raises(ValueError, match="inference_mode"):
        build_vector(frozen, ONE_SHOT, HOOK, method="one_shot", steps=2, progress=False)


def test_one_shot_names_the_data_form_it_takes(model):
    with pytest.raises(TypeError, match=r"one_shot takes data=\{'prompt'.*pairs are for"):
        build_vector(model, [("a", "b")], HOOK, method="one_shot")
    with pytest.raises(ValueError, match="unknown keys \\['promot'\\]"):
        build_vector(model, {"prompt": "x", "promot": "y"}, HOOK, method="one_shot")


def test_generate_names_bad_alphas(model, one_shot_reference):
    with pytest.raises(TypeError, match="alphas must be a number"):
        generate(model, "Hi", one_shot_reference, "big", max_new_tokens=2)
    with pytest.raises(ValueError, match="alphas must be finite"):
        generate(model, "Hi", one_shot_reference, float("nan"), max_new_tokens=2)


def test_inference_paths_build_no_graph(model, one_shot_reference):
    assert torch.is_grad_enabled()
    acts = get_activations(model, ["some text"], HOOK, progress=False)[HOOK]
    assert not acts.requires_grad and acts.grad_fn is None
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(1) or t, lambda t: t):
        generate(model, ["Hi", "Hello"], one_shot_reference, [0.0, 1.0], max_new_tokens=3)
        get_activations(model, ["some text"], HOOK, progress=False)
    assert saved == []  # nothing was kept for a backward pass
