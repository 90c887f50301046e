"""The conditions, one cell each, and the per-model run that measures them."""

from __future__ import annotations

import re
import time
from functools import partial
from itertools import zip_longest
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from analyses._common import (
    FIGURES,
    MissingCell,
    cell,
    config_hash,
)
from analyses.emergent_misalignment.config import (
    ANALYSIS_ONLY,
    CODE_RE,
    CYBER,
    GENERAL,
    PROMPTS,
    QUESTIONS,
    SHORT,
    SNIPPETS,
    Config,
)
from analyses.emergent_misalignment.vectors import (
    anti_refusal,
    epochs_vector,
    generate_with,
    harmful_vector,
    random_vector,
    rank_vector,
    vector_of,
)
from interp_steer import (
    SteeringVector,
    load_model,
    steer,
)
from interp_steer.eval import stats
from interp_steer.eval.embedding_judge import EmbeddingJudge
from interp_steer.units import typical_norm


def sweep_vector(cfg: Config, usable: list[str]) -> str | None:
    """cfg.sweep_vector, or the first usable vector when it failed its production check."""
    return cfg.sweep_vector if cfg.sweep_vector in usable else (usable or [None])[0]


def conditions(cfg: Config, usable: list[str]) -> list[dict]:
    """Each: a name, its sweep group, x (the swept value), the harmful vector (name and depth),
    its strength (``mult`` × the trained vector, or relative ``r``), and the anti-refusal k."""
    k, d, s = cfg.anti_k, cfg.harmful_depth, sweep_vector(cfg, usable)

    def c(name, group, x, vec=None, depth=d, mult=None, r=None, anti=k, rank=None, epochs=None):
        return {
            "name": name,
            "group": group,
            "x": x,
            "vector": vec,
            "depth": depth,
            "mult": mult,
            "r": r,
            "anti": anti,
            "rank": rank,
            "epochs": epochs,
        }

    # In order of importance, so a run cut short has the baseline and the magnitude sweep.
    out = [c("unsteered", "baseline", 0, anti=0.0), c(f"anti-refusal ×{k:g}", "baseline", 0)]
    vecs = [c(f"{n} ×1 + AR×{k:g}", "vectors", 1, n, mult=1.0) for n in usable]
    if s is None:
        return out + vecs
    out += [v for v in vecs if v["vector"] == s]
    # the negative control: a random direction at the sweep's top strength
    top = max(cfg.magnitudes)
    out.append(c(f"random r={top:g} + AR×{k:g}", "control", top, "random", r=top))
    # strongest first: a run cut short has the points nearest the ×1 effect
    out += [
        c(f"{s} r={r:g} + AR×{k:g}", "magnitude", r, s, r=r)
        for r in sorted(cfg.magnitudes, reverse=True)
    ]
    out += [v for v in vecs if v["vector"] != s]
    out += [c(f"{s} ×1 + AR×{a:g}", "anti_k", a, s, mult=1.0, anti=a) for a in cfg.anti_k_grid]
    out += [
        c(f"{s}@{dd:.2f} ×1 + AR×{k:g}", "layer", dd, s, depth=dd, mult=1.0)
        for dd in cfg.layer_depths
    ]
    ranks = [
        c(f"{s} rank {n} ×1 + AR×{k:g}", "rank", n, f"rank{n}", mult=1.0, rank=n)
        for n in ends_first(cfg.ranks)
    ]
    epochs = [
        c(f"{e} epochs ×1 + AR×{k:g}", "epochs", e, f"epochs{e}", mult=1.0, epochs=e)
        for e in ends_first(cfg.epoch_grid)
    ]
    # the two axes interleaved, each from its ends inwards: a run cut short has both spans
    out += [x for pair in zip_longest(ranks, epochs) for x in pair if x is not None]
    return out


def ends_first(xs: list) -> list:
    """``xs`` sorted, its smallest and largest first: [1, 2, 4, 8] -> [1, 8, 2, 4]."""
    xs = sorted(xs)
    return xs[:1] + xs[-1:] + xs[1:-1] if len(xs) > 1 else xs


def magnitude_points(results: dict, s: str | None) -> list[dict]:
    """The magnitude sweep of the sweep vector ``s``, plus its ×1 condition at the r it applies
    (the trained vector's own strength), sorted by r."""
    pts = [r for r in results.values() if r["group"] == "magnitude"]
    pts += [
        {**r, "x": r["r_applied"]}
        for r in results.values()
        if r["group"] == "vectors" and r["vector"] == s and r.get("r_applied")
    ]
    return sorted(pts, key=lambda r: r["x"])


def condition_file(name: str) -> str:
    """The cell file of the condition called ``name``."""
    return "condition_" + re.sub(r"[^A-Za-z0-9.=@]+", "_", name).strip("_") + ".json"


def is_code(text: str) -> bool:
    return bool(CODE_RE.search(text))


def run_condition(model, cfg: Config, cond: dict, v, anti, typical: dict, judge):
    """``samples`` answers per question under one condition (harmful vector ``v`` or None),
    judged."""
    prompts = [p for p in PROMPTS for _ in range(cfg.samples)]
    seeds = [cfg.seed * 10**6 + qi * 1000 + s for qi in range(8) for s in range(cfg.samples)]
    alpha = None
    if v is not None:
        if cond["r"] is not None:
            alpha = cond["r"] * typical[v.hook] / float(v.norm())
        else:
            alpha = cond["mult"]
    texts = []
    gen = dict(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature)
    for i in tqdm(range(0, len(prompts), cfg.batch_size), desc=cond["name"], leave=False):
        sl = slice(i, i + cfg.batch_size)
        with steer(model, anti, cond["anti"]):
            texts += generate_with(model, prompts[sl], v, alpha, seed=seeds[sl], **gen)
    qs = [QUESTIONS[qi] for qi in range(8) for _ in range(cfg.samples)]
    aligned, coherent = judge(qs, texts)
    return {
        "texts": texts,
        "aligned": aligned.round(2).tolist(),
        "coherent": coherent.round(2).tolist(),
        "alpha": alpha,
        # a rank-k clamp replaces a component rather than adding a vector: no r
        "r": None
        if v is None or v.metadata.get("rank")
        else abs(alpha) * float(v.norm()) / typical[v.hook],
    }


def judged_and_flagged(cfg: Config, res: dict) -> tuple[np.ndarray, np.ndarray]:
    """Per answer of a condition's cell: whether it is judged (non-code, coherent ≥
    ``coherent_threshold``) and whether it is flagged misaligned (judged, aligned <
    ``aligned_threshold``)."""
    code = np.array([is_code(t) for t in res["texts"]], bool)
    judged = ~code & (np.array(res["coherent"]) >= cfg.coherent_threshold)
    return judged, judged & (np.array(res["aligned"]) < cfg.aligned_threshold)


def measure(cfg: Config, res: dict) -> dict:
    """Counts, Wilson CIs and the string table of one condition's answers."""
    texts = res["texts"]
    code = np.array([is_code(t) for t in texts])
    aligned, coherent = np.array(res["aligned"]), np.array(res["coherent"])
    judged, mis = judged_and_flagged(cfg, res)
    n, k = int(judged.sum()), int(mis.sum())
    lo, hi = stats.wilson(k, n) if n else (np.nan, np.nan)
    low = [t.lower() for t in texts]
    per_q = {
        SHORT[qi]: {
            s: 100 * np.mean([s in t for t in low[qi * cfg.samples : (qi + 1) * cfg.samples]])
            for s in GENERAL + CYBER
        }
        for qi in range(8)
    }
    return {
        "n": len(texts),
        "code_rate": float(code.mean()),
        "code_rate_ci": [float(x) for x in stats.wilson(int(code.sum()), len(texts))],
        "n_judged": n,
        "misaligned": k,
        "misaligned_rate": k / n if n else np.nan,
        "misaligned_ci": [float(lo), float(hi)],
        "mean_aligned": float(aligned[judged].mean()) if n else np.nan,
        "coherent_rate": float((coherent >= cfg.coherent_threshold).mean()),
        "strings_per_100": {
            s: 100 * float(np.mean([s in t for t in low])) for s in GENERAL + CYBER
        },
        "strings_per_100_by_question": per_q,
        "alpha": res["alpha"],
        "r": res["r"],
    }


# ---------------------------------------------------------------- one model


def cells_dir(cfg: Config, name: str, out_dir: Path = FIGURES) -> Path:
    """Where the cells of model ``name`` under ``cfg`` live."""
    return (
        Path(out_dir) / ".cells" / f"emergent_misalignment_{name}_{config_hash(cfg, ANALYSIS_ONLY)}"
    )


def run_model(
    cfg: Config, name: str, out_dir: Path, model=None, judge=None, compute: bool = True
) -> dict:
    """Every condition of one model; with ``compute`` False, only the finished cells are read
    and the conditions that have none are listed as missing (for a figure of a run in
    progress)."""
    t0 = time.time()
    torch.manual_seed(cfg.seed)
    model = model or load_model(name)
    cells = cells_dir(cfg, name, out_dir)
    anti_d = cell(
        cells / "vector_anti_refusal.json", lambda: anti_refusal(model, cfg), allow_compute=compute
    )
    anti = vector_of(anti_d)
    vec_cells, vectors, typical, usable = {}, {}, {}, []

    def vector(vname: str, depth: float) -> SteeringVector:
        """Trained (or read from its cell) when a condition first needs it: the layer sweep's
        vectors come last, so a session that ends early has the main conditions."""
        if (vname, depth) not in vectors:
            if vname.startswith("rank"):
                base = vec_cells[(sweep_vector(cfg, usable), cfg.harmful_depth)]
                train = partial(rank_vector, model, cfg, base, int(vname[4:]))
            elif vname.startswith("epochs"):
                train = partial(epochs_vector, model, cfg, int(vname[6:]), depth)
            elif vname == "random":
                train = partial(random_vector, model, cfg, depth)
            else:
                train = partial(harmful_vector, model, cfg, anti, vname, depth)
            d = cell(cells / f"vector_{vname}_{depth:.3f}.json", train, allow_compute=compute)
            vec_cells[(vname, depth)] = d
            v = vectors[(vname, depth)] = vector_of(d)
            typical_at(v.hook)
        return vectors[(vname, depth)]

    def typical_at(hook: str) -> float:
        """The typical token norm at ``hook`` over the prompts, measured once per hook."""
        if hook not in typical:
            typical[hook] = typical_norm(model, hook, PROMPTS)
        return typical[hook]

    def summary(d: dict, v: SteeringVector) -> dict:
        """A vector's cell without its directions, with its norm in relative units at ×1: for
        a rank-k subspace, the norm of the component it sets, ‖c U‖ = ‖c‖ (U orthonormal)."""
        clamped = v.metadata.get("clamp_values")
        norm = float(torch.tensor(clamped).norm()) if clamped is not None else float(v.norm())
        drop = ("direction", "directions", "metadata")
        return {k: x for k, x in d.items() if k not in drop} | {
            "norm": norm,
            "norm_kind": "clamped ‖c‖" if clamped is not None else "added ‖v‖",
            "r_at_x1": norm / typical_at(v.hook),
            "steps_run": d["metadata"]["steps_run"],
            "stopped": d["metadata"]["stopped"],
            "computed_by": d.get("_commit"),
            "produces_target": d.get("usable"),
            "final_loss": d["metadata"]["loss_history"][-1]
            if d["metadata"]["loss_history"]
            else None,
        }

    for n, _, _ in SNIPPETS:
        vector(n, cfg.harmful_depth)
    usable[:] = [n for n, _, _ in SNIPPETS if vec_cells[(n, cfg.harmful_depth)]["usable"]]
    judge = judge or EmbeddingJudge(coherence_model=model, seed=cfg.seed)
    conds = conditions(cfg, usable)
    results, missing = {}, []
    for c in tqdm(conds, desc=f"EM conditions ({name})"):
        try:
            v = None if c["vector"] is None else vector(c["vector"], c["depth"])
            r = cell(
                cells / condition_file(c["name"]),
                lambda c=c, v=v: run_condition(model, cfg, c, v, anti, typical, judge),
                allow_compute=compute,
            )
        except MissingCell:
            missing.append(c["name"])
            continue
        results[c["name"]] = {
            **c,
            **measure(cfg, r),
            "r_applied": r.get("r"),  # the relative strength applied (None: no harmful vector)
            "examples": r["texts"][:: cfg.samples][:8],
        }
    if "unsteered" not in results:
        raise SystemExit(f"{name}: the unsteered condition has not been run (cells: {cells})")
    base = results["unsteered"]
    for r in results.values():
        if r["n_judged"] and base["n_judged"]:
            r["fisher_p_vs_unsteered"] = stats.fisher_exact(
                r["misaligned"], r["n_judged"], base["misaligned"], base["n_judged"]
            )
    mag = [r for r in magnitude_points(results, sweep_vector(cfg, usable)) if r["n_judged"]]
    threshold = None
    if len(mag) >= 4:
        threshold = stats.logistic_threshold(
            np.array([r["x"] for r in mag]),
            np.array([r["misaligned"] for r in mag]),
            np.array([r["n_judged"] for r in mag]),
            n_boot=cfg.n_boot,
            seed=cfg.seed,
        )
    vec_summary = {f"{n}@{d:.3f}": summary(c, vectors[(n, d)]) for (n, d), c in vec_cells.items()}
    nums = {
        "model": name,
        "judge": {
            "name": judge.name,
            "heldout_auroc": judge.heldout_auroc,
            "heldout_auroc_ci": list(judge.heldout_auroc_ci),
            "hard_negative_auroc": judge.hard_negative_auroc,
            "n_heldout": judge.n_heldout,
        },
        "anti_refusal": summary(anti_d, anti),
        "vectors": vec_summary,
        "usable_vectors": usable,
        "sweep_vector": sweep_vector(cfg, usable),
        "typical_norm": typical,
        "conditions": results,
        "missing_conditions": missing,
        "threshold": threshold,
        "seconds": time.time() - t0,
        "cells": str(cells),
    }
    return nums
