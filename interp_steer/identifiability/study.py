"""The orthogonal-perturbation study: many vectors x strengths, batched through one stacked
subspace with per-row coefficients.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import torch
from torch import Tensor
from tqdm.auto import tqdm
from transformer_lens import HookedTransformer

from interp_steer.activations import forward_kwargs, tokenize
from interp_steer.eval.stats import cohens_d, tost_welch
from interp_steer.generation import generate
from interp_steer.identifiability.equivalence import (
    condition_rows,
    stack_vectors,
)
from interp_steer.identifiability.nullspace import NullSpace
from interp_steer.identifiability.perturb import perturb
from interp_steer.interventions import Positions, steer
from interp_steer.vectors import SteeringVector


@torch.no_grad()
def _steered_logprobs(model: HookedTransformer, stacked, coef, texts, batch_size):
    """Yield (row slice, batch, log-probs) for texts (repeated per condition row)."""
    for i in range(0, coef.shape[0], batch_size):
        rows = coef[i : i + batch_size]
        batch = tokenize(model, [texts[(i + r) % len(texts)] for r in range(rows.shape[0])])
        with steer(model, stacked, rows):
            logits = model(batch.tokens, **forward_kwargs(batch))
        yield i, batch, logits.log_softmax(-1).float()


def trait_logit_scores(
    model: HookedTransformer, vectors, conditions, pairs, batch_size: int = 32
) -> np.ndarray:
    """Per condition: mean over pairs of log P(positive text) − log P(negative text), steering
    every position. Efficacy is its shift relative to alpha = 0."""
    texts = [p for p, _ in pairs] + [n for _, n in pairs]
    stacked = stack_vectors(vectors)
    coef = condition_rows(conditions, len(vectors), len(texts))
    seq_lp = torch.empty(coef.shape[0], dtype=torch.float64)
    for i, batch, lp in _steered_logprobs(model, stacked, coef, texts, batch_size):
        tok_lp = lp[:, :-1].gather(-1, batch.tokens[:, 1:, None])[..., 0]
        real = batch.mask[:, 1:] & batch.mask[:, :-1]
        seq_lp[i : i + len(tok_lp)] = (tok_lp * real).sum(1).double()
    per = seq_lp.view(len(conditions), 2, len(pairs))
    return (per[:, 0] - per[:, 1]).mean(1).numpy()


def kl_to_reference(
    model: HookedTransformer, vectors, conditions, reference, prompts, batch_size: int = 16
):
    """Per condition: mean next-token KL(P_ref ‖ P_cond) in nats over prompts and real
    positions, where reference[c] is the condition index each condition is compared with."""
    stacked = stack_vectors(vectors)
    n = len(prompts)
    refs = sorted(set(reference))
    # pass 1: the few reference conditions, kept; pass 2: every condition, reduced on the fly
    ref_lp: dict[tuple[int, int], Tensor] = {}
    coef = condition_rows([conditions[r] for r in refs], len(vectors), n)
    for i, batch, lp in _steered_logprobs(model, stacked, coef, prompts, batch_size):
        for r in range(lp.shape[0]):
            ref_lp[(refs[(i + r) // n], (i + r) % n)] = lp[r][batch.mask[r]].double()
    total = np.zeros(len(conditions))
    coef = condition_rows(conditions, len(vectors), n)
    for i, batch, lp in _steered_logprobs(model, stacked, coef, prompts, batch_size):
        for r in range(lp.shape[0]):
            c, p = (i + r) // n, (i + r) % n
            a, b = ref_lp[(reference[c], p)], lp[r][batch.mask[r]].double()
            total[c] += float((a.exp() * (a - b)).sum(-1).mean()) / n
    return total


def classifier_samples(
    model: HookedTransformer,
    vectors,
    conditions,
    prompts,
    classifiers,
    n_samples=2,
    max_new_tokens=30,
    temperature=0.8,
    seed=0,
    batch_size=64,
):
    """Per condition and classifier: the array of scores of sampled generations."""
    rows = [p for p in prompts for _ in range(n_samples)]
    stacked = stack_vectors(vectors)
    coef = condition_rows(conditions, len(vectors), len(rows))
    texts: list[str] = []
    for i in tqdm(range(0, coef.shape[0], batch_size), desc="generate"):
        chunk = coef[i : i + batch_size]
        with steer(model, stacked, chunk):
            texts += generate(
                model,
                [rows[(i + r) % len(rows)] for r in range(len(chunk))],
                max_new_tokens=max_new_tokens,
                temperature=temperature,
                seed=seed + i,
            )
    out = {}
    for clf in classifiers:
        name = getattr(clf, "name", type(clf).__name__)
        scores = np.asarray(clf(texts), float)
        out[name] = scores.reshape(len(conditions), len(rows))
    return out, texts


def orthogonal_perturbation_study(
    model: HookedTransformer,
    vec: SteeringVector,
    prompts: Sequence[str],
    eps_grid: Sequence[float] = (0.5, 1.0, 2.0),
    alphas: Sequence[float] = (0.5, 1.0),
    sources: Sequence[str] = ("null", "random", "principal"),
    classifiers: Sequence[Callable] | None = None,
    seed: int = 0,
    *,
    pairs: Sequence[tuple[str, str]] | None = None,
    null_space: NullSpace | None = None,
    n_perturb: int = 3,
    n_samples: int = 2,
    max_new_tokens: int = 30,
    margin: float = 0.1,
):
    """Efficacy, KL to v and classifier equivalence for v' = v + δ over (source, eps, alpha).

    Every condition runs through one stacked subspace with per-row coefficients, so the
    study is a handful of batched forwards/generations. ``pairs`` (held-out contrastive
    pairs) give the logit efficacy; without them that column is NaN. Returns a DataFrame.
    """
    vectors = [vec]
    meta = [("v", 0.0, 0)]
    for src in sources:
        for eps in eps_grid:
            for i, p in enumerate(
                perturb(vec, eps, src, n=n_perturb, seed=seed, null_space=null_space)
            ):
                vectors.append(p)
                meta.append((src, eps, i))
    conditions = [(0, 0.0)] + [(j, a) for a in alphas for j in range(len(vectors))]
    reference = [0] + [
        1 + ai * len(vectors) for ai in range(len(alphas)) for _ in range(len(vectors))
    ]
    logit = (
        trait_logit_scores(model, vectors, conditions, pairs)
        if pairs
        else np.full(len(conditions), np.nan)
    )
    kl = kl_to_reference(model, vectors, conditions, reference, prompts)
    cls = {}
    if classifiers:
        cls, _ = classifier_samples(
            model,
            vectors,
            conditions,
            prompts,
            classifiers,
            n_samples=n_samples,
            max_new_tokens=max_new_tokens,
            seed=seed,
        )
    rows = []
    for c, (j, a) in enumerate(conditions):
        src, eps, idx = meta[j] if c else ("none", 0.0, 0)
        row = {
            "source": src,
            "eps": eps,
            "index": idx,
            "alpha": a,
            "efficacy_logit": float(logit[c] - logit[0]),
            "kl_to_v": float(kl[c]),
        }
        verdicts = []
        for name, scores in cls.items():
            ref = scores[reference[c]]
            row[f"{name}_mean"] = float(scores[c].mean())
            row[f"{name}_efficacy"] = float(scores[c].mean() - scores[0].mean())
            row[f"{name}_delta_vs_v"] = float(scores[c].mean() - ref.mean())
            row[f"{name}_tost_p"] = tost_welch(ref, scores[c], margin)
            row[f"{name}_cohens_d"] = cohens_d(ref, scores[c])[0]
            verdicts.append(row[f"{name}_tost_p"] < 0.05)
        row["equivalent"] = bool(verdicts) and all(verdicts)
        rows.append(row)
    return pd.DataFrame(rows)


def paired_generations(
    model: HookedTransformer,
    vectors: Sequence[SteeringVector],
    conditions: Sequence[tuple[int, float]],
    prompts: Sequence[str],
    n_samples: int = 5,
    seed: int = 0,
    seed_offsets: Sequence[int] | None = None,
    positions: Positions = "last_and_generated",
    max_new_tokens: int = 40,
    temperature: float = 0.8,
    batch_size: int = 128,
    progress: bool = True,
) -> list[list[list[str]]]:
    """Texts ``[condition][prompt][sample]`` for (vector index, alpha) conditions, every
    condition in one stacked batch.

    Sample s of prompt p draws from seed ``seed + 1000·p + s + seed_offsets[c]``, so conditions
    with the same offset share their sampling noise (a paired design); a different offset gives
    an independent replicate (the negative control). ``prompts`` are used as given (format them
    with `chat` first). With ``positions`` that leave the prompt before its last token alone,
    each prompt's prefix is computed once (``share_prefix``).
    """
    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}")
    offsets = [0] * len(conditions) if seed_offsets is None else list(seed_offsets)
    if len(offsets) != len(conditions):
        raise ValueError(f"{len(offsets)} seed offsets for {len(conditions)} conditions")
    rows = [
        (p, vec, alpha, seed + 1000 * p + s + off)
        for (vec, alpha), off in zip(conditions, offsets)
        for p in range(len(prompts))
        for s in range(n_samples)
    ]
    texts = generate_rows(
        model,
        vectors,
        rows,
        prompts,
        positions=positions,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        batch_size=batch_size,
        progress=progress,
    )
    per = len(prompts) * n_samples
    return [
        [
            texts[c * per + p * n_samples : c * per + (p + 1) * n_samples]
            for p in range(len(prompts))
        ]
        for c in range(len(conditions))
    ]


def generate_rows(
    model: HookedTransformer,
    vectors: Sequence[SteeringVector],
    rows: Sequence[tuple[int, int, float, int]],
    prompts: Sequence[str],
    positions: Positions = "last_and_generated",
    max_new_tokens: int = 40,
    temperature: float = 0.8,
    batch_size: int = 128,
    progress: bool = True,
) -> list[str]:
    """One text per row ``(prompt index, vector index, alpha, sampling seed)``, in row order,
    every row in one stacked batch (the general form of `paired_generations`, for designs in
    which each row carries its own vector, such as δ draws assigned to samples).

    Rows with the same seed and prompt share their sampling noise. ``prompts`` are used as
    given (format them with `chat` first).
    """
    if not rows:
        raise ValueError("no rows to generate")
    bad = [r for r in rows if not 0 <= r[0] < len(prompts)]
    if bad:
        raise ValueError(f"row {bad[0]!r} names a prompt outside the {len(prompts)} given")
    stacked = stack_vectors(vectors)
    coef = condition_rows([(vec, alpha) for _, vec, alpha, _ in rows], len(vectors), 1)
    share = positions in ("generated", "last_and_generated")
    texts: list[str] = []
    for i in tqdm(range(0, len(rows), batch_size), desc="generate", disable=not progress):
        chunk = rows[i : i + batch_size]
        with steer(model, stacked, coef[i : i + len(chunk)], positions=positions):
            texts += generate(
                model,
                [prompts[p] for p, _, _, _ in chunk],
                max_new_tokens=max_new_tokens,
                temperature=temperature,
                seed=[s for _, _, _, s in chunk],
                chat=False,
                share_prefix=share,
            )
    return texts


@torch.no_grad()
def logit_checks(
    model: HookedTransformer,
    vec: SteeringVector,
    prompts: Sequence[str],
    alpha: float,
    others: dict[str, SteeringVector],
    k: int = 10,
) -> dict:
    """Last-token logit comparisons of α·v against α·(each other vector): L2 distance,
    top-1 agreement and top-k overlap, averaged over prompts."""
    names = list(others)
    vectors = [vec] + [others[n] for n in names]
    conditions = [(j, alpha) for j in range(len(vectors))]
    stacked = stack_vectors(vectors)
    coef = condition_rows(conditions, len(vectors), len(prompts))
    last = torch.empty(coef.shape[0], model.cfg.d_vocab)
    batch = tokenize(model, list(prompts) * len(vectors))
    with steer(model, stacked, coef):
        last[:] = model(batch.tokens, **forward_kwargs(batch))[:, -1].float()
    last = last.view(len(vectors), len(prompts), -1)
    out = {}
    for j, name in enumerate(names, start=1):
        a, b = last[0], last[j]
        topa, topb = a.topk(k).indices, b.topk(k).indices
        overlap = [len(set(x.tolist()) & set(y.tolist())) / k for x, y in zip(topa, topb)]
        out[name] = {
            "l2": float((a - b).norm(dim=-1).mean()),
            "top1_agreement": float((a.argmax(-1) == b.argmax(-1)).float().mean()),
            f"top{k}_overlap": float(np.mean(overlap)),
        }
    return out
