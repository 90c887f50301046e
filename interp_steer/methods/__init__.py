"""Steering-vector construction methods, one per module, behind `build_vector`."""

from __future__ import annotations

from collections.abc import Sequence

from interp_steer import __version__
from interp_steer.activations import encode, get_activations
from interp_steer.methods import mean_diff, one_shot, pca, probe, sae_feature
from interp_steer.vectors import SteeringVector, model_fingerprint

CONTRASTIVE = {"mean_diff": mean_diff.fit, "pca": pca.fit, "probe": probe.fit}
METHODS = [*CONTRASTIVE, "one_shot", "sae_feature"]


def _pairs(data) -> tuple[list[tuple], str]:
    """(pairs, dataset label) from a shipped dataset name, a dataset, or a list of pairs."""
    from interp_steer import datasets

    if isinstance(data, str):
        return list(datasets.load(data).train), f"{data}:train"
    if isinstance(data, datasets.ContrastiveDataset):
        return list(data.train), f"{data.name}:train"
    pairs = list(data)
    if not pairs:
        raise ValueError("empty dataset: no contrastive pairs given")
    if any(not isinstance(p, Sequence) or len(p) not in (2, 3) for p in pairs):
        raise ValueError("pairs must be (positive, negative) or (prompt, positive, negative)")
    return pairs, f"custom:{len(pairs)} pairs"


def build_vector(
    model,
    data,
    hook: str,
    method: str = "mean_diff",
    aggregation: str | Sequence[int] = "last",
    batch_size: int = 16,
    seed: int = 0,
    progress: bool = True,
    **opts,
) -> SteeringVector:
    """Build a steering vector at ``hook`` from contrastive ``data`` with ``method``.

    ``data``: a shipped dataset name (its train split), a `ContrastiveDataset`, a list of
    (positive, negative) texts, or (prompt, positive, negative) triples — with triples,
    ``aggregation="mean"`` averages over the completion only. ``one_shot`` takes a dict
    instead (see `interp_steer.methods.one_shot`).
    """
    meta = {"seed": seed, "interp_steer_version": __version__}
    if method == "one_shot":
        directions, extra = one_shot.build(model, data, hook, seed=seed, progress=progress, **opts)
        meta.update(dataset="one-shot prompt", aggregation="all positions")
    elif method == "sae_feature":
        directions, extra = sae_feature.build(
            model, data, hook, batch_size=batch_size, progress=progress, **opts
        )
    elif method in CONTRASTIVE:
        pairs, label = _pairs(data)
        if len(pairs[0]) == 3:
            texts = [p + c for p, c, _ in pairs] + [p + c for p, _, c in pairs]
            starts = [len(encode(model, p)) for p, _, _ in pairs] * 2
        else:
            texts, starts = [p for p, _ in pairs] + [n for _, n in pairs], None
        acts = get_activations(
            model, texts, hook, aggregation, starts, batch_size=batch_size, progress=progress
        )[hook]
        n = len(pairs)
        directions, extra = CONTRASTIVE[method](acts[:n], acts[n:], seed=seed, **opts)
        meta.update(dataset=label, n_pairs=n, aggregation=aggregation)
    else:
        raise ValueError(f"unknown method {method!r}; choose from {METHODS}")
    meta.update(extra)
    return SteeringVector(directions, hook, model_fingerprint(model), method, meta)
