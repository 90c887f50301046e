"""Steering vectors against SAE interventions at equal KL (issue 42), to the pre-registered
design of analyses/preregistration/sae_vs_steering.json.

python -m analyses.sae_vs_steering [--model smollm2-135m-instruct] [--quick] [--no-compute]

Per trait (sentiment, formality, politeness), at the default SAE's hook:
1. The contrastive pairs lose their surface cues (final punctuation, "!", a lower-case first
   letter); mean_diff is built from them, and the latent is chosen on the trait dataset's own
   prompts (never evaluated) by its output effect: among the top latents by contrast and by
   decoder cosine, the one whose decoder direction gives the most coherent success at KL 0.3.
2. Four methods, each calibrated by bisection to every target KL (0.1 … 1.0 nats, measured at
   the generation positions of the evaluation prompts; a level a method cannot reach is
   reported, never filled with a boundary value): mean_diff (α·v), sae_feature (α along the
   latent's decoder direction), sae_clamp (the latent set to c), sae_ablate (the latents most
   active on the negative side moved a fraction s of the way to 0, s may exceed 1). Every edit
   skips position 0, which the SAE never saw.
3. On `datasets.trait_prompts` (written apart): samples paired by prompt and seed; success =
   the trait score where the model-text coherence measure calls the text coherent; each SAE
   method minus mean_diff per prompt, cluster-bootstrap CI, paired t, Holm over the trait's
   contrasts. "Falls short" only where that holds at >= 3 of 5 KL levels.
4. Beside it: a prompting baseline, concept detection AUROC on held-out hand-written texts,
   survival of mean_diff's effect after ablating its top latents against frequency-matched
   random latents, the share of the vector in the SAE's error term, and the SAE's EV and CE
   recovered on this study's own text.
Cells are written atomically under <out>/.cells/; --no-compute assembles from those present.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict
from functools import partial
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import torch  # noqa: E402

from analyses._common import arg_parser, cell, config_hash, require_clean  # noqa: E402
from analyses.sae_vs_steering import analysis as A  # noqa: E402
from analyses.sae_vs_steering import conditions as C  # noqa: E402
from analyses.sae_vs_steering.config import (  # noqa: E402
    ANALYSIS_ONLY,
    DESIGN,
    KL_DEFINITION,
    METHODS,
    PROMPTING,
    Config,
)
from analyses.sae_vs_steering.figures import figure  # noqa: E402
from interp_steer import chat, datasets, load_model  # noqa: E402
from interp_steer import sae as S  # noqa: E402
from interp_steer._io import write_json  # noqa: E402
from interp_steer.eval.classifiers import success_scorer  # noqa: E402
from interp_steer.eval.coherence import coherence_measure  # noqa: E402
from interp_steer.runs.cells import MissingCell  # noqa: E402
from interp_steer.runs.provenance import (  # noqa: E402
    code_version,
    file_commit,
    require_after,
)
from interp_steer.units import NORM_DEFINITION, r_of, typical_norm  # noqa: E402
from interp_steer.vectors import SteeringVector, model_fingerprint  # noqa: E402

__all__ = ["Config", "run", "headline", "main"]


def check_design(cfg: Config) -> str:
    """The pre-registration's commit, after checking that ``cfg`` is its design (the fields
    in `DESIGN`, and traits among its traits) and that this checkout is clean: a run that
    would not be the registered design refuses before computing anything."""
    reg = json.loads(Path(cfg.preregistration).read_text())
    want = reg["config"]
    diff = [f for f in DESIGN if getattr(cfg, f) != want[f]]
    extra = [t for t in cfg.traits if t not in reg["traits"]]
    if diff or extra:
        raise ValueError(
            f"not the pre-registered design ({cfg.preregistration}): "
            + ", ".join([f"{f}={getattr(cfg, f)!r} (registered {want[f]!r})" for f in diff])
            + (f" traits {extra} not registered" if extra else "")
        )
    if "+dirty" in code_version():
        raise RuntimeError("refusing to compute pre-registered cells from a dirty checkout")
    return file_commit(cfg.preregistration)


def cells_key(cfg: Config, sae, coherence) -> str:
    """Cells depend on the config, the SAE's weights and the coherence measure."""
    h = hashlib.sha256(sae.W_dec.detach().float().cpu().numpy().tobytes())
    h.update(str(getattr(coherence, "name", type(coherence).__name__)).encode())
    return f"{config_hash(cfg, ANALYSIS_ONLY)}_{h.hexdigest()[:8]}"


def trait_cells(model, sae, trait, cfg, cells: Path, coherence, compute: bool) -> dict:
    """Every cell of one trait (selection, base, calibration, each reachable condition, the
    random-latent control); a cell missing under ``compute=False`` is left out."""
    got = partial(cell, allow_compute=compute)
    success = success_scorer(trait)
    selection = [chat(model, p) for p in datasets.load(trait).prompts]
    raw = datasets.trait_prompts(trait, cfg.n_prompts)
    prompts = [chat(model, p) for p in raw]
    parts = got(
        cells / f"{trait}_selection.json",
        partial(C.selection_cell, model, sae, trait, cfg, selection, success, coherence),
    )
    reps = [p for p in prompts for _ in range(cfg.n_samples)]

    def base():
        prompted = [chat(model, p, system=PROMPTING[trait]) for p in raw]
        return {
            "unsteered": C.score_texts(
                reps, C.sample(model, prompts, cfg, cfg.n_samples), success, coherence
            ),
            "prompting": C.score_texts(
                reps, C.sample(model, prompted, cfg, cfg.n_samples), success, coherence
            ),
        }

    base_cell = got(cells / f"{trait}_base.json", base)
    # the KL reference: sample 0 of each prompt, unsteered
    completions = base_cell["unsteered"]["texts"][:: cfg.n_samples]
    calib = got(
        cells / f"{trait}_calibration.json",
        partial(C.calibration_cell, model, sae, cfg, parts, prompts, completions),
    )
    cal = calib["settings"]
    makers = C.edits(model, sae, cfg, parts)
    grid = {}
    for t in cfg.target_kls:
        for m in METHODS:
            c = cal[m][f"{t:g}"]
            if c["setting"] is None:
                continue

            def make(m=m, c=c):
                texts = C.sample(
                    model, prompts, cfg, cfg.n_samples, lambda: makers[m](c["setting"])
                )
                return {"setting": c["setting"], **C.score_texts(reps, texts, success, coherence)}

            try:
                g = got(cells / f"{trait}_{m}_kl{t:g}.json", make)
            except MissingCell:
                continue
            if g["setting"] != c["setting"]:  # the calibration was recomputed since
                raise RuntimeError(f"{trait} {m} KL {t:g}: the cell's setting is stale; delete it")
            grid[(m, t)] = g
    survival = None
    md = cal["mean_diff"][f"{cfg.selection_kl:g}"]
    if md["setting"] is not None:
        # reference activations: every prompt with its unsteered completion
        ref = S.token_activations(
            model,
            S.Corpus.from_texts(model, [p + c for p, c in zip(prompts, completions)]),
            S.sae_hook(sae),
            progress=False,
        )[0]
        try:
            survival = got(
                cells / f"{trait}_survival.json",
                partial(A.survival_cell, model, sae, parts, md["setting"], prompts, ref, cfg),
            )
        except MissingCell:
            pass
    return {
        "parts": parts,
        "base": base_cell,
        "calibration": cal,
        "commits": [parts["_commit"], base_cell["_commit"], calib["_commit"]]
        + [g["_commit"] for g in grid.values()]
        + ([survival["_commit"]] if survival else []),
        "grid": grid,
        "survival": survival,
        "prompts": prompts,
        "completions": completions,
    }


def run(
    cfg: Config,
    out_dir: Path = Path("figures"),
    model=None,
    sae=None,
    coherence=None,
    compute: bool = True,
) -> dict:
    """Run (or with ``compute=False`` only assemble) the study.

    Args:
        cfg: the configuration.
        out_dir: where the figure, the summary and ``.cells/`` go.
        model: overrides loading ``cfg.model`` (tests).
        sae: overrides `sae.load_default` (tests).
        coherence: a (prompts, texts) -> [0, 1] measure; default the model-text head.
        compute: False assembles from the cells present and computes none.
    """
    t_start = time.time()
    if cfg.preregistration is not None and compute:
        check_design(cfg)
    model = model if model is not None else load_model(cfg.model)
    default_sae = sae is None
    sae = sae if sae is not None else S.load_default(model, progress=False)
    if coherence is None:
        coherence = coherence_measure(model, "model-text")[0]
    hook = S.sae_hook(sae)
    stem = Path(out_dir) / f"sae_vs_steering_{cfg.model}{'_quick' if cfg.quick else ''}"
    cells = Path(out_dir) / ".cells" / f"{stem.name}_{cells_key(cfg, sae, coherence)}"
    traits, conditions, contrasts, commits, texts = {}, [], [], set(), []
    for trait in cfg.traits:
        try:
            tc = trait_cells(model, sae, trait, cfg, cells, coherence, compute)
        except MissingCell:
            continue
        parts, cal = tc["parts"], tc["calibration"]
        commits |= set(tc["commits"])
        norm = typical_norm(model, hook, tc["prompts"], chat=False)
        md = SteeringVector(torch.tensor([parts["mean_diff"]]), hook, model_fingerprint(model))
        rows, usable = [], {}
        for m in METHODS:
            for t in cfg.target_kls:
                c = cal[m][f"{t:g}"]
                if (m, t) not in tc["grid"]:
                    why = c["unreachable"] or "not computed (cell missing)"
                    rows.append(
                        {
                            "trait": trait,
                            "method": m,
                            "target_kl": t,
                            "kl": c["kl"],
                            "kl_at_zero": c["kl_at_zero"],
                            "unreachable": why,
                            "success": None,
                        }
                    )
                    continue
                r = r_of(md, c["setting"], norm) if m == "mean_diff" else None
                row = A.condition_row(trait, m, t, tc["grid"][(m, t)], c, cfg, r)
                rows.append(row)
                if row["within_tolerance"]:
                    usable[(m, t)] = tc["grid"][(m, t)]
        for k in ("unsteered", "prompting"):
            rows.append(A.condition_row(trait, k, None, tc["base"][k], None, cfg))
        con = A.paired_contrasts(trait, usable, cfg)
        conditions += rows
        contrasts += con
        traits[trait] = {
            "latent": parts["latent"],
            "candidates": parts["candidates"],
            "ablated": parts["ablated"],
            "surface_cues_before": parts["surface_cues_before"],
            "surface_cues_left": parts["surface_cues_left"],
            "verdicts": A.method_verdicts(con, cfg),
            "detection_auroc": A.detection(model, sae, trait, parts, cfg),
            "random_latent_control": tc["survival"],
            "null_space": A.null_space_fractions(
                model,
                hook,
                [p for p in tc["prompts"] for _ in range(cfg.n_samples)],
                tc["base"]["unsteered"]["texts"],
                {
                    "mean_diff": parts["mean_diff"],
                    "sae_feature": S.feature_vector(sae, parts["latent"], model).vector,
                },
                cfg,
            ),
        }
        texts += [p + c for p, c in zip(tc["prompts"], tc["completions"])]
    saes = {}
    if texts:
        report = S.report_of(S.default_path(model, hook)) if default_sae else None
        saes["default" if default_sae else "given"] = {
            **A.sae_quality(model, sae, texts),
            "d_sae": int(sae.cfg.d_sae),
            "heldout_at_training": (report or {}).get("heldout"),
            "weights": (report or {}).get("weights", "float32"),
        }
    commits = sorted(commits)
    prereg = None
    if cfg.preregistration is not None and commits:
        prereg = {
            "file": cfg.preregistration,
            "commit": require_after(cfg.preregistration, commits),
        }
    summary = {
        "config": asdict(cfg),
        "interp_steer": code_version(),
        "seed": cfg.seed,
        "model": cfg.model,
        "hook": hook,
        "kl_definition": KL_DEFINITION,
        "norm_definition": NORM_DEFINITION,
        "preregistration": prereg,
        "cell_commits": commits,
        "conditions": conditions,
        "contrasts": contrasts,
        "prompting": {r["trait"]: r for r in conditions if r["method"] == "prompting"},
        "detection_auroc": {t: e["detection_auroc"] for t, e in traits.items()},
        "random_latent_control": {t: e["random_latent_control"] for t, e in traits.items()},
        "null_space": {t: e["null_space"] for t, e in traits.items()},
        "saes": saes,
        "traits": traits,
        "seconds": time.time() - t_start,
    }
    write_json(Path(f"{stem}_summary.json"), summary)
    if conditions:
        figure(cfg, summary, stem)
    return {"summary": summary}


def headline(res: dict, cfg: Config) -> str:
    s = res["summary"]
    lines = [f"sae vs steering ({cfg.model}, {s['hook']}, {s['seconds']:.0f} s): coherent success"]
    for t, e in s["traits"].items():
        rows = [r for r in s["conditions"] if r["trait"] == t]
        base = {r["method"]: r for r in rows if r["target_kl"] is None}
        lines.append(
            f"  {t} (latent {e['latent']}): unsteered {base['unsteered']['success']:.2f}, "
            f"prompting {base['prompting']['success']:.2f}"
        )
        for m in METHODS:
            cells_ = [r for r in rows if r["method"] == m]
            vals = " ".join(
                f"{r['target_kl']:g}:{'—' if r['success'] is None else format(r['success'], '.2f')}"
                for r in cells_
            )
            lines.append(f"    {m:<12} {vals}   {e['verdicts'].get(m, '')}")
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = arg_parser(__doc__)
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--traits", nargs="+", default=None, help="subset of traits, in order")
    ap.add_argument(
        "--no-compute", action="store_true", help="assemble from the cells present; compute none"
    )
    args = ap.parse_args(argv)
    require_clean(args)
    kw = {"model": args.model, "seed": args.seed}
    if args.traits:
        kw["traits"] = args.traits
    cfg = (Config.quick_config if args.quick else Config)(**kw)
    res = run(cfg, args.out, compute=not args.no_compute)
    print(headline(res, cfg))
