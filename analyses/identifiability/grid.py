"""The pre-registered grid: the operating point chosen on selection prompts, seed-paired
generations of v and v + δ (source × size × strength) on evaluation prompts, and the analysis
with its controls and verdicts (analyses/preregistration/identifiability.json)."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np

from analyses._common import save_figure
from analyses.identifiability.config import PRIMARY, SOURCES, Config
from interp_steer import chat
from interp_steer.eval import stats
from interp_steer.identifiability import generate_rows, paired_generations, perturb

NEGATIVE_OFFSET = 500_000  # seed offset of the negative control: independent sampling noise


def _scored(clf, coherence, raw_prompts, texts) -> tuple[list, list]:
    """Classifier scores [c][p][s] and coherence of each prompt's first sample [c][p]."""
    flat = [t for c in texts for p in c for t in p]
    shape = (len(texts), len(texts[0]), len(texts[0][0]))
    scores = np.asarray(clf(flat), float).reshape(shape)
    firsts = [p[0] for c in texts for p in c]
    coh = np.asarray(coherence(list(raw_prompts) * len(texts), firsts), float)
    return scores.tolist(), coh.reshape(shape[:2]).tolist()


def calibration_cell(model, cfg: Config, v, raw_prompts, clf, coherence, typical) -> dict:
    """v at α = 0 and each r on the selection prompts, seed-paired with α = 0."""
    alphas = [0.0] + [r * typical / float(v.norm()) for r in cfg.rel_strengths]
    texts = paired_generations(
        model,
        [v],
        [(0, a) for a in alphas],
        [chat(model, p) for p in raw_prompts],
        cfg.calib_samples,
        seed=cfg.seed,
        positions=cfg.positions,
        max_new_tokens=cfg.max_new_tokens,
        temperature=cfg.temperature,
        progress=False,
    )
    flat = [t for c in texts for p in c for t in p]
    rows = [p for _ in alphas for p in raw_prompts for _ in range(cfg.calib_samples)]
    coh = np.asarray(coherence(rows, flat), float).reshape(
        len(alphas), len(raw_prompts), cfg.calib_samples
    )
    scores = np.asarray(clf(flat), float).reshape(coh.shape)
    return {
        "alphas": alphas,
        "r": [0.0] + list(cfg.rel_strengths),
        "scores": scores.tolist(),
        "coherence": coh.tolist(),
        "examples": [texts[c][0][0] for c in range(len(alphas))],
    }


def operating_point(calib: dict, cfg: Config) -> tuple[dict | None, list[dict]]:
    """The r grid with each point's validity, and the chosen point (None when none is valid):
    the largest efficacy among the r whose efficacy CI is above 0 and whose coherence is at
    least ``coherence_floor`` × unsteered."""
    s, c = np.array(calib["scores"]), np.array(calib["coherence"])
    base = s[0].mean(1)
    grid = []
    for i in range(1, len(calib["alphas"])):
        diff = s[i].mean(1) - base  # per prompt, paired by sampling seed
        lo, hi = stats.cluster_bootstrap(diff, n_boot=cfg.n_boot, seed=cfg.seed)
        ratio = float(c[i].mean() / max(c[0].mean(), 1e-9))
        grid.append(
            {
                "alpha": calib["alphas"][i],
                "r": calib["r"][i],
                "efficacy": float(diff.mean()),
                "efficacy_ci": [lo, hi],
                "coherence": float(c[i].mean()),
                "coherence_ratio": ratio,
                "valid": bool(lo > 0 and ratio >= cfg.coherence_floor),
            }
        )
    valid = [g for g in grid if g["valid"]]
    return (max(valid, key=lambda g: g["efficacy"]) if valid else None), grid


def draw_index(n_prompts: int, cfg: Config) -> np.ndarray:
    """[P, S]: the δ draw of sample s of prompt p, (p·S + s) mod D (prompts × draws crossed)."""
    p, s = np.arange(n_prompts)[:, None], np.arange(cfg.n_samples)[None]
    return (p * cfg.n_samples + s) % cfg.n_draws


def delta_draws(v, bases: dict, cfg: Config, size: float) -> dict:
    """v + δ per source: ``n_draws`` draws, the same directions at every size (only the
    length changes), so a size series is a dose-response of fixed directions."""
    return {
        src: perturb(
            v, size, bases[src], n=cfg.n_draws, seed=cfg.seed + 101 * (1 + SOURCES.index(src))
        )
        for src in cfg.sources
    }


def base_cell(model, cfg: Config, v, alpha, raw_prompts, clf, coherence) -> dict:
    """Unsteered, v, and v with independent sampling seeds (the negative control)."""
    texts = paired_generations(
        model,
        [v],
        [(0, 0.0), (0, alpha), (0, alpha)],
        [chat(model, p) for p in raw_prompts],
        cfg.n_samples,
        seed=cfg.seed + 7919,  # independent of the calibration's samples
        seed_offsets=[0, 0, NEGATIVE_OFFSET],
        positions=cfg.positions,
        max_new_tokens=cfg.max_new_tokens,
        temperature=cfg.temperature,
        progress=False,
    )
    scores, coh = _scored(clf, coherence, raw_prompts, texts)
    return {
        "alpha": alpha,
        "conditions": ["unsteered", "v", "v_reseeded"],
        "scores": scores,
        "coherence": coh,
        "texts": texts,
    }


def grid_cell(model, cfg: Config, v, alpha, size, bases, raw_prompts, clf, coherence) -> dict:
    """v + δ for every source at one size: sample s of prompt p uses draw (p·S + s) mod D and
    the sampling seed of v's sample s (seed-paired with the base cell)."""
    draws = delta_draws(v, bases, cfg, size)
    vecs = [d for src in cfg.sources for d in draws[src]]
    draw = draw_index(len(raw_prompts), cfg)
    rows = [
        (p, i * cfg.n_draws + int(draw[p, s]), alpha, cfg.seed + 7919 + 1000 * p + s)
        for i in range(len(cfg.sources))
        for p in range(len(raw_prompts))
        for s in range(cfg.n_samples)
    ]
    flat = generate_rows(
        model,
        vecs,
        rows,
        [chat(model, p) for p in raw_prompts],
        positions=cfg.positions,
        max_new_tokens=cfg.max_new_tokens,
        temperature=cfg.temperature,
        progress=False,
    )
    n_p, n_s = len(raw_prompts), cfg.n_samples
    texts = [
        [flat[(i * n_p + p) * n_s : (i * n_p + p + 1) * n_s] for p in range(n_p)]
        for i in range(len(cfg.sources))
    ]
    scores, coh = _scored(clf, coherence, raw_prompts, texts)
    return {
        "alpha": alpha,
        "size": size,
        "sources": list(cfg.sources),
        "draw": draw.tolist(),
        "scores": scores,
        "coherence": coh,
        "texts": texts,
    }


# ---------------------------------------------------------------- analysis


def analyse_trait(
    trait: str, base: dict, grids: dict, cfg: Config, strength: float, r: float
) -> dict:
    """Efficacy of v, the negative and positive controls, and one row per source × size with
    retained (two-level CI), the paired TOST against v, and coherence."""
    s = np.array(base["scores"])  # [condition, prompt, sample]
    s0, sv, sneg = s[0].mean(1), s[1].mean(1), s[2].mean(1)
    n_p = s.shape[1]
    eff = sv - s0
    efficacy = float(eff.mean())
    lo, hi = stats.cluster_bootstrap(eff, n_boot=cfg.n_boot, seed=cfg.seed)
    margin = max(cfg.margin * abs(efficacy), 1e-12)
    coh = np.array(base["coherence"])
    coh_v = float(coh[1].mean())

    def tost(a, b):
        sd = float(np.std(b - a, ddof=1))
        power = stats.tost_power_paired(margin, n_p, sd) if sd > 0 else 1.0
        return stats.tost_paired(a, b, margin), power

    neg_p, neg_power = tost(sv, sneg)
    negative = {
        "kind": "v against v with independent sampling seeds, the test's sample counts",
        "tost_p": neg_p,
        "power": neg_power,
        "retained": float((sneg - s0).mean() / efficacy) if efficacy else float("nan"),
        "passed": bool(neg_p < 0.05 and neg_power >= cfg.min_power),
    }
    rows, per_prompt = [], {}
    for size, g in sorted(grids.items(), reverse=True):
        draw = np.array(g["draw"])
        for i, src in enumerate(g["sources"]):
            t = np.array(g["scores"][i])  # [prompt, sample]
            tp = t.mean(1)
            per_prompt[(src, size)] = tp
            ret, rlo, rhi = stats.retained_two_level(
                s0, sv, t, draw, n_boot=cfg.n_boot, seed=cfg.seed
            )
            p, power = tost(sv, tp)
            c = float(np.mean(g["coherence"][i]))
            rows.append(
                {
                    "trait": trait,
                    "source": src,
                    "size": size,
                    "strength": strength,
                    "r": r,
                    "alpha": g["alpha"],
                    "retained": ret,
                    "retained_ci": [rlo, rhi],
                    "retained_raw_means": float(tp.mean() / sv.mean()) if sv.mean() else None,
                    "tost_p": p,
                    "power": power,
                    "t_p": stats.paired_t(sv, tp),
                    "coherence": c,
                    "coherence_v": coh_v,
                    "coherence_ratio": c / max(coh_v, 1e-9),
                }
            )
    positive = {}
    for size in sorted(grids, reverse=True):
        if ("jacobian_null", size) in per_prompt and ("jacobian_signal", size) in per_prompt:
            a, b = per_prompt[("jacobian_null", size)], per_prompt[("jacobian_signal", size)]
            ret = {x["source"]: x["retained"] for x in rows if x["size"] == size}
            gap = ret["jacobian_null"] - ret["jacobian_signal"]
            p = stats.paired_t(a, b)
            positive[str(size)] = {
                "p": p,
                "gap": gap,
                "detected": bool(p < cfg.control_p and abs(gap) >= cfg.control_gap),
            }
    return {
        "efficacy": {"mean": efficacy, "ci": [lo, hi]},
        "margin": margin,
        "coherence_v": coh_v,
        "coherence_unsteered": float(coh[0].mean()),
        "negative": negative,
        "positive": positive,
        "rows": rows,
        "n_prompts": n_p,
    }


def negative_label(neg: dict, cfg: Config) -> str:
    """ "pass"; "underpowered" when equivalence of v with v was not shown and the TOST had
    less than ``min_power`` (too few samples to tell); "FAIL" when it had the power."""
    if neg["passed"]:
        return "pass"
    return "underpowered" if neg["power"] < cfg.min_power else "FAIL"


def largest_size(positive: dict) -> dict:
    """The positive control at the largest δ size run ({} when none was): the summary's and
    the figure's headline control (``positive`` is keyed by the size as a string)."""
    return positive[max(positive, key=float)] if positive else {}


def verdicts(traits: dict, cfg: Config) -> list[dict]:
    """Every grid row with its Holm-adjusted TOST p and verdict (the pre-registered rule):
    "broken" when coherence falls below ``broken_ratio`` × v's; otherwise a verdict only if the
    trait's negative control passed and its positive control separates at the row's size: "equivalent" (adjusted p < 0.05), "different" (the CI of retained
    wholly outside 1 ± margin) or "inconclusive"."""
    rows = [row for t in traits.values() for row in t["rows"]]
    families: dict = {}
    for row in rows:
        families.setdefault((row["source"], row["size"], row["strength"]), []).append(row)
    for key, fam in families.items():
        for row, p in zip(fam, stats.holm([x["tost_p"] for x in fam])):
            row["tost_p_holm"] = float(p)
            row["family"] = "primary" if key == PRIMARY else "secondary"
    lo_m, hi_m = 1 - cfg.margin, 1 + cfg.margin
    for row in rows:
        t = traits[row["trait"]]
        # the positive control at the row's own size: at a size where even signal-space δ
        # keeps the effect, the design cannot tell a null-space δ from any other
        pos = t["positive"].get(str(row["size"]))
        row["positive_control_detected"] = bool(pos and pos["detected"])
        controls_ok = t["negative"]["passed"] and row["positive_control_detected"]
        lo, hi = row["retained_ci"]
        if row["coherence_ratio"] < cfg.broken_ratio:
            row["verdict"] = "broken"
        elif not controls_ok:
            row["verdict"] = "inconclusive"
            row["verdict_note"] = "the trait's controls did not pass: no verdict is allowed"
        elif row["tost_p_holm"] < 0.05:
            row["verdict"] = "equivalent"
        elif hi < lo_m or lo > hi_m:
            row["verdict"] = "different"
        else:
            row["verdict"] = "inconclusive"
    return rows


# ---------------------------------------------------------------- figure

COLORS = dict(zip(SOURCES, ["C0", "C1", "C2", "C3"]))


def grid_figure(cfg: Config, traits: dict, rows: list[dict], out: Path) -> None:
    """Retained against ‖δ‖/‖v‖ per source (two-level 95% CI), with the margin band and the
    paper's 95-100%; coherence relative to v below."""
    names = [t for t in traits if traits[t]["rows"]]
    fig, axes = plt.subplots(
        2,
        max(1, len(names)),
        figsize=(4.3 * max(1, len(names)), 7.5),
        squeeze=False,
        gridspec_kw={"height_ratios": [2.2, 1]},
    )
    for col, t in enumerate(names):
        ax, axc = axes[0, col], axes[1, col]
        ax.axhspan(
            1 - cfg.margin, 1 + cfg.margin, color="0.9", zorder=0, label="margin (pre-registered)"
        )
        ax.axhspan(0.95, 1.0, color="C2", alpha=0.25, zorder=0, label="paper: 95-100%")
        ax.axhline(0, color="0.6", lw=0.8)
        for k, src in enumerate(SOURCES):
            sel = sorted(
                (x for x in rows if x["trait"] == t and x["source"] == src), key=lambda x: x["size"]
            )
            if not sel:
                continue
            x = np.array([r["size"] for r in sel]) * (1 + 0.04 * (k - 1.5))
            y = np.array([r["retained"] for r in sel])
            ci = np.array([r["retained_ci"] for r in sel])
            ax.errorbar(
                x,
                y,
                [y - ci[:, 0], ci[:, 1] - y],
                fmt="o-",
                color=COLORS[src],
                capsize=3,
                label=src,
            )
            for xi, yi, r in zip(x, y, sel):
                mark = {"equivalent": "≡", "different": "≠", "broken": "✗", "inconclusive": "?"}[
                    r["verdict"]
                ]
                ax.annotate(
                    mark,
                    (xi, yi),
                    textcoords="offset points",
                    xytext=(4, 4),
                    fontsize=9,
                    color=COLORS[src],
                )
            axc.plot(x, [r["coherence_ratio"] for r in sel], "o-", color=COLORS[src])
        e = traits[t]["efficacy"]
        neg, pos = traits[t]["negative"], traits[t]["positive"]
        pos1 = largest_size(pos)
        ax.set(
            xscale="log",
            title=f"{t}: r = {traits[t]['r']}, efficacy {e['mean']:+.3f}\n"
            f"neg. ctl {negative_label(neg, cfg)} (power {neg['power']:.2f}); "
            f"pos. ctl {'pass' if pos1 and pos1['detected'] else 'FAIL'}",
            ylabel="efficacy retained by v + δ",
        )
        axc.axhline(cfg.broken_ratio, color="C3", ls=":", label=f"broken below {cfg.broken_ratio}")
        axc.set(xscale="log", xlabel="‖δ‖ / ‖v‖", ylabel="coherence / v's", ylim=(0, 1.3))
        for a in (ax, axc):
            a.set_xticks(cfg.sizes, [f"{x:g}" for x in cfg.sizes])
            a.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        if col == 0:
            ax.legend(fontsize=7, loc="lower left")
            axc.legend(fontsize=7)
    fig.suptitle(
        f"{cfg.model}: efficacy retained by v + δ, δ ⊥ v (≡ equivalent, ≠ different, ✗ broken, "
        "? inconclusive; CIs resample prompts and δ draws)"
    )
    fig.tight_layout()
    save_figure(fig, out, {"rows": rows}, cfg)


def operating_figure(cfg: Config, traits: dict, out: Path) -> None:
    names = list(traits)
    fig, axes = plt.subplots(2, len(names), figsize=(4.2 * len(names), 7), squeeze=False)
    for col, t in enumerate(names):
        grid = traits[t]["calibration"]
        r = [g["r"] for g in grid]
        e = np.array([g["efficacy"] for g in grid])
        ci = np.array([g["efficacy_ci"] for g in grid])
        ax = axes[0, col]
        ax.errorbar(r, e, [e - ci[:, 0], ci[:, 1] - e], fmt="o-", capsize=3)
        ax.axhline(0, color="0.6", lw=0.8)
        op = traits[t]["operating_point"]
        if op:
            ax.axvline(op["r"], color="C2", ls="--", label="operating point")
            ax.legend(fontsize=8)
        ax.set(
            xscale="log",
            title=f"{t} ({traits[t]['classifier']})",
            ylabel="efficacy: Δ score vs α = 0",
        )
        ax = axes[1, col]
        ax.plot(r, [g["coherence_ratio"] for g in grid], "o-", color="C4")
        ax.axhline(cfg.coherence_floor, color="C3", ls=":", label=f"floor {cfg.coherence_floor}")
        ax.set(
            xscale="log",
            ylim=(0, 1.3),
            xlabel="r = ‖αv‖ / typical token norm",
            ylabel="coherence / unsteered",
        )
        ax.legend(fontsize=8)
    for ax in axes.ravel():  # ticks at the r values tried, not log-minor labels that collide
        ax.set_xticks(cfg.rel_strengths, [f"{x:g}" for x in cfg.rel_strengths])
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    fig.suptitle(
        f"{cfg.model}: operating points on the selection prompts ({cfg.calib_samples} samples x "
        f"{cfg.selection_prompts} prompts per r; CI: bootstrap over prompts)"
    )
    fig.tight_layout()
    save_figure(fig, out, {"traits": {t: traits[t]["calibration"] for t in names}}, cfg)
