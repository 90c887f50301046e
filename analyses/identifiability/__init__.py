"""Non-identifiability of steering vectors, regenerated at our scale (Venkatesh & Kurapath),
to the pre-registered design of analyses/preregistration/identifiability.json.

python -m analyses.identifiability [--model smollm2-135m-instruct] [--quick] [--no-compute]

Per trait (formality, politeness, sentiment, agreeableness, truthfulness):
1. v = mean-diff of last-token residuals at blocks.{L//2}.hook_resid_pre; α·v is added at the
   last prompt token and every generated one (the paper's positions).
2. Operating point, on the trait dataset's own prompts (never evaluated): the r = ‖αv‖ /
   typical norm with the largest efficacy among those whose efficacy CI is above 0 and whose
   model-text coherence stays >= 80% of unsteered.
3. On the evaluation prompts (`datasets.trait_prompts`, written apart), seed-paired samples of
   unsteered, v, v with independent seeds (negative control) and v + δ, δ ⟂ v, for each
   source (covariance null space of generated tokens, random ⟂ v, Jacobian null space,
   Jacobian signal space) and size ‖δ‖/‖v‖; sample s of prompt p uses δ draw (p·S + s) mod D.
4. Retained = mean(v+δ − unsteered) / mean(v − unsteered), its CI from a two-level bootstrap
   (prompts × draws); paired TOST against v at ±20% of v's efficacy, Holm across traits;
   verdicts "equivalent", "different", "inconclusive" or "broken" (coherence < 0.9 × v's),
   allowed only where the trait's negative control passes with power >= 0.8 and its positive
   control (Jacobian null against signal δ) separates them.
Cells are written atomically under <out>/.cells/; the run computes every trait's base and
largest size first, then the smaller sizes, so a stopped run leaves whole traits.
--no-compute assembles the figures and summary from the cells present, computing none.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from functools import partial
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import torch  # noqa: E402

from analyses._common import arg_parser, cell, config_hash, require_clean  # noqa: E402
from analyses.identifiability import grid as G  # noqa: E402
from analyses.identifiability import logit as L  # noqa: E402
from analyses.identifiability import spaces as S  # noqa: E402
from analyses.identifiability.config import (  # noqa: E402
    ADDED_LATER,
    ANALYSIS_ONLY,
    NORM_DEFINITION,
    PRIMARY,
    Config,
)
from interp_steer import build_vector, chat, datasets, load_model  # noqa: E402
from interp_steer._io import write_json  # noqa: E402
from interp_steer.eval.classifiers import for_trait, validate  # noqa: E402
from interp_steer.eval.coherence import coherence_measure  # noqa: E402
from interp_steer.runs.cells import MissingCell  # noqa: E402
from interp_steer.runs.provenance import code_version, require_after  # noqa: E402
from interp_steer.units import typical_norm  # noqa: E402

__all__ = ["Config", "run", "headline", "main"]


def run(
    cfg: Config,
    out_dir: Path = Path("figures"),
    model=None,
    coherence=None,
    compute: bool = True,
) -> dict:
    """Run (or with ``compute=False`` only assemble) the study.

    Args:
        cfg: the configuration.
        out_dir: where figures, the summary and ``.cells/`` go.
        model: overrides loading ``cfg.model`` (tests).
        coherence: a (prompts, texts) -> [0, 1] measure; default the model-text head.
        compute: False assembles from the cells present and computes none (apart from the
            covariance corpus and the spaces, which are deterministic).
    """
    t_start = time.time()
    torch.manual_seed(cfg.seed)
    model = model if model is not None else load_model(cfg.model)
    if coherence is None:
        coherence = coherence_measure(model, "model-text")[0]
    layer = cfg.layer if cfg.layer is not None else model.cfg.n_layers // 2
    hook = f"blocks.{layer}.hook_resid_pre"
    stem = Path(out_dir) / f"identifiability_{cfg.model}{'_quick' if cfg.quick else ''}"
    # fields added after the first cells of the rerun were computed stay out of the hash at
    # their defaults, so those cells keep their folder
    later = tuple(k for k, v in ADDED_LATER.items() if getattr(cfg, k) == v)
    cells = Path(out_dir) / ".cells" / f"{stem.name}_{config_hash(cfg, ANALYSIS_ONLY + later)}"
    got = partial(cell, allow_compute=compute)

    corpus = cell(cells / "corpus.json", partial(S.corpus_cell, model, cfg, hook))
    raw_corpus, sets = S.corpus_prompts(cfg.corpus_prompts)
    typical = typical_norm(model, hook, [chat(model, p) for p in raw_corpus], chat=False)
    sp = S.spaces(model, cfg, hook, corpus)
    S.spectrum_figure(cfg, sp["numbers"], Path(f"{stem}_spectrum"))

    setup, traits = {}, {}
    for trait in cfg.traits:
        ds = datasets.load(trait)
        v = build_vector(model, ds, hook, method="mean_diff", seed=cfg.seed, progress=False)
        clf = for_trait(trait)[0]
        selection = ds.prompts[: cfg.selection_prompts]
        try:
            calib = got(
                cells / f"{trait}_calibration.json",
                partial(G.calibration_cell, model, cfg, v, selection, clf, coherence, typical),
            )
        except MissingCell:
            continue
        op, calibration = G.operating_point(calib, cfg)
        traits[trait] = {
            "classifier": clf.name,
            "classifier_validation": validate(clf, trait, n_boot=cfg.n_boot, seed=cfg.seed),
            "v_norm": float(v.norm()),
            "calibration": calibration,
            "calibration_examples": calib["examples"],
            "operating_point": op and {"alpha": op["alpha"], "r": op["r"]},
            "cells": [calib["_commit"]],
        }
        if op is None:
            traits[trait]["verdict"] = (
                "no operating point: no r has a significant efficacy with coherence"
            )
            continue
        prompts = datasets.trait_prompts(trait, cfg.n_prompts[trait])
        setup[trait] = (v, clf, prompts, op)

    # every trait's base and largest size first, then the smaller sizes
    done: dict = {}
    for strength in cfg.strengths:
        for k, size in enumerate(cfg.sizes):
            for trait, (v, clf, prompts, op) in setup.items():
                alpha = strength * op["alpha"]
                name = f"{trait}_s{strength:g}"
                try:
                    if k == 0:
                        done[(trait, strength, "base")] = got(
                            cells / f"{name}_base.json",
                            partial(G.base_cell, model, cfg, v, alpha, prompts, clf, coherence),
                        )
                    done[(trait, strength, size)] = got(
                        cells / f"{name}_d{size:g}.json",
                        partial(
                            G.grid_cell,
                            model,
                            cfg,
                            v,
                            alpha,
                            size,
                            sp["bases"],
                            prompts,
                            clf,
                            coherence,
                        ),
                    )
                except MissingCell:
                    continue

    for trait, (v, _, _, op) in setup.items():
        for strength in cfg.strengths:
            base = done.get((trait, strength, "base"))
            if base is None:
                continue
            grids = {
                s: done[(trait, strength, s)] for s in cfg.sizes if (trait, strength, s) in done
            }
            for c in [base, *grids.values()]:
                if abs(c["alpha"] - strength * op["alpha"]) > 1e-9 * max(1.0, abs(op["alpha"])):
                    raise RuntimeError(f"{trait}: a cached cell is at another alpha; delete it")
            res = G.analyse_trait(trait, base, grids, cfg, strength, strength * op["r"])
            draws = {s: G.delta_draws(v, sp["bases"], cfg, s) for s in grids}
            for row in res["rows"]:
                deltas = torch.stack(
                    [d.vector - v.vector for d in draws[row["size"]][row["source"]]]
                )
                row["mahalanobis"] = float(
                    S.mahalanobis(row["alpha"] * deltas, sp["whiten"]).mean()
                )
            traits[trait].update(res, r=strength * op["r"])
            traits[trait]["examples"] = {
                "unsteered": base["texts"][0][0][0],
                "v": base["texts"][1][0][0],
                **{
                    f"{src}@{s:g}": g["texts"][i][0][0]
                    for s, g in grids.items()
                    for i, src in enumerate(g["sources"])
                },
            }
            traits[trait]["cells"] += [c["_commit"] for c in [base, *grids.values()]]
    studied = {t: e for t, e in traits.items() if "rows" in e}
    rows = G.verdicts(studied, cfg)
    commits = sorted({c for e in traits.values() for c in e["cells"]})
    prereg = None
    if cfg.preregistration is not None:
        prereg = {
            "file": cfg.preregistration,
            "commit": require_after(cfg.preregistration, commits),
            "margin": [1 - cfg.margin, 1 + cfg.margin],
            "correction": "Holm across traits within each source × size × strength family; the "
            f"primary family is {PRIMARY}",
        }

    extra = {}
    for t in list(studied)[: cfg.conditions_traits]:
        v, _, _, op = setup[t]
        make = partial(L.conditions_cell, model, cfg, t, v, hook, sp["null_space"], op["alpha"])
        try:
            extra[t] = got(cells / f"{t}_conditions.json", make)
        except MissingCell:
            continue
    if extra:
        L.conditions_figure(cfg, extra, Path(f"{stem}_conditions"))
    overlap = S.overlap_figure(
        model,
        cfg,
        hook,
        {k: [chat(model, p) for p in v] for k, v in sets.items()},
        Path(f"{stem}_overlap"),
    )
    if traits:
        G.operating_figure(cfg, traits, Path(f"{stem}_operating"))
    if rows:
        G.grid_figure(cfg, studied, rows, Path(f"{stem}_grid"))

    summary = {
        "config": asdict(cfg),
        "interp_steer": code_version(),
        "seed": cfg.seed,
        "model": cfg.model,
        "hook": hook,
        "positions": cfg.positions,
        "typical_norm": typical,
        "norm_definition": NORM_DEFINITION,
        "preregistration": prereg,
        "cell_commits": commits,
        "spaces": {k: v for k, v in sp["numbers"].items() if k != "spectrum"},
        "grid": rows,
        "controls": {
            "negative": {t: e["negative"] for t, e in studied.items()},
            "positive": {t: G.largest_size(e["positive"]) for t, e in studied.items()},
        },
        "n_prompts": {t: e["n_prompts"] for t, e in studied.items()},
        "traits": {t: {k: v for k, v in e.items() if k != "rows"} for t, e in traits.items()},
        "seconds": time.time() - t_start,
    }
    write_json(Path(f"{stem}_summary.json"), summary)
    return {"summary": summary, "overlap": overlap}


def headline(res: dict, cfg: Config) -> str:
    s = res["summary"]
    lines = [
        f"identifiability ({cfg.model}, {s['hook']}, {'quick' if cfg.quick else 'full'}, "
        f"{s['seconds']:.0f} s); retained by v + δ, 95% CI over prompts × δ draws:",
        f"  {'trait':<14}{'source':<18}{'size':>5}{'retained [CI]':>22}{'coh/v':>7}  verdict",
    ]
    for row in s["grid"]:
        lo, hi = row["retained_ci"]
        lines.append(
            f"  {row['trait']:<14}{row['source']:<18}{row['size']:>5g}"
            f"{row['retained']:>8.0%} [{lo:>5.0%},{hi:>5.0%}]{row['coherence_ratio']:>7.2f}  {row['verdict']}"
        )
    for t, e in s["traits"].items():
        if not e.get("operating_point"):
            lines.append(f"  {t:<14}no operating point")
            continue
        op, eff = e["operating_point"], e["efficacy"]
        lo, hi = eff["ci"]
        lines.append(
            f"  v on {t}: r = {op['r']:g} (α = {op['alpha']:.3g}), efficacy {eff['mean']:+.3f} "
            f"[{lo:+.3f}, {hi:+.3f}] over {e['n_prompts']} prompts"
            + ("" if lo > 0 else ": its CI includes 0, so retained fractions are not informative")
        )
    for t, neg in s["controls"]["negative"].items():
        pos = s["controls"]["positive"][t]
        lines.append(
            f"  controls {t}: negative {G.negative_label(neg, cfg)} (p {neg['tost_p']:.3g}, "
            f"power {neg['power']:.2f}); positive {'pass' if pos.get('detected') else 'FAIL'}"
            + (f" (p {pos['p']:.2g}, gap {pos['gap']:+.2f})" if pos else "")
        )
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = arg_parser(__doc__)
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--traits", nargs="+", default=None, help="subset of traits, in order")
    ap.add_argument("--sizes", nargs="+", type=float, default=None, help="‖δ‖/‖v‖ values to run")
    ap.add_argument(
        "--no-compute", action="store_true", help="assemble from the cells present; compute none"
    )
    args = ap.parse_args(argv)
    require_clean(args)
    kw = {"model": args.model, "seed": args.seed}
    if args.traits:
        kw["traits"] = args.traits
    if args.sizes:
        kw["sizes"] = args.sizes
    cfg = (Config.quick_config if args.quick else Config)(**kw)
    res = run(cfg, args.out, compute=not args.no_compute)
    print(headline(res, cfg))
    name = f"identifiability_{cfg.model}{'_quick' if cfg.quick else ''}_summary.json"
    print(f"(every number, with its config: {args.out}/{name})")
