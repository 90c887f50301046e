"""Steering-vector construction methods, one per module, behind `build_vector`.

Every method registers a builder ``(model, data, hook, *, aggregation, batch_size, seed,
progress, **options) -> (directions [k, d_model], metadata)`` with two attributes:
``options`` (its own keyword options) and ``shared`` (which of aggregation, batch_size and
seed it uses). Anything else a caller passes raises, naming what the method does take.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence

from transformer_lens import HookedTransformer

from interp_steer import __version__
from interp_steer.activations import check_batch_size, encode, get_activations
from interp_steer.datasets import contrastive_pairs
from interp_steer.methods import mean_diff, one_shot, pca, probe, sae_feature
from interp_steer.vectors import SteeringVector, check_hook, model_fingerprint

Builder = Callable[..., tuple]


def _options(fn: Callable, skip: Sequence[str]) -> list[str]:
    """The keyword options of ``fn`` a caller may set (everything with a default)."""
    return [
        n
        for n, p in inspect.signature(fn).parameters.items()
        if p.default is not inspect.Parameter.empty and n not in skip
    ]


def _contrastive(fit: Callable) -> Builder:
    """A builder that aggregates the pairs' activations and hands them to ``fit(pos, neg)``."""

    def build(
        model: HookedTransformer, data, hook, *, aggregation, batch_size, seed, progress, **opts
    ):
        pairs, label = contrastive_pairs(data)
        if len(pairs[0]) == 3:
            texts = [p + c for p, c, _ in pairs] + [p + c for p, _, c in pairs]
            starts = [len(encode(model, p)) for p, _, _ in pairs] * 2
        else:
            texts, starts = [p for p, _ in pairs] + [n for _, n in pairs], None
        acts = get_activations(
            model, texts, hook, aggregation, starts, batch_size=batch_size, progress=progress
        )[hook]
        n = len(pairs)
        if "seed" in inspect.signature(fit).parameters:
            opts["seed"] = seed
        directions, extra = fit(acts[:n], acts[n:], **opts)
        return directions, {"dataset": label, "n_pairs": n, "aggregation": aggregation, **extra}

    build.options = _options(fit, ["seed"])
    # seed reaches only fits that draw random numbers (probe); the others are deterministic
    build.shared = ("aggregation", "batch_size", "seed")
    return build


def _one_shot(
    model: HookedTransformer, data, hook, *, aggregation, batch_size, seed, progress, **opts
):
    directions, extra = one_shot.build(model, data, hook, seed=seed, progress=progress, **opts)
    return directions, {"dataset": "one-shot prompt", "aggregation": "all positions", **extra}


def _sae_feature(
    model: HookedTransformer, data, hook, *, aggregation, batch_size, seed, progress, **opts
):
    return sae_feature.build(model, data, hook, batch_size=batch_size, progress=progress, **opts)


_one_shot.options = _options(one_shot.build, ["seed", "progress"])
_one_shot.shared = ("seed",)  # trains on all positions of one forward: no aggregation, batches
_sae_feature.options = _options(sae_feature.build, ["batch_size", "progress"])
_sae_feature.shared = ("batch_size",)  # picks a latent deterministically: no seed

REGISTRY: dict[str, Builder] = {
    "mean_diff": _contrastive(mean_diff.fit),
    "pca": _contrastive(pca.fit),
    "probe": _contrastive(probe.fit),
    "one_shot": _one_shot,
    "sae_feature": _sae_feature,
}
METHODS = list(REGISTRY)


def build_vector(
    model: HookedTransformer,
    data,
    hook: str,
    method: str = "mean_diff",
    aggregation: str | Sequence[int] | None = None,
    batch_size: int | None = None,
    seed: int | None = None,
    progress: bool = True,
    **opts,
) -> SteeringVector:
    """Build a steering vector at ``hook`` from contrastive ``data`` with ``method``.

    Args:
        model: the model whose activations define the vector.
        data: a shipped dataset name (its train split), a `ContrastiveDataset`, a list of
            (positive, negative) texts, or (prompt, positive, negative) triples; ``one_shot``
            takes a dict instead (see `interp_steer.methods.one_shot`).
        hook: the TransformerLens hook name the vector belongs to.
        method: one of `METHODS`.
        aggregation: how a text's activations become one vector (default ``"last"``; with
            triples ``"mean"`` averages over the completion only). Contrastive methods only.
        batch_size: texts per forward pass (default 16). Not for ``one_shot``.
        seed: the method's random seed (default 0). Not for ``sae_feature``.
        progress: show progress bars.
        **opts: the method's own options (e.g. ``k`` for pca, ``C`` for probe, ``steps`` for
            one_shot).

    An option, or a shared argument, that the method does not use raises, naming the ones
    it does: nothing passed is silently ignored.
    """
    if method not in REGISTRY:
        raise ValueError(f"unknown method {method!r}; choose from {METHODS}")
    builder = REGISTRY[method]
    unknown = sorted(set(opts) - set(builder.options))
    if unknown:
        raise ValueError(
            f"method {method!r} takes no option(s) {unknown}; its options are {builder.options}"
        )
    given = {"aggregation": aggregation, "batch_size": batch_size, "seed": seed}
    unused = sorted(k for k, v in given.items() if v is not None and k not in builder.shared)
    if unused:
        raise ValueError(
            f"method {method!r} does not use {unused}; of the shared arguments it uses "
            f"{list(builder.shared)}"
        )
    aggregation = "last" if aggregation is None else aggregation
    batch_size = 16 if batch_size is None else batch_size
    seed = 0 if seed is None else seed
    check_batch_size(batch_size)
    check_hook(model, hook)
    directions, extra = builder(
        model,
        data,
        hook,
        aggregation=aggregation,
        batch_size=batch_size,
        seed=seed,
        progress=progress,
        **opts,
    )
    meta = {"seed": seed, "interp_steer_version": __version__, **extra}
    return SteeringVector(directions, hook, model_fingerprint(model), method, meta)
