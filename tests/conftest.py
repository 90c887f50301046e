"""Shared fixtures, and the test session's isolation from the developer's machine.

Cache isolation. ``$INTERP_STEER_CACHE`` is read on every call of `interp_steer._io.cache_dir`,
so setting it here, at import, before any test runs, points every cache (converted models,
GEMM choices, corpora, SAEs) of this process and of the processes it starts (xdist workers,
notebook kernels, Ray workers, CLI calls) at a fresh temporary folder, removed when the run
ends. xdist workers share their controller's folder, so a model is converted (or seeded) once
per run. The developer's cache is only ever read: an embedded model that a test loads is
seeded by *copying* its assembled GGUF and converted safetensors from there (see
`seed_model_cache`; the converted SmolLM2 up front when integration tests are collected); what
the real cache lacks is built in the test cache, as a first load would build it.

GEMM pinning. `interp_steer.models.gemm` picks oneDNN-packed or ``F.linear`` per weight shape and row
bucket by timing, and remembers the pick in ``gemm_choices.json``: the exact-equality tests
(cached == uncached, shared prefix == full prefill, batch row == row alone) would otherwise
run on a kernel mix that depends on load and the machine's history. Here every choice is
fixed: in this process by answering `gemm._stored_choice` (so nothing is timed or written,
also where a test points the cache elsewhere), and in subprocesses through a choices file
covering the tiny models' shapes. ``INTERP_STEER_TEST_GEMM`` = ``packed`` (the default where
oneDNN is available: the kernel that wins on AMD EPYC), ``dense`` (``F.linear``) or ``timed``
(the library's own timing, in the isolated cache).
"""

import json
import os
import shutil
import tempfile
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

import pytest
import torch

if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs 2 xdist workers on 2 cores: one thread each, and the same for the
    # notebook kernels they start (they inherit the environment), instead of 2 x 2 threads
    # contending for 2 cores.
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)

from interp_steer._io import atomic_dir, atomic_path, cache_dir, file_lock, write_json  # noqa: E402
from interp_steer.models import gemm  # noqa: E402
from interp_steer.models import registry as models  # noqa: E402
from interp_steer.testing import tiny_model  # noqa: E402

# --- the isolated cache ---------------------------------------------------------------------
_OWNER, _REAL = "_INTERP_STEER_TEST_CACHE_OWNER", "_INTERP_STEER_TEST_REAL_CACHE"


def _isolate_cache() -> tuple[Path, Path, bool]:
    """(test cache, real cache, whether this process made the test cache and removes it)."""
    owner = os.environ.get(_OWNER)
    if os.environ.get("PYTEST_XDIST_WORKER") and owner and int(owner) == os.getppid():
        # an xdist worker: its controller made the folder and put it in our environment
        return Path(os.environ["INTERP_STEER_CACHE"]), Path(os.environ[_REAL]), False
    real = cache_dir()  # the developer's ($INTERP_STEER_CACHE or the user cache dir)
    test = Path(tempfile.mkdtemp(prefix="interp_steer-test-cache-")).resolve()
    os.environ.update({"INTERP_STEER_CACHE": str(test), _REAL: str(real), _OWNER: str(os.getpid())})
    return test, real, True


TEST_CACHE, REAL_CACHE, _OWNS_CACHE = _isolate_cache()
# `sae.load_default` trains for about an hour when it finds no shipped or cached SAE: in the
# suite (and the notebooks and subprocesses it starts) that must fail at once, naming itself
os.environ["INTERP_STEER_NO_SAE_TRAINING"] = "1"


def pytest_unconfigure(config):
    if _OWNS_CACHE:  # after the xdist workers (and what they started) have finished
        shutil.rmtree(TEST_CACHE, ignore_errors=True)


def _copy_file(src: Path, dst: Path) -> None:
    with atomic_path(dst) as tmp:
        shutil.copy2(src, tmp)  # keeps the mtime, which the hash memo and GGUF record key on


def _seed_hashes() -> None:
    """Merge the real cache's GGUF hash memo (a few hundred MB each to re-hash), with paths
    inside the real cache moved to their copies in the test cache."""
    try:
        memo = json.loads((REAL_CACHE / "hashes.json").read_text())
    except (OSError, ValueError):
        return
    real, test = f"{REAL_CACHE.resolve()}{os.sep}", f"{TEST_CACHE}{os.sep}"
    moved = {(test + k[len(real) :] if k.startswith(real) else k): v for k, v in memo.items()}
    path = TEST_CACHE / "hashes.json"
    try:
        have = json.loads(path.read_text())
    except (OSError, ValueError):
        have = {}
    if not moved.items() <= have.items():
        write_json(path, {**moved, **have})


def seed_model_cache(name: str) -> None:
    """Copy embedded model ``name``'s cache entries (its assembled GGUF, where the model ships
    in chunks, and its converted HookedTransformer) from the real cache into the test cache.

    Copies, never links: tests damage cached files in place. Entries the real cache lacks
    are left for the load to build; a no-op when a test has pointed the cache elsewhere."""
    if name not in models.EMBEDDED or not REAL_CACHE.is_dir():
        return
    if cache_dir() != TEST_CACHE or models.cache_dir() != TEST_CACHE:
        return
    with file_lock(TEST_CACHE / "locks" / f"seed-{name}.lock"):
        _seed_hashes()
        for src in sorted((REAL_CACHE / "gguf").glob(f"{name}*")):
            dst = TEST_CACHE / "gguf" / src.name
            if src.is_file() and not dst.exists():
                _copy_file(src, dst)
        try:
            target = models._cache_path(name)  # the current key (finds or builds the GGUF)
        except Exception:
            return  # a missing package: the load itself raises the clear error
        src = REAL_CACHE / "models" / target.name
        if src.is_dir() and not target.exists():
            atomic_dir(target, lambda tmp: shutil.copytree(src, tmp, dirs_exist_ok=True))


# --- GEMM backend pinning -------------------------------------------------------------------
GEMM_MODES = ("packed", "dense", "timed")
_TEST_DEVICE = os.environ.get("INTERP_STEER_TEST_DEVICE", "cpu")  # as interp_steer.testing
_library_stored_choice = gemm._stored_choice


def _gemm_mode() -> str:
    mode = os.environ.get("INTERP_STEER_TEST_GEMM", "packed" if gemm.ONEDNN_AVAILABLE else "dense")
    if mode not in GEMM_MODES:
        raise pytest.UsageError(f"INTERP_STEER_TEST_GEMM must be one of {GEMM_MODES}, got {mode!r}")
    return mode


def pin_gemm_choices(mp: pytest.MonkeyPatch, mode: str) -> None:
    """Until ``mp`` is undone, every FrozenLinear call of this process uses ``mode``'s kernel
    (``timed``: the library's timing, from a clean slate)."""
    mp.setattr(gemm, "_CHOICES", {})  # forget choices made before
    pinned = _library_stored_choice if mode == "timed" else lambda key: mode == "packed"
    mp.setattr(gemm, "_stored_choice", pinned)


def _tiny_gemm_shapes() -> set[tuple[int, int]]:
    """(out, in) of every FrozenLinear a forward of the tiny test models runs through."""
    seen: set[tuple[int, int]] = set()

    def record(key):
        seen.add(key[:2])
        return False

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(gemm, "_CHOICES", {})
        mp.setattr(gemm, "_stored_choice", record)
        for kind in ("llama", "gpt2"):
            with torch.no_grad():
                tiny_model(kind)(torch.zeros((1, 2), dtype=torch.long))
    return seen


def _write_gemm_choices(mode: str) -> None:
    """A choices file fixing the tiny models' kernels for subprocesses (Ray workers ...), at
    every row bucket and for every thread count a subprocess may run with."""
    path = TEST_CACHE / gemm.CHOICES_FILE
    if mode == "timed" or not gemm.ONEDNN_AVAILABLE or torch.device(_TEST_DEVICE).type != "cpu":
        return
    with file_lock(TEST_CACHE / "locks" / "gemm_choices.lock"):
        if path.exists():
            return
        shapes = _tiny_gemm_shapes()
        buckets = sorted({gemm.row_bucket(1 << i) for i in range(13)})
        entries = {f"{o},{i},{r}": mode == "packed" for o, i in shapes for r in buckets}
        keys = {}
        for n in range(1, max(os.cpu_count() or 1, torch.get_num_threads()) + 1):
            with mock.patch.object(torch, "get_num_threads", lambda n=n: n):
                keys[gemm._machine_key()] = entries
        write_json(path, keys)


@pytest.fixture(scope="session", autouse=True)
def _isolated_session(request):
    """The session's cache is the isolated one, the GEMM kernels are pinned, and the real
    cache's SmolLM2 is copied in when tests that load it are collected."""
    assert cache_dir() == TEST_CACHE != REAL_CACHE
    mode = _gemm_mode()
    _write_gemm_choices(mode)
    if any(
        "smollm2" in getattr(item, "fixturenames", ()) or item.get_closest_marker("integration")
        for item in request.session.items
    ):
        seed_model_cache(models.DEFAULT_MODEL)  # notebook kernels load it in a subprocess
    load = models._cached_or_convert

    def seeded(name, device, dtype):
        seed_model_cache(name)
        return load(name, device, dtype)

    with pytest.MonkeyPatch.context() as mp:
        pin_gemm_choices(mp, mode)
        mp.setattr(models, "_cached_or_convert", seeded)
        yield


@pytest.fixture(scope="session")
def cache_roots():
    """``.test``: the session's isolated cache; ``.real``: the developer's, never written."""
    return SimpleNamespace(test=TEST_CACHE, real=REAL_CACHE)


@pytest.fixture
def pin_gemm(monkeypatch):
    """``pin_gemm("packed" | "dense" | "timed")``: this test's kernel choice, undone after it."""
    return lambda mode: pin_gemm_choices(monkeypatch, mode)


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
    from interp_steer.eval.embedding_judge import EmbeddingJudge

    return EmbeddingJudge()
