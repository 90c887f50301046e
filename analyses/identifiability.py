"""Non-identifiability of steering vectors, regenerated at our scale (Venkatesh & Kurapath).

python -m analyses.identifiability [--model smollm2-135m-instruct] [--quick] [--seed 0]

The protocol, per trait (formality, politeness, sentiment, agreeableness, truthfulness):
1. v = mean-diff of last-token residuals at blocks.{L//2}.hook_resid_pre. Steering adds α·v
   at the last prompt token and every generated one (the paper's positions).
2. Operating point: α for r = ‖αv‖ / typical norm in {0.05, 0.1, 0.2, 0.4, 0.8}; the point is the
   r with the largest efficacy among those where v's efficacy against α = 0 has a CI above 0
   and coherence stays >= 80% of unsteered. A trait without one is reported as such.
3. At the operating point, seed-paired generations (20 prompts x 5 samples) of: unsteered, v,
   v with other sampling seeds (negative control: must be equivalent), v + δ for δ ⟂ v,
   ‖δ‖ = ‖v‖, from the covariance null space, all of ℝᵈ, the covariance principal subspace,
   and the log-prob Jacobian's signal space (positive control: must be detected), 5 δ seeds.
4. Paired TOST per prompt (n = prompts) at a margin of a fixed fraction of v's calibrated
   efficacy, with its power; Cohen's d and d_z with CIs; efficacy retained.
Logit-level conditions (cheap, no generation): δ spread over k orthogonal directions, 50
individual directions, PCA vs mean-diff vectors, vectors from other prompt environments.

Writes to figures/ (PNG + JSON with the numbers, the config and the commit each):
  identifiability_<model>_summary.json    one entry per trait (the numbers a reader needs)
  identifiability_<model>_equivalence     efficacy of v and each v + δ with CIs, per trait
  identifiability_<model>_operating       efficacy and coherence against r, per trait
  identifiability_<model>_conditions      k-span, individual directions, PCA, environments
  identifiability_<model>_spectrum        spectra, null dim against token count, Jacobians
  identifiability_<model>_overlap         null-space overlap across prompt distributions
Cells (per trait and stage) are written atomically under <out>/.cells/, so a killed run
resumes where it stopped.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from analyses._common import arg_parser, cell, config_hash, require_clean, save_figure  # noqa: E402
from interp_steer import build_vector, chat, datasets, load_model  # noqa: E402
from interp_steer._io import write_json  # noqa: E402
from interp_steer.eval import (
    metrics,  # noqa: E402
    stats,  # noqa: E402
)
from interp_steer.eval.classifiers import for_trait, validate  # noqa: E402
from interp_steer.identifiability import (  # noqa: E402
    RULES,
    covariance_of,
    jacobian_null_space,
    null_space,
    paired_generations,
    perturb,
    prompt_activations,
    subspace_overlap,
    trait_logit_scores,
)
from interp_steer.runs.provenance import code_version  # noqa: E402
from interp_steer.units import typical_norm  # noqa: E402
from interp_steer.vectors import SteeringVector  # noqa: E402

RULE_PARAMS = {
    "relative": {"tol": 1e-3},
    "energy": {"energy": 0.99},
    "participation": {},
    "noise_floor": {},
}
NORM_DEFINITION = (
    "typical norm = median per-token L2 norm at the hook over the covariance corpus "
    "(chat-formatted prompts), position 0 excluded; r = |alpha| * ||v|| / typical norm"
)
# fields that change only how cells are analysed, not what they hold
ANALYSIS_ONLY = ("n_boot", "max_traits", "margin_fraction", "conditions_traits")
# δ sources at the operating point; the order fixes the figure's colours
SOURCES = ("null", "random", "principal", "jacobian")


@dataclass
class Config:
    model: str = "smollm2-135m-instruct"
    traits: list[str] = field(
        default_factory=lambda: [
            "formality",
            "politeness",
            "sentiment",
            "agreeableness",
            "truthfulness",
        ]
    )
    max_traits: int = 5  # stop after this many traits with an operating point
    layer: int | None = None  # default n_layers // 2 (the paper's)
    positions: str = "last_and_generated"
    positions_trait: str = "formality"  # also run with positions="all"
    rel_strengths: list[float] = field(default_factory=lambda: [0.05, 0.1, 0.2, 0.4, 0.8])
    n_prompts: int = 20
    n_samples: int = 5
    calib_samples: int = 2
    delta_seeds: int = 5  # null and Jacobian δ (the tested conditions)
    other_seeds: int = 2  # random and principal δ (reported conditions)
    eps: float = 1.0  # ‖δ‖ / ‖v‖ (the paper's ‖v⊥‖ = ‖v‖)
    max_new_tokens: int = 40
    temperature: float = 0.8
    # TOST margin = this fraction of v's calibrated efficacy: "equivalent" means keeping 50-150%
    # of v's effect. 0.25 was unreachable at 20 prompts (power 0.1-0.3 on SmolLM2 formality,
    # per-prompt SD of the paired difference 0.04 against an effect of 0.07).
    margin_fraction: float = 0.5
    coherence_floor: float = 0.8
    jacobian_prompts: int = 4
    jacobian_k: int = 4  # δ_jacobian lies in the top-k right singular directions
    null_rule: str = "energy"
    conditions_traits: int = 2  # logit-level conditions for the first n studied traits
    k_span: list[int] = field(default_factory=lambda: [1, 2, 5, 10, 50])
    n_individual: int = 50
    token_counts: list[int] = field(default_factory=lambda: [250, 500, 1000, 2000, 4000])
    subsample_reps: int = 10
    jacobian_layer_prompts: int = 2
    n_boot: int = 2000
    seed: int = 0
    quick: bool = False

    @classmethod
    def quick_config(cls, **kw) -> Config:
        quick = dict(
            traits=["formality", "sentiment"],
            rel_strengths=[0.1, 0.4],
            n_prompts=6,
            n_samples=2,
            calib_samples=1,
            delta_seeds=2,
            other_seeds=1,
            max_new_tokens=20,
            jacobian_prompts=1,
            conditions_traits=1,
            k_span=[1, 5],
            n_individual=5,
            token_counts=[250, 1000],
            subsample_reps=3,
            jacobian_layer_prompts=1,
            n_boot=200,
            quick=True,
        )
        return cls(**{**quick, **kw})


def covariance_prompts(model) -> tuple[list[str], dict[str, list[str]]]:
    """Chat-formatted prompts from every shipped prompt set (the covariance corpus)."""
    sets = {k: [chat(model, p) for p in v] for k, v in datasets.prompt_sets().items()}
    ds_prompts = [
        chat(model, p) for name in datasets.available() for p in datasets.load(name).prompts
    ]
    return [p for v in sets.values() for p in v] + ds_prompts, sets


# ---------------------------------------------------------------- null space


def null_dim_by_tokens(acts: torch.Tensor, cfg: Config) -> dict:
    """Each rule's null dim on token subsamples drawn without replacement, per token count."""
    rng = np.random.default_rng(cfg.seed)
    n = acts.shape[0]
    counts = [c for c in cfg.token_counts if c < n] + [n]
    out = {rule: {"counts": counts, "mean": [], "low": [], "high": []} for rule in RULES}
    for c in counts:
        reps = 1 if c == n else cfg.subsample_reps
        dims = {rule: [] for rule in RULES}
        for _ in range(reps):
            x = acts[rng.choice(n, c, replace=False)]
            cov = torch.cov(x.T)
            for rule in RULES:
                dims[rule].append(null_space(cov, rule, n_samples=c, **RULE_PARAMS[rule]).dim)
        for rule in RULES:
            out[rule]["mean"].append(float(np.mean(dims[rule])))
            out[rule]["low"].append(float(np.min(dims[rule])))
            out[rule]["high"].append(float(np.max(dims[rule])))
    return out


def spectrum_numbers(model, cfg, hook, corpus, acts: torch.Tensor, cov: torch.Tensor) -> dict:
    """Covariance spectrum and each rule's null dim, null dim against token count, and the
    log-prob Jacobian's singular values at L/4, L/2 and 3L/4 (the slow part: a cell).
    ``acts`` are the corpus's token activations at ``hook``, ``cov`` their covariance."""
    lam = torch.linalg.eigvalsh(cov).flip(0).clamp_min(1e-12)
    numbers: dict = {"hook": hook, "n_tokens": int(acts.shape[0]), "spectrum": lam.tolist()}
    numbers["rules"] = {}
    for rule in RULES:
        ns = null_space(cov, rule, n_samples=acts.shape[0], **RULE_PARAMS[rule])
        numbers["rules"][rule] = {
            "null_dim": ns.dim,
            "signal_dim": int(ns.signal.shape[1]),
            "params": RULE_PARAMS[rule],
        }
    numbers["null_dim_by_tokens"] = null_dim_by_tokens(acts, cfg)
    n_layers = model.cfg.n_layers
    numbers["jacobian"] = {}
    for layer in [n_layers // 4, n_layers // 2, 3 * n_layers // 4]:
        h = f"blocks.{layer}.hook_resid_pre"
        jac = jacobian_null_space(
            model, corpus[: cfg.jacobian_layer_prompts], h, "relative", tol=0.05**2, progress=False
        )
        sig = jac.spectrum.clamp_min(0).sqrt()
        numbers["jacobian"][h] = {
            "effective_rank": int(jac.signal.shape[1]),
            "null_dim": int(jac.dim),
            "rule": "sigma > 5% sigma_max of the exact last-token log-prob Jacobian",
            "n_prompts": cfg.jacobian_layer_prompts,
            "sigma_relative": (sig / sig[0]).tolist(),
        }
    return numbers


def spectrum_figure(cfg, numbers: dict, out: Path) -> None:
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
        title=f"{cfg.model} {numbers['hook']}: activation covariance "
        f"({numbers['n_tokens']} tokens)",
        xlabel="eigen-direction rank",
        ylabel="variance",
    )
    ax.legend(fontsize=8)
    conv = numbers["null_dim_by_tokens"]
    ax = axes[1]
    for rule, color in zip(RULES, ["C1", "C2", "C3", "C4"]):
        c = conv[rule]
        ax.plot(c["counts"], c["mean"], "o-", color=color, label=rule)
        ax.fill_between(c["counts"], c["low"], c["high"], color=color, alpha=0.2)
    ax.set(
        xscale="log",
        xlabel="tokens (subsampled without replacement)",
        ylabel="estimated null dimension",
        title=f"null dim vs sample size (band: min-max of {cfg.subsample_reps} subsamples)",
    )
    ax.set_xticks(conv[RULES[0]]["counts"], [str(c) for c in conv[RULES[0]]["counts"]])
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.legend(fontsize=8)
    ax = axes[2]
    # cells store keys sorted as strings: order the hooks by layer
    jacs = sorted(numbers["jacobian"].items(), key=lambda kv: int(kv[0].split(".")[1]))
    for (h, j), color in zip(jacs, ["C0", "C5", "C6"]):
        sig = np.clip(np.array(j["sigma_relative"]), 1e-8, None)
        label = f"{h}: rank(σ > 5% σmax) = {j['effective_rank']}"
        ax.semilogy(np.arange(1, len(sig) + 1), sig, color=color, label=label)
    ax.axhline(0.05, color="0.5", ls=":")
    ax.set(
        xlabel="singular direction rank",
        ylabel="σ / σmax",
        title="log-prob Jacobian at the last position",
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


# ---------------------------------------------------------------- per-trait cells


def _flat(texts) -> list[str]:
    """[condition][prompt][sample] texts in row order."""
    return [t for c in texts for p in c for t in p]


def _scores(clf, texts) -> np.ndarray:
    """Classifier scores with the [condition][prompt][sample] shape of ``texts``."""
    shape = (len(texts), len(texts[0]), len(texts[0][0]))
    return np.asarray(clf(_flat(texts)), float).reshape(shape)


def calibration_cell(model, cfg, v, prompts, clf, typical) -> dict:
    """v at α = 0 and each r: classifier scores and coherence, seed-paired with α = 0."""
    alphas = [0.0] + [r * typical / float(v.norm()) for r in cfg.rel_strengths]
    texts = paired_generations(
        model,
        [v],
        [(0, a) for a in alphas],
        prompts,
        cfg.calib_samples,
        seed=cfg.seed,
        positions=cfg.positions,
        max_new_tokens=cfg.max_new_tokens,
        temperature=cfg.temperature,
    )
    coh = metrics.coherence(model, _flat(texts)).reshape(
        len(alphas), len(prompts), cfg.calib_samples
    )
    return {
        "alphas": alphas,
        "relative_norm": [0.0] + list(cfg.rel_strengths),
        "scores": _scores(clf, texts).tolist(),
        "coherence": coh.tolist(),
        "examples": [texts[c][0][0] for c in range(len(alphas))],
    }


def operating_point(calib: dict, cfg: Config) -> tuple[dict | None, list[dict]]:
    """The grid with its verdicts, and the chosen point (None when no r is valid)."""
    s, c = np.array(calib["scores"]), np.array(calib["coherence"])
    base = s[0].mean(1)
    grid = []
    for i in range(1, len(calib["alphas"])):
        diff = s[i].mean(1) - base  # per prompt, paired by sampling seed
        lo, hi = stats.cluster_bootstrap(diff, n_boot=cfg.n_boot, seed=cfg.seed)
        ratio = float(c[i].mean() / max(c[0].mean(), 1e-9))
        grid.append(
            {
                "alpha": calib["alphas"][i],
                "relative_norm": calib["relative_norm"][i],
                "efficacy": float(diff.mean()),
                "efficacy_ci": [lo, hi],
                "coherence": float(c[i].mean()),
                "coherence_ratio": ratio,
                "valid": bool(lo > 0 and ratio >= cfg.coherence_floor),
            }
        )
    valid = [g for g in grid if g["valid"]]
    return (max(valid, key=lambda g: g["efficacy"]) if valid else None), grid


def jacobian_signal(model, cfg, prompts, hook) -> dict:
    """The top-k right singular directions of the exact last-token log-prob Jacobian."""
    jac = jacobian_null_space(
        model, prompts[: cfg.jacobian_prompts], hook, "relative", tol=0.05**2, progress=False
    )
    return {"basis": jac.signal[:, : cfg.jacobian_k].tolist()}


def delta_vectors(cfg, v, jac_basis, ns) -> tuple[list[SteeringVector], list[str]]:
    """v, then v + δ per source and seed; returns the vectors and their source labels."""
    bases = {"jacobian": torch.tensor(jac_basis, dtype=torch.float64)}
    vecs, labels = [v], ["v"]
    for src in SOURCES:
        n = cfg.delta_seeds if src in ("null", "jacobian") else cfg.other_seeds
        source = bases.get(src, src)
        for p in perturb(v, cfg.eps, source, n=n, seed=cfg.seed, null_space=ns):
            vecs.append(p)
            labels.append(src)
    return vecs, labels


def equivalence_cell(model, cfg, vecs, labels, prompts, clf, alpha, positions) -> dict:
    """Seed-paired generations at the operating point: unsteered, v, v re-seeded, each v+δ."""
    conds = [(0, 0.0), (0, alpha), (0, alpha)] + [(j, alpha) for j in range(1, len(vecs))]
    names = ["unsteered", "v", "v_reseeded"] + labels[1:]
    offsets = [0, 0, 500_000] + [0] * (len(vecs) - 1)
    texts = paired_generations(
        model,
        vecs,
        conds,
        prompts,
        cfg.n_samples,
        seed=cfg.seed + 7919,  # independent of the calibration's samples
        seed_offsets=offsets,
        positions=positions,
        max_new_tokens=cfg.max_new_tokens,
        temperature=cfg.temperature,
    )
    return {
        "conditions": names,
        "alpha": alpha,
        "positions": positions,
        "scores": _scores(clf, texts).tolist(),
        "examples": {n: texts[i][0][0] for i, n in enumerate(names) if n not in names[:i]},
    }


def compare(eq: dict, margin: float, cfg: Config) -> dict:
    """Per condition group: efficacy against unsteered with a CI, and the paired comparison
    with v (TOST, its power, t-test, d, d_z, efficacy retained), prompts as the unit."""
    s = np.array(eq["scores"])  # [condition, prompt, sample]
    names = eq["conditions"]
    per_prompt = s.mean(2)
    group = {n: [i for i, m in enumerate(names) if m == n] for n in dict.fromkeys(names)}
    m = {n: per_prompt[idx].mean(0) for n, idx in group.items()}
    flat = {n: s[idx].ravel() for n, idx in group.items()}
    base, ref = m["unsteered"], m["v"]
    n_prompts = s.shape[1]
    out = {}
    for n in group:
        eff = m[n] - base
        lo, hi = stats.cluster_bootstrap(eff, n_boot=cfg.n_boot, seed=cfg.seed)
        row = {
            "efficacy": float(eff.mean()),
            "efficacy_ci": [lo, hi],
            "n_conditions": len(group[n]),
        }
        if n not in ("unsteered", "v"):
            diff = m[n] - ref
            sd = float(diff.std(ddof=1))
            d, dlo, dhi = stats.cohens_d(flat["v"], flat[n])
            dz, zlo, zhi = stats.cohens_dz(ref, m[n])
            both = np.c_[m[n] - base, ref - base]
            ret_lo, ret_hi = stats.cluster_bootstrap(
                both,
                lambda x: x[:, 0].mean() / x[:, 1].mean(),
                n_boot=cfg.n_boot,
                seed=cfg.seed,
            )
            row.update(
                diff_vs_v=float(diff.mean()),
                tost_p=stats.tost_paired(ref, m[n], margin),
                t_p=stats.paired_t(ref, m[n]),
                power=stats.tost_power_paired(margin, n_prompts, sd) if sd > 0 else 1.0,
                sd_diff=sd,
                d=d,
                d_ci=[dlo, dhi],
                d_z=dz,
                d_z_ci=[zlo, zhi],
                efficacy_retained=float((m[n] - base).mean() / (ref - base).mean()),
                efficacy_retained_ci=[ret_lo, ret_hi],
            )
            row["equivalent"] = bool(row["tost_p"] < 0.05)
        out[n] = row
    return out


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
        for i, p in enumerate(_span_vectors(v, min(k, v.d_model - 1), cfg.eps, 2, cfg.seed)):
            vecs.append(p)
            meta.append(("span", k, i))
    for i, p in enumerate(perturb(v, cfg.eps, "random", n=cfg.n_individual, seed=cfg.seed + 1)):
        vecs.append(p)
        meta.append(("individual", 1, i))
    pca = build_vector(model, ds, hook, method="pca", seed=cfg.seed, progress=False)
    pca = replace(pca, directions=pca.directions / pca.norm() * v.norm())
    vecs.append(pca)
    meta.append(("pca", 0, 0))
    for i, p in enumerate(perturb(pca, cfg.eps, "null", n=2, seed=cfg.seed, null_space=ns)):
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


# ---------------------------------------------------------------- run


def run(cfg: Config, out_dir: Path = Path("figures"), model=None) -> dict:
    """Run the whole analysis (``model`` overrides loading ``cfg.model``, e.g. for tests)."""
    t_start = time.time()
    torch.manual_seed(cfg.seed)
    model = model if model is not None else load_model(cfg.model)
    layer = cfg.layer if cfg.layer is not None else model.cfg.n_layers // 2
    hook = f"blocks.{layer}.hook_resid_pre"
    stem = Path(out_dir) / f"identifiability_{cfg.model}{'_quick' if cfg.quick else ''}"
    cells = Path(out_dir) / ".cells" / f"{stem.name}_{config_hash(cfg, ANALYSIS_ONLY)}"
    corpus, sets = covariance_prompts(model)
    typical = typical_norm(model, hook, corpus, chat=False)
    acts = torch.cat(prompt_activations(model, corpus, hook, progress=False))
    cov = torch.cov(acts.T)  # = covariance_of(per-prompt activations)
    ns = null_space(cov, cfg.null_rule, **RULE_PARAMS[cfg.null_rule])
    spectrum = cell(
        cells / "spectrum.json", partial(spectrum_numbers, model, cfg, hook, corpus, acts, cov)
    )
    spectrum_figure(cfg, spectrum, Path(f"{stem}_spectrum"))
    traits: dict = {}
    extra: dict = {}
    studied = 0
    for trait in cfg.traits:
        if studied >= cfg.max_traits:
            break
        ds = datasets.load(trait)
        v = build_vector(model, ds, hook, method="mean_diff", seed=cfg.seed, progress=False)
        prompts = [chat(model, p) for p in ds.prompts[: cfg.n_prompts]]
        clf = for_trait(trait)[0]
        t0 = time.time()
        calib = cell(
            cells / f"{trait}_calibration.json",
            partial(calibration_cell, model, cfg, v, prompts, clf, typical),
        )
        op, grid = operating_point(calib, cfg)
        entry = {
            "classifier": clf.name,
            "classifier_validation": validate(clf, trait, n_boot=cfg.n_boot, seed=cfg.seed),
            "v_norm": float(v.norm()),
            "calibration": grid,
            "calibration_examples": calib["examples"],
            "operating_point": op and {"alpha": op["alpha"], "relative_norm": op["relative_norm"]},
        }
        traits[trait] = entry
        if op is None:
            entry["verdict"] = "no operating point: no r has a significant efficacy with coherence"
            continue
        studied += 1
        margin = max(cfg.margin_fraction * abs(op["efficacy"]), 1e-9)
        jac = cell(
            cells / f"{trait}_jacobian.json", partial(jacobian_signal, model, cfg, prompts, hook)
        )
        vecs, labels = delta_vectors(cfg, v, jac["basis"], ns)
        eq = cell(
            cells / f"{trait}_equivalence.json",
            partial(
                equivalence_cell, model, cfg, vecs, labels, prompts, clf, op["alpha"], cfg.positions
            ),
        )
        if abs(eq["alpha"] - op["alpha"]) > 1e-9 * max(1.0, abs(op["alpha"])):
            raise RuntimeError(f"{trait}: cached equivalence cell is at another alpha; delete it")
        res = compare(eq, margin, cfg)
        pos, neg, nul = res["jacobian"], res["v_reseeded"], res["null"]
        entry.update(
            efficacy={
                "mean": res["v"]["efficacy"],
                "ci_low": res["v"]["efficacy_ci"][0],
                "ci_high": res["v"]["efficacy_ci"][1],
            },
            positive_control={
                "kind": f"v + δ in the top-{cfg.jacobian_k} right singular directions of the "
                "exact last-token log-prob Jacobian at the hook",
                "p": pos["t_p"],
                "tost_p": pos["tost_p"],
                "detected": bool(pos["t_p"] < 0.05 and pos["tost_p"] >= 0.05),
            },
            negative_control={
                "kind": "v with independent sampling seeds",
                "tost_p": neg["tost_p"],
                "equivalent": neg["equivalent"],
                "power": neg["power"],
            },
            null_delta={
                "tost_p": nul["tost_p"],
                "equivalent": nul["equivalent"],
                "d": nul["d"],
                "d_ci": nul["d_ci"],
                "d_z": nul["d_z"],
                "d_z_ci": nul["d_z_ci"],
                "efficacy_retained": nul["efficacy_retained"],
                "efficacy_retained_ci": nul["efficacy_retained_ci"],
            },
            n={
                "prompts": len(prompts),
                "samples": cfg.n_samples,
                "delta_seeds": cfg.delta_seeds,
                "other_seeds": cfg.other_seeds,
            },
            tost={
                "margin": margin,
                "margin_rule": f"{cfg.margin_fraction} x v's efficacy at the operating point "
                "in the calibration run (independent samples), on the classifier's scale",
                "power": nul["power"],
                "test": "paired TOST over prompts (per-prompt means over samples and δ seeds)",
            },
            conditions=res,
            examples=eq["examples"],
            cells_computed_at={"calibration": calib["_commit"], "equivalence": eq["_commit"]},
        )
        if studied <= cfg.conditions_traits:
            extra[trait] = cell(
                cells / f"{trait}_conditions.json",
                partial(conditions_cell, model, cfg, trait, v, hook, ns, op["alpha"]),
            )
        if trait == cfg.positions_trait:
            eq_all = cell(
                cells / f"{trait}_positions_all.json",
                partial(
                    equivalence_cell,
                    model,
                    replace(cfg, n_samples=max(1, cfg.n_samples // 2)),
                    vecs[: 1 + cfg.other_seeds],
                    labels[: 1 + cfg.other_seeds],
                    prompts,
                    clf,
                    op["alpha"],
                    "all",
                ),
            )
            entry["positions_all"] = compare(eq_all, margin, cfg)
        entry["seconds"] = time.time() - t0
    operating_figure(cfg, traits, Path(f"{stem}_operating"))
    equivalence_figure(cfg, traits, Path(f"{stem}_equivalence"))
    if extra:
        conditions_figure(cfg, extra, Path(f"{stem}_conditions"))
    overlap = overlap_figure(model, cfg, hook, sets, Path(f"{stem}_overlap"))
    summary = {
        "config": asdict(cfg),
        "interp_steer": code_version(),
        "seed": cfg.seed,
        "model": cfg.model,
        "hook": hook,
        "positions": cfg.positions,
        "typical_norm": typical,
        "norm_definition": NORM_DEFINITION,
        "null_space": {
            "rule": cfg.null_rule,
            "null_dim": ns.dim,
            "d_model": model.cfg.d_model,
            "rules": spectrum["rules"],
        },
        "traits": traits,
        "seconds": time.time() - t_start,
    }
    write_json(Path(f"{stem}_summary.json"), summary)
    return {"summary": summary, "overlap": overlap, "conditions": extra}


# ---------------------------------------------------------------- figures

COLORS = {
    "v": "k",
    "v_reseeded": "0.55",
    "null": "C0",
    "random": "C1",
    "principal": "C3",
    "jacobian": "C2",
}
LABELS = {
    "v": "v",
    "v_reseeded": "v, other seeds (neg. control)",
    "null": "v + δ null",
    "random": "v + δ random",
    "principal": "v + δ principal",
    "jacobian": "v + δ Jacobian signal (pos. control)",
}


def operating_figure(cfg, traits, out: Path) -> None:
    names = list(traits)
    fig, axes = plt.subplots(2, len(names), figsize=(4.2 * len(names), 7), squeeze=False)
    for col, t in enumerate(names):
        grid = traits[t]["calibration"]
        r = [g["relative_norm"] for g in grid]
        e = np.array([g["efficacy"] for g in grid])
        ci = np.array([g["efficacy_ci"] for g in grid])
        ax = axes[0, col]
        ax.errorbar(r, e, [e - ci[:, 0], ci[:, 1] - e], fmt="o-", capsize=3)
        ax.axhline(0, color="0.6", lw=0.8)
        op = traits[t]["operating_point"]
        if op:
            ax.axvline(op["relative_norm"], color="C2", ls="--", label="operating point")
            ax.legend(fontsize=8)
        ax.set(
            xscale="log",
            title=f"{t} ({traits[t]['classifier']})",
            ylabel="efficacy: Δ score vs α = 0",
        )
        ax.set_xticks(r, [str(x) for x in r])
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax = axes[1, col]
        ax.plot(r, [g["coherence_ratio"] for g in grid], "o-", color="C4")
        ax.axhline(cfg.coherence_floor, color="C3", ls=":", label=f"floor {cfg.coherence_floor}")
        ax.set(
            xscale="log",
            ylim=(0, 1.3),
            xlabel="r = ‖αv‖ / typical token norm",
            ylabel="coherence / unsteered",
        )
        ax.set_xticks(r, [str(x) for x in r])
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.legend(fontsize=8)
    fig.suptitle(
        f"{cfg.model}: operating points ({cfg.calib_samples} samples x {cfg.n_prompts} "
        "prompts per r; CI: bootstrap over prompts)"
    )
    fig.tight_layout()
    save_figure(fig, out, {"traits": {t: traits[t]["calibration"] for t in names}}, cfg)


def equivalence_figure(cfg, traits, out: Path) -> None:
    names = [t for t in traits if "conditions" in traits[t]]
    fig, axes = plt.subplots(
        1, max(1, len(names)), figsize=(4.6 * max(1, len(names)), 5), squeeze=False
    )
    order = ["v", "v_reseeded", "null", "random", "principal", "jacobian"]
    numbers = {}
    for ax, t in zip(axes[0], names):
        res = traits[t]["conditions"]
        keys = [k for k in order if k in res]
        e = np.array([res[k]["efficacy"] for k in keys])
        ci = np.array([res[k]["efficacy_ci"] for k in keys])
        ax.bar(range(len(keys)), e, color=[COLORS[k] for k in keys], alpha=0.8)
        ax.errorbar(
            range(len(keys)), e, [e - ci[:, 0], ci[:, 1] - e], fmt="none", ecolor="k", capsize=3
        )
        m = traits[t]["tost"]["margin"]
        ax.axhspan(
            res["v"]["efficacy"] - m,
            res["v"]["efficacy"] + m,
            color="0.85",
            zorder=0,
            label=f"v ± margin {m:.3f}",
        )
        for i, k in enumerate(keys):
            if "tost_p" in res[k]:
                verdict = "≡" if res[k]["equivalent"] else ("≠" if res[k]["t_p"] < 0.05 else "?")
                ax.text(
                    i,
                    max(ci[i, 1], 0) + 0.01 * (abs(e).max() + 1e-9),
                    verdict,
                    ha="center",
                    fontsize=12,
                )
        ax.set_xticks(
            range(len(keys)), [LABELS[k] for k in keys], rotation=40, ha="right", fontsize=8
        )
        op = traits[t]["operating_point"]
        ax.set(
            title=f"{t}: r = {op['relative_norm']}, α = {op['alpha']:.2f}",
            ylabel=f"efficacy: Δ {traits[t]['classifier']} vs unsteered",
        )
        ax.legend(fontsize=8, loc="lower left")
        numbers[t] = {k: res[k] for k in keys}
    fig.suptitle(
        f"{cfg.model}: efficacy at the operating point, {cfg.n_prompts} prompts x "
        f"{cfg.n_samples} samples (x {cfg.delta_seeds} δ seeds); 95% CI over prompts; "
        "≡ TOST-equivalent to v, ≠ differs (paired t), ? neither"
    )
    fig.tight_layout()
    save_figure(fig, out, {"traits": numbers}, cfg)


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


def headline(res: dict, cfg: Config) -> str:
    s = res["summary"]
    lines = [
        f"identifiability ({cfg.model}, {s['hook']}, {'quick' if cfg.quick else 'full'}, {s['seconds']:.0f} s):"
    ]
    lines.append(
        f"  {'trait':<14}{'r':>5}{'efficacy [CI]':>24}{'null: retained':>16}{'TOST p':>8}{'power':>7}"
        f"{'pos.ctl p':>10}{'neg.ctl p':>10}"
    )
    for t, e in s["traits"].items():
        if not e.get("operating_point") or "efficacy" not in e:
            lines.append(f"  {t:<14}  no operating point")
            continue
        ef = e["efficacy"]
        lines.append(
            f"  {t:<14}{e['operating_point']['relative_norm']:>5}"
            f"{ef['mean']:>+9.3f} [{ef['ci_low']:+.3f},{ef['ci_high']:+.3f}]"
            f"{e['null_delta']['efficacy_retained']:>15.0%}{e['null_delta']['tost_p']:>9.3f}"
            f"{e['tost']['power']:>7.2f}{e['positive_control']['p']:>10.3g}{e['negative_control']['tost_p']:>10.3f}"
        )
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = arg_parser(__doc__)
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--max-traits", type=int, default=None, help="stop after n studied traits")
    args = ap.parse_args(argv)
    require_clean(args)
    kw = {"model": args.model, "seed": args.seed}
    if args.max_traits is not None:
        kw["max_traits"] = args.max_traits
    cfg = (Config.quick_config if args.quick else Config)(**kw)
    res = run(cfg, args.out)
    print(headline(res, cfg))
    print(
        f"(every number, with its config: {args.out}/identifiability_{cfg.model}{'_quick' if cfg.quick else ''}_summary.json)"
    )


if __name__ == "__main__":
    main()
