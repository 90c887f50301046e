"""Identifiability of steering vectors: null spaces, orthogonal perturbations, equivalence.

- `activation_covariance` streams activations at a hook into float64 sums (never holding them).
- `null_space` turns the covariance spectrum into a null-space estimate by an explicit rule.
- `perturb` draws v' = v + δ with δ ⟂ v, ‖δ‖ = eps·‖v‖, from a chosen subspace.
- `behavioural_equivalence` compares two vectors by next-token KL, classifier scores on
  generations (TOST with an explicit margin, Cohen's d) and embedding distance.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from interp_steer.activations import capture, forward_kwargs, tokenize
from interp_steer.autograd import trains
from interp_steer.interventions import edit_at, steer
from interp_steer.vectors import SteeringVector, check_hook


@dataclass(frozen=True)
class Covariance:
    mean: Float[Tensor, "d"]
    cov: Float[Tensor, "d d"]
    n_tokens: int
    hook: str


@torch.no_grad()
def activation_covariance(
    model,
    prompts: Sequence[str],
    hook: str,
    positions: str = "all",
    batch_size: int = 8,
    progress: bool = True,
    skip_first: int = 1,
) -> Covariance:
    """Mean and covariance (float64) of activations at ``hook`` over real tokens.

    ``positions``: "all" real tokens or "last" token of each prompt. The forward pass stops
    after the hook's layer. ``skip_first`` drops each prompt's first real tokens: the first
    position carries a massive "attention sink" activation (on SmolLM2 its norm dwarfs every
    other token's) that would otherwise be the covariance's whole top eigenvalue.
    """
    check_hook(model, hook)
    if len(prompts) == 0:
        raise ValueError("no prompts given")
    if positions not in ("all", "last"):
        raise ValueError("positions must be 'all' or 'last'")
    d = model.cfg.d_model
    shift = None  # subtract a provisional mean for numerical stability of the sums
    s1 = torch.zeros(d, dtype=torch.float64)
    s2 = torch.zeros(d, d, dtype=torch.float64)
    n = 0
    for _, cap, keep in capture(model, prompts, hook, batch_size, skip_first, progress,
                                desc="covariance"):  # fmt: skip
        acts = cap[hook]
        x = acts[:, -1] if positions == "last" else acts[keep]
        x = x.double().cpu()
        if shift is None:
            shift = x.mean(0)
        x = x - shift
        s1 += x.sum(0)
        s2 += x.T @ x
        n += x.shape[0]
    if n < 2:
        raise ValueError("need at least 2 tokens to estimate a covariance")
    m = s1 / n
    cov = (s2 - n * torch.outer(m, m)) / (n - 1)
    return Covariance(mean=m + shift, cov=(cov + cov.T) / 2, n_tokens=n, hook=hook)


RULES = ("relative", "energy", "participation", "noise_floor")


@dataclass(frozen=True)
class NullSpace:
    """Null-space estimate: ``basis`` [d, dim] orthonormal; ``signal`` spans the rest."""

    dim: int
    basis: Float[Tensor, "d dim"]
    signal: Float[Tensor, "d rest"]
    spectrum: Float[Tensor, "d"]  # eigenvalues of the covariance, descending
    rule: str
    params: dict = field(default_factory=dict)


def _signal_rank(lam: Tensor, rule: str, params: dict, n_samples: int | None) -> int:
    lam = lam.clamp_min(0)
    if rule == "relative":
        # eigenvalue below tol · λ_max counts as null (tol on variance, not singular value)
        return int((lam > params.get("tol", 1e-3) * lam[0]).sum())
    if rule == "energy":
        # smallest top-r subspace holding `energy` of the total variance is the signal
        frac = lam.cumsum(0) / lam.sum()
        return int((frac < params.get("energy", 0.99)).sum()) + 1
    if rule == "participation":
        # effective dimension (Σλ)² / Σλ²
        return max(1, round(float(lam.sum() ** 2 / (lam**2).sum())))
    if rule == "noise_floor":
        # Marchenko–Pastur upper edge of a white-noise bulk whose scale is the median eigenvalue
        if not n_samples:
            raise ValueError("the noise_floor rule needs n_samples (the token count)")
        q = lam.shape[0] / n_samples
        edge = float(lam.median()) * (1 + q**0.5) ** 2 * params.get("factor", 1.0)
        # an exactly rank-deficient spectrum has a zero median: keep round-off out of the signal
        return int((lam > max(edge, 1e-12 * float(lam[0]))).sum())
    raise ValueError(f"unknown rule {rule!r}; choose from {RULES}")


def null_space(
    cov: Covariance | Tensor, rule: str = "relative", n_samples: int | None = None, **params
) -> NullSpace:
    """Null space of an activation covariance by an explicit rule.

    - ``relative`` (tol=1e-3): eigenvalues below tol·λ_max.
    - ``energy`` (energy=0.99): everything outside the top subspace holding that variance.
    - ``participation``: d − round(participation ratio).
    - ``noise_floor`` (factor=1): eigenvalues under the Marchenko–Pastur edge of the bulk.
    """
    if isinstance(cov, Covariance):
        n_samples = n_samples or cov.n_tokens
        cov = cov.cov
    lam, vecs = torch.linalg.eigh(cov.double())
    lam, vecs = lam.flip(0), vecs.flip(1)
    r = _signal_rank(lam, rule, params, n_samples)
    return NullSpace(
        dim=lam.shape[0] - r, basis=vecs[:, r:], signal=vecs[:, :r], spectrum=lam, rule=rule,
        params=dict(params),
    )


def perturb(
    vec: SteeringVector,
    eps: float,
    source: str | Tensor = "random",
    n: int = 1,
    seed: int = 0,
    keep_norm: bool = False,
    null_space: NullSpace | None = None,
) -> list[SteeringVector]:
    """v' = v + δ, δ ⟂ v, ‖δ‖ = eps·‖v‖, δ drawn uniformly in a subspace.

    ``source``: "random" (all of ℝᵈ), "null" (null_space.basis), "principal"
    (null_space.signal, a control that should break equivalence) or an explicit [d, m]
    basis. ``keep_norm`` rescales v' to ‖v‖ (a rotation by atan(eps)).
    """
    v = vec.vector.double()
    d = v.shape[0]
    if isinstance(source, Tensor):
        basis = source.double()
    elif source == "random":
        basis = torch.eye(d, dtype=torch.float64)
    elif source in ("null", "principal"):
        if null_space is None:
            raise ValueError(f"source={source!r} needs null_space=...")
        basis = null_space.basis if source == "null" else null_space.signal
    else:
        raise ValueError("source must be 'random', 'null', 'principal' or a basis tensor")
    if basis.ndim != 2 or basis.shape[0] != d:
        raise ValueError(f"basis must be [d_model={d}, m], got {tuple(basis.shape)}")
    # orthonormal basis of span(basis) ∩ v⊥: δ then lies in the subspace *and* is ⟂ v
    u = v / v.norm()
    b = basis - torch.outer(u, u @ basis)
    q, r = torch.linalg.qr(b)
    q = q[:, r.diagonal().abs() > 1e-8 * max(1.0, float(r.diagonal().abs().max()))]
    if q.shape[1] == 0:
        raise ValueError("the chosen subspace has no direction orthogonal to v")
    gen = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        delta = q @ torch.randn(q.shape[1], generator=gen, dtype=torch.float64)
        delta = delta / delta.norm() * eps * v.norm()
        new = v + delta
        if keep_norm:
            new = new * (v.norm() / new.norm())
        meta = dict(vec.metadata, perturbation={"eps": eps, "source": source if isinstance(
            source, str) else "basis", "seed": seed, "index": i, "keep_norm": keep_norm})
        out.append(SteeringVector(new.to(vec.directions.dtype)[None], vec.hook,
                                  vec.model_fingerprint, vec.method, meta))
    return out


def _paired(vec_a: SteeringVector, vec_b: SteeringVector, alpha: float, n: int):
    """A rank-2 vector [v_a; v_b] and per-row coefficients: rows :n get α·v_a, rows n: α·v_b.

    Steering with these runs both conditions in one batch.
    """
    return _stack([vec_a, vec_b]), _rows([(0, alpha), (1, alpha)], 2, n)


@torch.no_grad()
def next_token_kl(
    model, vec_a: SteeringVector, vec_b: SteeringVector, prompts: Sequence[str], alpha: float
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


def cohens_d(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    pooled = np.sqrt(((len(a) - 1) * a.var(ddof=1) + (len(b) - 1) * b.var(ddof=1))
                     / (len(a) + len(b) - 2))
    return float((b.mean() - a.mean()) / pooled) if pooled > 0 else 0.0


def tost(a: np.ndarray, b: np.ndarray, margin: float) -> float:
    """p-value of Welch's two one-sided tests for |mean(b) − mean(a)| < margin."""
    from scipy import stats

    a, b = np.asarray(a, float), np.asarray(b, float)
    diff = b.mean() - a.mean()
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = np.sqrt(va + vb)
    if se == 0:
        return 0.0 if abs(diff) < margin else 1.0
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    p_lower = 1 - stats.t.cdf((diff + margin) / se, df)
    p_upper = stats.t.cdf((diff - margin) / se, df)
    return float(max(p_lower, p_upper))


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
            parts.append(f"{k}: Δ={self.classifier_deltas[k]:+.3f}, TOST p={self.tost_p[k]:.3g}, "
                         f"d={self.cohens_d[k]:+.2f}")
        if self.embedding_distance is not None:
            parts.append(f"embedding distance {self.embedding_distance:.4f}")
        return "; ".join(parts)


def behavioural_equivalence(
    model,
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
    from interp_steer.generation import generate

    kl = next_token_kl(model, vec_a, vec_b, prompts, alpha)
    deltas, ps, ds = {}, {}, {}
    emb = None
    if classifiers:
        rows = list(prompts) * n_samples
        both, coef = _paired(vec_a, vec_b, alpha, len(rows))  # one batched generation
        with steer(model, both, coef):
            texts = generate(model, rows * 2, max_new_tokens=max_new_tokens,
                             temperature=temperature, seed=seed)
        ta, tb = texts[: len(rows)], texts[len(rows) :]
        for clf in classifiers:
            name = getattr(clf, "name", type(clf).__name__)
            sa, sb = clf(ta), clf(tb)
            deltas[name] = float(np.mean(sb) - np.mean(sa))
            ps[name] = tost(sa, sb, margin)
            ds[name] = cohens_d(sa, sb)
        if embedder is not None:
            ea, eb = np.asarray(embedder(ta)), np.asarray(embedder(tb))
            ca, cb = ea.mean(0), eb.mean(0)
            emb = float(1 - ca @ cb / (np.linalg.norm(ca) * np.linalg.norm(cb)))
    equivalent = bool(ps) and all(p < alpha_level for p in ps.values())
    return EquivalenceResult(kl, deltas, ps, ds, emb, margin, equivalent)


# --- behavioural (Jacobian) null space, bootstrap, subspace comparison


@trains
def jacobian_gram(model, prompt: str, hook: str) -> Float[Tensor, "d d"]:
    """JᵀJ for J = ∂ log p(next token | prompt) / ∂ resid[hook, last position]  (exact).

    J = (I − 1pᵀ) W_Uᵀ G, with G = ∂ ln_final(h_final) / ∂ resid the d×d Jacobian of the
    model's own forward, taken by autograd (d vectorised backward passes).
    """
    check_hook(model, hook)
    batch = tokenize(model, [prompt])
    d = model.cfg.d_model

    def final_normed(delta: Tensor) -> Tensor:
        with edit_at(model, hook, lambda x: x + delta.to(x.dtype), positions=[-1]):
            resid = model(batch.tokens, stop_at_layer=model.cfg.n_layers)
        return model.ln_final(resid[:, -1:])[0, 0]

    delta0 = torch.zeros(d, device=model.cfg.device, dtype=model.cfg.dtype)
    g = torch.autograd.functional.jacobian(final_normed, delta0, vectorize=True)  # [d, d]
    with torch.no_grad():
        x = final_normed(delta0)
    w_u = model.unembed.W_U.detach()  # [d, V]
    p = torch.softmax(x @ w_u + model.unembed.b_U.detach(), -1)
    # rows of (I − 1pᵀ) W_Uᵀ are W_U columns minus the p-weighted mean column μ
    c = (w_u - (w_u @ p)[:, None]).T.double()  # [V, d]
    j = c @ g.double()  # [V, d]
    return j.T @ j


def jacobian_null_space(
    model, prompts: Sequence[str], hook: str, rule: str = "relative", progress: bool = True,
    **params,
) -> NullSpace:
    """Behavioural null space from the exact log-prob Jacobian at the last position.

    The mean over prompts of JᵀJ plays the role of the covariance: its eigenvalues are σ²
    of the (row-stacked) Jacobian. The paper's public code kept σ > 5% σ_max, i.e.
    ``rule="relative", tol=0.05**2`` here (tol applies to σ²).
    """
    if not prompts:
        raise ValueError("no prompts given")
    gram = sum(jacobian_gram(model, p, hook) for p in tqdm(prompts, desc="jacobian",
                                                            disable=not progress))
    return null_space(gram / len(prompts), rule, n_samples=len(prompts), **params)


@torch.no_grad()
def prompt_activations(
    model, prompts: Sequence[str], hook: str, batch_size: int = 8, progress: bool = True,
    skip_first: int = 1,
) -> list[Float[Tensor, "tokens d"]]:
    """Real-token activations at ``hook`` per prompt (float64), for bootstrap resampling.

    ``skip_first`` as in `activation_covariance`."""
    return [cap[hook][j][keep[j]].double().cpu()
            for _, cap, keep in capture(model, prompts, hook, batch_size, skip_first, progress)
            for j in range(keep.shape[0])]  # fmt: skip


def covariance_of(acts: Sequence[Tensor]) -> Tensor:
    x = torch.cat(list(acts))
    return torch.cov(x.T)


def bootstrap_null_dim(
    acts: Sequence[Tensor], rule: str = "relative", n_boot: int = 100, seed: int = 0,
    ci: float = 0.95, **params,
) -> dict:
    """Null-space dimension with a bootstrap CI, resampling prompts with replacement."""
    gen = np.random.default_rng(seed)
    n_tok = sum(a.shape[0] for a in acts)
    point = null_space(covariance_of(acts), rule, n_samples=n_tok, **params).dim
    dims = []
    for _ in range(n_boot):
        idx = gen.integers(0, len(acts), len(acts))
        sample = [acts[i] for i in idx]
        dims.append(null_space(covariance_of(sample), rule,
                               n_samples=sum(a.shape[0] for a in sample), **params).dim)
    lo, hi = np.quantile(dims, [(1 - ci) / 2, 1 - (1 - ci) / 2])
    return {"dim": point, "ci_low": float(lo), "ci_high": float(hi), "n_boot": n_boot,
            "ci": ci, "rule": rule}


def subspace_overlap(a: Tensor, b: Tensor) -> dict:
    """Principal angles (degrees) between span(a) and span(b) (orthonormal columns), and
    overlap = ‖aᵀb‖²_F / min(dim a, dim b) in [0, 1] (1 = one contains the other)."""
    if a.shape[1] == 0 or b.shape[1] == 0:
        return {"angles_deg": [], "overlap": float("nan")}
    s = torch.linalg.svdvals(a.T.double() @ b.double()).clamp(-1, 1)
    angles = torch.rad2deg(torch.arccos(s))
    return {"angles_deg": angles.tolist(),
            "overlap": float((s**2).sum() / min(a.shape[1], b.shape[1]))}


# --- the study: many vectors x strengths, batched through one stacked subspace


def _stack(vectors: Sequence[SteeringVector]) -> SteeringVector:
    hooks = {v.hook for v in vectors}
    if len(hooks) != 1:
        raise ValueError(f"all vectors must share one hook, got {sorted(hooks)}")
    return SteeringVector(torch.cat([v.directions for v in vectors]), vectors[0].hook,
                          vectors[0].model_fingerprint)


def _rows(conditions: Sequence[tuple[int, float]], m: int, repeat: int) -> Tensor:
    """Coefficient matrix: each (vector index, alpha) condition repeated ``repeat`` times."""
    for cond in conditions:
        ok = (isinstance(cond, Sequence) and len(cond) == 2 and isinstance(cond[0], int)
              and 0 <= cond[0] < m and isinstance(cond[1], int | float) and np.isfinite(cond[1]))
        if not ok:
            raise ValueError(f"conditions must be (vector index < {m}, finite alpha) pairs, "
                             f"got {cond!r}")  # fmt: skip
    coef = torch.zeros(len(conditions) * repeat, m)
    for c, (j, a) in enumerate(conditions):
        coef[c * repeat : (c + 1) * repeat, j] = a
    return coef


@torch.no_grad()
def _steered_logprobs(model, stacked, coef, texts, batch_size):
    """Yield (row slice, batch, log-probs) for texts (repeated per condition row)."""
    for i in range(0, coef.shape[0], batch_size):
        rows = coef[i : i + batch_size]
        batch = tokenize(model, [texts[(i + r) % len(texts)] for r in range(rows.shape[0])])
        with steer(model, stacked, rows):
            logits = model(batch.tokens, **forward_kwargs(batch))
        yield i, batch, logits.log_softmax(-1).float()


def trait_logit_scores(model, vectors, conditions, pairs, batch_size: int = 32) -> np.ndarray:
    """Per condition: mean over pairs of log P(positive text) − log P(negative text), steering
    every position. Efficacy is its shift relative to alpha = 0."""
    texts = [p for p, _ in pairs] + [n for _, n in pairs]
    stacked = _stack(vectors)
    coef = _rows(conditions, len(vectors), len(texts))
    seq_lp = torch.empty(coef.shape[0], dtype=torch.float64)
    for i, batch, lp in _steered_logprobs(model, stacked, coef, texts, batch_size):
        tok_lp = lp[:, :-1].gather(-1, batch.tokens[:, 1:, None])[..., 0]
        real = batch.mask[:, 1:] & batch.mask[:, :-1]
        seq_lp[i : i + len(tok_lp)] = (tok_lp * real).sum(1).double()
    per = seq_lp.view(len(conditions), 2, len(pairs))
    return (per[:, 0] - per[:, 1]).mean(1).numpy()


def kl_to_reference(model, vectors, conditions, reference, prompts, batch_size: int = 16):
    """Per condition: mean next-token KL(P_ref ‖ P_cond) in nats over prompts and real
    positions, where reference[c] is the condition index each condition is compared with."""
    stacked = _stack(vectors)
    n = len(prompts)
    refs = sorted(set(reference))
    # pass 1: the few reference conditions, kept; pass 2: every condition, reduced on the fly
    ref_lp: dict[tuple[int, int], Tensor] = {}
    coef = _rows([conditions[r] for r in refs], len(vectors), n)
    for i, batch, lp in _steered_logprobs(model, stacked, coef, prompts, batch_size):
        for r in range(lp.shape[0]):
            ref_lp[(refs[(i + r) // n], (i + r) % n)] = lp[r][batch.mask[r]].double()
    total = np.zeros(len(conditions))
    coef = _rows(conditions, len(vectors), n)
    for i, batch, lp in _steered_logprobs(model, stacked, coef, prompts, batch_size):
        for r in range(lp.shape[0]):
            c, p = (i + r) // n, (i + r) % n
            a, b = ref_lp[(reference[c], p)], lp[r][batch.mask[r]].double()
            total[c] += float((a.exp() * (a - b)).sum(-1).mean()) / n
    return total


def classifier_samples(model, vectors, conditions, prompts, classifiers, n_samples=2,
                       max_new_tokens=30, temperature=0.8, seed=0, batch_size=64):
    """Per condition and classifier: the array of scores of sampled generations."""
    from interp_steer.generation import generate

    rows = [p for p in prompts for _ in range(n_samples)]
    stacked = _stack(vectors)
    coef = _rows(conditions, len(vectors), len(rows))
    texts: list[str] = []
    for i in tqdm(range(0, coef.shape[0], batch_size), desc="generate"):
        chunk = coef[i : i + batch_size]
        with steer(model, stacked, chunk):
            texts += generate(model, [rows[(i + r) % len(rows)] for r in range(len(chunk))],
                              max_new_tokens=max_new_tokens, temperature=temperature,
                              seed=seed + i)
    out = {}
    for clf in classifiers:
        name = getattr(clf, "name", type(clf).__name__)
        scores = np.asarray(clf(texts), float)
        out[name] = scores.reshape(len(conditions), len(rows))
    return out, texts


def orthogonal_perturbation_study(
    model,
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
    import pandas as pd

    vectors = [vec]
    meta = [("v", 0.0, 0)]
    for src in sources:
        for eps in eps_grid:
            for i, p in enumerate(perturb(vec, eps, src, n=n_perturb, seed=seed,
                                          null_space=null_space)):
                vectors.append(p)
                meta.append((src, eps, i))
    conditions = [(0, 0.0)] + [(j, a) for a in alphas for j in range(len(vectors))]
    reference = [0] + [1 + ai * len(vectors) for ai in range(len(alphas))
                       for _ in range(len(vectors))]
    logit = (trait_logit_scores(model, vectors, conditions, pairs) if pairs
             else np.full(len(conditions), np.nan))
    kl = kl_to_reference(model, vectors, conditions, reference, prompts)
    cls = {}
    if classifiers:
        cls, _ = classifier_samples(model, vectors, conditions, prompts, classifiers,
                                    n_samples=n_samples, max_new_tokens=max_new_tokens,
                                    seed=seed)
    rows = []
    for c, (j, a) in enumerate(conditions):
        src, eps, idx = meta[j] if c else ("none", 0.0, 0)
        row = {"source": src, "eps": eps, "index": idx, "alpha": a,
               "efficacy_logit": float(logit[c] - logit[0]), "kl_to_v": float(kl[c])}
        verdicts = []
        for name, scores in cls.items():
            ref = scores[reference[c]]
            row[f"{name}_mean"] = float(scores[c].mean())
            row[f"{name}_efficacy"] = float(scores[c].mean() - scores[0].mean())
            row[f"{name}_delta_vs_v"] = float(scores[c].mean() - ref.mean())
            row[f"{name}_tost_p"] = tost(ref, scores[c], margin)
            row[f"{name}_cohens_d"] = cohens_d(ref, scores[c])
            verdicts.append(row[f"{name}_tost_p"] < 0.05)
        row["equivalent"] = bool(verdicts) and all(verdicts)
        rows.append(row)
    return pd.DataFrame(rows)


@torch.no_grad()
def logit_checks(model, vec: SteeringVector, prompts: Sequence[str], alpha: float,
                 others: dict[str, SteeringVector], k: int = 10) -> dict:
    """Last-token logit comparisons of α·v against α·(each other vector): L2 distance,
    top-1 agreement and top-k overlap, averaged over prompts."""
    names = list(others)
    vectors = [vec] + [others[n] for n in names]
    conditions = [(j, alpha) for j in range(len(vectors))]
    stacked = _stack(vectors)
    coef = _rows(conditions, len(vectors), len(prompts))
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
        out[name] = {"l2": float((a - b).norm(dim=-1).mean()),
                     "top1_agreement": float((a.argmax(-1) == b.argmax(-1)).float().mean()),
                     f"top{k}_overlap": float(np.mean(overlap))}
    return out
