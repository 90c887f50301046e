"""Success, coherence and diversity against steering strength (Deshpande et al. 2026, our scale).

python -m analyses.diversity_tradeoff [--model smollm2-135m-instruct] [--quick]

4 construction methods (mean_diff, pca, probe, one_shot) x 3 concepts (sentiment, formality,
weddings). Each vector is scaled to unit norm and swept at strengths given as a fraction of the
mean residual norm at the hook, so methods are compared at equal ‖αv‖. Scores, each in [0, 1]
(see `interp_steer.metrics`): success = (VADER+1)/2 for sentiment, else the MiniLM probe P(positive); coherence =
min(1, ppl_ref/ppl) under the unsteered model; diversity = mean(distinct-2, 1 − mean pairwise
MiniLM cosine); HM = their harmonic mean. Sweet spot: success ≥ 0.7, coherence ≥ 0.7 and
diversity ≥ 0.9 x the unsteered diversity. Writes figures/diversity_tradeoff_<model>.png/.json.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from analyses._common import save_figure, single_model_main, stem
from interp_steer import build_vector, datasets, load_model
from interp_steer.classifiers import MiniLM, success_scorer
from interp_steer.sweep import residual_norm, sweep

METHODS = ["mean_diff", "pca", "probe", "one_shot"]


@dataclass
class Config:
    model: str = "smollm2-135m-instruct"
    concepts: list[str] = field(default_factory=lambda: ["sentiment", "formality", "weddings"])
    methods: list[str] = field(default_factory=lambda: list(METHODS))
    layer_fraction: float = 1 / 3
    rel_strengths: list[float] = field(default_factory=lambda: [0.1, 0.2, 0.35, 0.5, 0.75, 1.0])
    n_prompts: int = 6
    samples: int = 3
    max_new_tokens: int = 40
    one_shot_steps: int = 40
    seed: int = 0
    quick: bool = False
    sweet_success: float = 0.7
    sweet_coherence: float = 0.7
    sweet_diversity_ratio: float = 0.9

    @classmethod
    def quick_config(cls, **kw) -> Config:
        base = dict(
            concepts=["sentiment"],
            rel_strengths=[0.25, 0.75],
            n_prompts=3,
            samples=2,
            max_new_tokens=24,
            one_shot_steps=10,
            quick=True,
        )
        return cls(**{**base, **kw})


def _vector(model, method: str, ds, hook: str, cfg: Config):
    if method == "one_shot":
        # one prompt, promote one positive example text (the one-shot setting)
        data = {"prompt": ds.prompts[0], "promote": " " + ds.train[0][0]}
        return build_vector(
            model,
            data,
            hook,
            method="one_shot",
            steps=cfg.one_shot_steps,
            seed=cfg.seed,
            progress=False,
        )
    return build_vector(model, ds.name, hook, method=method, seed=cfg.seed, progress=False)


def run(cfg: Config, out_dir: Path = Path("figures"), model=None) -> dict:
    t0 = time.time()
    model = model or load_model(cfg.model)
    hook = f"blocks.{round(cfg.layer_fraction * model.cfg.n_layers)}.hook_resid_pre"
    embed = MiniLM()
    tables = []
    for concept in cfg.concepts:
        ds = datasets.load(concept)
        prompts = ds.prompts[: cfg.n_prompts]
        clf = success_scorer(concept)
        resid = residual_norm(model, hook, prompts)
        vecs = {m: _vector(model, m, ds, hook, cfg).normalized() for m in cfg.methods}
        alphas = [r * resid for r in cfg.rel_strengths]
        summary, _ = sweep(
            model,
            vecs,
            alphas,
            prompts,
            success=clf,
            samples_per_prompt=cfg.samples,
            max_new_tokens=cfg.max_new_tokens,
            seed=cfg.seed,
            embed=embed,
            out=stem(out_dir, "diversity_tradeoff", cfg.model, cfg.quick, f"{concept}_sweep"),
        )
        summary["concept"] = concept
        tables.append(summary)
    df = pd.concat(tables, ignore_index=True)
    df["sweet_spot"] = False
    for _, g in df.groupby(["concept", "vector"]):
        base_div = float(g[g.alpha == 0].diversity.iloc[0])
        ok = (
            (g.success >= cfg.sweet_success)
            & (g.coherence >= cfg.sweet_coherence)
            & (g.diversity >= cfg.sweet_diversity_ratio * base_div)
            & (g.alpha != 0)
        )
        df.loc[g.index, "sweet_spot"] = ok
    res = {"df": df, "seconds": time.time() - t0, "hook": hook}
    figure(cfg, res, stem(out_dir, "diversity_tradeoff", cfg.model, cfg.quick))
    return res


def figure(cfg: Config, res: dict, path: Path) -> None:
    df = res["df"]
    concepts = cfg.concepts
    metrics = [
        ("success", "success: (VADER+1)/2 | probe P"),
        ("coherence", "coherence: min(1, ppl₀/ppl)"),
        ("diversity", "diversity: mean(distinct-2, embed.)"),
        ("hm", "harmonic mean"),
    ]
    fig, axes = plt.subplots(len(concepts), 4, figsize=(17, 3.4 * len(concepts)), squeeze=False)
    for r, concept in enumerate(concepts):
        for c, (col, label) in enumerate(metrics):
            ax = axes[r, c]
            for i, method in enumerate(cfg.methods):
                g = df[(df.concept == concept) & (df.vector == method)].sort_values("rel_strength")
                ax.plot(g.rel_strength, g[col], "o-", color=f"C{i}", label=method)
                if col == "hm":
                    best = g.loc[g.hm.idxmax()]
                    ax.plot(best.rel_strength, best.hm, "*", ms=16, color=f"C{i}", mec="k")
                    sweet = g[g.sweet_spot]
                    ax.plot(sweet.rel_strength, sweet.hm, "s", ms=11, mfc="none", mec="k")
            ax.set(
                xlabel="strength ‖αv‖ / mean residual norm",
                ylabel=label,
                ylim=(-0.03, 1.03),
                title=f"{concept}: {col}",
            )
            if r == 0 and c == 3:
                ax.plot([], [], "*", color="0.5", mec="k", ms=12, label="max HM per method")
                ax.plot([], [], "s", mfc="none", mec="k", ms=9, label="sweet spot")
            if r == 0 and c in (0, 3):
                ax.legend(fontsize=7)
    n_sweet = int(df.sweet_spot.sum())
    n_cfg = int((df.alpha != 0).sum())
    fig.suptitle(
        f"{cfg.model} [{res['hook']}]: success / coherence / diversity vs strength — "
        f"{n_sweet} of {n_cfg} steered configurations in the sweet spot"
    )
    fig.tight_layout()
    records = df.drop(columns=["hook"]).to_dict("records")
    best = (
        df[df.alpha != 0]
        .sort_values("hm")
        .groupby(["concept", "vector"])
        .tail(1)[["concept", "vector", "rel_strength", "success", "coherence", "diversity", "hm"]]
    )
    save_figure(
        fig,
        path,
        {
            "hook": res["hook"],
            "seconds": res["seconds"],
            "rows": records,
            "sweet_spot_count": n_sweet,
            "configurations": n_cfg,
            "best_hm": best.to_dict("records"),
        },
        cfg,
    )


def headline(res: dict, cfg: Config) -> str:
    df = res["df"]
    lines = [
        f"diversity tradeoff ({cfg.model}, {res['hook']}, {res['seconds']:.0f} s): "
        f"{int(df.sweet_spot.sum())} of {int((df.alpha != 0).sum())} configurations in the sweet spot"
    ]
    for (concept, method), g in df[df.alpha != 0].groupby(["concept", "vector"]):
        b = g.loc[g.hm.idxmax()]
        base = df[(df.concept == concept) & (df.vector == method) & (df.alpha == 0)].iloc[0]
        lines.append(
            f"  {concept:<10} {method:<9} max HM {b.hm:.2f} at {b.rel_strength:.2f}·‖resid‖ "
            f"(s {b.success:.2f} c {b.coherence:.2f} d {b.diversity:.2f}; unsteered s "
            f"{base.success:.2f} d {base.diversity:.2f})"
        )
    return "\n".join(lines)


def main(argv=None) -> None:
    single_model_main(__doc__, Config, run, headline, argv)


if __name__ == "__main__":
    main()
