"""Logit-level conditions (no generation): δ spread over k directions, individual random
directions, PCA against mean-diff, and vectors built in other prompt environments."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

from analyses._common import save_figure
from interp_steer import build_vector, chat, datasets
from interp_steer.identifiability import perturb, trait_logit_scores
from interp_steer.vectors import SteeringVector

EPS = 1.0  # ‖δ‖ / ‖v‖ in these conditions (the paper's ‖v⊥‖ = ‖v‖)


def _span_vectors(v: SteeringVector, k: int, eps: float, n: int, seed: int):
    """v + δ with δ spread evenly over k random orthonormal directions ⟂ v (‖δ‖ = eps‖v‖)."""
    g = torch.Generator().manual_seed(seed + 31 * k)
    u = v.vector.double() / v.vector.double().norm()
    out = []
    for _ in range(n):
        r = torch.randn(v.d_model, k, generator=g, dtype=torch.float64)
        r -= torch.outer(u, u @ r)
        q, _ = torch.linalg.qr(r)
        signs = torch.randint(0, 2, (k,), generator=g).double() * 2 - 1
        delta = q @ signs / np.sqrt(k) * eps * v.vector.double().norm()
        out.append(replace(v, directions=(v.vector.double() + delta).to(v.directions.dtype)[None]))
    return out


ENVIRONMENTS = {
    "plain": "{}",
    "chat_reply": None,  # the text as the assistant's reply in the chat template
    "email": "Email:\n{}",
    "tweet": "Tweet: {}",
}


def conditions_cell(model, cfg, trait, v, hook, ns, alpha) -> dict:
    """Logit-level efficacy (Δ log P(pos) − log P(neg) on held-out pairs) at α_op of: v + δ
    over k-dim spans, 50 individual directions, PCA vs mean-diff, other environments."""
    ds = datasets.load(trait)
    vecs, meta = [v], [("v", 0, 0)]
    for k in cfg.k_span:
        for i, p in enumerate(_span_vectors(v, min(k, v.d_model - 1), EPS, 2, cfg.seed)):
            vecs.append(p)
            meta.append(("span", k, i))
    for i, p in enumerate(perturb(v, EPS, "random", n=cfg.n_individual, seed=cfg.seed + 1)):
        vecs.append(p)
        meta.append(("individual", 1, i))
    pca = build_vector(model, ds, hook, method="pca", seed=cfg.seed, progress=False)
    pca = replace(pca, directions=pca.directions / pca.norm() * v.norm())
    vecs.append(pca)
    meta.append(("pca", 0, 0))
    for i, p in enumerate(perturb(pca, EPS, "null", n=2, seed=cfg.seed, null_space=ns)):
        vecs.append(p)
        meta.append(("pca+null", 0, i))
    env_vecs = {}
    for env, fmt in ENVIRONMENTS.items():

        def wrap(t, fmt=fmt):
            return chat(model, "Write a short message.") + t if fmt is None else fmt.format(t)

        env_ds = replace(ds, train=[(wrap(a), wrap(b)) for a, b in ds.train])
        ev = build_vector(model, env_ds, hook, method="mean_diff", seed=cfg.seed, progress=False)
        env_vecs[env] = ev
        vecs.append(replace(ev, directions=ev.directions / ev.norm() * v.norm()))
        meta.append(("environment", env, 0))
    conds = [(0, 0.0)] + [(j, alpha) for j in range(len(vecs))]
    scores = trait_logit_scores(model, vecs, conds, ds.test)
    eff = (scores[1:] - scores[0]).tolist()
    names = list(env_vecs)
    cos = [
        [
            float(torch.nn.functional.cosine_similarity(env_vecs[a].vector, env_vecs[b].vector, 0))
            for b in names
        ]
        for a in names
    ]
    return {
        "meta": [list(m) for m in meta],
        "efficacy_logit": eff,
        "pca_cosine": float(torch.nn.functional.cosine_similarity(pca.vector, v.vector, 0)),
        "environment_cosine": cos,
        "environments": names,
    }


def conditions_figure(cfg, extra, out: Path) -> None:
    """Absolute logit-level efficacies (nats), v's as the reference line: v's own effect on the
    held-out pairs can be near 0 at a generation-calibrated α, so ratios would mislead."""
    names = list(extra)
    fig, axes = plt.subplots(len(names), 3, figsize=(16, 4.2 * len(names)), squeeze=False)
    numbers = {}
    for row, t in enumerate(names):
        c = extra[t]
        meta, eff = c["meta"], np.array(c["efficacy_logit"])
        v_eff = float(eff[0])

        def pick(kind, key=None, meta=meta, eff=eff):
            return eff[[i for i, m in enumerate(meta) if m[0] == kind and key in (None, m[1])]]

        ax = axes[row, 0]
        ks = sorted({m[1] for m in meta if m[0] == "span"})
        span = [pick("span", k) for k in ks]
        ax.plot(ks, [s.mean() for s in span], "o-", label="v + δ over a k-dim span (mean of 2)")
        ax.axhline(v_eff, color="k", ls=":", label=f"v: {v_eff:+.2f}")
        ax.axhline(0, color="0.7", lw=0.8)
        ax.set(
            xscale="log",
            xlabel="k",
            ylabel="logit efficacy [nats]",
            title=f"{t}: δ over k directions",
        )
        ax.legend(fontsize=8)
        ax = axes[row, 1]
        ind = pick("individual")
        ax.hist(ind, bins=15, color="C1")
        ax.axvline(v_eff, color="k", ls=":", label="v")
        ax.set(
            xlabel="logit efficacy [nats]",
            ylabel="directions",
            title=f"{len(ind)} individual v + δ_i",
        )
        ax.legend(fontsize=8)
        ax = axes[row, 2]
        labels = ["v (mean-diff)", "PCA", "PCA + δ null"] + [f"env: {e}" for e in c["environments"]]
        vals = [v_eff, pick("pca").mean(), pick("pca+null").mean()]
        vals += [pick("environment", e).mean() for e in c["environments"]]
        ax.barh(range(len(labels)), vals, color="C0")
        ax.set_yticks(range(len(labels)), labels, fontsize=8)
        ax.axvline(v_eff, color="k", ls=":")
        env_cos = np.array(c["environment_cosine"])
        off = env_cos[~np.eye(len(env_cos), dtype=bool)]
        ax.set(
            xlabel="logit efficacy [nats] (every vector at ‖v‖)",
            title=f"cos(PCA, v) = {c['pca_cosine']:.2f}; env vectors cos {off.min():.2f}-{off.max():.2f}",
        )
        numbers[t] = {
            "v_efficacy_logit": v_eff,
            "span_k": ks,
            "span_efficacy_logit": [float(s.mean()) for s in span],
            "individual_efficacy_logit": {
                "mean": float(ind.mean()),
                "sd": float(ind.std(ddof=1)) if len(ind) > 1 else 0.0,
                "min": float(ind.min()),
                "max": float(ind.max()),
                "n": len(ind),
            },
            "pca_cosine": c["pca_cosine"],
            "bars_efficacy_logit": dict(zip(labels, [float(x) for x in vals])),
            "environment_cosine": c["environment_cosine"],
            "environments": c["environments"],
        }
    fig.suptitle(
        f"{cfg.model}: logit-level efficacy, Δ[log P(pos) − log P(neg)] on held-out pairs "
        "(every position steered) at the operating α"
    )
    fig.tight_layout()
    save_figure(fig, out, {"traits": numbers}, cfg)
