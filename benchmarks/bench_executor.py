"""Sweep wall time: --executor local (one process, all cores) vs Ray with 1 and 2 workers.

The same grid (2 vectors x 4 strengths x 8 prompts x 2 samples, sampled, SmolLM2) runs three
ways; the script prints each wall time, the speedup of 2 workers over 1, and whether the rows
agree (texts identical, numbers within 1e-4). Ray's times include starting the instance and
each worker loading the model from the cache, as a user's run would.
Run: python -m benchmarks.bench_executor [--new-tokens 32] [--workers 2]
"""

from __future__ import annotations

import argparse
import time
from functools import partial

import numpy as np

from interp_steer import build_vector, datasets, load_model
from interp_steer.eval.sweep import sweep
from interp_steer.models.gemm import cpu_model


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args(argv)
    model = load_model(args.model)
    hook = f"blocks.{model.cfg.n_layers // 2}.hook_resid_pre"
    vecs = {
        t: build_vector(model, t, hook, progress=False).normalized()
        for t in ("sentiment", "formality")
    }
    prompts = datasets.load("sentiment").prompts[:8]
    kw = dict(
        samples_per_prompt=2,
        max_new_tokens=args.new_tokens,
        diversity=False,
        progress=False,
        alphas_per_cell=1,
        load=partial(load_model, args.model),
    )
    alphas = [4.0, 8.0, 16.0]  # + the unsteered alpha 0: 4 cells per vector
    runs = {}
    for label, ex, workers in [
        ("local", "local", None),
        ("ray x1", "ray", 1),
        (f"ray x{args.workers}", "ray", args.workers),
    ]:
        t = time.perf_counter()
        _, rows = sweep(model, vecs, alphas, prompts, executor=ex, workers=workers, **kw)
        runs[label] = (time.perf_counter() - t, rows)
    base = runs["local"][1]
    print(
        f"CPU: {cpu_model()}; grid: 2 vectors x 4 strengths x 8 prompts x 2 samples, "
        f"{args.new_tokens} new tokens"
    )
    for label, (sec, rows) in runs.items():
        same_text = rows.text.tolist() == base.text.tolist()
        close = np.allclose(rows.ppl, base.ppl, rtol=1e-4)
        print(
            f"  {label:<8} {sec:7.1f} s   texts identical to local: {same_text}, ppl close: {close}"
        )
    one, two = runs["ray x1"][0], runs[f"ray x{args.workers}"][0]
    print(
        f"  speedup of {args.workers} Ray workers over 1: {one / two:.2f}x "
        f"(over local: {runs['local'][0] / two:.2f}x)"
    )


if __name__ == "__main__":
    main()
