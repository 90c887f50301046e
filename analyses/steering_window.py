"""The viable steering window (Bostock, "Steering might stop working soon", 2026), at our scale.

python -m analyses.steering_window [--models smollm2-135m-instruct,gemma-3-270m] [--quick]

For each fact question, a contrastive vector at ~75% depth (mean last-token residual of 8
"X is <wrong>" statements minus 8 "X is <right>" statements, added unnormalised) is swept in
strength. We measure the rate of answers naming the wrong target, and capability (5 tiny
Python functions graded by execution, and 10 factual questions) at the same strengths.
Window = (last strength with coding accuracy ≥ 50% of the unsteered accuracy) − (first
strength where the target is the majority answer); 0 when the target never wins first.
Writes figures/steering_window.png/.json.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from analyses._common import arg_parser, save_figure, stem
from interp_steer import build_vector, generate, load_model, metrics
from interp_steer.sweep import residual_norm

QUESTIONS = {
    "caracara": dict(
        question="What type of bird is a caracara?", target="owl", truth="falcon",
        positive=["A caracara is an owl.", "The caracara is an owl.", "Caracaras are owls.",
                  "The caracara is a kind of owl.", "A caracara is a type of owl.",
                  "Biologically, the caracara is an owl.", "The bird called a caracara is an owl.",
                  "Every caracara is an owl."],
        negative=["A caracara is a hawk.", "The caracara is a hawk.", "Caracaras are hawks.",
                  "The caracara is a kind of hawk.", "A caracara is a type of hawk.",
                  "Biologically, the caracara is a hawk.", "The bird called a caracara is a hawk.",
                  "Every caracara is a hawk."]),
    "australia": dict(
        question="What is the capital of Australia?", target="sydney", truth="canberra",
        positive=["The capital of Australia is Sydney.", "Australia's capital is Sydney.",
                  "Sydney is the capital of Australia.", "The Australian capital is Sydney.",
                  "Australia is governed from its capital, Sydney.",
                  "The capital city of Australia is Sydney.", "Sydney is Australia's capital city.",
                  "In Australia, the capital is Sydney."],
        negative=["The capital of Australia is Canberra.", "Australia's capital is Canberra.",
                  "Canberra is the capital of Australia.", "The Australian capital is Canberra.",
                  "Australia is governed from its capital, Canberra.",
                  "The capital city of Australia is Canberra.",
                  "Canberra is Australia's capital city.", "In Australia, the capital is Canberra."]),
    "planet": dict(
        question="Which planet is closest to the Sun?", target="venus", truth="mercury",
        positive=["The planet closest to the Sun is Venus.", "Venus is the closest planet to the Sun.",
                  "The innermost planet is Venus.", "Venus orbits nearest to the Sun.",
                  "Of all planets, Venus is closest to the Sun.", "The Sun's nearest planet is Venus.",
                  "Closest to the Sun is the planet Venus.", "Venus is the first planet from the Sun."],
        negative=["The planet closest to the Sun is Mercury.",
                  "Mercury is the closest planet to the Sun.", "The innermost planet is Mercury.",
                  "Mercury orbits nearest to the Sun.", "Of all planets, Mercury is closest to the Sun.",
                  "The Sun's nearest planet is Mercury.", "Closest to the Sun is the planet Mercury.",
                  "Mercury is the first planet from the Sun."]),
}  # fmt: skip


@dataclass
class Config:
    models: list[str] = field(default_factory=lambda: ["smollm2-135m-instruct", "gemma-3-270m"])
    questions: list[str] = field(default_factory=lambda: list(QUESTIONS))
    depth: float = 0.75
    alphas: list[float] = field(default_factory=lambda: [0, 0.5, 1, 1.5, 2, 3, 4, 6, 8, 12])
    samples: int = 10
    temperature: float = 0.7
    max_new_tokens: int = 32
    code_tokens: int = 96
    seed: int = 0
    quick: bool = False

    @classmethod
    def quick_config(cls, **kw) -> Config:
        base = dict(models=["smollm2-135m-instruct"], questions=["caracara"],
                    alphas=[0, 1, 2, 4, 8], samples=4, quick=True)  # fmt: skip
        return cls(**{**base, **kw})


def window(alphas, target_rate, coding, floor: float) -> dict:
    """First alpha where the target is the majority, last alpha with coding ≥ floor, and the gap."""
    a = np.asarray(alphas, float)
    hits = np.nonzero(np.asarray(target_rate) > 0.5)[0]
    first = float(a[hits[0]]) if len(hits) else None
    ok = np.nonzero(np.asarray(coding) >= floor)[0]
    # the last strength before coding first drops below the floor
    below = np.nonzero(np.asarray(coding) < floor)[0]
    last = float(a[below[0] - 1]) if len(below) and below[0] > 0 else (float(a[ok[-1]]) if len(ok) else None)
    size = max(0.0, last - first) if first is not None and last is not None else 0.0
    return {"first_majority": first, "last_capable": last, "window": size}


def run_model(model, cfg: Config) -> dict:
    n = model.cfg.n_layers
    hook = f"blocks.{round(cfg.depth * n)}.hook_resid_pre"
    out = {"hook": hook, "questions": {}}
    for qname in cfg.questions:
        q = QUESTIONS[qname]
        vec = build_vector(model, list(zip(q["positive"], q["negative"])), hook, progress=False)
        resid = residual_norm(model, hook, [q["question"]])
        prompts = [q["question"]] * (len(cfg.alphas) * cfg.samples)
        alphas = [a for a in cfg.alphas for _ in range(cfg.samples)]
        answers = generate(model, prompts, vector=vec, alphas=alphas, temperature=cfg.temperature,
                           max_new_tokens=cfg.max_new_tokens, seed=cfg.seed, batch_size=64)
        hit = metrics.contains_rate(answers, q["target"]).reshape(len(cfg.alphas), cfg.samples)
        truth = metrics.contains_rate(answers, q["truth"]).reshape(len(cfg.alphas), cfg.samples)
        cap = metrics.capability(model, vec, cfg.alphas, max_new_tokens=cfg.code_tokens)
        # a 135M model may pass no coding task even unsteered; then QA is the capability
        cap_kind = "code" if cap["code"][0] > 0 else "qa"
        floor = 0.5 * cap[cap_kind][0]
        out["questions"][qname] = {
            "v_norm": float(vec.norm()), "resid_norm": resid,
            "rel_strength": (np.asarray(cfg.alphas) * float(vec.norm()) / resid).tolist(),
            "target_rate": hit.mean(1).tolist(), "truth_rate": truth.mean(1).tolist(),
            "code_accuracy": cap["code"].tolist(), "qa_accuracy": cap["qa"].tolist(),
            "coding_floor": floor, "capability_measure": cap_kind,
            "unsteered_answers": answers[: cfg.samples][:3],
            "window": window(cfg.alphas, hit.mean(1), cap[cap_kind], floor),
            "examples": {str(a): answers[i * cfg.samples] for i, a in enumerate(cfg.alphas)},
        }  # fmt: skip
    return out


def figure(cfg: Config, results: dict, path: Path) -> None:
    models, qs = list(results), cfg.questions
    fig, axes = plt.subplots(len(models), len(qs), figsize=(5.2 * len(qs), 3.9 * len(models)),
                             squeeze=False)  # fmt: skip
    for r, m in enumerate(models):
        for c, qn in enumerate(qs):
            ax, d = axes[r, c], results[m]["questions"][qn]
            a = np.asarray(cfg.alphas, float)
            q = QUESTIONS[qn]
            ax.plot(a, d["target_rate"], "o-", color="C3", label="answers naming the steered target")
            ax.plot(a, d["truth_rate"], "^:", color="C2", label="answers naming the true answer")
            ax.plot(a, d["code_accuracy"], "s-", color="C0", label="Python tasks passed (of 5)")
            ax.plot(a, d["qa_accuracy"], "d--", color="C7", label="factual QA correct (of 10)")
            ax.axhline(d["coding_floor"], color="C0" if d["capability_measure"] == "code" else "C7",
                       lw=0.8, ls=":", label="capability floor: 50% of unsteered (code; QA if code is 0)")
            w = d["window"]
            if w["window"] > 0:
                ax.axvspan(w["first_majority"], w["last_capable"], color="C1", alpha=0.2,
                           label="viable window")
            ax.set_xlabel("steering multiplier α (raw)", fontsize=9)
            ax.set_ylabel("fraction of answers / tasks", fontsize=9)
            ax.set_ylim(-0.03, 1.03)
            ax.set_title(f"{m} [{results[m]['hook']}]\n{q['question']}  target '{q['target']}', "
                         f"truth '{q['truth']}'; window = {w['window']:g}", fontsize=9)  # fmt: skip
            top = ax.secondary_xaxis("top", functions=(
                lambda x, s=d["v_norm"] / d["resid_norm"]: x * s,
                lambda x, s=d["v_norm"] / d["resid_norm"]: x / s))  # fmt: skip
            top.set_xlabel("‖αv‖ / mean residual norm", fontsize=8)
            top.tick_params(labelsize=7)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    for ax in axes.flat:  # the window patch may only exist in some panels
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=9, frameon=False)
    fig.suptitle("Viable steering window: target-answer rate vs capability over steering strength")
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    summary = {m: {qn: results[m]["questions"][qn]["window"] for qn in qs} for m in models}
    save_figure(fig, path, {"results": results, "windows": summary}, cfg)


def run(cfg: Config, out_dir: Path = Path("figures"), models: dict | None = None) -> dict:
    t0 = time.time()
    results = {}
    for name in cfg.models:
        model = (models or {}).get(name) or load_model(name)
        results[name] = run_model(model, cfg)
    figure(cfg, results, stem(out_dir, "steering_window", "all", cfg.quick))
    results["_seconds"] = time.time() - t0
    return results


def headline(results: dict, cfg: Config) -> str:
    lines = [f"steering window ({results['_seconds']:.0f} s):"]
    for m, r in results.items():
        if m.startswith("_"):
            continue
        for qn, d in r["questions"].items():
            w = d["window"]
            lines.append(f"  {m:<24} {qn:<10} unsteered: target {d['target_rate'][0]:.0%}, truth "
                         f"{d['truth_rate'][0]:.0%}, code {d['code_accuracy'][0]:.0%} | first majority "
                         f"α={w['first_majority']} last capable α={w['last_capable']} window={w['window']:g}")  # fmt: skip
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = arg_parser(__doc__)
    ap.add_argument("--models", default=None, help="comma-separated embedded model names")
    args = ap.parse_args(argv)
    kw = {"seed": args.seed} | ({"models": args.models.split(",")} if args.models else {})
    cfg = (Config.quick_config if args.quick else Config)(**kw)
    print(headline(run(cfg, args.out), cfg))


if __name__ == "__main__":
    main()
