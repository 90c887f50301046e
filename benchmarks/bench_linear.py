"""GEMM backends at SmolLM2's shapes: ``F.linear`` (MKL sgemm) vs interp_steer's packed oneDNN.

This is where most of the generation speed-up comes from, so it is measured on its own.
Shapes are (rows, out, in) for one layer's fused QKV, W_O, fused gate|in, W_out and the
unembed, at decode (1 and 16 rows) and prefill (16 x 37 rows) sizes.
Run: python -m benchmarks.bench_linear
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F  # noqa: N812

from interp_steer.models.gemm import (
    ONEDNN_AVAILABLE,
    FrozenLinear,
    backend_choices,
    cpu_model,
    row_bucket,
)

SHAPES = {
    "qkv": (960, 576),
    "o": (576, 576),
    "gate|in": (3072, 576),
    "out": (576, 1536),
    "unembed": (49152, 576),
}


def _median_ms(fn, repeats: int = 30) -> float:
    for _ in range(3):
        fn()
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return sorted(ts)[len(ts) // 2] * 1e3


@torch.inference_mode()
def main() -> None:
    print(f"cpu={cpu_model()}  torch {torch.__version__}  threads={torch.get_num_threads()}")
    if not ONEDNN_AVAILABLE:
        print("oneDNN linear is not available in this torch build; interp_steer uses F.linear")
        return
    torch.manual_seed(0)
    print(
        f"{'weight':>8} {'rows':>5} {'F.linear ms':>12} {'oneDNN ms':>10} {'speed-up':>9} "
        f"{'max |diff|':>11}  chosen at first use"
    )
    for name, (out, inp) in SHAPES.items():
        w = torch.randn(out, inp) * inp**-0.5
        lin = FrozenLinear(w, pack=True)
        for rows in (1, 16, 592):
            x = torch.randn(rows, inp)
            lin(x)  # the first call per shape and row bucket times both and picks one
            t_ref = _median_ms(lambda x=x, w=w: F.linear(x, w))
            t_dnn = _median_ms(lambda x=x, lin=lin: lin.packed_call(x, lin.packed))
            diff = (lin.packed_call(x, lin.packed) - F.linear(x, w)).abs().max().item()
            chosen = backend_choices()[f"{out}x{inp} rows<={row_bucket(rows)}"]
            print(
                f"{name:>8} {rows:>5} {t_ref:>12.3f} {t_dnn:>10.3f} {t_ref / t_dnn:>8.2f}x "
                f"{diff:>11.1e}  {chosen}"
            )


if __name__ == "__main__":
    main()
