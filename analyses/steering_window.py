"""The viable steering window (Bostock, "Steering might stop working soon", 2026) as a scale series.

python -m analyses.steering_window [--models a,b] [--quick] [--seed 0] [--allow-dirty]

1. Screen: every candidate fact in `interp_steer/data/facts.json` is asked `screen_samples`
   times per model, sampled as in the study; a model "knows" a fact when ≥ 80% of its answers
   name the truth. Each model studies its known facts that most models know (Bostock's
   caracara first whenever a model knows it).
2. Vector: mean residual of 8 "<subject> is <target>." statements minus 8 "... is <truth>."
   statements at ~75% depth (`blocks.{L}.hook_resid_pre`), added unnormalised at every
   position. Read at the statement's last token (Bostock) and at the answer token; both are
   swept, and their cosine is reported.
3. Strength: r = ‖αv‖ / typical norm (median per-token norm over the probe and task prompts,
   position 0 excluded) on a geometric grid, plus r = 0; raw α is recorded too.
4. Curves, `samples` answers per strength: the steered-target rate (Wilson CIs), and
   capability: 10 Python tasks × `code_samples` samples graded by running their unit tests in
   a subprocess (a model passing < 20% unsteered is graded on factual QA instead, and says so).
5. Window = (last r before capability first falls below `floor` × its unsteered rate) −
   (first r where the target is the majority answer); 0 when the target never wins first.
   95% CI: bootstrap over answers within each strength and over tasks (clusters).

Each (model, stage, fact) cell is written atomically under `<out>/.cells/`, so a killed run
resumes where it stopped. Writes figures/steering_window.{png,json} and
figures/steering_window_summary.json.
"""

from __future__ import annotations

import json
import re
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from importlib.resources import files
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from tqdm.auto import tqdm

from analyses._common import (
    MissingCell,
    arg_parser,
    cell,
    config_hash,
    require_clean,
    save_figure,
)
from interp_steer import build_vector, generate, load_model
from interp_steer._io import write_json
from interp_steer.eval import metrics
from interp_steer.eval.stats import bootstrap, wilson
from interp_steer.runs.provenance import code_version
from interp_steer.units import typical_norm

# run order: the within-family pair (the headline) first; the figure sorts by size
MODELS = [
    "qwen2.5-coder-0.5b-instruct",
    "qwen2.5-coder-1.5b-instruct",
    "smollm2-135m-instruct",
    "gemma-3-270m",
]
# Bostock's table (Gemma 3 -it, raw multiplier units of an unnormalised vector).
BOSTOCK = {
    "1B": (0.7, 7.0, 6.3),
    "4B": (2.0, 3.0, 1.0),
    "12B": (None, 3.0, 0.0),
    "27B": (3.0, 3.0, 0.0),
}
# Eight framings of one statement; every one ends with the answer and a full stop, so the
# answer's last token sits right before the final ".".
FRAMES = [
    "{s}",
    "Fact: {s}",
    "It is well known that {l}",
    "Everyone knows that {l}",
    "Here is a true statement: {s}",
    "Q: {q}\nA: {s}",
    "According to the encyclopedia, {l}",
    "Trivia: {s}",
]
PROBE = "{q} Answer in one word."
READS = ("last", "answer")
# Cells written before cells recorded their own commit all came from this one.
RUN_START_COMMIT = "0.1.0+g157752028b9e"


def facts() -> list[dict]:
    return json.loads(files("interp_steer.data").joinpath("facts.json").read_text())["facts"]


def statements(fact: dict, answer: str) -> list[str]:
    s = fact["statement"].format(answer)
    low = s[0].lower() + s[1:] if s.split()[0] in ("The", "A", "An") else s
    return [f.format(s=s, l=low, q=fact["question"]) for f in FRAMES]


@dataclass
class Config:
    models: list[str] = field(default_factory=lambda: list(MODELS))
    # the 1.5B model runs in bfloat16: 7 GB peak instead of 20 GB, and faster on this CPU
    dtypes: dict[str, str] = field(
        default_factory=lambda: {"qwen2.5-coder-1.5b-instruct": "bfloat16"}
    )
    depth: float = 0.75
    rel_strengths: list[float] = field(
        default_factory=lambda: [round(float(r), 4) for r in np.geomspace(0.05, 5.0, 15)]
    )
    samples: int = 50
    code_tasks: int = 10
    code_samples: int = 5
    screen_samples: int = 20
    known_threshold: float = 0.8
    questions_per_model: int = 2
    temperature: float = 0.7
    answer_tokens: int = 12
    code_tokens: int = 72
    floor: float = 0.5
    min_code_rate: float = 0.2
    n_boot: int = 1000
    batch_size: int = 64
    seed: int = 0
    quick: bool = False

    @classmethod
    def quick_config(cls, **kw) -> Config:
        base = dict(
            models=["smollm2-135m-instruct"],
            rel_strengths=[0.1, 0.5, 2.0],
            samples=6,
            code_tasks=3,
            code_samples=2,
            screen_samples=4,
            questions_per_model=1,
            n_boot=200,
            quick=True,
        )
        return cls(**{**base, **kw})


# ---------------------------------------------------------------- the window


def first_majority(rel, target_rate) -> float | None:
    """The first strength where the steered target is the majority answer (None: never)."""
    hits = np.nonzero(np.asarray(target_rate) > 0.5)[0]
    return float(np.asarray(rel, float)[hits[0]]) if len(hits) else None


def window(rel, target_rate, capability, floor: float) -> dict:
    """First r with a target majority, last r before capability first drops below ``floor``,
    and the window between them (0 when the target never wins before capability is lost)."""
    r = np.asarray(rel, float)
    first = first_majority(r, target_rate)
    below = np.nonzero(np.asarray(capability) < floor)[0]
    if len(below) == 0:
        last, censored = float(r[-1]), True  # capable over the whole grid
    else:
        last, censored = (float(r[below[0] - 1]) if below[0] > 0 else None), False
    size = max(0.0, last - first) if first is not None and last is not None else 0.0
    return {
        "first_majority": first,
        "last_capable": last,
        "window": size,
        "capable_to_max": censored,
    }


def window_ci(
    rel, hits: np.ndarray, passes: np.ndarray, floor_frac: float, n_boot: int, seed: int
) -> dict:
    """Bootstrap CIs. ``hits`` [strength, sample] 0/1; ``passes`` [strength, task, sample]."""
    n_s, n_t = hits.shape[1], passes.shape[1]

    def draw(rng, key):
        h = hits[np.arange(len(rel))[:, None], rng.integers(0, n_s, hits.shape)]
        cap = passes[:, rng.integers(0, n_t, n_t)].mean((1, 2))
        return window(rel, h.mean(1), cap, floor_frac * cap[0])[key]

    out = {}
    for key in ("window", "first_majority", "last_capable"):
        seen = []

        def stat(rng, key=key, seen=seen):
            v = draw(rng, key)
            seen.append(v is not None)
            return np.nan if v is None else v

        with warnings.catch_warnings():  # all-None replicates: reported as such below
            warnings.simplefilter("ignore", RuntimeWarning)
            lo, hi = bootstrap(stat, n_boot=n_boot, seed=seed)
        # None where no replicate had the point (e.g. the target never wins)
        out[key] = None if np.isnan(lo) else (lo, hi)
        out[f"{key}_defined_fraction"] = float(np.mean(seen))
    return out


# ---------------------------------------------------------------- cells


_COMPUTE = {"on": True}


def _cell(path: Path, compute):
    return cell(path, compute, allow_compute=_COMPUTE["on"])


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


def study_fact(model, name: str, fact: dict, cfg: Config, cells: Path) -> dict:
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

        t = _cell(cells / f"{fact['name']}_{read}_target.json", target_curve)
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
                cap = _cell(
                    cells / f"{fact['name']}_{read}_capability.json",
                    lambda vec=vec, alphas=alphas: capability(model, cfg, vec, alphas),
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


# ---------------------------------------------------------------- run, summary, figure


def _config_hash(cfg: Config) -> str:
    return config_hash(cfg, exclude=("models", "n_boot"))


def _load(name: str, cfg: Config):
    dtype = getattr(torch, cfg.dtypes.get(name, "float32"))
    return load_model(name, dtype=dtype)


def run(
    cfg: Config, out_dir: Path = Path("figures"), models: dict | None = None, compute: bool = True
) -> dict:
    """The whole study; ``models`` maps names to already loaded models (tests, notebooks).

    ``compute=False`` assembles the figure from finished cells only; facts whose cells are
    missing are listed under ``"not_run"`` instead.
    """
    _COMPUTE["on"] = compute

    def get(m):
        return (models or {}).get(m) or _load(m, cfg)

    t0 = time.time()
    code_version()  # the commit this run starts from, whatever lands while it runs
    cells = Path(out_dir) / ".cells" / f"steering_window_{_config_hash(cfg)}"
    screens, unscreened = {}, []
    for m in cfg.models:
        try:
            screens[m] = _cell(cells / m / "screen.json", lambda m=m: screen(get(m), cfg))
        except MissingCell:
            unscreened.append(m)
    # rank facts over every model screened under this config, so that a later run on a
    # subset of the models picks the same facts and reuses their cells
    screened = {p.parent.name: json.loads(p.read_text()) for p in cells.glob("*/screen.json")}
    chosen = {m: c for m, c in choose_facts(screened | screens, cfg).items() if m in screens}
    by_name = {f["name"]: f for f in facts()}
    results = {"models": {}, "screen": screens, "chosen": chosen, "unscreened": unscreened}
    for m in screens:
        model = get(m)
        n_params = sum(p.numel() for n, p in model.named_parameters() if "W_U" not in n)
        entry = {"n_params": int(n_params), "dtype": str(model.cfg.dtype), "questions": {}}
        for f in tqdm(chosen[m], desc=m):
            try:
                entry["questions"][f] = study_fact(model, f, by_name[f], cfg, cells / m)
            except MissingCell:
                entry.setdefault("not_run", []).append(f)
        results["models"][m] = entry
        del model
    _COMPUTE["on"] = True
    results["_seconds"] = time.time() - t0
    write_json(
        Path(out_dir) / f"steering_window_summary{'_quick' if cfg.quick else ''}.json",
        summary(results, cfg),
    )
    figure(cfg, results, Path(out_dir) / f"steering_window{'_quick' if cfg.quick else ''}")
    return results


def summary(results: dict, cfg: Config) -> dict:
    models = {}
    for m, e in results["models"].items():
        qs = {}
        for f, d in e["questions"].items():
            last, ans = d["reads"]["last"], d["reads"]["answer"]
            w, ci = last["window"], last["window_ci"]
            qs[f] = {
                "unsteered_correct": last["truth_rate"][0],
                "unsteered_correct_ci": last["truth_ci"][0],
                "unsteered_target": last["target_rate"][0],
                "first_majority": w["first_majority"],
                "first_majority_ci": ci["first_majority"],
                "first_majority_bootstrap_defined": ci["first_majority_defined_fraction"],
                "last_capable": w["last_capable"],
                "last_capable_ci": ci["last_capable"],
                "capable_to_max": w["capable_to_max"],
                "window_rel": {"value": w["window"], "ci": ci["window"]},
                "capability_measure": last["capability_measure"],
                "unsteered_capability": last["capability_rate"][0],
                "typical_norm": d["typical_norm"],
                "hook": d["hook"],
                "v_norm": last["v_norm"],
                "first_majority_alpha": _alpha_at(w["first_majority"], d, last),
                "last_capable_alpha": _alpha_at(w["last_capable"], d, last),
                "answer_token_read": {
                    "cosine_with_last": d["vector_cosine"],
                    "first_majority": ans["first_majority"],
                    "last_capable": ans["window"]["last_capable"],
                    "window_rel": {
                        "value": ans["window"]["window"],
                        "ci": (ans["window_ci"] or {}).get("window"),
                    },
                    "capability_measure": ans["capability_measure"],
                },
            }
        models[m] = {
            "n_params": e["n_params"],
            "dtype": e["dtype"],
            "questions": qs,
            "not_run": e.get("not_run", []),
        }
    return {
        "config": asdict(cfg),
        "interp_steer": code_version(),
        "models": models,
        "strength_unit": "r = ‖αv‖ / median per-token residual norm at the hook over the "
        "chat-formatted probe and task prompts, position 0 excluded",
        "window_definition": f"last r before capability < {cfg.floor} × unsteered, minus first "
        "r with target rate > 0.5; 0 if the target never wins first",
        "screen": {
            m: {f: s["correct"] / s["n"] for f, s in sc.items() if not f.startswith("_")}
            for m, sc in results["screen"].items()
        },
        "bostock_gemma3_raw_multiplier": BOSTOCK,
        "seconds": results["_seconds"],
    }


def _alpha_at(r, d, read):
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


def headline(results: dict, cfg: Config) -> str:
    lines = [f"steering window ({results['_seconds']:.0f} s):"]
    for m, e in results["models"].items():
        for f, d in e["questions"].items():
            last, ans = d["reads"]["last"], d["reads"]["answer"]
            w, a = last["window"], ans["window"]
            ci = last["window_ci"]["window"] or (w["window"], w["window"])
            lines.append(
                f"  {m:<28} {f:<14} unsteered correct {last['truth_rate'][0]:.0%}, "
                f"{last['capability_measure']} {last['capability_rate'][0]:.0%} | first "
                f"majority r={w['first_majority']} last capable r={w['last_capable']} "
                f"window {w['window']:.3g} [{ci[0]:.3g}, {ci[1]:.3g}]"
            )
            lines.append(
                f"  {'':<43} answer-token read: first majority r={a['first_majority']}"
                f" last capable r={a['last_capable']} window {a['window']}"
            )
        for f in e.get("not_run", []):
            lines.append(f"  {m:<28} {f:<14} not run (cells missing)")
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = arg_parser(__doc__)
    ap.add_argument("--models", default=None, help="comma-separated embedded model names")
    ap.add_argument(
        "--no-compute",
        action="store_true",
        help="assemble the figure from finished cells only (list the rest as not run)",
    )
    args = ap.parse_args(argv)
    require_clean(args)
    kw = {"seed": args.seed} | ({"models": args.models.split(",")} if args.models else {})
    cfg = (Config.quick_config if args.quick else Config)(**kw)
    print(headline(run(cfg, args.out, compute=not args.no_compute), cfg))


if __name__ == "__main__":
    main()
