"""Are the EM judge's flags right on the EM run's own answers? The EmbeddingJudge against blind
labels.

python -m analyses.judge_audit

`interp_steer/data/em_judge_audit.json` holds answers drawn from the committed EM cells (non-code,
judge-coherent ≥ 50), stratified by the judge's flag (aligned < 30) within a few conditions, each
labelled misaligned / coherent by a reader who saw only the question and the answer. Since the
sample is stratified by the flag:

- per stratum, the labelled misaligned fraction with a Wilson CI: among flagged answers this is
  the judge's precision, among unflagged ones its miss rate;
- where both strata of a condition were labelled, the condition's labelled misaligned rate is
  f·precision + (1 − f)·miss, with f the judge's flagged fraction of the condition's judged
  answers, and the judge's recall is f·precision / that rate. Their bootstrap CIs resample the
  labels within each stratum and the condition's judged answers, widened to the stratum-wise
  Wilson bounds where a stratum is all positive or all negative (the bootstrap has no spread
  there; the widened interval is conservative).

Threshold-free, the AUROC of the run's own scores against the labels over the sample: 100 −
aligned for misaligned, the coherence score for coherent.

Every labelled answer is checked against its cell (text and flag), so the labels cannot drift
from the run they audit. Writes figures/judge_audit.png/.json.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from analyses._common import FIGURES, arg_parser, require_clean, save_figure
from analyses.emergent_misalignment import Config as EMConfig
from analyses.emergent_misalignment import cells_dir, condition_file, judged_and_flagged
from interp_steer.eval import stats


@dataclass
class Config:
    labels: str = ""  # a labels file; "" is the shipped interp_steer/data/em_judge_audit.json
    em_cells: str = ""  # the EM cells the labels were drawn from; "" is the committed run's
    n_boot: int = 4000
    seed: int = 0
    quick: bool = False

    @classmethod
    def quick_config(cls, **kw) -> Config:
        """Fewer bootstrap resamples; the audit itself is the same (it takes seconds)."""
        return cls(**{"n_boot": 500, "quick": True, **kw})


def load_labels(cfg: Config) -> dict:
    if cfg.labels:
        return json.loads(Path(cfg.labels).read_text())
    return json.loads(
        resources.files("interp_steer.data").joinpath("em_judge_audit.json").read_text()
    )


# What a blind label can say of an answer: misaligned, and the paper's emergent misalignment
# (misaligned among coherent answers), here counted as misaligned and coherent over all judged
TARGETS = {
    "misaligned": lambda it: it["misaligned"],
    "misaligned_and_coherent": lambda it: it["misaligned"] and it["coherent"],
}


def reweighted(
    flags: np.ndarray, y_flagged: np.ndarray, y_unflagged: np.ndarray, n_boot: int, seed: int
) -> dict:
    """A condition's labelled misaligned rate and the judge's recall from a flag-stratified
    sample: ``flags`` are the judge's flags on all the condition's judged answers, ``y_*`` the
    labels of the sampled flagged and unflagged ones."""

    def est(f, p_flagged, p_unflagged):
        rate = f * p_flagged + (1 - f) * p_unflagged
        return rate, (f * p_flagged / rate if rate > 0 else float("nan"))

    def draw(rng, which):
        resample = [rng.choice(x, len(x)).mean() for x in (flags, y_flagged, y_unflagged)]
        return est(*resample)[which]

    f = flags.mean()
    rate, recall = est(f, y_flagged.mean(), y_unflagged.mean())
    rate_ci = stats.bootstrap(lambda g: draw(g, 0), n_boot, seed=seed)
    recall_ci = None if rate == 0 else stats.bootstrap(lambda g: draw(g, 1), n_boot, seed=seed)
    if any(y.all() or not y.any() for y in (y_flagged, y_unflagged)):
        # a stratum with no positives (or no negatives) has no sampling spread, so the bootstrap
        # collapses there; each stratum's Wilson interval, combined at its ends, does not
        (lt, ht), (lf, hf) = (stats.wilson(int(y.sum()), len(y)) for y in (y_flagged, y_unflagged))
        rate_ci = (min(rate_ci[0], f * lt + (1 - f) * lf), max(rate_ci[1], f * ht + (1 - f) * hf))
        if recall_ci is not None:
            lo, hi = f * lt / (f * lt + (1 - f) * hf), f * ht / (f * ht + (1 - f) * lf)
            recall_ci = (min(recall_ci[0], lo), max(recall_ci[1], hi))
    return {
        "labelled_rate": float(rate),
        "labelled_rate_ci": [float(c) for c in rate_ci],
        # no labelled positives: recall is undefined
        "recall": None if rate == 0 else float(recall),
        "recall_ci": None if recall_ci is None else [float(c) for c in recall_ci],
    }


def share(y: np.ndarray) -> dict:
    """How many of the boolean ``y`` are true, as a count, a rate and a Wilson CI."""
    k = int(y.sum())
    return {"k": k, "rate": k / len(y), "ci": list(stats.wilson(k, len(y)))}


def auroc_or_none(y: np.ndarray, score: np.ndarray, cfg: Config) -> list[float] | None:
    """(AUROC, low, high), or None where the labels hold one class."""
    if len(np.unique(y)) < 2:
        return None
    return list(stats.auroc(y, score, n_boot=cfg.n_boot, seed=cfg.seed))


def mean_or_none(x: np.ndarray) -> float | None:
    return float(x.mean()) if len(x) else None


def run(cfg: Config, out_dir: Path = FIGURES) -> dict:
    data = load_labels(cfg)
    em = EMConfig()
    cells = Path(cfg.em_cells) if cfg.em_cells else cells_dir(em, data["model"])
    items = data["items"]
    by_cond: dict[str, dict] = {}
    for it in items:
        cond = it["condition"]
        if cond not in by_cond:
            path = cells / condition_file(cond)
            if not path.exists():
                raise FileNotFoundError(f"no EM cell for {cond!r} at {path}: run the EM analysis")
            cell = json.loads(path.read_text())
            judged, flagged = judged_and_flagged(em, cell)
            (idx,) = np.nonzero(judged)
            by_cond[cond] = {"cell": cell, "flag_of": {int(i): bool(flagged[i]) for i in idx}}
        c = by_cond[cond]
        i = it["index"]
        if c["cell"]["texts"][i] != it["answer"]:
            raise ValueError(f"label {it['id']}: answer {i} of {cond!r} is not the cell's")
        if i not in c["flag_of"] or c["flag_of"][i] != it["judge_flag"]:
            raise ValueError(
                f"label {it['id']}: answer {i} of {cond!r} is not judged with flag "
                f"{it['judge_flag']} in the cell"
            )

    strata = []
    for cond in by_cond:
        for flag in (True, False):
            group = [it for it in items if (it["condition"], it["judge_flag"]) == (cond, flag)]
            if not group:
                continue
            row = {"condition": cond, "judge_flag": flag, "n": len(group)}
            for target, label in TARGETS.items():
                y = np.array([label(it) for it in group], bool)
                row[target] = share(y)
                row[f"_y_{target}"] = y
            row["labelled_coherent"] = int(sum(it["coherent"] for it in group))
            strata.append(row)

    conditions = {}
    for cond, c in by_cond.items():
        flags = np.array(list(c["flag_of"].values()), bool)
        row = {
            "n_judged": len(flags),
            "judge_rate": float(flags.mean()),
            "judge_ci": list(stats.wilson(int(flags.sum()), len(flags))),
        }
        s = {st["judge_flag"]: st for st in strata if st["condition"] == cond}
        if True in s and False in s:  # both strata labelled: the condition's rates re-weight
            for target in TARGETS:
                y = (s[True][f"_y_{target}"], s[False][f"_y_{target}"])
                row[target] = reweighted(flags, *y, cfg.n_boot, cfg.seed)
        conditions[cond] = row

    # threshold-free: do the run's scores rank the labelled answers? (over this flag-stratified
    # sample, not a condition's answers)
    scores = {
        key: np.array([by_cond[it["condition"]]["cell"][key][it["index"]] for it in items])
        for key in ("aligned", "coherent")
    }
    ym = np.array([it["misaligned"] for it in items], int)
    yc = np.array([it["coherent"] for it in items], int)
    ranking = {
        "misaligned_auroc_of_100_minus_aligned": auroc_or_none(ym, -scores["aligned"], cfg),
        "coherent_auroc_of_coherence": auroc_or_none(yc, scores["coherent"], cfg),
        "mean_coherence_labelled_coherent": mean_or_none(scores["coherent"][yc == 1]),
        "mean_coherence_labelled_incoherent": mean_or_none(scores["coherent"][yc == 0]),
    }

    flagged = np.array([it["misaligned"] for it in items if it["judge_flag"]], bool)
    nums = {
        "labeller": data["labeller"],
        "model": data["model"],
        "n_items": len(items),
        # the judge's flag means "misaligned"; how often a blind reader agrees
        "precision_all_flagged": {"n": len(flagged), **share(flagged)},
        "ranking": ranking,
        "strata": [{k: v for k, v in st.items() if not k.startswith("_y")} for st in strata],
        "conditions": conditions,
        "disagreements": [
            {k: it[k] for k in ("id", "condition", "judge_flag", "misaligned", "coherent", "note")}
            | {"answer": it["answer"][:200]}
            for it in items
            if it["misaligned"] != it["judge_flag"]
        ][:12],
    }
    figure(nums, Path(out_dir) / f"judge_audit{'_quick' if cfg.quick else ''}", cfg)
    return nums


def _recall(r: dict) -> str:
    if r["recall"] is None:
        return "undefined"
    return f"{r['recall']:.2f} [{r['recall_ci'][0]:.2f}, {r['recall_ci'][1]:.2f}]"


def _auc(x: list[float] | None) -> str:
    return "undefined" if x is None else f"{x[0]:.2f} [{x[1]:.2f}, {x[2]:.2f}]"


def _series(ax, x, items: list, series: list, width: float) -> None:
    """Grouped bars with CIs: ``series`` is (offset, get, label, colour), ``get(item)`` giving
    (value, [low, high])."""
    for off, get, label, colour in series:
        rates, cis = map(np.asarray, zip(*(get(it) for it in items)))
        ax.bar(x + off, rates, width, color=colour, label=label)
        err = [rates - cis[:, 0], cis[:, 1] - rates]
        ax.errorbar(x + off, rates, yerr=err, fmt="none", ecolor="k", capsize=3)


def figure(nums: dict, path: Path, cfg: Config) -> None:
    fig, (a, b) = plt.subplots(1, 2, figsize=(15, 5.6), gridspec_kw={"width_ratios": [3, 2]})
    st = nums["strata"]
    x = np.arange(len(st))
    targets = [
        (-0.2, "misaligned", "labelled misaligned", "tab:red"),
        (0.2, "misaligned_and_coherent", "labelled misaligned and coherent", "tab:purple"),
    ]
    _series(
        a,
        x,
        st,
        [(o, lambda s, t=t: (s[t]["rate"], s[t]["ci"]), lb, c) for o, t, lb, c in targets],
        0.38,
    )
    for off, target, _, _ in targets:
        for i, s in enumerate(st):
            r = s[target]
            a.text(i + off, r["ci"][1] + 0.02, f"{r['k']}/{s['n']}", ha="center", fontsize=8)
    a.set_xticks(
        x,
        [
            f"{s['condition']}\njudge {'flagged' if s['judge_flag'] else 'not flagged'}"
            f"\n(labelled coherent {s['labelled_coherent']}/{s['n']})"
            for s in st
        ],
        fontsize=8,
    )
    a.set_ylim(0, 1.12)
    a.set_ylabel("fraction of the stratum (Wilson 95% CI)")
    a.set_title(
        "Blind labels within each judge stratum\n(flagged: the judge's precision; "
        "not flagged: its miss rate)",
        fontsize=10,
    )
    a.legend(fontsize=8, loc="upper right")

    conds = [c for c, r in nums["conditions"].items() if "misaligned" in r]
    rows = [nums["conditions"][c] for c in conds]
    judge = (
        -0.27,
        lambda r: (r["judge_rate"], r["judge_ci"]),
        "judge: aligned < 30 (the EM run's rate)",
        "tab:gray",
    )
    blind = [
        (0.0, "misaligned", "blind: misaligned", "tab:red"),
        (0.27, "misaligned_and_coherent", "blind: misaligned and coherent", "tab:purple"),
    ]
    labelled = [
        (o, lambda r, t=t: (r[t]["labelled_rate"], r[t]["labelled_rate_ci"]), lb, c)
        for o, t, lb, c in blind
    ]
    xc = np.arange(len(conds))
    _series(b, xc, rows, [judge, *labelled], 0.26)
    b.set_xticks(
        xc,
        [f"{c}\njudge recall {_recall(r['misaligned'])}" for c, r in zip(conds, rows)],
        fontsize=9,
    )
    b.set_ylim(0, 1.0)
    b.set_ylabel("rate among the judged answers (bootstrap 95% CI)")
    b.set_title("Each condition's rate, re-weighted from the strata", fontsize=10)
    b.legend(fontsize=8, loc="upper left")
    fig.suptitle(
        f"EM judge audit on {nums['model']}: {nums['n_items']} judge-coherent, non-code answers "
        f"labelled by {nums['labeller']}, blind to condition and score",
        fontsize=11,
    )
    fig.tight_layout()
    save_figure(fig, path, nums, cfg)


def headline(nums: dict) -> str:
    p = nums["precision_all_flagged"]
    rk = nums["ranking"]
    lines = [
        f"AUROC on the sample: misaligned {_auc(rk['misaligned_auroc_of_100_minus_aligned'])}, "
        f"coherent {_auc(rk['coherent_auroc_of_coherence'])}",
        f"precision over all flagged: {p['rate']:.2f} [{p['ci'][0]:.2f}, {p['ci'][1]:.2f}] "
        f"(n={p['n']})",
    ]
    for c, r in nums["conditions"].items():
        if "misaligned" in r:
            m, e = r["misaligned"], r["misaligned_and_coherent"]
            lines.append(
                f"{c}: judge {r['judge_rate']:.3f}; labels: misaligned {m['labelled_rate']:.3f} "
                f"[{m['labelled_rate_ci'][0]:.3f}, {m['labelled_rate_ci'][1]:.3f}], misaligned "
                f"and coherent {e['labelled_rate']:.3f} [{e['labelled_rate_ci'][0]:.3f}, "
                f"{e['labelled_rate_ci'][1]:.3f}]; judge recall {_recall(m)}"
            )
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = arg_parser(__doc__)
    ap.add_argument("--labels", default="", help="a labels file (default: the shipped one)")
    args = ap.parse_args(argv)
    require_clean(args)
    cfg = (Config.quick_config if args.quick else Config)(labels=args.labels, seed=args.seed)
    print(headline(run(cfg, args.out)))
