"""Steering vectors against SAE-based interventions on the same traits and metrics.

python -m analyses.sae_vs_steering [--model smollm2-135m-instruct] [--quick]

At the default SAE's hook (trained with sae-lens, `interp_steer.sae.load_default`), for each
trait we compare: mean_diff, pca, probe, the best single SAE feature (steering along its
decoder direction), clamping that feature, and ablating the k latents most tied to the
negative side (error term kept). Direction methods are unit-normalised and each strength
(and the clamp value) is set by bisection to the same next-token KL from the unsteered
model (iso-KL), so efficacy is compared at equal disruption. Metrics on sampled generations:
efficacy = (VADER+1)/2 for sentiment, else the MiniLM probe P(positive); coherence = metrics.coherence (fluency x repetition penalty); efficacy CIs: bootstrap over prompts; equivalence
= next-token KL to the mean_diff-steered model. We also report where each direction lies
relative to the activation null space (energy rule, as in the identifiability analysis) —
the fraction of its squared norm inside it — and, for mean_diff, its top SAE latents and how
much of its effect survives ablating them (k = 0..32). Writes figures/sae_vs_steering_<model>.*.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

from analyses._common import save_figure, single_model_main, stem
from analyses.identifiability.spaces import corpus_prompts
from interp_steer import build_vector, chat, datasets, generate, load_model, steer
from interp_steer import sae as S
from interp_steer.activations import get_activations
from interp_steer.eval import metrics, stats
from interp_steer.eval.classifiers import success_scorer
from interp_steer.eval.sweep import bisect_increasing
from interp_steer.generation import format_prompts
from interp_steer.identifiability import activation_covariance, null_space
from interp_steer.units import r_of, typical_norm

METHODS = ["mean_diff", "pca", "probe", "sae_feature", "sae_clamp", "sae_ablate"]


@dataclass
class Config:
    model: str = "smollm2-135m-instruct"
    traits: list[str] = field(default_factory=lambda: ["sentiment", "formality", "weddings"])
    target_kl: float = 0.3  # nats, iso-KL operating point
    n_ablate: int = 8
    n_prompts: int = 10
    samples: int = 3
    max_new_tokens: int = 40
    survival_ks: list[int] = field(default_factory=lambda: [0, 1, 2, 4, 8, 16, 32])
    null_rule: str = "energy"
    seed: int = 0
    quick: bool = False

    @classmethod
    def quick_config(cls, **kw) -> Config:
        base = dict(
            traits=["sentiment"],
            n_prompts=4,
            samples=2,
            max_new_tokens=24,
            survival_ks=[0, 1, 4],
            quick=True,
        )
        return cls(**{**base, **kw})


def null_fraction(ns, directions: torch.Tensor) -> float:
    """Mean fraction of each direction's squared norm inside the null space."""
    d = directions.double() / directions.double().norm(dim=-1, keepdim=True)
    return float(((d @ ns.basis) ** 2).sum(-1).mean())


def interventions(model, sae, trait: str, cfg: Config, chat_prompts: list[str]) -> dict:
    """Each method as a zero-argument context factory, set to the iso-KL operating point on
    ``chat_prompts`` (already chat-formatted: KL is measured on what generation sees)."""
    hook = S.sae_hook(sae)
    ds = datasets.load(trait)
    vecs = {
        m: build_vector(model, trait, hook, method=m, seed=cfg.seed, progress=False).normalized()
        for m in ["mean_diff", "pca", "probe"]
    }
    # One pass over the train pairs serves both contrasts: the best single latent (what
    # method="sae_feature" picks) and the latents most active on the negative side, whose
    # ablation should push toward positive.
    n = len(ds.train)
    acts = get_activations(
        model, [p for p, _ in ds.train] + [q for _, q in ds.train], hook, progress=False
    )[hook]
    j = S.contrast_features(sae, acts[:n], acts[n:], top=1)[0]["feature"]
    feat = S.feature_vector(sae, j, model)
    vecs["sae_feature"] = feat
    neg_feats = [
        r["feature"] for r in S.contrast_features(sae, acts[n:], acts[:n], top=cfg.n_ablate)
    ]

    norm = typical_norm(model, hook, chat_prompts, chat=False)  # the project's unit r
    out, info = {}, {}
    for m, v in vecs.items():

        def kl(a, v=v):
            return metrics.kl_from_unsteered(model, v, [a], chat_prompts)[0]

        a = bisect_increasing(kl, cfg.target_kl, max_x=4096.0)
        out[m] = lambda v=v, a=a: steer(model, v, a)
        info[m] = {"alpha": a, "directions": v.directions, "r": r_of(v, a, norm)}

    def clamp_kl(c):
        return metrics.kl_under(model, chat_prompts, [lambda: S.clamp_features(model, sae, j, c)])[
            0
        ]

    c = bisect_increasing(clamp_kl, cfg.target_kl, max_x=1e5)
    out["sae_clamp"] = lambda c=c: S.clamp_features(model, sae, j, c)
    info["sae_clamp"] = {"value": c, "feature": j, "directions": feat.directions}
    out["sae_ablate"] = lambda: S.ablate_features(model, sae, neg_feats)
    info["sae_ablate"] = {
        "features": neg_feats,
        "directions": sae.W_dec.detach()[neg_feats].float().cpu(),
    }
    return {"contexts": out, "info": info, "vecs": vecs}


def run(cfg: Config, out_dir: Path = Path("figures"), model=None, sae=None) -> dict:
    t0 = time.time()
    model = model or load_model(cfg.model)
    sae = sae or S.load_default(model)
    hook = S.sae_hook(sae)
    cov = activation_covariance(
        model, [chat(model, p) for p in corpus_prompts()[0]], hook, progress=False
    )
    ns = null_space(cov, cfg.null_rule)
    results = {}
    for trait in cfg.traits:
        ds = datasets.load(trait)
        prompts = ds.prompts[: cfg.n_prompts]
        clf = success_scorer(trait)
        chat_prompts = format_prompts(model, prompts, True)
        iv = interventions(model, sae, trait, cfg, chat_prompts)
        rep = [p for p in prompts for _ in range(cfg.samples)]
        formatted = format_prompts(model, rep, True)

        def evaluate(make=nullcontext, rep=rep, formatted=formatted, clf=clf):
            with make():
                texts = generate(
                    model, rep, temperature=1.0, max_new_tokens=cfg.max_new_tokens, seed=cfg.seed
                )
            ppl = metrics.perplexity(model, formatted, texts)
            return texts, clf(texts), ppl

        def efficacy_ci(eff):
            # prompts are the resampled unit (each has cfg.samples correlated samples)
            return list(stats.cluster_bootstrap(eff.reshape(-1, cfg.samples), seed=cfg.seed))

        base_texts, base_eff, base_ppl = evaluate()
        md = iv["contexts"]["mean_diff"]
        kls = metrics.kl_under(model, chat_prompts, list(iv["contexts"].values()))
        # equivalence: KL from the mean_diff-steered model, every intervention at iso-KL
        kls_md = metrics.kl_under(model, chat_prompts, list(iv["contexts"].values()), reference=md)
        rows = {
            "unsteered": {
                "efficacy": float(base_eff.mean()),
                "efficacy_ci": efficacy_ci(base_eff),
                "coherence": float(metrics.coherence_from(base_ppl, base_texts).mean()),
                "kl_unsteered": 0.0,
                "example": base_texts[0],
            }
        }
        for (m, make), kl, kl_md in zip(iv["contexts"].items(), kls, kls_md):
            texts, eff, ppl = evaluate(make)
            info = iv["info"][m]
            rows[m] = {
                "efficacy": float(eff.mean()),
                "efficacy_sem": float(eff.std(ddof=1) / np.sqrt(len(eff))),
                "efficacy_ci": efficacy_ci(eff),
                "coherence": float(metrics.coherence_from(ppl, texts).mean()),
                "kl_unsteered": float(kl),
                "kl_to_mean_diff": float(kl_md),
                "null_fraction": null_fraction(ns, info["directions"]),
                "setting": {k: v for k, v in info.items() if k != "directions"},
                "example": texts[0],
            }
        v = iv["vecs"]["mean_diff"] * iv["info"]["mean_diff"]["alpha"]  # at its iso-KL strength
        ref_acts = S.token_activations(
            model, S.Corpus.from_texts(model, formatted[:8]), hook, progress=False
        )[0]
        decomposition = S.decompose(sae, v, ref_acts, top=10)
        survival = S.effect_survival(model, sae, v, chat_prompts, cfg.survival_ks, 1.0, ref_acts)
        results[trait] = {
            "methods": rows,
            "decomposition": decomposition,
            "survival": survival,
            "best_feature": iv["info"]["sae_clamp"]["feature"],
        }
    report = S.report_of(S.default_path(model)) or {}
    res = {
        "results": results,
        "hook": hook,
        "null_dim": ns.dim,
        "d_model": model.cfg.d_model,
        "sae": {
            k: report.get(k)
            for k in ("heldout", "heldout_completion_only", "d_sae", "config", "seconds_training")
        },
        "seconds": time.time() - t0,
    }
    figure(cfg, res, stem(out_dir, "sae_vs_steering", cfg.model, cfg.quick))
    return res


def figure(cfg: Config, res: dict, path: Path) -> None:
    traits = list(res["results"])
    fig, axes = plt.subplots(1, 4, figsize=(21, 4.8))
    w = 0.8 / len(traits)
    x = np.arange(len(METHODS))
    for i, t in enumerate(traits):
        rows = res["results"][t]["methods"]
        eff = [rows[m]["efficacy"] for m in METHODS]
        ci = np.array([rows[m]["efficacy_ci"] for m in METHODS])
        err = [np.array(eff) - ci[:, 0], ci[:, 1] - np.array(eff)]
        axes[0].bar(x + i * w, eff, w, yerr=err, capsize=2, color=f"C{i}", label=t)
        axes[0].axhline(rows["unsteered"]["efficacy"], color=f"C{i}", ls=":", lw=1)
        axes[1].bar(x + i * w, [rows[m]["coherence"] for m in METHODS], w, color=f"C{i}", label=t)
        axes[1].axhline(rows["unsteered"]["coherence"], color=f"C{i}", ls=":", lw=1)
        axes[2].bar(
            x + i * w, [rows[m]["null_fraction"] for m in METHODS], w, color=f"C{i}", label=t
        )
        surv = res["results"][t]["survival"]
        axes[3].plot(
            [s["k"] for s in surv], [s["survival"] for s in surv], "o-", color=f"C{i}", label=t
        )
    axes[2].axhline(
        res["null_dim"] / res["d_model"],
        color="k",
        ls="--",
        lw=1,
        label=f"random direction ({res['null_dim']}/{res['d_model']} dims null)",
    )
    for ax, yl, title in [
        (
            axes[0],
            "success on generations: (VADER+1)/2 | probe P",
            f"efficacy at iso-KL {cfg.target_kl} nats (dotted: unsteered)",
        ),
        (axes[1], "coherence: fluency x repetition penalty", "coherence (dotted: unsteered)"),
        (
            axes[2],
            "fraction of ‖direction‖² in null space",
            f"null-space fraction ({cfg.null_rule} rule)",
        ),
    ]:
        ax.set_xticks(x + w * (len(traits) - 1) / 2, METHODS, rotation=25)
        ax.set(ylabel=yl, title=title)
        ax.legend(fontsize=7, loc="lower right", framealpha=0.9)
    axes[3].set_xscale("symlog", linthresh=1)
    axes[3].axhline(1, color="0.6", lw=0.8)
    axes[3].set(
        xlabel="k top SAE latents of mean_diff ablated (encoder-gain ranking)",
        ylabel="surviving logit effect ⟨Δ_k, Δ_0⟩/‖Δ_0‖²",
        title="mean_diff effect surviving ablation",
    )
    axes[3].legend(fontsize=7)
    sae = res["sae"].get("heldout") or {}
    fig.suptitle(
        f"{cfg.model} [{res['hook']}]: steering vectors vs SAE interventions "
        f"(SAE d_sae={res['sae'].get('d_sae')}, held-out EV {sae.get('explained_variance', float('nan')):.2f}, "
        f"L0 {sae.get('l0', float('nan')):.1f})"
    )
    fig.tight_layout()
    save_figure(fig, path, {k: v for k, v in res.items()}, cfg)


def headline(res: dict, cfg: Config) -> str:
    lines = [
        f"sae vs steering ({cfg.model}, {res['hook']}, {res['seconds']:.0f} s), SAE: {res['sae'].get('heldout')}"
    ]
    for t, r in res["results"].items():
        parts = [
            f"{m} eff {r['methods'][m]['efficacy']:.2f} coh {r['methods'][m]['coherence']:.2f} "
            f"null {r['methods'][m]['null_fraction']:.2f}"
            for m in METHODS
        ]
        lines.append(
            f"  {t} (unsteered eff {r['methods']['unsteered']['efficacy']:.2f}): "
            + "; ".join(parts)
        )
        lines.append(f"    survival: {[(s['k'], round(s['survival'], 2)) for s in r['survival']]}")
    return "\n".join(lines)


def main(argv=None) -> None:
    single_model_main(__doc__, Config, run, headline, argv)


if __name__ == "__main__":
    main()
