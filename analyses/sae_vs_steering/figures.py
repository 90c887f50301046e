"""The figure: coherent success and coherence against KL per method, with the baselines."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from analyses._common import save_figure
from analyses.sae_vs_steering.config import METHODS, Config

COLORS = {"mean_diff": "C0", "sae_feature": "C1", "sae_clamp": "C2", "sae_ablate": "C3"}


def figure(cfg: Config, summary: dict, stem: Path) -> None:
    """Draw only: one column per trait; top, coherent success with 95% CIs (prompting dashed,
    unsteered dotted); bottom, the fraction of coherent texts."""
    traits = list(summary["traits"])
    fig, axes = plt.subplots(2, len(traits), figsize=(5.2 * len(traits), 7.4), squeeze=False)
    for col, t in enumerate(traits):
        rows = [r for r in summary["conditions"] if r["trait"] == t]
        base = {r["method"]: r for r in rows if r["target_kl"] is None}
        top, bottom = axes[0, col], axes[1, col]
        for i, m in enumerate(METHODS):
            pts = [r for r in rows if r["method"] == m and r["success"] is not None]
            if not pts:
                continue
            # a small offset per method keeps the error bars apart on the log axis
            x = np.array([r["kl"] for r in pts]) * 1.04 ** (i - 1.5)
            y = np.array([r["success"] for r in pts])
            ci = np.array([r["success_ci"] for r in pts])
            top.errorbar(
                x,
                y,
                yerr=[y - ci[:, 0], ci[:, 1] - y],
                marker="o",
                ms=4,
                capsize=2,
                color=COLORS[m],
                label=m,
            )
            bottom.plot(x, [r["coherent_fraction"] for r in pts], "o-", ms=4, color=COLORS[m])
        for key, ls in (("prompting", "--"), ("unsteered", ":")):
            r = base[key]
            top.axhline(r["success"], color="k", ls=ls, lw=1, label=key)
            top.axhspan(*r["success_ci"], color="k", alpha=0.06)
            bottom.axhline(r["coherent_fraction"], color="k", ls=ls, lw=1)
        verdicts = summary["traits"][t]["verdicts"]
        short = "\n".join(  # one line each: three on one line overflow a single panel
            f"{m.removeprefix('sae_')}: {v.split(' (')[0]}" for m, v in verdicts.items()
        )
        top.set_title(f"{t} (latent {summary['traits'][t]['latent']})\n{short}", fontsize=8.5)
        for ax in (top, bottom):
            ax.set_xscale("log")
            ax.set_xticks(cfg.target_kls, [f"{k:g}" for k in cfg.target_kls])
            ax.minorticks_off()
        top.set_ylabel("coherent success (trait score × coherent)")
        bottom.set_ylabel("fraction of texts coherent")
        bottom.set_xlabel("KL from unsteered at the generation positions (nats)")
        top.set_ylim(0, 1)
        bottom.set_ylim(0, 1.02)
    axes[0, 0].legend(fontsize=7, loc="lower left")  # the curves start high at low KL
    fig.suptitle(
        f"{cfg.model} [{summary['hook']}]\nsteering vector vs SAE interventions at equal KL\n"
        f"{cfg.n_prompts} prompts × {cfg.n_samples} seed-paired samples; 95% CIs over prompts",
        fontsize=10,
    )
    fig.tight_layout()
    save_figure(fig, stem, {k: summary[k] for k in ("conditions", "contrasts", "hook")}, cfg)
