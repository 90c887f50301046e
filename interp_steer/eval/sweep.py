"""Strength sweeps over (vector, layer, alpha) and alpha calibration.

Each vector's whole alpha grid is one batched generation (per-row alphas), scored with
`interp_steer.eval.metrics`. Layers are covered by passing vectors at different hooks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
from transformer_lens import HookedTransformer

from interp_steer._io import write_json, write_text
from interp_steer.eval import metrics
from interp_steer.generation import format_prompts, generate
from interp_steer.interventions import steer
from interp_steer.runs.executor import Cell, Executor, ResultStore, run_grid
from interp_steer.runs.provenance import code_version
from interp_steer.units import r_of, typical_norm
from interp_steer.vectors import SteeringVector

Scorer = Callable[[list[str]], np.ndarray]


@dataclass(frozen=True)
class SweepConfig:
    alphas: tuple[float, ...]
    samples_per_prompt: int = 4
    max_new_tokens: int = 48
    temperature: float = 1.0
    top_p: float = 0.95
    seed: int = 0
    batch_size: int = 64
    chat: bool = True
    extra: dict = field(default_factory=dict)


def sweep(
    model: HookedTransformer,
    vectors: dict[str, SteeringVector],
    alphas: Sequence[float],
    prompts: Sequence[str],
    success: Scorer | None = None,
    samples_per_prompt: int = 4,
    max_new_tokens: int = 48,
    temperature: float = 1.0,
    top_p: float = 0.95,
    seed: int = 0,
    batch_size: int = 64,
    chat: bool = True,
    diversity: bool = True,
    kl: bool = True,
    embed=None,
    judge=None,
    out: str | Path | None = None,
    progress: bool = True,
    executor: Executor = "local",
    workers: int | None = None,
    resume: bool = False,
    load: Callable[[], HookedTransformer] | None = None,
    alphas_per_cell: int | None = None,
    unsteered: bool = True,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Evaluate every (vector, alpha). Returns (summary per vector × alpha, one row per sample).

    alpha = 0 (the unsteered reference) is added unless ``unsteered=False``. ``judge``: optional
    (questions, answers) -> (scores 0-100, mass), e.g. a `interp_steer.eval.judges.LocalJudge`;
    adds a ``judge`` column. ``out``: a path stem; writes ``{out}.csv``, ``{out}_samples.csv``,
    ``{out}.json`` and the per-cell results store ``{out}.cells/``.

    The grid runs as cells of (vector, ``alphas_per_cell`` strengths) through
    `interp_steer.runs.executor` (``executor="ray"`` spreads them over workers, each loading the
    model with ``load`` when given, else receiving ``model``; ``resume`` skips finished cells).
    Sample (alpha_i, prompt p, sample s) is drawn with seed ``seed + (i·P + p)·S + s``, so the
    rows do not depend on how the grid is cut into cells or where a cell runs.
    """
    if not vectors:
        raise ValueError("no vectors given")
    if not prompts:
        raise ValueError("no prompts given")
    if samples_per_prompt < 1 or (diversity and samples_per_prompt < 2):
        raise ValueError("samples_per_prompt must be >= 2 for set-level diversity")
    alphas = sorted({*([0.0] if unsteered else []), *map(float, alphas)})
    if not alphas:
        raise ValueError("no strengths to sweep (alphas empty and unsteered=False)")
    cfg = SweepConfig(
        tuple(alphas),
        samples_per_prompt,
        max_new_tokens,
        temperature,
        top_p,
        seed,
        batch_size,
        chat,
    )
    per_alpha = len(prompts) * samples_per_prompt
    chunk = alphas_per_cell or max(1, -(-batch_size // per_alpha))  # fill at least one batch
    cells = [
        Cell(f"{name}_a{i:03d}", {"vector": name, "alphas": list(enumerate(alphas))[i : i + chunk]})
        for name in vectors
        for i in range(0, len(alphas), chunk)
    ]
    work = partial(
        _sweep_cell,
        vectors=vectors,
        prompts=list(prompts),
        success=success,
        judge=judge,
        kl=kl,
        cfg=cfg,
        progress=progress and executor == "local",
    )
    store = None
    if out is not None:
        store = ResultStore(
            Path(out).parent / f"{Path(out).name}.cells",
            {
                "sweep": asdict(cfg),
                "vectors": {n: _fingerprint(v) for n, v in vectors.items()},
                "prompts": list(prompts),
                "success": _scorer_name(success),
                "judge": _scorer_name(judge),
                "kl": kl,
                "chunk": chunk,
            },
        )
    parts = run_grid(
        cells,
        work,
        load if load is not None and executor == "ray" else model,
        executor=executor,
        workers=workers,
        store=store,
        resume=resume,
        progress=progress,
    )
    samples = pd.DataFrame([r for rows in parts for r in rows])
    # scores that are functions of a sample's text (and stored perplexity) are computed here,
    # not in the cell, so that finished cells are scored by the current metrics
    texts = samples.text.fillna("").tolist()
    samples["coherence"] = metrics.coherence_from(samples.ppl.to_numpy(), texts)
    samples["distinct_2"] = [metrics.distinct_n(t, 2) for t in texts]
    summary = summarise(samples, diversity=diversity, embed=embed)
    if kl:
        # computed per cell, one value per (vector, alpha), on the formatted prompts
        per = samples.groupby(["vector", "alpha"], sort=False).kl.first()
        summary["kl"] = [per[(v, a)] for v, a in zip(summary.vector, summary.alpha)]
    samples = samples.drop(columns="kl")
    if out is not None:
        save_sweep(out, summary, samples, asdict(cfg))
    return summary, samples


def _fingerprint(v: SteeringVector) -> dict:
    """The vector as the results store compares it: its hook and its components (compared to a
    float tolerance, not hashed, so the store resumes on a CPU whose last bits differ)."""
    return {"hook": v.hook, "directions": v.directions.float().cpu().tolist()}


def _scorer_name(obj) -> str | None:
    """A stable description of a scorer for the results-store config (None when absent)."""
    if obj is None:
        return None
    return getattr(obj, "name", None) or type(obj).__qualname__


def _sweep_cell(
    model: HookedTransformer,
    cell: Cell,
    vectors: dict[str, SteeringVector],
    prompts: list[str],
    success: Scorer | None,
    judge,
    kl: bool,
    cfg: SweepConfig,
    progress: bool,
) -> list[dict]:
    """One (vector, strengths) cell of `sweep`: its sample rows."""
    name, vec = cell.args["vector"], vectors[cell.args["vector"]]
    s_per = cfg.samples_per_prompt
    grid = [
        (i, a, p, s)
        for i, a in cell.args["alphas"]
        for p in range(len(prompts))
        for s in range(s_per)
    ]
    formatted = format_prompts(model, prompts, cfg.chat)
    texts = generate(
        model,
        [prompts[p] for _, _, p, _ in grid],
        vector=vec,
        alphas=[a for _, a, _, _ in grid],
        max_new_tokens=cfg.max_new_tokens,
        temperature=cfg.temperature,
        top_p=cfg.top_p,
        seed=[cfg.seed + (i * len(prompts) + p) * s_per + s for i, _, p, s in grid],
        batch_size=cfg.batch_size,
        chat=cfg.chat,
        progress=progress,
    )
    ppl = metrics.perplexity(model, [formatted[p] for _, _, p, _ in grid], texts)
    scores = success(texts) if success is not None else np.full(len(texts), np.nan)
    judged = (
        judge([prompts[p] for _, _, p, _ in grid], texts)[0]
        if judge is not None
        else np.full(len(texts), np.nan)
    )
    # r = ‖αv‖ / typical token norm (median over non-first tokens), the unit used everywhere
    resid = typical_norm(model, vec.hook, prompts, cfg.chat)
    cell_alphas = [a for _, a in cell.args["alphas"]]
    kls = (
        metrics.kl_from_unsteered(model, vec, cell_alphas, formatted)
        if kl
        else [np.nan] * len(cell_alphas)
    )
    kl_of = dict(zip(cell_alphas, kls))
    return [
        dict(
            vector=name,
            hook=vec.hook,
            alpha=a,
            prompt=p,
            sample=s,
            text=t,
            ppl=float(pp),
            success=float(sc),
            judge=float(jd),
            r=r_of(vec, a, resid),
            kl=float(kl_of[a]),
        )
        for (_, a, p, s), t, pp, sc, jd in zip(grid, texts, ppl, scores, judged)
    ]


# diversity is measured over coherent samples only: degenerate text (salad) is lexically
# "diverse" and would otherwise reward collapse
COHERENT = 0.5


def summarise(samples: pd.DataFrame, diversity: bool = True, embed=None) -> pd.DataFrame:
    """Per (vector, alpha): mean success and coherence, diversity over the coherent samples
    (coherence >= COHERENT) only, and the harmonic mean. ``distinct_2`` is sample-level
    (within a text), ``embedding_diversity`` set-level (1 − mean pairwise cosine among one
    prompt's coherent samples, prompts with fewer than two skipped); NaN when no sample is
    coherent, and the HM is then 0. Without a success scorer the HM is NaN (unknown), not 0."""
    if "r" not in samples and "rel_strength" in samples:  # rows stored before units.py
        samples = samples.rename(columns={"rel_strength": "r"})
    out = []
    for name, g in samples.groupby("vector", sort=False):
        for a, ga in g.groupby("alpha"):
            ok = ga[ga.coherence >= COHERENT]
            row = dict(
                vector=name,
                hook=ga.hook.iloc[0],
                alpha=a,
                r=ga.r.iloc[0],
                success=float(ga.success.mean()),
                ppl=float(np.nanmedian(ga.ppl)),
                judge=float(ga.judge.mean()),
                coherence=float(ga.coherence.mean()),
                coherent_fraction=float(len(ok) / len(ga)),
                distinct_2=float(ok.distinct_2.mean()) if len(ok) else float("nan"),
                ngram_entropy=metrics.ngram_entropy(ok.text.tolist()),
            )
            if diversity:
                emb = [
                    metrics.embedding_diversity(gp.text.tolist(), embed)
                    for _, gp in ok.groupby("prompt")
                    if len(gp) >= 2
                ]
                row["embedding_diversity"] = float(np.mean(emb)) if emb else float("nan")
                row["diversity"] = (row["distinct_2"] + row["embedding_diversity"]) / 2
                row["hm"] = (
                    metrics.harmonic_mean(row["success"], row["coherence"], row["diversity"])
                    if not np.isnan(row["success"])
                    else float("nan")
                )
            out.append(row)
    return pd.DataFrame(out)


def save_sweep(
    stem: str | Path, summary: pd.DataFrame, samples: pd.DataFrame, config: dict
) -> None:
    stem = Path(stem)
    # stem.name + suffix, not with_suffix: "qwen2.5-coder-0.5b" would lose its ".5b"
    write_text(stem.parent / f"{stem.name}.csv", summary.to_csv(index=False))
    write_text(stem.parent / f"{stem.name}_samples.csv", samples.to_csv(index=False))
    write_json(
        stem.parent / f"{stem.name}.json",
        {"config": config, "interp_steer": code_version(), "summary": summary.to_dict("records")},
    )


class Unreachable(ValueError):
    """`bisect_increasing` cannot bracket its target (not a bad input: the function's range)."""


def bisect_increasing(
    f: Callable[[float], float], target: float, max_x: float, tol: float = 0.02
) -> float:
    """x ≥ 0 with f(x) ≈ target for an increasing f with f(0) < target (doubling, then
    bisection to a relative width ``tol``).

    Raises `Unreachable` (a ValueError) instead of returning a boundary value when the target
    cannot be bracketed: f(0) already at or above it, f below it up to ``max_x``, or a
    crossing that shrinks to x = 0.
    """
    f0 = f(0.0)
    if not f0 < target:
        raise Unreachable(f"f(0) = {f0:.4g} is already >= the target {target}: nothing to bracket")
    lo, hi = 0.0, 1.0
    while f(hi) < target:
        lo, hi = hi, hi * 2
        if hi > max_x:
            raise Unreachable(f"value stays below {target} up to {max_x}")
    for _ in range(64):
        if hi - lo <= tol * hi:
            return (lo + hi) / 2
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if f(mid) < target else (lo, mid)
    raise Unreachable(f"f jumps past {target} at x -> 0 (below {hi:.3g}): no interior crossing")


def calibrate(
    model: HookedTransformer,
    vector: SteeringVector,
    prompts: Sequence[str],
    target_kl: float | None = None,
    target_success: float | None = None,
    success: Scorer | None = None,
    alphas: Sequence[float] | None = None,
    sign: float = 1.0,
    max_alpha: float = 64.0,
    tol: float = 0.02,
    chat: bool = True,
    **sweep_kw,
) -> float:
    """The strength that reaches ``target_kl`` (iso-KL, by bisection on next-token KL from the
    unsteered model) or ``target_success`` (first crossing on a swept grid, interpolated).

    ``success``, ``alphas`` and ``sweep_kw`` (passed to `sweep`) belong to ``target_success``;
    with ``target_kl`` they raise rather than being ignored.
    """
    if (target_kl is None) == (target_success is None):
        raise ValueError("give exactly one of target_kl or target_success")
    if target_kl is not None:
        if target_kl <= 0:
            raise ValueError("target_kl must be positive")
        unused = sorted(sweep_kw) + [
            n for n, v in (("success", success), ("alphas", alphas)) if v is not None
        ]
        if unused:  # the KL path runs no sweep: these would be silently ignored
            raise ValueError(f"target_kl calibrates by bisection and uses no {unused}")

        # one unsteered forward for the whole bisection, not one per evaluation
        measure = metrics.kl_meter(model, format_prompts(model, prompts, chat))

        def f(a: float) -> float:
            return float(measure([lambda: steer(model, vector, sign * a)])[0])

        return sign * bisect_increasing(f, target_kl, max_alpha, tol)
    if success is None or alphas is None:
        raise ValueError("target_success needs success= and an alphas grid")
    summary, _ = sweep(
        model,
        {"v": vector},
        alphas,
        prompts,
        success,
        diversity=False,
        kl=False,
        progress=False,
        chat=chat,
        **sweep_kw,
    )
    s = summary.sort_values("alpha", key=lambda x: sign * x)
    s = s[sign * s.alpha >= 0]
    a, y = s.alpha.to_numpy(), s.success.to_numpy()
    hit = np.nonzero(y >= target_success)[0]
    if len(hit) == 0:
        raise ValueError(f"success never reaches {target_success} on the grid (max {y.max():.2f})")
    i = hit[0]
    if i == 0:
        return float(a[0])
    return float(a[i - 1] + (target_success - y[i - 1]) * (a[i] - a[i - 1]) / (y[i] - y[i - 1]))
