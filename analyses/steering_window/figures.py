"""The figure, drawn from the results only."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from analyses._common import (
    save_figure,
)
from analyses.steering_window.config import (
    Config,
)


def alpha_at(r, d, read):
    return None if r is None else r * d["typical_norm"] / read["v_norm"]


def figure(cfg: Config, results: dict, stem: Path) -> None:
    ms = sorted(results["models"], key=lambda m: results["models"][m]["n_params"])
    fig, axes = plt.subplots(1, len(ms) + 1, figsize=(4.6 * (len(ms) + 1), 4.4), squeeze=False)
    axes = axes[0]
    for ax, m in zip(axes, ms):
        for j, (f, d) in enumerate(results["models"][m]["questions"].items()):
            last = d["reads"]["last"]
            x = np.asarray(d["rel_strengths"], float)
            x[0] = cfg.rel_strengths[0] / 2  # r = 0 drawn at the left edge of the log axis
            for key, ls, lab in (
                ("target", "-", f"'{f}': steered target"),
                ("capability", "--", f"'{f}': {last['capability_measure']} pass rate"),
            ):
                y, ci = np.array(last[f"{key}_rate"]), np.array(last[f"{key}_ci"])
                ax.plot(x, y, ls, marker="o", ms=3, color=f"C{j}", label=lab)
                ax.fill_between(x, ci[:, 0], ci[:, 1], color=f"C{j}", alpha=0.12)
            ans = d["reads"]["answer"]
            ax.plot(
                x,
                ans["target_rate"],
                ":",
                marker="^",
                ms=3,
                color=f"C{j}",
                label=f"'{f}': steered target, answer-token read",
            )
            for read in (last, ans):
                w = read["window"]
                if w["window"]:
                    ax.axvspan(w["first_majority"], w["last_capable"], color=f"C{j}", alpha=0.1)
        if not results["models"][m]["questions"]:
            ax.text(
                0.5,
                0.5,
                "knows none of the candidate facts\n(>= 80% correct unsteered):\nno study question",
                ha="center",
                va="center",
                transform=ax.transAxes,
            )
        ax.set_xscale("log")
        ax.axhline(0.5, color="0.6", lw=0.7, ls=":")
        ax.set_ylim(-0.03, 1.03)
        ax.set_xlabel("r = ‖αv‖ / median token norm (leftmost point: unsteered)", fontsize=8)
        ax.set_ylabel("fraction (95% Wilson CI)", fontsize=8)
        ax.set_title(f"{m}\n({results['models'][m]['n_params'] / 1e6:.0f}M params)", fontsize=9)
        ax.legend(fontsize=7, loc="center left")
    ax = axes[-1]
    for j, m in enumerate(ms):
        n = results["models"][m]["n_params"]
        for k, (f, d) in enumerate(results["models"][m]["questions"].items()):
            for r, (read, mark) in enumerate((("last", "o"), ("answer", "^"))):
                rd = d["reads"][read]
                w = rd["window"]["window"]
                if w is None:  # not measured
                    continue
                ci = (rd["window_ci"] or {}).get("window") or (w, w)
                xk = n * (1 + 0.08 * k + 0.03 * r)
                ax.errorbar(
                    [xk],
                    [w],
                    yerr=[[w - ci[0]], [ci[1] - w]],
                    fmt=mark,
                    color=f"C{j}",
                    capsize=3,
                    label=f"{m.split('-instruct')[0]}: {f} ({read} read)",
                )
    ax.set_xscale("log")
    ax.set_xlabel("parameters (excluding unembedding)", fontsize=8)
    ax.set_ylabel("viable window in r (95% bootstrap CI)", fontsize=8)
    ax.set_title(
        "window vs size (o: last-token read, ^: answer-token read)\n(Bostock, "
        "Gemma 3, raw α: 1B 6.3, 4B 1.0, 12B 0, 27B ~0)",
        fontsize=9,
    )
    ax.legend(fontsize=6)
    fig.suptitle(
        "Viable steering window: steered-target rate vs capability over strength", fontsize=11
    )
    fig.tight_layout()
    save_figure(fig, stem, {"results": results}, cfg)
