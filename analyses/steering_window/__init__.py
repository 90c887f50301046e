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
import time
from dataclasses import asdict
from pathlib import Path

import torch
from tqdm.auto import tqdm

from analyses._common import (
    MissingCell,
    arg_parser,
    cell,
    config_hash,
    require_clean,
)
from analyses.steering_window.cells import (
    choose_facts,
    screen,
    study_fact,
)
from analyses.steering_window.config import (
    BOSTOCK,
    MODELS,
    Config,
    facts,
)
from analyses.steering_window.figures import (
    alpha_at,
    figure,
)
from analyses.steering_window.window import first_majority, window, window_ci
from interp_steer import load_model
from interp_steer._io import write_json
from interp_steer.runs.provenance import code_version

__all__ = [
    "BOSTOCK",
    "MODELS",
    "Config",
    "facts",
    "first_majority",
    "headline",
    "main",
    "run",
    "summary",
    "window",
    "window_ci",
]


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

    def get(m):
        return (models or {}).get(m) or _load(m, cfg)

    t0 = time.time()
    code_version()  # the commit this run starts from, whatever lands while it runs
    cells = Path(out_dir) / ".cells" / f"steering_window_{_config_hash(cfg)}"
    screens, unscreened = {}, []
    for m in cfg.models:
        try:
            screens[m] = cell(
                cells / m / "screen.json", lambda m=m: screen(get(m), cfg), allow_compute=compute
            )
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
                entry["questions"][f] = study_fact(model, f, by_name[f], cfg, cells / m, compute)
            except MissingCell:
                entry.setdefault("not_run", []).append(f)
        results["models"][m] = entry
        del model
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
                "first_majority_alpha": alpha_at(w["first_majority"], d, last),
                "last_capable_alpha": alpha_at(w["last_capable"], d, last),
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
