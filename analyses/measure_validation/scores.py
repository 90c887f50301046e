"""Every candidate measure scores every item once, as cells."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from analyses._common import FIGURES, cell, config_hash
from analyses.measure_validation.data import (
    Config,
)


def score_fluency(cfg: Config, items: list[dict]) -> dict:
    from interp_steer import load_model
    from interp_steer.eval import metrics

    model = load_model(cfg.fluency_model)
    prompts = [metrics_prompt(model, it["prompt"]) for it in items]
    texts = [it["text"] for it in items]
    ppl = np.full(len(items), np.nan)
    keep = [i for i, t in enumerate(texts) if t.strip()]
    ppl[keep] = metrics.perplexity(model, [prompts[i] for i in keep], [texts[i] for i in keep], 16)
    coh = metrics.coherence_from(ppl, texts)
    rep = metrics.repetition_factor(texts)
    return {"logp": (-np.log(ppl)).tolist(), "coherence": coh.tolist(), "repetition": rep.tolist()}


def metrics_prompt(model, prompt: str | None) -> str:
    from interp_steer.models import chat

    return chat(model, prompt) if prompt else ""


def score_embeddings(cfg: Config, items: list[dict]) -> dict:
    from interp_steer.eval.classifiers import MiniLM

    embed = MiniLM()
    t = embed([it["text"] or " " for it in items])
    p = embed([it["prompt"] or it["text"] or " " for it in items])
    rel = (t * p).sum(1) / (np.linalg.norm(t, axis=1) * np.linalg.norm(p, axis=1) + 1e-9)
    return {"text": np.asarray(t).round(5).tolist(), "relevance": rel.tolist()}


def score_reader(cfg: Config, items: list[dict], name: str) -> dict:
    import torch

    from interp_steer import load_model
    from interp_steer.eval.judges import ModelJudge

    dtype = getattr(torch, cfg.reader_dtype)
    judge = ModelJudge(load_model(name, dtype=dtype, fast=False))
    qs = [it["prompt"] or "(no question: judge the text on its own)" for it in items]
    aligned, coherent = judge(qs, [it["text"] for it in items])
    return {"aligned": aligned.tolist(), "coherent": coherent.tolist()}


def score_embedding_judge(cfg: Config, items: list[dict]) -> dict:
    from interp_steer.eval.embedding_judge import EmbeddingJudge

    judge = EmbeddingJudge()
    qs = [it["prompt"] or "" for it in items]
    aligned, _ = judge(qs, [it["text"] for it in items])
    return {"aligned": np.asarray(aligned).tolist()}


def cells_dir(cfg: Config, items: list[dict]) -> Path:
    h = config_hash(cfg, exclude=("n_boot", "readers", "seed", "quick"))
    digest = hashlib.sha256(json.dumps(items, sort_keys=True).encode()).hexdigest()[:8]
    return FIGURES / ".cells" / f"measure_validation_{h}_{digest}"


def compute_scores(cfg: Config, items: list[dict], compute: bool = True) -> dict:
    d = cells_dir(cfg, items)
    out = {
        "fluency": cell(d / "fluency.json", lambda: score_fluency(cfg, items), compute),
        "embeddings": cell(d / "embeddings.json", lambda: score_embeddings(cfg, items), compute),
        "embedding_judge": cell(
            d / "embedding_judge.json", lambda: score_embedding_judge(cfg, items), compute
        ),
    }
    for name in cfg.readers:
        out[name] = cell(
            d / f"reader_{name}.json", lambda n=name: score_reader(cfg, items, n), compute
        )
    return out


# ---------------------------------------------------------------- evaluation
