"""The conditions: the contrastive data without surface cues, the latent chosen by its output
effect on prompts never evaluated, and every method calibrated to each target KL."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from analyses.sae_vs_steering.config import METHODS, Config
from interp_steer import build_vector, datasets, generate, steer
from interp_steer import sae as S
from interp_steer.activations import get_activations
from interp_steer.eval import metrics
from interp_steer.eval.sweep import Unreachable, bisect_increasing
from interp_steer.vectors import SteeringVector, model_fingerprint

# the largest setting bisection may try, per method (α in activation units for the vectors,
# the latent's value for the clamp, the ablation's scale)
MAX_SETTING = {"mean_diff": 1e4, "sae_feature": 1e4, "sae_clamp": 1e5, "sae_ablate": 64.0}


def unit(v: SteeringVector) -> SteeringVector:
    return v.normalized()


def edits(model, sae, cfg: Config, parts: dict) -> dict[str, Callable[[float], object]]:
    """Each method as setting -> context manager, from the parts a selection cell chose."""
    hook = S.sae_hook(sae)
    md = SteeringVector(torch.tensor([parts["mean_diff"]]), hook, model_fingerprint(model))
    feat = unit(S.feature_vector(sae, parts["latent"], model))
    neg = parts["ablated"]
    return {
        "mean_diff": lambda a: steer(model, md, a, positions=cfg.positions),
        "sae_feature": lambda a: steer(model, feat, a, positions=cfg.positions),
        "sae_clamp": lambda c: S.clamp_features(model, sae, parts["latent"], c, cfg.positions),
        "sae_ablate": lambda s: S.ablate_features(
            model, sae, neg, positions=cfg.positions, scale=s
        ),
    }


def kl_of(model, make, prompts, completions) -> Callable[[float], float]:
    # one unsteered forward for the whole bisection, not one per evaluation
    measure = metrics.kl_meter(model, prompts, completions=completions)

    def f(x: float) -> float:
        return float(measure([lambda: make(x)])[0])

    return f


def calibrate(model, make, target: float, prompts, completions, max_x: float) -> dict:
    """The setting at which ``make`` reaches ``target`` KL, or why none does (no boundary value
    is ever returned as if it were a crossing), with the KL at setting 0 (for the clamp, that
    of clamping the latent to 0, which is not the unsteered model)."""
    f = kl_of(model, make, prompts, completions)
    at_zero = f(0.0)
    try:
        x = bisect_increasing(f, target, max_x)
    except Unreachable as e:  # any other error is a bug or bad input: raise it
        return {"setting": None, "kl": None, "unreachable": str(e), "kl_at_zero": at_zero}
    return {"setting": x, "kl": f(x), "unreachable": None, "kl_at_zero": at_zero}


def score_texts(prompts, texts, success, coherence) -> dict:
    return {
        "texts": list(texts),
        "success": [float(x) for x in success(texts)],
        "coherence": [float(x) for x in coherence(prompts, texts)],
    }


def sample(model, prompts: Sequence[str], cfg: Config, n_samples: int, make=None) -> list[str]:
    """``n_samples`` texts per prompt (prompt-major), sample s with seed s in every condition."""
    rows = [p for p in prompts for _ in range(n_samples)]
    seeds = [s for _ in prompts for s in range(n_samples)]
    ctx = make() if make is not None else torch.no_grad()
    with ctx:
        return generate(
            model,
            rows,
            max_new_tokens=cfg.max_new_tokens,
            temperature=cfg.temperature,
            seed=seeds,
            chat=False,
        )


def selection_cell(
    model, sae, trait: str, cfg: Config, prompts: list[str], success, coherence
) -> dict:
    """Choose the latent on the trait dataset's own prompts (never evaluated).

    The pairs lose their surface cues first (`datasets.strip_surface_cues`), so neither the
    vector nor a latent picked by contrast can encode final punctuation. Candidates are the
    top latents by contrast and by decoder cosine with mean_diff; each is steered along its
    decoder direction at ``cfg.selection_kl`` and the one with the highest coherent success
    wins."""
    hook = S.sae_hook(sae)
    pairs = datasets.strip_surface_cues(trait)
    v = build_vector(model, pairs, hook, method="mean_diff", seed=cfg.seed, progress=False)
    n = len(pairs)
    acts = get_activations(model, [p[-2] for p in pairs] + [p[-1] for p in pairs], hook)[hook]
    by_contrast = S.contrast_features(sae, acts[:n], acts[n:], top=cfg.n_candidates)
    by_cosine = S.decompose(sae, v, top=cfg.n_candidates)["by_decoder_cosine"]
    candidates = list(dict.fromkeys([r["feature"] for r in by_contrast + by_cosine]))
    ablated = [r["feature"] for r in S.contrast_features(sae, acts[n:], acts[:n], cfg.n_ablate)]

    completions = sample(model, prompts, cfg, 1)
    rows = []
    for j in candidates:
        feat = unit(S.feature_vector(sae, j, model))

        def make(a, feat=feat):
            return steer(model, feat, a, positions=cfg.positions)

        cal = calibrate(
            model, make, cfg.selection_kl, prompts, completions, MAX_SETTING["sae_feature"]
        )
        row = {"latent": j, **cal}
        if cal["setting"] is not None:
            texts = sample(
                model, prompts, cfg, cfg.selection_samples, lambda m=make, c=cal: m(c["setting"])
            )
            reps = [p for p in prompts for _ in range(cfg.selection_samples)]
            sc = score_texts(reps, texts, success, coherence)
            coherent = np.array(sc["coherence"]) >= cfg.coherent_threshold
            row["coherent_success"] = float((np.array(sc["success"]) * coherent).mean())
            row["example"] = texts[0]
        rows.append(row)
    ok = [r for r in rows if r.get("coherent_success") is not None]
    if not ok:
        raise RuntimeError(f"{trait}: no candidate latent reaches KL {cfg.selection_kl}")
    best = max(ok, key=lambda r: (r["coherent_success"], -candidates.index(r["latent"])))
    return {
        "trait": trait,
        "surface_cues_left": datasets.surface_cues(pairs),
        "surface_cues_before": datasets.surface_cues(trait),
        "mean_diff": unit(v).vector.tolist(),
        "candidates": rows,
        "by_contrast": [r["feature"] for r in by_contrast],
        "by_cosine": [r["feature"] for r in by_cosine],
        "latent": best["latent"],
        "ablated": ablated,
    }


def calibration_cell(model, sae, cfg: Config, parts: dict, prompts, completions) -> dict:
    """Every method's setting at every target KL on the evaluation prompts' generation
    positions (no outcome is read: KL only), with the KL reached."""
    makers = edits(model, sae, cfg, parts)
    out = {}
    for m in METHODS:
        out[m] = {
            f"{t:g}": calibrate(model, makers[m], t, prompts, completions, MAX_SETTING[m])
            for t in cfg.target_kls
        }
    return {"settings": out}
