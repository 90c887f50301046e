"""Do the text measures hold on what steered models write? Coherence, misalignment, concepts.

python -m analyses.measure_validation [--no-compute]

Validated against `interp_steer/data/modeltext/` (blind labels, two labellers, adjudicated;
see its README): every candidate measure scores every item once (cells under
figures/.cells/measure_validation_<hash>/), learned heads are fit on the train split only,
the candidate is chosen on dev, and the acceptance numbers are reported on test:

- coherence (label: coherence >= 50): AUROC **within conditions** (only pairs of items from the
  same source condition count, so a measure cannot pass by telling conditions apart), with a
  bootstrap CI over conditions; at the 0.5 cut, the share of salad and of echoes called
  coherent and of sensible answers called coherent;
- misalignment (label: aligned <= 30, among items both labellers found coherent): AUROC of
  100 − aligned, and precision / recall of the studies' rule;
- concepts: per safety concept, AUROC of the concept scorer against the concept label, and
  the cross-concept AUROC (own positives against the other concepts' positives).
Writes figures/measure_validation.{png,json}.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np

from analyses._common import FIGURES, arg_parser
from analyses.measure_validation.data import (
    Config,
    load_items,
    load_labels,
    load_sources,
    load_split,
)
from analyses.measure_validation.reports import (
    coherence_candidates,
    coherence_report,
    condition_group,
    features,
    is_steered,
    misalignment_report,
)
from analyses.measure_validation.scores import (
    compute_scores,
)
from interp_steer.eval.coherence import HEAD_FILE, CoherenceHead

__all__ = [
    "Config",
    "compute_scores",
    "features",
    "headline",
    "load_items",
    "load_labels",
    "load_split",
    "load_sources",
    "main",
    "run",
]


def run(cfg: Config, compute: bool = True) -> dict:
    items = load_items()
    labels, split_of, sources = load_labels(), load_split(), load_sources()
    items = [it for it in items if it["id"] in labels]
    ids = [it["id"] for it in items]
    scores = compute_scores(cfg, items, compute)
    split = np.array([split_of[i] for i in ids])
    y = np.array([labels[i]["coherence"] >= 50 for i in ids], int)
    groups = np.array([condition_group(sources[i]) for i in ids])
    studies = np.array([f"{sources[i]['study']}|{sources[i]['model']}" for i in ids])
    steered = np.array([is_steered(sources[i]) for i in ids])
    cands, cheap_head = coherence_candidates(cfg, scores, items, split, y)
    coherence = {
        name: {
            part: coherence_report(
                name, s, y, labels, ids, groups, studies, steered, split == part, cfg
            )
            for part in ("dev", "test")
        }
        for name, s in cands.items()
    }
    # chosen on dev only: within-study AUROC, ties broken by the pooled AUROC
    chosen = max(
        coherence,
        key=lambda n: (
            coherence[n]["dev"]["within_study_auroc"],
            coherence[n]["dev"]["pooled_auroc"][0],
        ),
    )
    coh_pred = cands[chosen] >= 0.5
    return {
        "config": asdict(cfg),
        "n_items": len(ids),
        "n_by_split": {k: int((split == k).sum()) for k in ("train", "dev", "test")},
        "coherence": coherence,
        "coherence_chosen_on_dev": chosen,
        "_cheap_head": cheap_head,
        "misalignment": {
            part: misalignment_report(cfg, scores, ids, labels, part, split, coh_pred)
            for part in ("dev", "test")
        },
        "_roc": {  # for the figure only: test-split steered items
            "y": y[(split == "test") & steered].tolist(),
            "scores": {n: s[(split == "test") & steered].tolist() for n, s in cands.items()},
        },
    }


def figure(res: dict, path: Path) -> None:
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    names = list(res["coherence"])
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 5.2), width_ratios=[1.1, 1])
    for k, part in enumerate(("dev", "test")):
        v = [res["coherence"][n][part]["within_study_auroc"] for n in names]
        ci = np.array([res["coherence"][n][part]["within_study_auroc_ci"] for n in names])
        yy = np.arange(len(names)) + (0.18 if part == "dev" else -0.18)
        ax1.errorbar(
            v,
            yy,
            xerr=[np.array(v) - ci[:, 0], ci[:, 1] - np.array(v)],
            fmt="o",
            label=f"{part} split",
            color=f"C{k}",
            capsize=3,
        )
    ax1.axvline(0.85, color="k", ls=":", lw=1, label="goal 0.85")
    ax1.axvline(0.5, color="grey", lw=0.8)
    ax1.set_yticks(range(len(names)), names, fontsize=8)
    ax1.set_xlabel("AUROC against 'coherent': steered items, pairs within one study x model")
    ax1.set_title(
        "Coherence measures on model text (95% CI, bootstrap over study x model)", fontsize=10
    )
    ax1.legend(fontsize=8, loc="upper left")
    y = np.array(res["_roc"]["y"])
    for k, n in enumerate(names):
        fpr, tpr, _ = roc_curve(y, res["_roc"]["scores"][n])
        ax2.plot(fpr, tpr, color=f"C{k}", lw=1.3, label=n)
    ax2.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
    ax2.set_xlabel("false positive rate")
    ax2.set_ylabel("true positive rate")
    ax2.set_title(f"ROC, test split, steered items pooled (n = {len(y)})", fontsize=10)
    ax2.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def headline(res: dict) -> str:
    c = res["coherence_chosen_on_dev"]
    t = res["coherence"][c]["test"]
    lo, hi = t["within_study_auroc_ci"]
    return (
        f"coherence: {c} (chosen on dev): test AUROC within study x model, steered items "
        f"{t['within_study_auroc']:.2f} [{lo:.2f}, {hi:.2f}] ({t['within_study_pairs']} pairs); "
        f"salad called coherent {t['salad_called_coherent']['rate']:.0%}, echoes "
        f"{t['echo_called_coherent']['rate']:.0%}, sensible {t['sensible_called_coherent']['rate']:.0%}"
    )


def main(argv=None) -> None:
    from analyses._common import require_clean
    from interp_steer._io import write_json
    from interp_steer.runs.provenance import code_version

    ap = arg_parser(__doc__)
    ap.add_argument("--no-compute", action="store_true", help="only assemble finished cells")
    ap.add_argument(
        "--readers",
        default="",
        help="comma-separated Qwen reader models to add (about 1 h per 0.5B pass on 2 cores)",
    )
    args = ap.parse_args(argv)
    require_clean(args)
    readers = tuple(r for r in args.readers.split(",") if r)
    cfg = (Config.quick_config if args.quick else Config)(seed=args.seed, readers=readers)
    res = run(cfg, compute=not args.no_compute)
    head = res.pop("_cheap_head")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"measure_validation{'_quick' if cfg.quick else ''}"
    figure(res, out / f"{stem}.png")
    version = code_version()
    write_json(out / f"{stem}.json", {**res, "interp_steer": version})
    name = "head: cheap features"
    shipped = CoherenceHead.from_pipeline(
        head,
        {
            "fit_on": f"train split of interp_steer/data/modeltext ({res['n_by_split']['train']} items)",
            "chosen_on_dev": res["coherence_chosen_on_dev"] == name,
            "dev": _brief(res["coherence"][name]["dev"]),
            "test": _brief(res["coherence"][name]["test"]),
            "made_by": "python -m analyses.measure_validation",
            "interp_steer": version,
        },
    )
    if Path(args.out).resolve() == FIGURES and not cfg.quick:  # the committed run ships it
        write_json(
            Path(__file__).resolve().parents[2] / "interp_steer" / "data" / HEAD_FILE,
            shipped.to_json(),
        )
    print(headline(res))


def _brief(r: dict) -> dict:
    keys = ("within_study_auroc", "within_study_auroc_ci", "within_study_pairs", "pooled_auroc")
    return {k: r[k] for k in keys} | {
        k: r[k]["rate"]
        for k in ("salad_called_coherent", "echo_called_coherent", "sensible_called_coherent")
    }
