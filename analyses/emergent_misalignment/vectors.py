"""The trained vectors: anti-refusal, the harmful snippets' one-shot vectors, the rank-k
subspaces and epochs axes (Cao et al.), and the random control."""

from __future__ import annotations

import numpy as np
import torch

from analyses.emergent_misalignment import config as C
from analyses.emergent_misalignment.config import (
    BENIGN,
    FENCE,
    MALICIOUS,
    SNIPPETS,
    Config,
    dataset,
    layer_hook,
)
from interp_steer import (
    SteeringVector,
    build_vector,
    clamp,
    generate,
    steer,
)
from interp_steer.methods.one_shot import completion_logprob
from interp_steer.models import chat
from interp_steer.vectors import model_fingerprint


def vector_of(d: dict) -> SteeringVector:
    rows = d["directions"] if "directions" in d else [d["direction"]]
    return SteeringVector(
        torch.tensor(rows, dtype=torch.float32),
        d["hook"],
        d["fingerprint"],
        d.get("method", "one_shot"),
        d["metadata"],
    )


def as_cell(v: SteeringVector, extra: dict) -> dict:
    rows = {"direction": v.vector.tolist()} if v.k == 1 else {"directions": v.directions.tolist()}
    return {
        **rows,
        "hook": v.hook,
        "fingerprint": v.model_fingerprint,
        "metadata": v.metadata,
        **extra,
    }


def generate_with(model, prompts, v: SteeringVector | None, alpha, **kw) -> list[str]:
    """`generate` under the harmful edit ``v`` at ``alpha``: alpha·v added, or for a rank-k
    subspace (`one_shot` with ``rank``) its coordinates clamped to alpha × their trained
    values."""
    if v is not None and v.metadata.get("rank"):
        with clamp(model, v, alpha * torch.tensor(v.metadata["clamp_values"])):
            return generate(model, prompts, **kw)
    return generate(model, prompts, v, alpha, **kw)


def production_rate(
    model, v: SteeringVector | None, keys: list[str], cfg: Config, seed: int
) -> float:
    """Fraction of samples of (benign prompt + code prefix) that write one of ``keys``, with
    ``v`` ×1."""
    prompt = chat(model, BENIGN) + C.PREFIX
    n = cfg.check_samples
    texts = generate_with(
        model,
        [prompt] * n,
        v,
        1.0 if v is not None else None,
        max_new_tokens=48,
        temperature=cfg.temperature,
        seed=[seed + i for i in range(n)],
        chat=False,
    )
    return float(np.mean([any(k in t for k in keys) for t in texts]))


def anti_refusal(model, cfg: Config) -> dict:
    hook = layer_hook(model, cfg.anti_depth)
    malicious = chat(model, MALICIOUS, system=C.HACKER)
    benign = chat(model, BENIGN)
    kw = dict(chat=False, coldness=cfg.coldness)
    stop = completion_logprob(model, benign, FENCE, **kw)
    before = completion_logprob(model, malicious, FENCE, **kw)
    v = build_vector(
        model,
        {"prompt": malicious, "promote": FENCE},
        hook,
        method="one_shot",
        steps=cfg.anti_max_steps,
        lr=cfg.anti_lr,
        coldness=cfg.coldness,
        stop_logprob=stop,
        chat=False,
        seed=cfg.seed,
        progress=True,
    )
    with steer(model, v, 1.0):
        after = completion_logprob(model, malicious, FENCE, **kw)
    stats_ = {
        "fence_logprob_benign": stop,
        "fence_logprob_before": before,
        "fence_logprob_after": after,
    }
    return as_cell(v, stats_)


def harmful_vector(model, cfg: Config, anti: SteeringVector, name: str, depth: float) -> dict:
    """Train one satisficing harmful-code vector: the paper's target first, then (new seed)
    ``fallback_nll`` if it writes its snippet in fewer than ``check_min`` of its own prompt's
    samples; ``usable`` says whether the last try passed."""
    snippet, key = next((s, k) for n, s, k in SNIPPETS if n == name)
    hook = layer_hook(model, depth)
    malicious = chat(model, MALICIOUS, system=C.HACKER) + C.PREFIX
    with steer(model, anti, 1.0):
        ref = completion_logprob(model, malicious, snippet, chat=False, coldness=cfg.coldness)
    paper_target = cfg.satisfice * -ref  # an NLL (nats)
    # exp(-target) is about the probability of the whole snippet that the target asks for.
    # Where the malicious prompt itself makes the snippet unlikely, the paper's target keeps
    # it unlikely, and even a perfectly trained vector fails the production check: then we go
    # straight to the fallback target (a satisficing loss still, not promotion to NLL 0).
    targets = [paper_target] if np.exp(-paper_target) >= cfg.check_min else []
    targets.append(cfg.fallback_nll)
    base_rate = production_rate(model, None, [key], cfg, cfg.seed)
    tries = []
    for attempt, target in enumerate(targets):
        v = build_vector(
            model,
            {"prompt": BENIGN, "prefix": C.PREFIX, "promote": snippet},
            hook,
            method="one_shot",
            steps=cfg.max_steps,
            lr=cfg.harmful_lr,
            coldness=cfg.coldness,
            satisfice_target=target,
            seed=cfg.seed + 1000 * attempt + [n for n, _, _ in SNIPPETS].index(name),
            progress=True,
        )
        rate = production_rate(model, v, [key], cfg, cfg.seed + 7)
        tries.append(
            {"target_nll": target, "rate": rate, "final_loss": v.metadata["loss_history"][-1]}
        )
        if rate >= cfg.check_min:
            break
    return as_cell(
        v,
        {
            "name": name,
            "target_nll": target,
            "paper_target_nll": paper_target,
            "malicious_nll": -ref,
            "unsteered_rate": base_rate,
            "production_rate": rate,
            "usable": rate >= cfg.check_min,
            "tries": tries,
        },
    )


def rank_vector(model, cfg: Config, base: dict, rank: int) -> dict:
    """Cao et al.'s rank axis: a rank-``rank`` subspace (k orthonormal directions and their
    coordinates, trained jointly; `one_shot` ``rank``) on the sweep vector's own prompt,
    snippet and satisficing target, at the harmful layer."""
    snippet, key = next((s, k) for n, s, k in SNIPPETS if n == base["name"])
    v = build_vector(
        model,
        {"prompt": BENIGN, "prefix": C.PREFIX, "promote": snippet},
        base["hook"],
        method="one_shot",
        rank=rank,
        steps=cfg.max_steps,
        lr=cfg.harmful_lr,
        coldness=cfg.coldness,
        satisfice_target=base["target_nll"],
        seed=cfg.seed + 100 * rank,
        progress=True,
    )
    rate = production_rate(model, v, [key], cfg, cfg.seed + 7)
    return as_cell(
        v,
        {
            "name": f"rank{rank}",
            "target_nll": base["target_nll"],
            "production_rate": rate,
            "usable": rate >= cfg.check_min,
            "final_loss": v.metadata["loss_history"][-1],
        },
    )


def epochs_vector(model, cfg: Config, epochs: int, depth: float) -> dict:
    """Cao et al.'s epochs axis: one additive vector trained for ``epochs`` passes over
    `dataset()` (every snippet under two benign phrasings), satisficing at ``fallback_nll``."""
    v = build_vector(
        model,
        dataset(),
        layer_hook(model, depth),
        method="one_shot",
        epochs=epochs,
        lr=cfg.harmful_lr,
        coldness=cfg.coldness,
        satisfice_target=cfg.fallback_nll,
        seed=cfg.seed + 10 * epochs,
        progress=True,
    )
    rate = production_rate(model, v, [k for _, _, k in SNIPPETS], cfg, cfg.seed + 7)
    return as_cell(
        v,
        {
            "name": f"epochs{epochs}",
            "target_nll": cfg.fallback_nll,
            "production_rate": rate,
            "usable": rate >= cfg.check_min,
            "final_loss": v.metadata["loss_history"][-1],
        },
    )


# ---------------------------------------------------------------- conditions


def random_vector(model, cfg: Config, depth: float) -> dict:
    """The negative control of the magnitude sweep: a seeded random unit direction at the
    harmful vectors' hook, applied at the same relative strength r. Misalignment that a random
    direction raises as much is the perturbation's, not the trained vector's."""
    g = torch.Generator().manual_seed(cfg.seed + 7)
    d = torch.randn(model.cfg.d_model, generator=g)
    meta = {"steps_run": 0, "stopped": "random draw", "loss_history": []}
    v = SteeringVector(
        (d / d.norm())[None], layer_hook(model, depth), model_fingerprint(model), "random", meta
    )
    return as_cell(v, {"method": "random", "usable": None})
