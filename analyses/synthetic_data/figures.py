"""The figures: HM against AUROC, and the success / coherence / diversity trade-off."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from analyses._common import save_figure
from interp_steer.eval import metrics

if TYPE_CHECKING:  # the package imports this module
    from analyses.synthetic_data import Config

MARKERS = {"mean_diff": "o", "probe": "s", "pca": "^", "one_shot": "D", "sae_feature": "v"}


def hm_auroc_figure(cfg: Config, s: dict, path: Path) -> None:
    fig, axes = plt.subplots(1, len(cfg.models), figsize=(6.2 * len(cfg.models), 5), squeeze=False)
    for ax, model in zip(axes[0], cfg.models):
        for i, concept in enumerate(cfg.concepts):
            pts = [c for c in s["configs"] if c["model"] == model and c["concept"] == concept]
            for c in pts:
                if c["method"] == "prompting":
                    ax.axhline(c["auroc"], color=f"C{i}", ls="--", lw=1.2)
                    continue
                lo, hi = c["auroc_ci"]
                ax.errorbar(
                    c["hm"],
                    c["auroc"],
                    yerr=[[c["auroc"] - lo], [hi - c["auroc"]]],
                    fmt=MARKERS.get(c["method"], "o"),
                    color=f"C{i}",
                    ms=4 + 8 * c["relative_norm"],
                    alpha=0.8,
                    capsize=2,
                )
            ax.plot([], [], "o", color=f"C{i}", label=concept.replace("_", " "))
        for m in cfg.methods:
            ax.plot([], [], MARKERS.get(m, "o"), color="0.4", label=m)
        ax.plot([], [], "--", color="0.4", label="prompting baseline")
        ax.axhline(0.5, color="0.7", lw=0.8)
        ax.set(
            xlabel="harmonic mean (success, coherence, diversity)",
            ylabel="detector AUROC on hand-written test",
            title=model,
            ylim=(0, 1.02),
            xlim=(-0.02, 1.0),
        )
        ax.legend(fontsize=7, loc="lower right")
    r = s["spearman_hm_auroc"]
    fig.suptitle(
        "Detectors trained on steered text: HM vs AUROC (marker size: strength r)"
        + (
            f" — Spearman ρ = {r['rho']:.2f} [{r['ci'][0]:.2f}, {r['ci'][1]:.2f}], n = {r['n']}"
            if r
            else ""
        )
    )
    fig.tight_layout()
    save_figure(fig, path, {"see": "synthetic_data_summary.json"}, cfg)


def tradeoff_figure(cfg: Config, s: dict, path: Path) -> None:
    cols = [
        ("success", "success P(concept)"),
        ("coherence", "coherence"),
        ("diversity", "diversity (coherent samples)"),
        ("hm", "harmonic mean"),
    ]
    fig, axes = plt.subplots(
        len(cfg.concepts), 4, figsize=(16, 3 * len(cfg.concepts)), squeeze=False
    )
    df = pd.DataFrame(s["configs"])
    for r, concept in enumerate(cfg.concepts):
        for c, (col, label) in enumerate(cols):
            ax = axes[r, c]
            for j, (model, method) in enumerate((m, k) for m in cfg.models for k in cfg.methods):
                g = df[(df.concept == concept) & (df.model == model) & (df.method == method)]
                base = _unsteered_reference(s, df, model, concept)[col]
                x = np.r_[0.0, g.relative_norm]
                ax.plot(
                    x,
                    np.r_[base, g[col]],
                    MARKERS.get(method, "o") + "-",
                    color=f"C{j}",
                    label=f"{model.split('-')[0]} {method}",
                )
                p = df[(df.concept == concept) & (df.model == model) & (df.method == "prompting")]
                ax.axhline(float(p[col].iloc[0]), color=f"C{j}", ls=":", lw=0.8)
            ax.set(
                xlabel="strength r = ‖αv‖ / typical norm",
                ylabel=label,
                ylim=(-0.03, 1.03),
                title=f"{concept}: {col}",
            )
            if r == 0 and c == 0:
                ax.legend(fontsize=7)
    fig.suptitle(
        "Intrinsic trade-off: steering strength vs success, coherence, diversity (dotted: prompting)"
    )
    fig.tight_layout()
    save_figure(fig, path, {"see": "synthetic_data_summary.json"}, cfg)


def _unsteered_reference(s: dict, df: pd.DataFrame, model: str, concept: str) -> dict:
    """The r = 0 point: the unsteered texts' scores, with success (and so HM) under the
    concept's own success classifier; the shared unsteered sweep has no scorer."""
    ref = dict(s["models"][model]["unsteered"])
    ref["success"] = float(
        df[(df.concept == concept) & (df.model == model)].unsteered_success.iloc[0]
    )
    ref["hm"] = metrics.harmonic_mean(ref["success"], ref["coherence"], ref["diversity"])
    return ref
