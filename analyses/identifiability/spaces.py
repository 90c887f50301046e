"""The spaces δ is drawn from: the covariance of generated-token activations, its null space
(with the convergence of its dimension), the log-prob Jacobian over generated positions, and
the overlap of null spaces across prompt distributions."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import torch

from analyses._common import save_figure
from analyses.identifiability.config import RULE_PARAMS, Config
from interp_steer import chat, datasets
from interp_steer.activations import capture, encode
from interp_steer.identifiability import (
    RULES,
    covariance_of,
    generate_rows,
    jacobian_null_space,
    null_space,
    prompt_activations,
    subspace_overlap,
)
from interp_steer.vectors import SteeringVector


def corpus_prompts(n: int | None = None) -> tuple[list[str], dict[str, list[str]]]:
    """Raw prompts of every shipped prompt set and contrastive dataset (the covariance corpus;
    ``n`` of them, evenly spaced, when given), and the prompt sets by name."""
    sets = datasets.prompt_sets()
    ds = [p for name in datasets.available() for p in datasets.load(name).prompts]
    prompts = [p for v in sets.values() for p in v] + ds
    if n is not None and n < len(prompts):
        prompts = [prompts[i] for i in np.linspace(0, len(prompts) - 1, n).astype(int)]
    return prompts, sets


def corpus_cell(model, cfg: Config, hook: str) -> dict:
    """Unsteered generations from the corpus prompts, enough for ``covariance_tokens``."""
    prompts, _ = corpus_prompts(cfg.corpus_prompts)
    per = math.ceil(cfg.covariance_tokens / (cfg.max_new_tokens * len(prompts)))
    rows = [(p, 0, 0.0, cfg.seed + 1000 * p + s) for p in range(len(prompts)) for s in range(per)]
    zero = SteeringVector(torch.zeros(1, model.cfg.d_model), hook=hook)  # α = 0 everywhere
    texts = generate_rows(
        model,
        [zero],
        rows,
        [chat(model, p) for p in prompts],
        max_new_tokens=cfg.max_new_tokens,
        temperature=cfg.temperature,
        progress=False,
    )
    return {"prompts": [prompts[p] for p, *_ in rows], "texts": texts}


def generated_activations(model, prompts, texts, hook: str, batch_size: int = 16) -> torch.Tensor:
    """Activations at ``hook`` of the generated tokens only (float64), texts in order."""
    heads = [encode(model, chat(model, p)) for p in prompts]
    fulls = [encode(model, chat(model, p) + t) for p, t in zip(prompts, texts)]
    out = []
    for i, (batch, acts, keep) in enumerate(capture(model, fulls, hook, batch_size)):
        pos = torch.arange(batch.tokens.shape[1], device=batch.mask.device)[None]
        n_head = torch.tensor([len(h) for h in heads[i * batch_size : (i + 1) * batch_size]])
        gen = keep & (pos - batch.pad[:, None] >= n_head[:, None].to(pos.device))
        out += [acts[hook][r][gen[r]].double().cpu() for r in range(gen.shape[0])]
    x = torch.cat(out)
    if x.shape[0] == 0:
        raise ValueError("the texts have no generated tokens")
    return x


def null_dim_by_tokens(acts: torch.Tensor, cfg: Config, reps: int = 3) -> dict:
    """Each rule's null dim on random subsets of n/8, n/4, n/2 and all n tokens: the
    pre-registration needs < 2% change between the last two doublings."""
    rng = np.random.default_rng(cfg.seed)
    n = acts.shape[0]
    counts = [n // 8, n // 4, n // 2, n]
    out = {rule: {"counts": counts, "mean": [], "low": [], "high": []} for rule in RULES}
    for c in counts:
        dims = {rule: [] for rule in RULES}
        for _ in range(1 if c == n else reps):
            cov = torch.cov(acts[rng.choice(n, c, replace=False)].T)
            for rule in RULES:
                dims[rule].append(null_space(cov, rule, n_samples=c, **RULE_PARAMS[rule]).dim)
        for rule in RULES:
            out[rule]["mean"].append(float(np.mean(dims[rule])))
            out[rule]["low"].append(float(np.min(dims[rule])))
            out[rule]["high"].append(float(np.max(dims[rule])))
    for rule in RULES:
        a, b = out[rule]["mean"][-2:]
        out[rule]["last_doubling_change"] = abs(b - a) / max(b, 1.0)
    return out


def jacobian_contexts(corpus: dict, model, n: int, seed: int) -> list[str]:
    """``n`` chat prompts each followed by a prefix of its generation: the Jacobian is then
    taken at generated positions, where steering acts, not only at the prompt's end."""
    rng = np.random.default_rng(seed)
    out = []
    for i in rng.choice(len(corpus["texts"]), n, replace=False):
        words = corpus["texts"][i].split()
        k = int(rng.integers(1, max(2, len(words))))
        out.append(chat(model, corpus["prompts"][i]) + " ".join(words[:k]))
    return out


def whitener(cov: torch.Tensor, floor: float = 1e-6) -> torch.Tensor:
    """W with ‖xW‖ = sqrt(xᵀ Σ⁻¹ x), eigenvalues floored at ``floor`` × the largest (Σ is
    singular); one eigendecomposition serves every distance below."""
    lam, u = torch.linalg.eigh(cov)
    return u / lam.clamp_min(floor * float(lam.max())).sqrt()


def mahalanobis(x: torch.Tensor, whiten: torch.Tensor) -> torch.Tensor:
    """Mahalanobis length of each row of ``x`` (or of one vector), with `whitener`'s W."""
    return (x.double() @ whiten).norm(dim=-1)


def spaces(model, cfg: Config, hook: str, corpus: dict) -> dict:
    """Covariance (generated tokens) and its null space, the Jacobian null space over
    generated positions, their overlap, and the numbers a reader needs about each."""
    acts = generated_activations(model, corpus["prompts"], corpus["texts"], hook)
    cov = torch.cov(acts.T)
    ns = null_space(cov, cfg.null_rule, n_samples=acts.shape[0], **RULE_PARAMS[cfg.null_rule])
    if ns.dim == 0:
        raise ValueError(f"the covariance at {hook} has no null space under {cfg.null_rule!r}")
    contexts = jacobian_contexts(corpus, model, cfg.jacobian_prompts, cfg.seed)
    jac = jacobian_null_space(
        model, contexts, hook, "relative", tol=cfg.jacobian_tol**2, progress=False
    )
    if jac.dim == 0:
        raise ValueError(f"the Jacobian at {hook} has no null space at tol {cfg.jacobian_tol}")
    lam = torch.linalg.eigvalsh(cov).flip(0).clamp_min(1e-12)
    whiten = whitener(cov)
    numbers = {
        "hook": hook,
        "n_tokens": int(acts.shape[0]),
        "spectrum": lam.tolist(),
        "rules": {
            rule: {
                "null_dim": (
                    s := null_space(cov, rule, n_samples=acts.shape[0], **RULE_PARAMS[rule])
                ).dim,
                "signal_dim": int(s.signal.shape[1]),
                "params": RULE_PARAMS[rule],
            }
            for rule in RULES
        },
        "null_dim_by_tokens": null_dim_by_tokens(acts, cfg),
        "jacobian": {
            "n_contexts": len(contexts),
            "rule": f"sigma > {cfg.jacobian_tol:g} sigma_max of the exact log-prob Jacobian at the context's end",
            "signal_dim": int(jac.signal.shape[1]),
            "null_dim": int(jac.dim),
            "sigma_relative": (jac.spectrum.clamp_min(0).sqrt() / jac.spectrum[0].sqrt()).tolist(),
        },
        "overlap_covariance_jacobian_null": subspace_overlap(ns.basis, jac.basis),
        # the median token's distance from the mean: the scale beside which a δ's is read
        "typical_token_mahalanobis": float(
            mahalanobis(acts[:: max(1, acts.shape[0] // 5000)] - acts.mean(0), whiten).median()
        ),
    }
    bases = {
        "covariance_null": ns.basis,
        "random_orthogonal": torch.eye(model.cfg.d_model, dtype=torch.float64),
        "jacobian_null": jac.basis,
        "jacobian_signal": jac.signal[:, : cfg.jacobian_k],
    }
    return {"numbers": numbers, "bases": bases, "whiten": whiten, "null_space": ns}


def spectrum_figure(cfg: Config, numbers: dict, out: Path) -> None:
    fig, axes = plt.subplots(1, 3, figsize=(18, 4.8))
    ax = axes[0]
    lam = np.array(numbers["spectrum"])
    ax.semilogy(np.arange(1, len(lam) + 1), lam, lw=2, color="k", label="covariance")
    for rule, color in zip(RULES, ["C1", "C2", "C3", "C4"]):
        r = numbers["rules"][rule]
        ax.axvline(
            r["signal_dim"] + 0.5, color=color, ls="--", label=f"{rule}: null {r['null_dim']}"
        )
    ax.set(
        title=f"{cfg.model} {numbers['hook']}\ncovariance of {numbers['n_tokens']} "
        "generated tokens",
        xlabel="eigen-direction rank",
        ylabel="variance",
    )
    ax.legend(fontsize=8)
    conv = numbers["null_dim_by_tokens"]
    ax = axes[1]
    for rule, color in zip(RULES, ["C1", "C2", "C3", "C4"]):
        c = conv[rule]
        label = f"{rule} (last doubling {c['last_doubling_change']:.1%})"
        ax.plot(c["counts"], c["mean"], "o-", color=color, label=label)
        ax.fill_between(c["counts"], c["low"], c["high"], color=color, alpha=0.2)
    ax.set(
        xscale="log",
        xlabel="generated tokens (random subsets)",
        ylabel="estimated null dimension",
        title="null dim against token count\n(pre-registered: < 2% over the last doubling)",
    )
    counts = conv[RULES[0]]["counts"]
    ax.set_xticks(counts, [str(c) for c in counts])
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.legend(fontsize=8)
    ax = axes[2]
    j = numbers["jacobian"]
    sig = np.clip(np.array(j["sigma_relative"]), 1e-8, None)
    ax.semilogy(np.arange(1, len(sig) + 1), sig, color="C0")
    ax.axhline(0.05, color="0.5", ls=":", label=f"5%: signal dim {j['signal_dim']}")
    ov = numbers["overlap_covariance_jacobian_null"]["overlap"]
    ax.set(
        xlabel="singular direction rank",
        ylabel="σ / σmax",
        title=f"log-prob Jacobian over {j['n_contexts']} generated contexts\n"
        f"overlap of its null space with the covariance's: {ov:.2f}",
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, out, {k: v for k, v in numbers.items() if k != "_commit"}, cfg)


def overlap_figure(model, cfg, hook, sets, out: Path) -> dict:
    names = list(sets)
    spaces = {}
    for name in names:
        acts = prompt_activations(model, sets[name], hook, progress=False)
        spaces[name] = null_space(covariance_of(acts), cfg.null_rule, **RULE_PARAMS[cfg.null_rule])
    raw = np.array(
        [
            [subspace_overlap(spaces[a].basis, spaces[b].basis)["overlap"] for b in names]
            for a in names
        ]
    )
    # two random subspaces of dims p, q in d dims overlap max(p, q)/d on average: report the
    # excess over that chance level, 0 = no more than random, 1 = identical
    d = model.cfg.d_model
    chance = np.array([[max(spaces[a].dim, spaces[b].dim) / d for b in names] for a in names])
    mat = (raw - chance) / np.clip(1 - chance, 1e-9, None)
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    im = ax.imshow(mat, vmin=0, vmax=1, cmap="viridis")
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    for i in range(len(names)):
        for j in range(len(names)):
            color = "w" if mat[i, j] < 0.6 else "k"
            ax.text(j, i, f"{mat[i, j]:.2f}", ha="center", va="center", fontsize=8, color=color)
    fig.colorbar(im, label="overlap above chance: (o − c)/(1 − c)")
    ax.set_title(f"{cfg.model} {hook}\nnull spaces ({cfg.null_rule} rule) across prompt sets")
    numbers = {
        "hook": hook,
        "prompt_sets": names,
        "overlap_raw": raw.tolist(),
        "chance": chance.tolist(),
        "overlap_above_chance": mat.tolist(),
        "null_dims": {n: spaces[n].dim for n in names},
        "note": "each set has only 8 prompts (~300 tokens), so its covariance is rank-limited "
        "and its null dim is biased upwards (see the spectrum figure's sample-size curve)",
    }
    save_figure(fig, out, numbers, cfg)
    return numbers
