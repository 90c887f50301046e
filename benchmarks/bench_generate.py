"""Steered generation throughput: interp_steer vs HF generate (unsteered) vs stock TL generate.

All three run in this process on the same dequantized SmolLM2 weights, the same prompts,
batch and token count (greedy, EOS ignored so every row makes exactly N tokens).
Run: python -m benchmarks.bench_generate [--batches 1 16] [--new-tokens 40] [--hf-onednn]
     [--top-p 0.95]   (sampled instead of greedy; --skip-tl then, stock TL's sampler differs)

``--hf-onednn`` also times HF with every nn.Linear routed through the same prepacked oneDNN
kernel interp_steer uses, to show how much of the ratio is the GEMM backend.
"""

from __future__ import annotations

import argparse
import time
import warnings

import torch

from interp_steer import SteeringVector, generate, load_model
from interp_steer.activations import tokenize
from interp_steer.generation import format_prompts
from interp_steer.models import gguf_path
from interp_steer.models.gemm import cpu_model

PROMPTS = [
    "Tell me about your favourite season.",
    "How do I bake bread?",
    "Describe the ocean in two sentences.",
    "What should I do this weekend?",
]


def _times(fns, repeats: int) -> list[list[float]]:
    """Wall times of each fn, runs interleaved so machine drift hits all alike."""
    for fn in fns:
        fn()  # warm-up
    out: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            t = time.perf_counter()
            fn()
            out[i].append(time.perf_counter() - t)
    return out


def _hf_with_onednn(hf):
    """A copy of ``hf`` whose nn.Linear layers run interp_steer's packed oneDNN GEMM."""
    import copy

    from interp_steer.models.gemm import FrozenLinear

    twin = copy.deepcopy(hf)
    with torch.no_grad():
        for m in twin.modules():
            if isinstance(m, torch.nn.Linear):
                m.forward = FrozenLinear(m.weight.detach(), m.bias, pack=True)
    return twin


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--new-tokens", type=int, default=40)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--model", default="smollm2-135m-instruct", help="an embedded model")
    ap.add_argument(
        "--dtype",
        default="float32",
        choices=["float32", "bfloat16"],
        help="weights and activations of both models (bfloat16: the 1.5B model)",
    )
    ap.add_argument("--skip-tl", action="store_true", help="skip the slow stock TL baseline")
    ap.add_argument(
        "--top-p",
        type=float,
        default=None,
        help="sample at T=1 with this top-p (both sides) instead of greedy",
    )
    ap.add_argument(
        "--hf-onednn",
        action="store_true",
        help="also time HF with its linears on the packed oneDNN kernel",
    )
    args = ap.parse_args()
    torch.manual_seed(0)
    warnings.filterwarnings("ignore")

    from transformers import AutoModelForCausalLM

    src = gguf_path(args.model)
    dtype = getattr(torch, args.dtype)
    hf = AutoModelForCausalLM.from_pretrained(
        src.parent, gguf_file=src.name, torch_dtype=dtype
    ).eval()
    model = load_model(args.model, dtype=dtype)
    stock = None if args.skip_tl else load_model(args.model, dtype=dtype, fast=False)
    tok = model.tokenizer
    vec = SteeringVector(
        torch.randn(model.cfg.d_model) * 10, f"blocks.{model.cfg.n_layers // 3}.hook_resid_pre"
    )
    n = args.new_tokens
    # greedy by default; with --top-p both sides sample at T=1 with the same nucleus
    sampling = {} if args.top_p is None else {"temperature": 1.0, "top_p": args.top_p}
    hf_sampling = (
        {"do_sample": False}
        if args.top_p is None
        else {"do_sample": True, "temperature": 1.0, "top_p": args.top_p, "top_k": 0}
    )
    hf_dnn = _hf_with_onednn(hf) if args.hf_onednn else None
    extra: list[str] = []
    mode = "greedy" if args.top_p is None else f"sampled T=1 top_p={args.top_p}"
    print(
        f"cpu={cpu_model()}  torch threads={torch.get_num_threads()}  new_tokens={n}  "
        f"model={args.model} {args.dtype}  {mode}"
    )
    print(
        f"{'batch':>5} {'ours steered':>14} {'HF unsteered':>14} {'TL stock':>12} "
        f"{'ours/HF':>8} {'TL/HF':>7}   ours/HF per paired run"
    )
    for b in args.batches:
        prompts = [PROMPTS[i % len(PROMPTS)] for i in range(b)]
        texts = format_prompts(model, prompts, chat=True)
        batch = tokenize(model, texts)  # HF gets exactly the tokens we generate from
        enc = {"input_ids": batch.tokens, "attention_mask": batch.mask.long()}

        def ours(prompts=prompts, b=b):
            generate(
                model, prompts, vec, [4.0] * b, max_new_tokens=n, stop_at_eos=False, **sampling
            )

        def hf_gen(enc=enc, hf=hf):
            with torch.inference_mode():
                hf.generate(
                    **enc,
                    max_new_tokens=n,
                    min_new_tokens=n,
                    pad_token_id=tok.pad_token_id,
                    **hf_sampling,
                )

        def tl_gen(texts=texts, b=b):
            stock.generate(
                texts if b > 1 else texts[0],
                max_new_tokens=n,
                do_sample=False,
                stop_at_eos=False,
                verbose=False,
            )

        runs_ours, runs_hf = _times([ours, hf_gen], args.repeats)
        t_ours, t_hf = min(runs_ours), min(runs_hf)
        skip_tl = args.skip_tl or args.top_p is not None  # TL has no matching sampler
        t_tl = float("nan") if skip_tl else _times([tl_gen], 1)[0][0]
        paired = sorted(h / o for o, h in zip(runs_ours, runs_hf))
        if hf_dnn is not None:
            t_dnn = min(_times([lambda enc=enc: hf_gen(enc, hf_dnn)], args.repeats)[0])
            extra.append(
                f"{b:>5}  HF+oneDNN {b * n / t_dnn:.1f} t/s   ours/(HF+oneDNN) {t_dnn / t_ours:.2f}"
            )
        tps = lambda t, b=b: b * n / t  # noqa: E731
        print(
            f"{b:>5} {tps(t_ours):>10.1f} t/s {tps(t_hf):>10.1f} t/s {tps(t_tl):>8.1f} t/s "
            f"{t_hf / t_ours:>8.2f} {t_hf / t_tl:>7.2f}   "
            f"median {paired[len(paired) // 2]:.2f} [{paired[0]:.2f}, {paired[-1]:.2f}]"
        )
    print(
        "ratios are throughput relative to HF generate (>1 = faster than HF); "
        "columns use best-of-N, the last column each interleaved pair"
    )
    if extra:
        print("\n".join(extra))


if __name__ == "__main__":
    main()
