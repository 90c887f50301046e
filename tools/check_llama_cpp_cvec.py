"""Check an exported control vector against llama.cpp itself (not run in CI).

llama.cpp is not a dependency: it must be compiled, and no wheel of it installs offline here
as ``llama-cpp-cffi``; its 0.4.x wheels need a newer libstdc++ than this machine has, 0.2.7
(manylinux_2_28, llama.cpp of late 2024) loads. Point ``--llama-cpp-cffi`` at an unpacked
copy of that wheel (with ``cffi`` importable) and this script:

1. exports a SmolLM2 sentiment vector with ``export_llama_cpp``;
2. reads the file's ``direction.N`` tensors into the flat buffer llama.cpp's
   ``common_control_vector_load`` builds (``direction.N`` at offset (N-1) * n_embd) and
   applies it with the C API's control-vector call on the same GGUF (Q4_1 weights);
3. compares llama.cpp's change in last-token log-probs with interp_steer's (TransformerLens on
   the dequantized weights) when steering at the vector's hook, and at the neighbouring hooks
   (one layer early / late) as the alternatives a wrong index would give.

Run: python -m tools.check_llama_cpp_cvec --llama-cpp-cffi /tmp/lcffi
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from interp_steer import SteeringVector, build_vector, chat, datasets, load_model, steer
from interp_steer.activations import encode
from interp_steer.export.llama_cpp import export_llama_cpp
from interp_steer.models import gguf_path

HOOK = "blocks.10.hook_resid_pre"


def _fn(lib, *names):
    """The first of ``names`` the library exports (llama.cpp renamed its C API over time)."""
    for n in names:
        if hasattr(lib, n):
            return getattr(lib, n)
    raise AttributeError(f"llama.cpp library has none of {names}")


def llama_cpp_logprobs(
    lib, ffi, model_path: Path, ids: list[int], cvec: np.ndarray | None, n_embd: int, n_layer: int
) -> np.ndarray:
    load = _fn(lib, "llama_model_load_from_file", "llama_load_model_from_file")
    new_ctx = _fn(lib, "llama_init_from_model", "llama_new_context_with_model")
    free_model = _fn(lib, "llama_model_free", "llama_free_model")
    apply_cvec = _fn(lib, "llama_apply_adapter_cvec", "llama_control_vector_apply")
    model = load(str(model_path).encode(), lib.llama_model_default_params())
    cparams = lib.llama_context_default_params()
    cparams.n_ctx, cparams.n_batch = 256, 256
    ctx = new_ctx(model, cparams)
    try:
        if cvec is not None:
            buf = ffi.new("float[]", cvec.astype(np.float32).tolist())
            rc = apply_cvec(ctx, buf, len(cvec), n_embd, 1, n_layer - 1)
            if rc != 0:
                raise RuntimeError(f"applying the control vector returned {rc}")
        toks = ffi.new("int32_t[]", ids)
        if lib.llama_decode(ctx, lib.llama_batch_get_one(toks, len(ids))) != 0:
            raise RuntimeError("llama_decode failed")
        n_vocab = (
            lib.llama_n_vocab(model)
            if hasattr(lib, "llama_n_vocab")
            else lib.llama_vocab_n_tokens(lib.llama_model_get_vocab(model))
        )
        logits = np.frombuffer(
            ffi.buffer(lib.llama_get_logits_ith(ctx, -1), 4 * n_vocab), dtype=np.float32
        ).astype(np.float64)
    finally:
        lib.llama_free(ctx)
        free_model(model)
    return logits - np.logaddexp.reduce(logits)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--llama-cpp-cffi",
        type=Path,
        required=True,
        help="folder holding the unpacked llama-cpp-cffi wheel (and cffi)",
    )
    ap.add_argument("--alpha", type=float, default=-1.0)
    args = ap.parse_args()
    # the wheel's compiled CPU module alone (its package __init__ pulls in unrelated deps)
    import importlib.util

    so = next((args.llama_cpp_cffi / "llama").glob("_llama_cpp_cpu.*.so"), None)
    if so is None:
        sys.exit(f"no llama/_llama_cpp_cpu*.so under {args.llama_cpp_cffi}")
    spec = importlib.util.spec_from_file_location("_llama_cpp_cpu", so)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    lib, ffi = mod.lib, mod.ffi

    lib.llama_backend_init()
    model = load_model("smollm2-135m-instruct")
    v = build_vector(model, datasets.load("sentiment").train[:8], HOOK, progress=False)
    ids = encode(model, chat(model, "How was your day?"))
    with tempfile.TemporaryDirectory() as tmp:
        path = export_llama_cpp(v, Path(tmp) / "v.gguf", alpha=args.alpha)
        import gguf

        n_embd, n_layer = model.cfg.d_model, model.cfg.n_layers
        flat = np.zeros(n_embd * (n_layer - 1), dtype=np.float32)
        for t in gguf.GGUFReader(str(path)).tensors:  # as common_control_vector_load lays it out
            il = int(t.name.split(".")[1])
            flat[(il - 1) * n_embd : il * n_embd] = t.data
    src = gguf_path("smollm2-135m-instruct")
    base_cpp = llama_cpp_logprobs(lib, ffi, src, ids, None, n_embd, n_layer)
    steer_cpp = llama_cpp_logprobs(lib, ffi, src, ids, flat, n_embd, n_layer)
    d_cpp = steer_cpp - base_cpp

    tokens = torch.tensor([ids])
    with torch.no_grad():
        base = model(tokens)[0, -1].double().log_softmax(-1).numpy()
        print(
            f"unsteered: max |log p llama.cpp (Q4_1) - log p interp_steer| = "
            f"{np.abs(base_cpp - base).max():.3f}"
        )
        layer = int(HOOK.split(".")[1])
        for name, hook in [
            ("one layer early", f"blocks.{layer - 1}.hook_resid_pre"),
            ("as exported", HOOK),
            ("one layer late", f"blocks.{layer + 1}.hook_resid_pre"),
        ]:
            w = SteeringVector(v.vector * args.alpha, hook, v.model_fingerprint)
            with steer(model, w, 1.0):
                d_ours = model(tokens)[0, -1].double().log_softmax(-1).numpy() - base
            cos = d_cpp @ d_ours / (np.linalg.norm(d_cpp) * np.linalg.norm(d_ours))
            rel = np.linalg.norm(d_cpp - d_ours) / np.linalg.norm(d_cpp)
            print(
                f"{name:>16} ({hook}): cosine(Δ llama.cpp, Δ ours) = {cos:.4f}, "
                f"relative error = {rel:.3f}"
            )


if __name__ == "__main__":
    main()
