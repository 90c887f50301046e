"""Non-identifiability of steering vectors, regenerated at our scale (Venkatesh & Kurapath).

python -m analyses.identifiability [--model smollm2-135m-instruct] [--quick] [--seed 0]

Writes to figures/ (PNG + JSON with the numbers and the config each):
  identifiability_<model>_spectrum      covariance (and Jacobian) spectra, each rule's null dim
  identifiability_<model>_efficacy      efficacy vs eps for null / random / principal δ
  identifiability_<model>_equivalence   KL and classifier difference between v and v' vs alpha
  identifiability_<model>_overlap       null-space overlap across prompt distributions
  identifiability_<model>_protocol      the paper's protocol: v, v+v⊥, v⊥ alone; logit checks
"""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from analyses._common import require_clean, save_figure  # noqa: E402
from interp_steer import build_vector, chat, datasets, load_model  # noqa: E402
from interp_steer._io import write_json  # noqa: E402
from interp_steer.activations import get_activations  # noqa: E402
from interp_steer.classifiers import for_trait  # noqa: E402
from interp_steer.identifiability import (  # noqa: E402
    RULES,
    bootstrap_null_dim,
    classifier_samples,
    cohens_d,
    covariance_of,
    jacobian_null_space,
    logit_checks,
    next_token_kl,
    null_space,
    orthogonal_perturbation_study,
    perturb,
    prompt_activations,
    subspace_overlap,
)

RULE_PARAMS = {
    "relative": {"tol": 1e-3},
    "energy": {"energy": 0.99},
    "participation": {},
    "noise_floor": {},
}


@dataclass
class Config:
    model: str = "smollm2-135m-instruct"
    traits: list[str] = field(default_factory=lambda: ["sentiment", "formality", "refusal"])
    layers: list[int] | None = None  # default: [n_layers // 2, n_layers // 3]
    eps_grid: list[float] = field(default_factory=lambda: [0.5, 1.0, 2.0])
    alphas: list[float] = field(default_factory=lambda: [0.25, 0.5, 1.0])
    sources: list[str] = field(default_factory=lambda: ["null", "random", "principal"])
    n_perturb: int = 2
    n_prompts: int = 10
    n_samples: int = 1
    max_new_tokens: int = 30
    jacobian_prompts: int = 3
    null_rule: str = "energy"  # which rule's null space the "null" source draws from
    n_boot: int = 50
    margin: float = 0.1
    seed: int = 0
    quick: bool = False

    @classmethod
    def quick_config(cls, **kw) -> Config:
        quick = dict(
            eps_grid=[0.5, 1.0],
            alphas=[0.5],
            n_perturb=2,
            n_prompts=6,
            max_new_tokens=20,
            jacobian_prompts=1,
            n_boot=20,
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


def spectrum_figure(model, cfg, layers, corpus, out: Path) -> dict:
    t0 = time.time()
    fig, axes = plt.subplots(1, len(layers), figsize=(6.5 * len(layers), 4.5), squeeze=False)
    numbers: dict = {"layers": {}}
    null_spaces = {}
    for ax, layer in zip(axes[0], layers):
        hook = f"blocks.{layer}.hook_resid_pre"
        acts = prompt_activations(model, corpus, hook, progress=False)
        cov = covariance_of(acts)
        n_tok = sum(a.shape[0] for a in acts)
        lam = torch.linalg.eigvalsh(cov).flip(0).clamp_min(1e-12)
        ax.semilogy(np.arange(1, len(lam) + 1), lam.numpy(), lw=2, label="activation covariance")
        entry = {"hook": hook, "n_tokens": n_tok, "n_prompts": len(corpus), "rules": {}}
        colors = dict(zip(RULES, ["C1", "C2", "C3", "C4"]))
        for rule in RULES:
            ns = null_space(cov, rule, n_samples=n_tok, **RULE_PARAMS[rule])
            boot = bootstrap_null_dim(
                acts, rule, n_boot=cfg.n_boot, seed=cfg.seed, **RULE_PARAMS[rule]
            )
            entry["rules"][rule] = {
                "null_dim": ns.dim,
                "signal_dim": ns.signal.shape[1],
                "params": RULE_PARAMS[rule],
                "bootstrap": boot,
            }
            ax.axvline(
                ns.signal.shape[1] + 0.5,
                color=colors[rule],
                ls="--",
                label=f"{rule}: null dim {ns.dim} [{boot['ci_low']:.0f}, {boot['ci_high']:.0f}]",
            )
            null_spaces[(layer, rule)] = ns
        jac = jacobian_null_space(
            model, corpus[: cfg.jacobian_prompts], hook, "relative", tol=0.05**2, progress=False
        )
        jl = jac.spectrum.clamp_min(1e-12)
        # scale the Jacobian spectrum onto the covariance's range so both shapes are visible
        ax.semilogy(
            np.arange(1, len(jl) + 1),
            (jl / jl[0] * lam[0]).numpy(),
            lw=1.5,
            color="k",
            alpha=0.6,
            label=f"log-prob Jacobian σ² (rescaled); σ>5%σmax ⇒ null dim {jac.dim}",
        )
        cos_overlap = subspace_overlap(null_spaces[(layer, cfg.null_rule)].basis, jac.basis)
        entry["jacobian"] = {
            "null_dim": jac.dim,
            "rule": "sigma > 5% sigma_max",
            "n_prompts": cfg.jacobian_prompts,
            f"overlap_with_{cfg.null_rule}_covariance_null": cos_overlap["overlap"],
        }
        ax.set(
            title=f"{cfg.model}  {hook}",
            xlabel="eigen-direction rank",
            ylabel="eigenvalue (variance, resid units²)",
        )
        ax.legend(fontsize=7.5, loc="lower left")
        numbers["layers"][str(layer)] = entry
    numbers["seconds"] = time.time() - t0
    save_figure(fig, out, numbers, cfg)
    return null_spaces


def overlap_figure(model, cfg, layer, sets, out: Path) -> dict:
    hook = f"blocks.{layer}.hook_resid_pre"
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
            ax.text(
                j,
                i,
                f"{mat[i, j]:.2f}",
                ha="center",
                va="center",
                fontsize=8,
                color="w" if mat[i, j] < 0.6 else "k",
            )
    fig.colorbar(
        im,
        label="overlap above chance: (o − c)/(1 − c)\n"
        "o = ‖AᵀB‖²_F / min(dim), c = max(dim)/d_model",
    )
    ax.set_title(f"{cfg.model} {hook}\nnull spaces ({cfg.null_rule} rule) across prompt sets")
    numbers = {
        "hook": hook,
        "prompt_sets": names,
        "overlap_raw": raw.tolist(),
        "chance": chance.tolist(),
        "overlap_above_chance": mat.tolist(),
        "null_dims": {n: spaces[n].dim for n in names},
        "note": "each set has only 8 prompts (~300 tokens) so its covariance is "
        "rank-limited; null dims are upper-biased",
    }
    save_figure(fig, out, numbers, cfg)
    return numbers


def run(cfg: Config, out_dir: Path = Path("figures"), model=None) -> dict:
    """Run the whole analysis (``model`` overrides loading ``cfg.model``, e.g. for tests)."""
    torch.manual_seed(cfg.seed)
    t_start = time.time()
    model = model if model is not None else load_model(cfg.model)
    n_layers = model.cfg.n_layers
    layers = cfg.layers or ([n_layers // 2] if cfg.quick else [n_layers // 2, n_layers // 3])
    cfg.layers = layers
    # quick runs (make demo) must not overwrite the full run's figures
    stem = out_dir / f"identifiability_{cfg.model}{'_quick' if cfg.quick else ''}"
    corpus, sets = covariance_prompts(model)
    null_spaces = spectrum_figure(model, cfg, layers, corpus, Path(f"{stem}_spectrum"))

    layer = layers[0]
    hook = f"blocks.{layer}.hook_resid_pre"
    ns = null_spaces[(layer, cfg.null_rule)]
    resid = float(get_activations(model, corpus, hook, progress=False)[hook].norm(dim=-1).mean())
    tables, protocol, vectors = {}, {}, {}
    for trait in cfg.traits:
        ds = datasets.load(trait)
        v = build_vector(model, ds, hook, method="mean_diff", seed=cfg.seed, progress=False)
        vectors[trait] = v
        prompts = [chat(model, p) for p in ds.prompts[: cfg.n_prompts]]
        clfs = for_trait(trait)
        df = orthogonal_perturbation_study(
            model,
            v,
            prompts,
            cfg.eps_grid,
            cfg.alphas,
            cfg.sources,
            clfs,
            cfg.seed,
            pairs=ds.test,
            null_space=ns,
            n_perturb=cfg.n_perturb,
            n_samples=cfg.n_samples,
            max_new_tokens=cfg.max_new_tokens,
            margin=cfg.margin,
        )
        tables[trait] = {
            "df": df,
            "classifiers": [c.name for c in clfs],
            "heldout_accuracy": {c.name: getattr(c, "heldout_accuracy", None) for c in clfs},
            "v_norm": float(v.norm()),
            "resid_norm": resid,
        }
        protocol[trait] = paper_protocol(model, cfg, v, prompts, clfs)
    others = {t: vectors[t] for t in cfg.traits}
    for trait in cfg.traits:
        v = vectors[trait]
        prompts = [chat(model, p) for p in datasets.load(trait).prompts[: cfg.n_prompts]]
        perp = perturb(v, 1.0, "random", seed=cfg.seed)[0]
        rnd = torch.randn(v.d_model, generator=torch.Generator().manual_seed(cfg.seed))
        comp = {"v+v_perp": perp, "random_equal_norm": type(v)(rnd / rnd.norm() * v.norm(), v.hook)}
        for o in others:
            if o != trait:
                comp[f"{o}_rescaled"] = type(v)(
                    others[o].vector / others[o].norm() * v.norm(), v.hook
                )
        protocol[trait]["logit_checks"] = logit_checks(model, v, prompts, cfg.alphas[-1], comp)
        # distribution shift: does v+v⊥ stay close to v on other prompt distributions?
        protocol[trait]["shift_kl_v_vs_v_plus_perp"] = {
            name: {
                "kl": next_token_kl(model, v, perp, ps, cfg.alphas[-1]),
                "kl_random_equal_norm": next_token_kl(
                    model, v, comp["random_equal_norm"], ps, cfg.alphas[-1]
                ),
            }
            for name, ps in sets.items()
        }

    # the other layer(s): logit efficacy and KL only (no generation), to keep the run short
    by_layer = {layer: tables}
    for other in layers[1:]:
        h2 = f"blocks.{other}.hook_resid_pre"
        ns2 = null_spaces[(other, cfg.null_rule)]
        r2 = float(get_activations(model, corpus, h2, progress=False)[h2].norm(dim=-1).mean())
        by_layer[other] = {}
        for trait in cfg.traits:
            ds = datasets.load(trait)
            v2 = build_vector(model, ds, h2, method="mean_diff", seed=cfg.seed, progress=False)
            prompts = [chat(model, p) for p in ds.prompts[: cfg.n_prompts]]
            df2 = orthogonal_perturbation_study(
                model,
                v2,
                prompts,
                cfg.eps_grid,
                cfg.alphas,
                cfg.sources,
                None,
                cfg.seed,
                pairs=ds.test,
                null_space=ns2,
                n_perturb=cfg.n_perturb,
            )
            by_layer[other][trait] = {
                "df": df2,
                "classifiers": [],
                "v_norm": float(v2.norm()),
                "resid_norm": r2,
            }
    efficacy_figure(cfg, by_layer, Path(f"{stem}_efficacy"))
    equivalence_figure(cfg, tables, Path(f"{stem}_equivalence"))
    overlap = overlap_figure(model, cfg, layer, sets, Path(f"{stem}_overlap"))
    write_json(
        Path(f"{stem}_protocol.json"), {"config": asdict(cfg), "hook": hook, "protocol": protocol}
    )
    return {
        "tables": tables,
        "protocol": protocol,
        "overlap": overlap,
        "seconds": time.time() - t_start,
        "layers": layers,
    }


def paper_protocol(model, cfg, v, prompts, clfs) -> dict:
    """v, v + v⊥ and v⊥ alone (‖v⊥‖ = ‖v‖), over the alpha sweep {0, 0.5, 1, 2}·alpha_max."""
    perp_full = perturb(v, 1.0, "random", n=1, seed=cfg.seed)[0]
    v_perp = type(v)(perp_full.vector - v.vector, v.hook, v.model_fingerprint)
    vectors = [v, perp_full, v_perp]
    scale = cfg.alphas[-1]
    sweep = [0.0, 0.5 * scale, scale, 2 * scale]
    conditions = [(j, a) for a in sweep for j in range(3)]
    scores, _ = classifier_samples(
        model,
        vectors,
        conditions,
        prompts,
        clfs,
        n_samples=cfg.n_samples,
        max_new_tokens=cfg.max_new_tokens,
        seed=cfg.seed,
    )
    out = {"alphas": sweep, "classifiers": {}}
    for name, s in scores.items():
        base = s[0].mean()
        rows = {}
        for ai, a in enumerate(sweep):
            sv, sp, so = s[ai * 3], s[ai * 3 + 1], s[ai * 3 + 2]
            rows[str(a)] = {
                "mean_v": float(sv.mean()),
                "mean_v_plus_perp": float(sp.mean()),
                "mean_perp_only": float(so.mean()),
                "cohens_d_v_vs_v_plus_perp": cohens_d(sv, sp),
                # undefined at alpha = 0, where v has no effect to compare with
                "perp_only_ratio": None
                if a == 0
                else float(abs(so.mean() - base) / max(abs(sv.mean() - base), 1e-9)),
            }
        out["classifiers"][name] = rows
    return out


def _by_eps(df, metric: str, source: str, alpha: float, eps_grid):
    """v's value, and mean/sd over perturbation draws of ``metric`` per eps."""
    ref = float(df[(df.source == "v") & (df.alpha == alpha)][metric].iloc[0])
    rows = [
        df[(df.source == source) & (df.eps == e) & (df.alpha == alpha)][metric] for e in eps_grid
    ]
    return ref, np.array([r.mean() for r in rows]), np.array([r.std(ddof=0) for r in rows])


def efficacy_figure(cfg, by_layer, out: Path) -> None:
    """One row per layer, one column per trait: efficacy of v+δ against eps per source."""
    layers = list(by_layer)
    traits = list(by_layer[layers[0]])
    alpha = cfg.alphas[-1]
    fig, axes = plt.subplots(
        len(layers), len(traits), figsize=(5.2 * len(traits), 4.0 * len(layers)), squeeze=False
    )
    numbers = {
        "alpha": alpha,
        "metric": "efficacy_logit: shift vs alpha=0 of mean "
        "[log P(pos text) - log P(neg text)] over held-out pairs, nats",
        "layers": {},
    }
    for row, layer in enumerate(layers):
        numbers["layers"][str(layer)] = {}
        for ax, trait in zip(axes[row], traits):
            t = by_layer[layer][trait]
            df = t["df"]
            entry = {}
            for src, color in zip(cfg.sources, ["C0", "C1", "C3"]):
                ref, m, s = _by_eps(df, "efficacy_logit", src, alpha, cfg.eps_grid)
                ax.plot(cfg.eps_grid, m, "o-", color=color, label=f"v+δ, δ from {src}")
                ax.fill_between(cfg.eps_grid, m - s, m + s, color=color, alpha=0.2)
                entry[src] = {
                    "eps": cfg.eps_grid,
                    "efficacy_mean": m.tolist(),
                    "efficacy_sd": s.tolist(),
                    "kl_to_v_mean": _by_eps(df, "kl_to_v", src, alpha, cfg.eps_grid)[1].tolist(),
                }
                entry["v_efficacy"] = ref
            ax.axhline(entry["v_efficacy"], color="k", lw=1.2, ls=":", label="v itself")
            ax.axhline(0, color="0.6", lw=0.8)
            rel = alpha * t["v_norm"] / t["resid_norm"]
            entry["relative_strength"] = rel
            ax.set(
                title=f"{trait}, blocks.{layer}.hook_resid_pre (‖αv‖/‖resid‖={rel:.2f})",
                xlabel="perturbation size eps = ‖δ‖/‖v‖, δ ⊥ v",
                ylabel="efficacy: Δ log-prob gap pos−neg [nats]",
            )
            ax.title.set_fontsize(9)
            ax.legend(fontsize=7.5)
            numbers["layers"][str(layer)][trait] = entry
    fig.suptitle(
        f"{cfg.model}: efficacy of v+δ (mean ± sd over {cfg.n_perturb} draws), α = {alpha}"
    )
    fig.tight_layout()
    save_figure(fig, out, numbers, cfg)


def equivalence_figure(cfg, tables, out: Path) -> None:
    traits = list(tables)
    fig, axes = plt.subplots(2, len(traits), figsize=(5.2 * len(traits), 7.5), squeeze=False)
    eps = 1.0 if 1.0 in cfg.eps_grid else cfg.eps_grid[-1]
    numbers = {"eps": eps, "traits": {}}
    for col, trait in enumerate(traits):
        df = tables[trait]["df"]
        name = tables[trait]["classifiers"][0]
        entry = {"classifier": name}
        for src, color in zip(cfg.sources, ["C0", "C1", "C3"]):
            sub = df[(df.source == src) & (df.eps == eps)]
            g = sub.groupby("alpha")
            kl, dlt = g["kl_to_v"], g[f"{name}_delta_vs_v"]
            a = np.array(sorted(sub.alpha.unique()))
            axes[0, col].errorbar(
                a,
                kl.mean().values,
                kl.std(ddof=0).values,
                fmt="o-",
                color=color,
                capsize=3,
                label=f"δ from {src}",
            )
            axes[1, col].errorbar(
                a,
                dlt.mean().values,
                dlt.std(ddof=0).values,
                fmt="o-",
                color=color,
                capsize=3,
                label=f"δ from {src}",
            )
            entry[src] = {
                "alpha": a.tolist(),
                "kl_mean": kl.mean().tolist(),
                "classifier_delta_mean": dlt.mean().tolist(),
                "equivalent_fraction": g["equivalent"].mean().tolist(),
            }
        axes[1, col].axhspan(
            -cfg.margin, cfg.margin, color="0.85", label=f"equivalence margin ±{cfg.margin}"
        )
        axes[0, col].set(
            title=f"{trait}, eps = {eps}",
            xlabel="steering strength α",
            ylabel="next-token KL(v ‖ v+δ) [nats]",
        )
        axes[1, col].set(xlabel="steering strength α", ylabel=f"{name} score: mean(v+δ) − mean(v)")
        axes[0, col].legend(fontsize=8)
        axes[1, col].legend(fontsize=8)
        numbers["traits"][trait] = entry
    fig.suptitle(f"{cfg.model}: behavioural equivalence of v and v+δ over α")
    fig.tight_layout()
    save_figure(fig, out, numbers, cfg)


def headline(res: dict, cfg: Config) -> str:
    lines = [
        f"identifiability ({cfg.model}, layers {res['layers']}, "
        f"{'quick' if cfg.quick else 'full'}, {res['seconds']:.0f} s):"
    ]
    alpha = cfg.alphas[-1]
    for trait, t in res["tables"].items():
        df = t["df"]
        parts = []
        ref = None
        for src in cfg.sources:
            ref, m, _ = _by_eps(df, "efficacy_logit", src, alpha, cfg.eps_grid)
            sub = df[(df.source == src) & (df.eps == 1.0) & (df.alpha == alpha)]
            parts.append(
                f"{src} {m[cfg.eps_grid.index(1.0)]:+.2f} (KL {sub.kl_to_v.mean():.3f}"
                f", equiv {sub.equivalent.mean():.0%})"
            )
        lines.append(
            f"  {trait:<10} efficacy v {ref:+.2f} nats | v+δ at eps=1: " + "; ".join(parts)
        )
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--quick", action="store_true", help="small grid, one layer (< 3 min)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("figures"))
    ap.add_argument(
        "--allow-dirty",
        action="store_true",
        help="write into figures/ even from a checkout with uncommitted changes",
    )
    args = ap.parse_args(argv)
    require_clean(args)
    cfg = (Config.quick_config if args.quick else Config)(model=args.model, seed=args.seed)
    res = run(cfg, args.out)
    print(headline(res, cfg))
    print(logit_table(res))
    print(
        f"(every number, with its config: {args.out}/identifiability_{cfg.model}"
        f"{'_quick' if cfg.quick else ''}_protocol.json)"
    )


def logit_table(res: dict) -> str:
    """The last-token logit checks as a short table: v vs each comparison vector."""
    rows = [f"  {'trait':<10} {'v vs':<22} {'L2':>7} {'top-1 agree':>12} {'top-10 overlap':>15}"]
    for trait, p in res["protocol"].items():
        for other, d in p["logit_checks"].items():
            rows.append(
                f"  {trait:<10} {other:<22} {d['l2']:>7.2f} {d['top1_agreement']:>12.0%} "
                f"{d['top10_overlap']:>15.0%}"
            )
    return (
        "last-token logit checks (v against each other vector at the same strength):\n"
        + "\n".join(rows)
    )


if __name__ == "__main__":
    main()
