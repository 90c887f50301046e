"""The main job on the embedded default model: build a sentiment vector, steer, compare.

python -m interp_steer.demo [--model smollm2-135m-instruct] [--alphas -0.5 0 0.5]
"""

from __future__ import annotations

import argparse
import textwrap

import torch

from interp_steer import build_vector, datasets, generate, load_model
from interp_steer.models import DEFAULT_MODEL
from interp_steer.units import r_of, typical_norm


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--layer", type=int, default=None, help="default: n_layers // 3")
    ap.add_argument("--alphas", type=float, nargs="+", default=[-0.5, 0.0, 0.5])
    ap.add_argument("--prompts", type=int, default=3)
    ap.add_argument("--max-new-tokens", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    torch.manual_seed(args.seed)

    model = load_model(args.model)
    layer = model.cfg.n_layers // 3 if args.layer is None else args.layer
    hook = f"blocks.{layer}.hook_resid_pre"
    ds = datasets.load("sentiment")
    vec = build_vector(model, ds, hook, method="mean_diff")
    prompts = ds.prompts[: args.prompts]
    # the project's unit: r = |α|·‖v‖ / the median per-token norm at the hook (position 0
    # excluded), over the prompts as generation sees them (chat-formatted)
    norm = typical_norm(model, hook, prompts)
    print(
        f"\n{vec}\n‖v‖ = {float(vec.norm()):.1f}; typical token norm at {hook} = {norm:.1f} "
        "(median over the prompts' tokens, position 0 excluded)\n"
    )

    n, a = len(prompts), args.alphas
    # one batched generation for every (alpha, prompt)
    outs = generate(
        model,
        prompts * len(a),
        vec,
        [x for x in a for _ in range(n)],
        max_new_tokens=args.max_new_tokens,
        seed=args.seed,
    )
    try:
        from interp_steer.eval.classifiers import Vader

        vader = Vader()
    except ImportError:
        vader = None
    for i, p in enumerate(prompts):
        print("=" * 88 + f"\nPROMPT: {p}")
        for j, alpha in enumerate(a):
            text = outs[j * n + i].replace("\n", " ")
            score = f" vader={vader([text])[0]:+.2f}" if vader else ""
            print(f"-- alpha={alpha:+.2f} (r={r_of(vec, alpha, norm):.3f}){score}")
            print(textwrap.fill(text, 88, initial_indent="   ", subsequent_indent="   "))


if __name__ == "__main__":
    main()
