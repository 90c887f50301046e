"""Behavioural equivalence of two steering vectors: next-token KL, classifier scores on
generations (TOST with an explicit margin, Cohen's d) and embedding distance; and the
batching helpers that run several vectors x strengths as one stacked subspace.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from transformer_lens import HookedTransformer

from interp_steer.activations import forward_kwargs, tokenize
from interp_steer.eval.stats import cohens_d, tost_welch
from interp_steer.generation import generate
from interp_steer.interventions import steer
from interp_steer.vectors import SteeringVector


def stack_vectors(vectors: Sequence[SteeringVector]) -> SteeringVector:
    """Vectors at one hook as the directions of one subspace, to steer them all in one pass."""
    hooks = {v.hook for v in vectors}
    if len(hooks) != 1:
        raise ValueError(f"all vectors must share one hook, got {sorted(hooks)}")
    return SteeringVector(
        torch.cat([v.directions for v in vectors]), vectors[0].hook, vectors[0].model_fingerprint
    )


def condition_rows(conditions: Sequence[tuple[int, float]], m: int, repeat: int) -> Tensor:
    """Coefficient matrix: each (vector index, alpha) condition repeated ``repeat`` times."""
    for cond in conditions:
        ok = (
            isinstance(cond, Sequence)
            and len(cond) == 2
            and isinstance(cond[0], int)
            and 0 <= cond[0] < m
            and isinstance(cond[1], int | float)
            and np.isfinite(cond[1])
        )
        if not ok:
            raise ValueError(
                f"conditions must be (vector index < {m}, finite alpha) pairs, got {cond!r}"
            )
    coef = torch.zeros(len(conditions) * repeat, m)
    for c, (j, a) in enumerate(conditions):
        coef[c * repeat : (c + 1) * repeat, j] = a
    return coef


def _paired(vec_a: SteeringVector, vec_b: SteeringVector, alpha: float, n: int):
    """A rank-2 vector [v_a; v_b] and per-row coefficients: rows :n get α·v_a, rows n: α·v_b.

    Steering with these runs both conditions in one batch.
    """
    return stack_vectors([vec_a, vec_b]), condition_rows([(0, alpha), (1, alpha)], 2, n)


@torch.no_grad()
def next_token_kl(
    model: HookedTransformer,
    vec_a: SteeringVector,
    vec_b: SteeringVector,
    prompts: Sequence[str],
    alpha: float,
) -> float:
    """Mean over prompts and real positions of KL(P_a ‖ P_b) in nats, steering every position."""
    n = len(prompts)
    both, coef = _paired(vec_a, vec_b, alpha, n)
    batch = tokenize(model, list(prompts) * 2)
    with steer(model, both, coef):
        logp = model(batch.tokens, **forward_kwargs(batch)).log_softmax(-1).double()
    pa, pb = logp[:n], logp[n:]
    kl = (pa.exp() * (pa - pb)).sum(-1)  # [n, pos]
    return float(kl[batch.mask[:n]].mean())


@dataclass
class EquivalenceResult:
    kl: float
    classifier_deltas: dict[str, float]
    tost_p: dict[str, float]
    cohens_d: dict[str, float]
    embedding_distance: float | None
    margin: float
    equivalent: bool

    def __str__(self) -> str:
        verdict = "equivalent within margin" if self.equivalent else "NOT equivalent"
        parts = [f"{verdict} (margin {self.margin}); KL={self.kl:.4f} nats"]
        for k in self.classifier_deltas:
            parts.append(
                f"{k}: Δ={self.classifier_deltas[k]:+.3f}, TOST p={self.tost_p[k]:.3g}, "
                f"d={self.cohens_d[k]:+.2f}"
            )
        if self.embedding_distance is not None:
            parts.append(f"embedding distance {self.embedding_distance:.4f}")
        return "; ".join(parts)


def behavioural_equivalence(
    model: HookedTransformer,
    vec_a: SteeringVector,
    vec_b: SteeringVector,
    prompts: Sequence[str],
    alpha: float,
    classifiers: Sequence[Callable] | None = None,
    margin: float = 0.1,
    n_samples: int = 2,
    max_new_tokens: int = 40,
    temperature: float = 0.8,
    alpha_level: float = 0.05,
    embedder: Callable | None = None,
    seed: int = 0,
) -> EquivalenceResult:
    """Are v_a and v_b behaviourally equivalent at strength ``alpha``?

    Equivalent means every classifier passes TOST at ``alpha_level`` with ``margin`` on its
    score scale. Without classifiers only the KL is reported and ``equivalent`` is False.
    """
    kl = next_token_kl(model, vec_a, vec_b, prompts, alpha)
    deltas, ps, ds = {}, {}, {}
    emb = None
    if classifiers:
        rows = list(prompts) * n_samples
        both, coef = _paired(vec_a, vec_b, alpha, len(rows))  # one batched generation
        with steer(model, both, coef):
            texts = generate(
                model, rows * 2, max_new_tokens=max_new_tokens, temperature=temperature, seed=seed
            )
        ta, tb = texts[: len(rows)], texts[len(rows) :]
        for clf in classifiers:
            name = getattr(clf, "name", type(clf).__name__)
            sa, sb = clf(ta), clf(tb)
            deltas[name] = float(np.mean(sb) - np.mean(sa))
            ps[name] = tost_welch(sa, sb, margin)
            ds[name] = cohens_d(sa, sb)[0]
        if embedder is not None:
            ea, eb = np.asarray(embedder(ta)), np.asarray(embedder(tb))
            ca, cb = ea.mean(0), eb.mean(0)
            emb = float(1 - ca @ cb / (np.linalg.norm(ca) * np.linalg.norm(cb)))
    equivalent = bool(ps) and all(p < alpha_level for p in ps.values())
    return EquivalenceResult(kl, deltas, ps, ds, emb, margin, equivalent)
