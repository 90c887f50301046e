"""The figure and the paper's string table, drawn from the numbers only."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import NullFormatter

from analyses._common import (
    save_figure,
)
from analyses.emergent_misalignment.config import (
    CYBER,
    GENERAL,
    PAPER_STRINGS,
    Config,
    dataset,
)
from analyses.emergent_misalignment.grid import magnitude_points


def paper_string_table(res: dict) -> dict:
    """Our answers per 100 for each (string, question) cell of the paper's table, per
    condition, beside the paper's published range (Qwen-2.5-Coder-14B)."""
    return {
        f"{s} @ {q}": {
            "paper": paper,
            "ours": {n: r["strings_per_100_by_question"][q][s] for n, r in res.items()},
        }
        for s, q, paper in PAPER_STRINGS
    }


def figure(cfg: Config, nums: dict, path: Path) -> None:
    """Drawn from ``nums`` only."""
    sv = nums["sweep_vector"]
    # unsteered first, then by group and swept value (a JSON read back has its keys sorted)
    groups = ["baseline", "vectors", "magnitude", "control", "anti_k", "layer", "rank", "epochs"]
    res = dict(
        sorted(
            nums["conditions"].items(),
            key=lambda kv: (kv[0] != "unsteered", groups.index(kv[1]["group"]), kv[1]["x"]),
        )
    )
    fig, axes = plt.subplots(2, 4, figsize=(24, 14), gridspec_kw={"width_ratios": [1.3, 1, 1, 1.3]})
    axes = axes.ravel()
    base, ar = res["unsteered"], res.get(f"anti-refusal ×{cfg.anti_k:g}")

    def rate(r):
        return 100 * r["misaligned_rate"], [
            100 * (r["misaligned_rate"] - r["misaligned_ci"][0]),
            100 * (r["misaligned_ci"][1] - r["misaligned_rate"]),
        ]

    def refs(ax):
        for r, ls, lab in (
            (base, ":", "unsteered"),
            (ar, "--", f"anti-refusal ×{cfg.anti_k:g} only"),
        ):
            if r is None:
                continue
            ax.axhline(100 * r["misaligned_rate"], color="0.4", ls=ls, lw=1, label=lab)

    ax = axes[0]
    mag = magnitude_points(res, sv)
    if mag:
        x = [r["x"] for r in mag]
        y = np.array([rate(r)[0] for r in mag])
        e = np.array([rate(r)[1] for r in mag]).T
        ax.errorbar(x, y, e, fmt="o-", color="C3", capsize=3, label="misaligned (95% Wilson)")
        ax.plot(
            x,
            [100 * r["code_rate"] for r in mag],
            "s--",
            color="C0",
            alpha=0.7,
            label="code answers (excluded)",
        )
        th = nums.get("threshold")
        if th:
            xs = np.geomspace(min(x), max(x), 200)
            p = th["floor"] + (th["ceiling"] - th["floor"]) / (
                1 + np.exp(-(np.log(xs) - np.log(th["x0"])) / th["width_log"])
            )
            if th["x0_in_range"]:
                label = (
                    f"logistic fit: r₀ = {th['x0']:.3g} "
                    f"[{th['x0_ci'][0]:.3g}, {th['x0_ci'][1]:.3g}] (shaded)"
                )
                ax.axvspan(*th["x0_ci"], color="k", alpha=0.08)
            else:  # a midpoint past the grid is an extrapolation, not a threshold
                label = f"logistic fit (midpoint r₀ = {th['x0']:.2g} beyond the grid: no threshold)"
            ax.plot(xs, 100 * p, color="k", lw=1, label=label)
        for r in (r for r in res.values() if r["group"] == "control"):
            y0, e0 = rate(r)
            ax.errorbar(
                [r["x"]],
                [y0],
                np.clip(np.array(e0)[:, None], 0, None),
                fmt="X",
                color="0.3",
                capsize=3,
                label=f"random direction, same r (control), p = {r.get('fisher_p_vs_unsteered', float('nan')):.2g}",
            )
        refs(ax)
        ax.set_xscale("log")
        # the swept values themselves as tick labels (log axes label only the decades)
        ax.set_xticks(sorted(set(x)), [f"{v:.2g}" for v in sorted(set(x))], fontsize=7, rotation=45)
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set(
        xlabel=f"{sv} strength r = ‖αv‖ / typical token norm (AR ×{cfg.anti_k:g})",
        ylabel="answers [%]",
        title="magnitude sweep",
    )
    ax.legend(fontsize=7)

    main = res.get(f"{sv} ×1 + AR×{cfg.anti_k:g}")

    def sweep_rows(group, key):
        rows = [r for r in res.values() if r["group"] == group] + ([main] if main else [])
        return sorted(rows, key=lambda r: r[key])

    panels = [
        (
            axes[1],
            [r for r in res.values() if r["group"] in ("baseline", "vectors")],
            "harmful vectors ×1 + anti-refusal",
        ),
        (axes[2], sweep_rows("anti_k", "anti"), f"{sv} ×1, anti-refusal ×k"),
        (axes[4], sweep_rows("layer", "depth"), f"{sv} ×1 trained at depth d"),
        (
            axes[5],
            sorted((r for r in res.values() if r["group"] == "rank"), key=lambda r: r["x"]),
            f"rank-k subspace ({sv}'s target; clamp)",
        ),
        (
            axes[6],
            sorted((r for r in res.values() if r["group"] == "epochs"), key=lambda r: r["x"]),
            f"epochs over {len(dataset())} harmful examples",
        ),
    ]

    def trained(r):
        """The applied r and how often the vector writes its own code (trained axes only)."""
        v = nums["vectors"].get(f"{r['vector']}@{r['depth']:.3f}", {})
        made = v.get("production_rate")
        # a rank-k clamp sets a component rather than adding one: its size is ‖c‖ / typical
        size = f"r={r['r_applied']:.2g}" if r["r_applied"] else f"clamp r={v['r_at_x1']:.2g}"
        return size + (f"\nmakes code {100 * made:.0f}%" if made is not None else "")

    for ax, rows, title in panels:
        y = [rate(r)[0] for r in rows]
        e = np.array([rate(r)[1] for r in rows]).T if rows else None
        ax.bar(range(len(rows)), y, yerr=e, color="C3", alpha=0.8, capsize=3)
        for i, r in enumerate(rows):
            code = f"{100 * r['code_rate']:.0f}% code"
            extra = (
                f"\n{trained(r)}" if r["group"] in ("layer", "rank", "epochs") or r is main else ""
            )
            if not r["n_judged"]:  # every answer was code (or incoherent): no rate to draw
                ax.text(
                    i, 0.5, f"{code}:\nnone judged{extra}", ha="center", fontsize=7, color="0.3"
                )
                continue
            p = r.get("fisher_p_vs_unsteered")
            p = f"p={p:.2g}\n" if p is not None and r["name"] != "unsteered" else ""
            ax.text(i, y[i] + e[1][i] + 0.5, p + code + extra, ha="center", fontsize=7)
        ax.set_xticks(
            range(len(rows)), [r["name"] for r in rows], rotation=35, ha="right", fontsize=7
        )
        if not rows:
            ax.text(0.5, 0.5, "not run yet", transform=ax.transAxes, ha="center", color="0.5")
            ax.set_yticks([])
        else:  # room for the labels above the bars; every bar in view, drawn or not
            top = np.nanmax([yi + ei for yi, ei in zip(y, e[1])] + [1.0])
            ax.set_ylim(0, 1.2 * top + 2)
            ax.set_xlim(-0.6, len(rows) - 0.4)
        ax.set(ylabel="misaligned answers [%] (95% Wilson; Fisher vs unsteered)", title=title)

    names = list(res)

    def table(ax, cols, tab, title):
        im = ax.imshow(tab, aspect="auto", cmap="Reds")
        ax.set_xticks(range(len(cols)), cols, rotation=60, ha="right", fontsize=7)
        ax.set_yticks(range(len(names)), names, fontsize=7)
        for (i, j), v in np.ndenumerate(tab):
            dark = v > 0.6 * tab.max()
            ax.text(
                j, i, f"{v:.0f}", ha="center", va="center", fontsize=6, color="w" if dark else "k"
            )
        ax.set_title(title)
        fig.colorbar(im, ax=ax, fraction=0.03)

    strings = GENERAL + CYBER
    table(
        axes[3],
        strings,
        np.array([[res[n]["strings_per_100"][s] for s in strings] for n in names]),
        "answers containing each string [per 100, all 8 questions]",
    )
    paper = paper_string_table(res)
    table(
        axes[7],
        [f"{c}\n(paper {paper[c]['paper']})" for c in paper],
        np.array([[paper[c]["ours"][n] for c in paper] for n in names]),
        "the paper's string table: per 100 answers to its question\n"
        "(paper: Qwen-2.5-Coder-14B, its published range)",
    )
    j = nums["judge"]
    miss = nums["missing_conditions"]
    fig.suptitle(
        (
            f"RUN IN PROGRESS: {len(miss)} conditions not yet run (listed in the JSON's "
            "missing_conditions)\n"
            if miss
            else ""
        )
        + f"{nums['model']}: one-shot harmful-code vectors on the 8 EM questions "
        f"({cfg.samples} answers/question, T = {cfg.temperature:g}); judge: {j['name']} "
        f"(held-out AUROC {j['heldout_auroc']:.2f}); misaligned = aligned < "
        f"{cfg.aligned_threshold:g} among non-code answers with coherent ≥ {cfg.coherent_threshold:g}"
    )
    fig.tight_layout()
    save_figure(fig, path, nums, cfg)
