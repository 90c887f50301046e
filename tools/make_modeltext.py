"""Draw the model-text labelling set from the committed cells (seeded; rerun gives the same).

Writes interp_steer/data/modeltext/{items.json, sources.json, split.json}:
- items.json: what the labellers see, shuffled, blind to the source: id, prompt, text;
- sources.json: id -> where the text came from (study, cell, index, condition, model);
- split.json: train / dev / test ids (60 / 20 / 20), stratified by study and condition,
  fixed by the seed before any label exists.
Usage: ``PYTHONPATH=. python tools/make_modeltext.py`` (from the repository root).
"""

from __future__ import annotations

import ast
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd

from analyses.emergent_misalignment import QUESTIONS

ROOT = Path(__file__).resolve().parents[1]
CELLS = ROOT / "figures" / ".cells"
OUT = ROOT / "interp_steer" / "data" / "modeltext"
SEED = 0
EM_PER_CONDITION = 12
SYN_PER_CELL = 3
WINDOW_N = 40


def em(rng) -> list[dict]:
    (folder,) = CELLS.glob("emergent_misalignment_*")
    rows = []
    for f in sorted(folder.glob("condition_*.json")):
        cell = json.loads(f.read_text())
        texts = cell["texts"]
        per_q = len(texts) // len(QUESTIONS)
        # stratified over questions: one or two per question, then the rest at random
        qs = rng.permutation(np.repeat(np.arange(len(QUESTIONS)), 2))[:EM_PER_CONDITION]
        for q in qs:
            i = int(q * per_q + rng.integers(per_q))
            rows.append(
                {
                    "prompt": QUESTIONS[q],
                    "text": texts[i],
                    "source": {
                        "study": "emergent_misalignment",
                        "model": folder.name.split("_")[2],
                        "cell": f.relative_to(ROOT).as_posix(),
                        "index": i,
                        "condition": f.stem.removeprefix("condition_"),
                        "r": cell.get("r"),
                    },
                }
            )
    return rows


def synthetic(rng) -> list[dict]:
    rows = []
    for folder in sorted(CELLS.glob("synthetic_data_*")):
        model = folder.name.removeprefix("synthetic_data_").rsplit("_", 1)[0]
        for f in sorted(folder.glob("*_samples.csv")):
            name = f.name.removesuffix("_samples.csv")
            manifest = json.loads((folder / f"{name}.cells" / "manifest.json").read_text())
            prompts = manifest["config"]["prompts"]
            if isinstance(prompts, str):  # older manifests stored the repr
                prompts = ast.literal_eval(prompts)
            df = pd.read_csv(f, keep_default_na=False)
            for (vec, alpha), g in df.groupby(["vector", "alpha"], sort=True):
                for i in rng.choice(g.index.to_numpy(), size=SYN_PER_CELL, replace=False):
                    row = df.loc[i]
                    rows.append(
                        {
                            "prompt": prompts[int(row.prompt)],
                            "text": str(row.text),
                            "source": {
                                "study": "synthetic_data",
                                "model": model,
                                "cell": f.relative_to(ROOT).as_posix(),
                                "index": int(i),
                                "condition": f"{name}/{vec}",
                                "alpha": float(alpha),
                                "r": float(row.rel_strength),
                            },
                        }
                    )
    return rows


def identifiability() -> list[dict]:
    rows = []
    for folder in sorted(CELLS.glob("identifiability_*")):
        model = folder.name.removeprefix("identifiability_").rsplit("_", 1)[0]
        for f in sorted(folder.glob("*_equivalence.json")):
            trait = f.name.removesuffix("_equivalence.json")
            for kind, text in sorted(json.loads(f.read_text())["examples"].items()):
                rows.append(
                    {
                        "prompt": None,
                        "text": text,
                        "source": {
                            "study": "identifiability",
                            "model": model,
                            "cell": f.relative_to(ROOT).as_posix(),
                            "index": kind,
                            "condition": f"{trait}/{kind}",
                        },
                    }
                )
    return rows


def window(rng) -> list[dict]:
    facts = json.loads((ROOT / "interp_steer/data/facts.json").read_text())["facts"]
    question = {f["name"]: f["question"] for f in facts}
    res = json.loads((ROOT / "figures/steering_window.json").read_text())["results"]
    pool = []
    for model, m in res["models"].items():
        for fact, q in m["questions"].items():
            for read, d in q["reads"].items():
                for k, (text, a) in enumerate(zip(d.get("examples", []), d["alphas"])):
                    src = {
                        "study": "steering_window",
                        "model": model,
                        "cell": "figures/steering_window.json",
                        "index": f"{fact}/{read}/{k}",
                        "condition": f"{fact}/{read}",
                        "alpha": a,
                    }
                    pool.append({"prompt": question[fact], "text": text, "source": src})
    pick = rng.choice(len(pool), size=min(WINDOW_N, len(pool)), replace=False)
    return [pool[i] for i in sorted(pick)]


def split(rows: list[dict], rng) -> dict[str, list[str]]:
    groups = defaultdict(list)
    for r in rows:
        s = r["source"]
        groups[(s["study"], s["model"], s["condition"].split("/")[0])].append(r["id"])
    out = {"train": [], "dev": [], "test": []}
    for key in sorted(groups):
        ids = list(rng.permutation(groups[key]))
        n = len(ids)
        n_test, n_dev = round(0.2 * n), round(0.2 * n)
        out["test"] += ids[:n_test]
        out["dev"] += ids[n_test : n_test + n_dev]
        out["train"] += ids[n_test + n_dev :]
    return {k: sorted(v) for k, v in out.items()}


def main() -> None:
    rng = np.random.default_rng(SEED)
    rows = em(rng) + synthetic(rng) + identifiability() + window(rng)
    order = rng.permutation(len(rows))
    rows = [rows[i] for i in order]
    for k, r in enumerate(rows):
        r["id"] = f"mt{k:04d}"
    OUT.mkdir(parents=True, exist_ok=True)
    items = [{"id": r["id"], "prompt": r["prompt"], "text": r["text"]} for r in rows]
    (OUT / "items.json").write_text(json.dumps(items, indent=1, ensure_ascii=False) + "\n")
    sources = {r["id"]: r["source"] for r in rows}
    (OUT / "sources.json").write_text(json.dumps(sources, indent=1) + "\n")
    (OUT / "split.json").write_text(json.dumps(split(rows, rng), indent=1) + "\n")
    by = defaultdict(int)
    for r in rows:
        by[r["source"]["study"]] += 1
    print(len(rows), dict(by))


if __name__ == "__main__":
    main()
