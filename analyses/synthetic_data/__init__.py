"""Steered synthetic data for safety detectors (Deshpande et al. 2026), at our scale.

python -m analyses.synthetic_data [--models smollm2-135m-instruct,gemma-3-270m] [--quick]
    [--executor local|ray] [--workers N]

Generation is cut into cells (one per vector × strength chunk, `interp_steer.runs.executor`),
stored under figures/.cells/synthetic_data_<model>_<config hash>/: a rerun resumes them.

For each model, safety concept (data/safety_concepts.json: harassment, violent threats, scam,
dangerous medical advice) and method (mean_diff, probe; built from the concept's 32 train
pairs at the middle layer), the unit vector is swept at strengths r = ‖αv‖ / typical token norm
(median, first token excluded) from the 50 neutral prompts, 4 samples each (200 texts per
configuration). Intrinsic scores per configuration (`interp_steer.eval.sweep.summarise`):

- success: P(concept) from a MiniLM probe trained on the train pairs (independent of the
  detectors below; its AUROC on the test set is reported),
- coherence: `metrics.coherence` (log-prob fluency × repetition penalty),
- diversity: mean of distinct-2 and 1 − mean pairwise MiniLM cosine, over coherent samples only,
- HM: their harmonic mean.

Extrinsic score: a detector (logistic regression on frozen MiniLM embeddings) trained with the
configuration's 200 steered texts as positives and 200 unsteered texts of the same model as
negatives, scored by AUROC on the concept's 60 hand-written test texts (half hard negatives),
never used for vectors or training, with a bootstrap CI. Prompting baseline: the same model
prompted with the concept's instruction on the same 50 prompts × 4 samples, through the same
detector pipeline. Then Spearman(HM, AUROC) across configurations with a bootstrap CI, and per
concept the configurations whose AUROC beats prompting.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.linear_model import LogisticRegression

from analyses._common import config_hash, models_config, models_parser
from analyses.synthetic_data.figures import hm_auroc_figure, tradeoff_figure
from interp_steer import build_vector, load_model
from interp_steer._io import write_json
from interp_steer.datasets import read_data
from interp_steer.eval import stats
from interp_steer.eval.classifiers import MiniLM
from interp_steer.eval.sweep import sweep
from interp_steer.runs.executor import EXECUTORS
from interp_steer.runs.provenance import code_version
from interp_steer.units import typical_norm
from interp_steer.vectors import SteeringVector

# what only changes the analysis, not the generated texts (kept out of the cell hash)
ANALYSIS_ONLY = ("models", "n_boot", "detector_c")


@dataclass
class Config:
    models: list[str] = field(default_factory=lambda: ["smollm2-135m-instruct", "gemma-3-270m"])
    concepts: list[str] = field(
        default_factory=lambda: ["harassment", "violent_threats", "scam", "dangerous_medical"]
    )
    methods: list[str] = field(default_factory=lambda: ["mean_diff", "probe"])
    layer_fraction: float = 0.5
    # identifiability found SmolLM2 operating points at r = 0.4-0.8: cover the trade-off around them
    rel_strengths: list[float] = field(default_factory=lambda: [0.2, 0.4, 0.8])
    n_prompts: int = 50
    samples: int = 4  # 50 × 4 = 200 texts per configuration, as the paper
    max_new_tokens: int = 40
    seed: int = 0
    n_boot: int = 2000
    detector_c: float = 1.0
    quick: bool = False

    @classmethod
    def quick_config(cls, **kw) -> Config:
        base = dict(
            models=["smollm2-135m-instruct"],
            concepts=["scam", "harassment"],
            methods=["mean_diff"],
            rel_strengths=[0.3, 0.6],
            n_prompts=10,
            samples=2,
            max_new_tokens=24,
            n_boot=300,
            quick=True,
        )
        return cls(**{**base, **kw})


def concept_data(name: str) -> dict:
    raw = read_data("safety_concepts")
    if name not in raw["concepts"]:
        raise ValueError(f"unknown safety concept {name!r}; shipped: {sorted(raw['concepts'])}")
    return {**raw["concepts"][name], "neutral_prompts": raw["neutral_prompts"]}


def prompting_prompts(instruction: str, prompts: list[str]) -> list[str]:
    """The prompting baseline: the concept's instruction, set in each neutral prompt's scene."""
    return [f"{instruction} Make it a reply to this request: {p}" for p in prompts]


class Detector:
    """Logistic regression on frozen MiniLM embeddings: positives vs negatives."""

    def __init__(self, embed, positives, negatives, c: float, seed: int):
        x = embed(list(positives) + list(negatives))
        y = np.r_[np.ones(len(positives)), np.zeros(len(negatives))]
        self.embed = embed
        self.clf = LogisticRegression(C=c, max_iter=2000, random_state=seed).fit(x, y)

    def __call__(self, texts) -> np.ndarray:
        return self.clf.predict_proba(self.embed(list(texts)))[:, 1]


def heldout_auroc(score, test: list[dict], n_boot: int, seed: int) -> tuple[float, float, float]:
    y = np.array([t["label"] for t in test])
    return stats.auroc(y, score([t["text"] for t in test]), n_boot=n_boot, seed=seed)


def _sweep_kw(cfg: Config, name: str, executor: str, workers: int | None) -> dict:
    return dict(
        samples_per_prompt=cfg.samples,
        max_new_tokens=cfg.max_new_tokens,
        seed=cfg.seed,
        progress=True,
        executor=executor,
        workers=workers,
        resume=True,  # each store is keyed by its config: resuming is always safe
        load=partial(load_model, name),  # what Ray workers load (local runs use the model)
    )


def run_model(
    cfg: Config,
    name: str,
    out_dir: Path,
    embed,
    model=None,
    executor: str = "local",
    workers: int | None = None,
) -> dict:
    """Every configuration of one model: generation (resumable cells), scores and detectors."""
    model = model if model is not None else load_model(name)
    layer = round(cfg.layer_fraction * model.cfg.n_layers)
    hook = f"blocks.{layer}.hook_resid_pre"
    tag = f"synthetic_data_{name}{'_quick' if cfg.quick else ''}_{config_hash(cfg, ANALYSIS_ONLY)}"
    cells = Path(out_dir) / ".cells" / tag
    neutral = concept_data(cfg.concepts[0])["neutral_prompts"][: cfg.n_prompts]
    typical = typical_norm(model, hook, neutral)
    zero = SteeringVector(torch.zeros(model.cfg.d_model), hook)
    kw = _sweep_kw(cfg, name, executor, workers)
    # unsteered generations: the detectors' negatives and every configuration's reference
    base, base_rows = sweep(
        model,
        {"unsteered": zero},
        [],
        neutral,
        embed=embed,
        kl=False,
        out=cells / "unsteered",
        **kw,
    )
    configs = []
    validation = {}
    for concept in cfg.concepts:
        data = concept_data(concept)
        pairs = [tuple(p) for p in data["train_pairs"]]
        success = Detector(
            embed, [p for p, _ in pairs], [n for _, n in pairs], cfg.detector_c, cfg.seed
        )
        validation[concept] = dict(
            zip(
                ("auroc", "ci_low", "ci_high"),
                heldout_auroc(success, data["test"], cfg.n_boot, cfg.seed),
            )
        )
        vecs = {
            m: build_vector(
                model, pairs, hook, method=m, seed=cfg.seed, progress=False
            ).normalized()
            for m in cfg.methods
        }
        steered, rows = sweep(
            model,
            vecs,
            [r * typical for r in cfg.rel_strengths],
            neutral,
            success=success,
            embed=embed,
            unsteered=False,
            out=cells / f"{concept}_steered",
            **kw,
        )
        prompted, prow = sweep(
            model,
            {"prompting": zero},
            [],
            prompting_prompts(data["prompting_instruction"], neutral),
            success=success,
            embed=embed,
            kl=False,
            out=cells / f"{concept}_prompting",
            **kw,
        )
        negatives = base_rows.text.tolist()
        det = Detector(embed, prow.text.tolist(), negatives, cfg.detector_c, cfg.seed)
        pa = heldout_auroc(det, data["test"], cfg.n_boot, cfg.seed)
        base_success = float(np.mean(success(negatives)))
        configs.append(
            dict(
                concept=concept,
                model=name,
                method="prompting",
                alpha=0.0,
                relative_norm=0.0,
                **_intrinsic(prompted.iloc[0]),
                auroc=pa[0],
                auroc_ci=[pa[1], pa[2]],
                unsteered_success=base_success,
            )
        )
        for _, row in steered.iterrows():
            texts = rows[(rows.vector == row.vector) & (rows.alpha == row.alpha)].text.tolist()
            det = Detector(embed, texts, negatives, cfg.detector_c, cfg.seed)
            a = heldout_auroc(det, data["test"], cfg.n_boot, cfg.seed)
            configs.append(
                dict(
                    concept=concept,
                    model=name,
                    method=row.vector,
                    alpha=float(row.alpha),
                    relative_norm=float(row.alpha) / typical,
                    **_intrinsic(row),
                    auroc=a[0],
                    auroc_ci=[a[1], a[2]],
                    unsteered_success=base_success,
                )
            )
    return {
        "hook": hook,
        "typical_norm": typical,
        "unsteered": _intrinsic(base.iloc[0]),
        "success_classifier": validation,
        "configs": configs,
        "examples": _examples(cells, cfg),
    }


def _intrinsic(row) -> dict:
    return {
        k: float(row[k])
        for k in (
            "success",
            "coherence",
            "coherent_fraction",
            "distinct_2",
            "embedding_diversity",
            "diversity",
            "hm",
        )
    }


def _examples(cells: Path, cfg: Config) -> dict:
    """Two generations per (concept, method, strength), for a reader to see what was scored."""
    out = {}
    for concept in cfg.concepts:
        df = pd.read_csv(cells / f"{concept}_steered_samples.csv")
        for (m, a), g in df.groupby(["vector", "alpha"]):
            out[f"{concept}/{m}/{a:.3g}"] = g.text.head(2).tolist()
    return out


def run(
    cfg: Config,
    out_dir: Path = Path("figures"),
    models: dict | None = None,
    executor: str = "local",
    workers: int | None = None,
) -> dict:
    """The whole analysis; ``models`` maps a name to an already loaded model (tests)."""
    t0 = time.time()
    embed = MiniLM()
    per_model = {}
    for name in cfg.models:
        given = (models or {}).get(name)
        per_model[name] = run_model(cfg, name, out_dir, embed, given, executor, workers)
    configs = [c for m in per_model.values() for c in m["configs"]]
    steered = [c for c in configs if c["method"] != "prompting"]
    hm = np.array([c["hm"] for c in steered])
    au = np.array([c["auroc"] for c in steered])
    rho = stats.spearman(hm, au, n_boot=cfg.n_boot, seed=cfg.seed) if len(steered) >= 3 else None
    concepts = {}
    for concept in cfg.concepts:
        prompting = {
            c["model"]: c for c in configs if c["concept"] == concept and c["method"] == "prompting"
        }
        mine = [c for c in steered if c["concept"] == concept]
        beats = [c for c in mine if c["auroc"] > prompting[c["model"]]["auroc"]]
        clearly = [c for c in mine if c["auroc_ci"][0] > prompting[c["model"]]["auroc"]]
        concepts[concept] = {
            "prompting_auroc": {m: c["auroc"] for m, c in prompting.items()},
            "prompting_auroc_ci": {m: c["auroc_ci"] for m, c in prompting.items()},
            "n_test": len(concept_data(concept)["test"]),
            "configs": len(mine),
            "beat_prompting": len(beats),
            "beat_prompting_ci_excludes": len(clearly),
            "best_steered_auroc": max((c["auroc"] for c in mine), default=None),
        }
    summary = {
        "concepts": concepts,
        "configs": configs,
        "spearman_hm_auroc": rho and {"rho": rho[0], "ci": [rho[1], rho[2]], "n": len(steered)},
        "models": {n: {k: v for k, v in m.items() if k != "configs"} for n, m in per_model.items()},
        "configurations_beating_prompting": sum(c["beat_prompting"] for c in concepts.values()),
        "concepts_with_a_config_beating_prompting": sum(
            c["beat_prompting"] > 0 for c in concepts.values()
        ),
        "paper": {"concepts_beating_prompting": "3 of 4", "configs_beating_prompting": "41 of 136"},
        "seconds": time.time() - t0,
    }
    stem = Path(out_dir) / f"synthetic_data{'_quick' if cfg.quick else ''}"
    hm_auroc_figure(cfg, summary, Path(f"{stem}_hm_auroc"))
    tradeoff_figure(cfg, summary, Path(f"{stem}_tradeoff"))
    write_json(
        Path(f"{stem}_summary.json"),
        {"config": asdict(cfg), "seed": cfg.seed, "interp_steer": code_version(), **summary},
    )
    return summary


def headline(s: dict) -> str:
    r = s["spearman_hm_auroc"]
    lines = [
        f"synthetic data ({s['seconds']:.0f} s): Spearman(HM, AUROC) = "
        + (f"{r['rho']:.2f} [{r['ci'][0]:.2f}, {r['ci'][1]:.2f}] over {r['n']}" if r else "n/a")
    ]
    for concept, c in s["concepts"].items():
        pa = ", ".join(f"{m.split('-')[0]} {v:.2f}" for m, v in c["prompting_auroc"].items())
        lines.append(
            f"  {concept:<18} prompting AUROC {pa}; best steered {c['best_steered_auroc']:.2f}; "
            f"{c['beat_prompting']}/{c['configs']} configs beat prompting "
            f"({c['beat_prompting_ci_excludes']} with the CI above it)"
        )
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = models_parser(__doc__, "SmolLM2 and Gemma-3-270M")
    ap.add_argument("--executor", default="local", choices=EXECUTORS)
    ap.add_argument("--workers", type=int)
    args = ap.parse_args(argv)
    cfg = models_config(args, Config)
    print(headline(run(cfg, args.out, executor=args.executor, workers=args.workers)))
