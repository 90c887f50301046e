"""From cells to numbers: coherent success per condition, the paired contrasts against the
vector with Holm, concept detection, the random-latent control and the SAE's quality on
this study's own text."""

from __future__ import annotations

import numpy as np
import torch

from analyses.sae_vs_steering.config import SAE_METHODS, Config
from interp_steer import sae as S
from interp_steer.activations import encode
from interp_steer.eval import stats
from interp_steer.eval.classifiers import trait_eval_set
from interp_steer.identifiability import covariance_of, null_space, prompt_activations
from interp_steer.vectors import SteeringVector, model_fingerprint


def outcome(c: dict, cfg: Config) -> np.ndarray:
    """Coherent success per text, [prompt, sample]: the trait score where the model-text
    coherence measure calls the text coherent, else 0."""
    s = np.asarray(c["success"], float) * (np.asarray(c["coherence"]) >= cfg.coherent_threshold)
    return s.reshape(cfg.n_prompts, cfg.n_samples)


def within_tolerance(kl: float | None, target: float, cfg: Config) -> bool:
    return kl is not None and abs(kl / target - 1) <= cfg.kl_tolerance


def condition_row(trait, method, target, c: dict, cal: dict | None, cfg: Config, r=None) -> dict:
    y = outcome(c, cfg)
    coherent = np.asarray(c["coherence"]) >= cfg.coherent_threshold
    return {
        "trait": trait,
        "method": method,
        "target_kl": target,
        "kl": None if cal is None else cal["kl"],
        "within_tolerance": None if cal is None else within_tolerance(cal["kl"], target, cfg),
        "setting": None if cal is None else cal["setting"],
        "kl_at_zero": None if cal is None else cal["kl_at_zero"],
        "success": float(y.mean()),
        "success_ci": list(stats.cluster_bootstrap(y, n_boot=cfg.n_boot, seed=cfg.seed)),
        "trait_score": float(np.mean(c["success"])),
        "coherent_fraction": float(coherent.mean()),
        "r": r,
        "alpha": None if method != "mean_diff" or cal is None else cal["setting"],
        "n": int(y.size),
        "example": c["texts"][0],
    }


def paired_contrasts(trait: str, grid: dict, cfg: Config) -> list[dict]:
    """Each SAE method against mean_diff at each KL level where both ran within the KL
    tolerance: the mean per-prompt difference of coherent success (samples share seeds), its
    prompt-clustered CI, the paired t-test's p, and Holm over the trait's whole registered
    family (3 methods × the KL levels; a contrast that could not be made counts as p = 1, so
    an unreachable level never weakens the correction)."""
    rows = []
    for m in SAE_METHODS:
        for t in cfg.target_kls:
            a, b = grid.get(("mean_diff", t)), grid.get((m, t))
            if a is None or b is None:
                continue
            d = outcome(b, cfg) - outcome(a, cfg)  # [prompt, sample], paired by seed
            per_prompt = d.mean(1)
            rows.append(
                {
                    "trait": trait,
                    "method": m,
                    "target_kl": t,
                    "diff": float(d.mean()),
                    "diff_ci": list(stats.cluster_bootstrap(d, n_boot=cfg.n_boot, seed=cfg.seed)),
                    "p": stats.paired_t(np.zeros_like(per_prompt), per_prompt),
                }
            )
    family = len(SAE_METHODS) * len(cfg.target_kls)
    padded = [r["p"] for r in rows] + [1.0] * (family - len(rows))
    for row, p in zip(rows, stats.holm(padded)):
        row["p_holm"] = float(p)
        row["holm_family"] = family
    return rows


def method_verdicts(contrasts: list[dict], cfg: Config) -> dict[str, str]:
    """ "falls short" / "exceeds" where a Holm-significant difference of one sign holds at
    >= ``cfg.min_levels`` KL levels; "not testable" where fewer levels could be compared."""
    out = {}
    for m in SAE_METHODS:
        rows = [r for r in contrasts if r["method"] == m]
        short = sum(r["p_holm"] < cfg.alpha and r["diff"] < 0 for r in rows)
        more = sum(r["p_holm"] < cfg.alpha and r["diff"] > 0 for r in rows)
        n = len(cfg.target_kls)
        if len(rows) < cfg.min_levels:
            out[m] = f"not testable ({len(rows)} of {n} KL levels comparable)"
        elif short >= cfg.min_levels:
            out[m] = f"falls short of mean_diff ({short} of {n} KL levels)"
        elif more >= cfg.min_levels:
            out[m] = f"exceeds mean_diff ({more} of {n} KL levels)"
        else:
            out[m] = f"no difference shown ({short} short, {more} above, of {len(rows)} levels)"
    return out


@torch.no_grad()
def detection(model, sae, trait: str, parts: dict, cfg: Config) -> dict:
    """Concept detection on the trait's hand-written held-out texts (`trait_eval_set`): AUROC
    of the mean activation (position 0 excluded) projected on mean_diff, and of the chosen
    latent's mean activation."""
    hook = S.sae_hook(sae)
    items = trait_eval_set(trait)
    texts, y = [it["text"] for it in items], np.array([int(it["label"]) for it in items])
    # one document each: token_activations leaves out every document's position 0
    acts = [
        S.token_activations(model, S.Corpus.from_texts(model, [t]), hook, progress=False)[0]
        for t in texts
    ]
    v = torch.tensor(parts["mean_diff"])
    proj = np.array([float((a @ v).mean()) for a in acts])
    j = parts["latent"]
    lat = np.array([float(sae.encode(a.to(sae.W_dec))[:, j].mean()) for a in acts])
    out = {}
    for name, score in [("mean_diff", proj), ("sae_latent", lat)]:
        a, lo, hi = stats.auroc(y, score, n_boot=cfg.n_boot, seed=cfg.seed)
        out[name] = {"auroc": a, "ci": [lo, hi]}
    out["n"] = len(texts)
    return out


def survival_cell(model, sae, parts: dict, alpha: float, prompts, ref_acts, cfg: Config) -> dict:
    """How much of mean_diff's next-token effect (at ``alpha``, where ``cfg.positions``
    says) survives ablating its top-k latents, against k random latents matched on firing
    rate under the same steering (``cfg.random_draws`` draws): the top latents carry the
    effect at k only where their survival is below the draws' 5th percentile."""
    hook = S.sae_hook(sae)
    v = SteeringVector(torch.tensor([parts["mean_diff"]]), hook, model_fingerprint(model))
    ks = [0, *cfg.survival_ks]
    kw = dict(positions=cfg.positions)
    top = S.effect_survival(model, sae, v, prompts, ks, alpha, ref_acts, **kw)
    ranked = top[-1]["features"]
    # the top latents are ranked by what steering switches on: match rates under steering
    rates = S.firing_rates(sae, ref_acts + alpha * v.vector)
    draws = []
    for d in range(cfg.random_draws):
        feats = S.matched_random_latents(rates, ranked, seed=cfg.seed + d)
        rows = S.effect_survival(model, sae, v, prompts, ks, alpha, features=feats, **kw)
        draws.append([r["survival"] for r in rows[1:]])
    draws = np.array(draws)
    p5 = np.percentile(draws, 5, axis=0)
    top_s = [r["survival"] for r in top[1:]]
    return {
        "ks": cfg.survival_ks,
        "top": top_s,
        "top_features": ranked,
        "random": draws.tolist(),
        "random_p5": p5.tolist(),
        "carries": [bool(t < q) for t, q in zip(top_s, p5)],
        "error_share": S.error_share(sae, v.vector * alpha, ref_acts),
    }


@torch.no_grad()
def sae_quality(model, sae, texts: list[str]) -> dict:
    """Explained variance, L0 and CE loss recovered on this study's own prompts and
    unsteered generations (position 0 excluded, as in training)."""
    hook = S.sae_hook(sae)
    corpus = S.Corpus.from_texts(model, texts)
    acts = S.token_activations(model, corpus, hook, progress=False)[0]
    q = S.evaluate(sae, acts)
    ce = S.ce_loss_recovered(model, sae, corpus, hook, max_docs=len(texts))
    return {
        "ev": q["explained_variance"],
        "l0": q["l0"],
        "ce_recovered": ce["ce_loss_recovered"],
        "n_tokens": int(acts.shape[0]),
    }


@torch.no_grad()
def null_space_fractions(
    model, hook: str, prompts: list[str], completions: list[str], directions: dict, cfg: Config
) -> dict:
    """Descriptive, added after the pre-registration (no decision rests on it): the share of
    each direction's squared norm in the null space (rule ``energy``, 0.99, as in the
    identifiability study) of the activations at the generation positions (last prompt token
    and every completion token) of the unsteered texts, beside random directions.

    ``prompts`` and ``completions`` are prompt-major, ``cfg.n_samples`` per prompt. The null
    dimension is also estimated on each half of the prompts: ``converged`` says that both
    halves are within 2% of d of the whole (the first run's estimate had not converged).
    """
    texts = [p + c for p, c in zip(prompts, completions)]
    acts = prompt_activations(model, texts, hook, progress=False)  # position 0 left out
    # row i is position i + 1, so the last prompt token (position len - 1) is row len - 2
    gen = [a[len(encode(model, p)) - 2 :] for a, p in zip(acts, prompts)]
    d = gen[0].shape[1]

    def dim_of(rows):
        return null_space(
            covariance_of(rows), "energy", n_samples=sum(len(r) for r in rows), energy=0.99
        )

    whole = dim_of(gen)
    order = np.random.default_rng(cfg.seed).permutation(len(prompts) // cfg.n_samples)
    halves = [set(order[: len(order) // 2]), set(order[len(order) // 2 :])]
    half_dims = [
        dim_of([g for i, g in enumerate(gen) if i // cfg.n_samples in h]).dim for h in halves
    ]
    basis = whole.basis.float()

    def share(v):
        v = torch.as_tensor(v, dtype=torch.float32).reshape(-1)
        return float((basis.T @ v).pow(2).sum() / v.pow(2).sum())

    # numpy's stream, not torch's: a tiny test model's weights are torch draws from the same seed
    rand = np.random.default_rng(cfg.seed).standard_normal((cfg.random_draws * 50, d))
    shares = np.array([share(u) for u in rand])
    return {
        "rule": "energy 0.99",
        "positions": "last prompt token and completion tokens of the unsteered texts",
        "n_tokens": int(sum(len(g) for g in gen)),
        "d": int(d),
        "null_dim": int(whole.dim),
        "null_dim_halves": half_dims,
        "converged": bool(max(abs(h - whole.dim) for h in half_dims) <= 0.02 * d),
        "fractions": {k: share(v) for k, v in directions.items()},
        "random": {
            "n": len(shares),
            "mean": float(shares.mean()),
            "p2.5": float(np.percentile(shares, 2.5)),
            "p97.5": float(np.percentile(shares, 97.5)),
        },
    }
