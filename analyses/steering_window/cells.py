"""The cells: the screen, each fact's vectors, target curves and capability."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from analyses._common import (
    MissingCell,
    cell,
)
from analyses.steering_window.config import (
    PROBE,
    RUN_START_COMMIT,
    Config,
    facts,
    statements,
)
from analyses.steering_window.window import (
    first_majority,
    window,
    window_ci,
)
from interp_steer import build_vector, generate
from interp_steer.eval import metrics
from interp_steer.eval.stats import wilson
from interp_steer.units import typical_norm


def _grade(texts: list[str], pattern: str) -> list[int]:
    return [int(bool(re.search(pattern, t, re.IGNORECASE))) for t in texts]


def _sample(model, cfg: Config, prompts, vec=None, alphas=None, tokens=None, seed=0):
    return generate(
        model,
        prompts,
        vector=vec,
        alphas=alphas,
        temperature=cfg.temperature,
        max_new_tokens=tokens or cfg.answer_tokens,
        seed=seed,
        batch_size=cfg.batch_size,
        progress=True,
    )


def screen(model, cfg: Config) -> dict:
    fs = facts()
    prompts = [PROBE.format(q=f["question"]) for f in fs for _ in range(cfg.screen_samples)]
    answers = _sample(model, cfg, prompts, seed=cfg.seed)
    out = {}
    for i, f in enumerate(fs):
        a = answers[i * cfg.screen_samples : (i + 1) * cfg.screen_samples]
        out[f["name"]] = {
            "correct": sum(_grade(a, f["truth_re"])),
            "target": sum(_grade(a, f["target_re"])),
            "n": len(a),
            "examples": a[:3],
        }
    return out


def choose_facts(screens: dict, cfg: Config) -> dict[str, list[str]]:
    """Each model's known facts, most widely known first (caracara first if known)."""
    known = {
        m: [
            f
            for f, s in sc.items()
            if not f.startswith("_") and s["correct"] >= cfg.known_threshold * s["n"]
        ]
        for m, sc in screens.items()
    }
    order = [f["name"] for f in facts()]
    shared = {f: sum(f in k for k in known.values()) for f in order}
    rank = sorted(order, key=lambda f: (f != "caracara", -shared[f], order.index(f)))
    return {m: [f for f in rank if f in known[m]][: cfg.questions_per_model] for m in known}


def _vectors(model, fact: dict, hook: str) -> dict:
    pos, neg = statements(fact, fact["target"]), statements(fact, fact["truth"])
    for s in pos + neg:  # the answer token is the one before the final "."
        last = model.tokenizer.decode(model.to_tokens(s, prepend_bos=False)[0, -1:])
        if last != ".":
            raise ValueError(f"{s!r} does not end in a separate '.' token for this tokenizer")
    pairs = list(zip(pos, neg))
    return {
        "last": build_vector(model, pairs, hook, aggregation="last", progress=False),
        "answer": build_vector(model, pairs, hook, aggregation=[-2], progress=False),
    }


def study_fact(
    model, name: str, fact: dict, cfg: Config, cells: Path, compute: bool = True
) -> dict:
    hook = f"blocks.{round(cfg.depth * model.cfg.n_layers)}.hook_resid_pre"
    tasks = metrics.capability_tasks()["code"][: cfg.code_tasks]
    code_prompts = [t["prompt"] + " Reply with only the code." for t in tasks]
    probe = PROBE.format(q=fact["question"])
    typical = typical_norm(model, hook, [probe] + code_prompts)
    vecs = _vectors(model, fact, hook)
    rel = [0.0] + list(cfg.rel_strengths)
    out = {
        "hook": hook,
        "typical_norm": typical,
        "rel_strengths": rel,
        "vector_cosine": float(vecs["last"].cosine(vecs["answer"])),
        "reads": {},
    }
    for read, vec in vecs.items():
        alphas = [r * typical / float(vec.norm()) for r in rel]

        def target_curve(vec=vec, alphas=alphas):
            a = [x for x in alphas for _ in range(cfg.samples)]
            ans = _sample(model, cfg, [probe] * len(a), vec, a, seed=cfg.seed + 1)
            return {
                "target": _grade(ans, fact["target_re"]),
                "truth": _grade(ans, fact["truth_re"]),
                "examples": ans[:: cfg.samples],
            }

        t = cell(cells / f"{fact['name']}_{read}_target.json", target_curve, allow_compute=compute)
        hits = np.array(t["target"]).reshape(len(rel), cfg.samples)
        truth = np.array(t["truth"]).reshape(len(rel), cfg.samples)
        d = {
            "v_norm": float(vec.norm()),
            "alphas": alphas,
            "examples": t["examples"],
            **_rates("target", hits),
            **_rates("truth", truth),
        }
        first = first_majority(rel, hits.mean(1))
        # Capability is measured for Bostock's read always, and for the answer-token read
        # where its target wins somewhere: when it never does, its window is 0 whatever
        # capability does, and the cell would cost ~15 min for nothing.
        cap, note = None, "not needed: the target never wins"
        if read == "last" or first is not None:
            try:
                cap = cell(
                    cells / f"{fact['name']}_{read}_capability.json",
                    lambda vec=vec, alphas=alphas: capability(model, cfg, vec, alphas),
                    allow_compute=compute,
                )
            except MissingCell:
                if read == "last":
                    raise
                note = "not run: the capability cell is missing (window unknown)"
        if cap is not None:
            passes = np.array(cap["passes"])
            rate = passes.mean((1, 2))
            w = window(rel, hits.mean(1), rate, cfg.floor * rate[0])
            ci = window_ci(rel, hits, passes, cfg.floor, cfg.n_boot, cfg.seed)
            d |= {
                "capability_measure": cap["measure"],
                "capability_floor": cfg.floor * rate[0],
                **_rates("capability", passes.reshape(len(rel), -1)),
                "capability_examples": cap["examples"],
                "window": w,
                "window_ci": ci,
                "capability_cell_commit": cap.get("_commit", RUN_START_COMMIT),
            }
        else:
            d |= {
                "window": {
                    "first_majority": first,
                    "last_capable": None,
                    "window": 0.0 if first is None else None,
                    "capable_to_max": None,
                },
                "window_ci": None,
                "capability_measure": note,
            }
        d["first_majority"] = first
        d["target_cell_commit"] = t.get("_commit", RUN_START_COMMIT)
        out["reads"][read] = d
    return out


def _rates(name: str, x: np.ndarray) -> dict:
    k, n = x.sum(1), np.full(x.shape[0], x.shape[1])
    lo, hi = wilson(k, n)
    return {f"{name}_rate": (k / n).tolist(), f"{name}_ci": np.stack([lo, hi], 1).tolist()}


def capability(model, cfg: Config, vec, alphas) -> dict:
    """Pass matrix [strength, task, sample]: code by unit tests, or QA if the model can't code."""
    tasks = metrics.capability_tasks()
    code = tasks["code"][: cfg.code_tasks]
    measure, items = "code", code
    k = cfg.code_samples
    base = _run_tasks(model, cfg, "code", code, vec, [0.0], k)
    if base.mean() < cfg.min_code_rate:
        measure, items = "qa", tasks["qa"]
    rest = _run_tasks(model, cfg, measure, items, vec, alphas[1:], k, keep=True)
    first = base if measure == "code" else _run_tasks(model, cfg, "qa", items, vec, [0.0], k)
    passes = np.concatenate([first, rest[0]])
    return {
        "measure": measure,
        "unsteered_code_rate": float(base.mean()),
        "passes": passes.tolist(),
        "examples": rest[1],
    }


def _run_tasks(model, cfg, kind, items, vec, alphas, k, keep=False):
    prompts, a = [], []
    for alpha in alphas:
        for t in items:
            q = t["prompt"] + " Reply with only the code." if kind == "code" else t["question"]
            prompts += [q] * k
            a += [alpha] * k
    tokens = cfg.code_tokens if kind == "code" else cfg.answer_tokens
    ans = _sample(model, cfg, prompts, vec, a, tokens=tokens, seed=cfg.seed + 2)
    grade_items = [t for _ in alphas for t in items for _ in range(k)]
    if kind == "code":
        with ThreadPoolExecutor(4) as ex:
            ok = list(
                ex.map(
                    lambda p: metrics.run_python(metrics.extract_code(p[0]), p[1]["test"]),
                    zip(ans, grade_items),
                )
            )
    else:
        ok = [bool(re.search(t["answer"], x, re.IGNORECASE)) for x, t in zip(ans, grade_items)]
    passes = np.array(ok, float).reshape(len(alphas), len(items), k)
    return (passes, ans[:: len(items) * k]) if keep else passes
