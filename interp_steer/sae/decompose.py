"""A steering vector in SAE latents: top latents by decoder cosine and by encoder gain, the
latents that best separate contrastive data, and how much of a vector's effect survives
ablating its top latents.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens import HookedTransformer

from interp_steer.activations import forward_kwargs, tokenize
from interp_steer.interventions import Positions, positions_context, steer
from interp_steer.sae.features import ablate_features, sae_hook
from interp_steer.vectors import SteeringVector


@torch.no_grad()
def decompose(
    sae,
    vec: SteeringVector | Tensor,
    reference_acts: Float[Tensor, "n d"] | None = None,
    top: int = 10,
) -> dict[str, list[dict]]:
    """Top latents of a vector: by decoder cosine, and (with ``reference_acts``) by how much
    the encoder's activation rises when v is added to typical activations."""
    v = (vec.vector if isinstance(vec, SteeringVector) else vec).float().to(sae.W_dec.device)
    if v.ndim != 1 or v.shape[0] != sae.cfg.d_in:
        raise ValueError(f"vector of shape {tuple(v.shape)} does not fit SAE d_in={sae.cfg.d_in}")
    w = sae.W_dec.float()
    cos = (w @ v) / (w.norm(dim=-1) * v.norm()).clamp_min(1e-12)
    c_val, c_idx = cos.topk(top)
    out = {
        "by_decoder_cosine": [{"feature": int(i), "cosine": float(c)} for i, c in zip(c_idx, c_val)]
    }
    if reference_acts is not None:
        x = reference_acts.float().to(w.device)
        gain = (sae.encode(x + v) - sae.encode(x)).mean(0)
        g_val, g_idx = gain.topk(top)
        out["by_encoder_gain"] = [
            {"feature": int(i), "gain": float(g), "cosine": float(cos[i])}
            for i, g in zip(g_idx, g_val)
        ]
    return out


@torch.no_grad()
def contrast_features(
    sae, pos_acts: Float[Tensor, "n d"], neg_acts: Float[Tensor, "n d"], top: int = 10
) -> list[dict]:
    """Latents whose mean activation differs most between positive and negative texts."""
    fp = sae.encode(pos_acts.to(sae.W_dec)).mean(0)
    fn = sae.encode(neg_acts.to(sae.W_dec)).mean(0)
    val, idx = (fp - fn).topk(top)
    return [
        {"feature": int(i), "diff": float(d), "pos_mean": float(fp[i]), "neg_mean": float(fn[i])}
        for i, d in zip(idx, val)
    ]


@torch.no_grad()
def effect_survival(
    model: HookedTransformer,
    sae,
    vec: SteeringVector,
    prompts: Sequence[str],
    ks: Sequence[int],
    alpha: float = 1.0,
    reference_acts: Float[Tensor, "n d"] | None = None,
    features: Sequence[int] | None = None,
    positions: Positions = "all",
) -> list[dict]:
    """How much of a vector's effect on next-token logits survives ablating its top-k latents.

    Δ_0 = logits(+αv) − logits(·); Δ_k = logits(+αv, ablate k) − logits(ablate k), latents
    ranked by encoder gain of αv on ``reference_acts`` (the TopK encoder is nonlinear, so the
    ranking is taken at the strength that is applied; decoder cosine without them). survival(k) =
    ⟨Δ_k, Δ_0⟩ / ‖Δ_0‖²: 1 = the effect does not go through those latents, 0 = it all does.
    ``features`` replaces the ranking by a given order (e.g. random latents, the control);
    ``positions`` is where αv is added (the ablations skip position 0, as the SAE did). The
    prompts are left-padded in one batch, with each row's positions counted from its own
    first token.
    """

    if sae_hook(sae) != vec.hook:
        raise ValueError(f"vector at {vec.hook}, SAE at {sae_hook(sae)}")
    if features is not None:
        ranked = [int(f) for f in features]
        if len(ranked) < max(ks):
            raise ValueError(f"{len(ranked)} features given for k up to {max(ks)}")
    else:
        key = "by_encoder_gain" if reference_acts is not None else "by_decoder_cosine"
        top = decompose(sae, vec * alpha, reference_acts, top=max(ks))[key]
        ranked = [r["feature"] for r in top]
    batch = tokenize(model, list(prompts))

    def logits() -> Tensor:
        # a column index would put a shorter prompt's first token among the edited positions
        with positions_context(model, batch.pad, batch.lengths):
            return model(batch.tokens, **forward_kwargs(batch))[:, -1].float()

    base = logits()
    with steer(model, vec, alpha, positions=positions):
        d0 = logits() - base
    if not d0.pow(2).sum() > 0:
        raise ValueError("the vector has no effect on the logits (alpha or the vector is 0)")
    rows = []
    for k in ks:
        if k == 0:
            dk = d0
        else:
            with ablate_features(model, sae, ranked[:k]):
                b_k = logits()
            # steer's hook must run before the ablation's, so enter it first
            with (
                steer(model, vec, alpha, positions=positions),
                ablate_features(model, sae, ranked[:k]),
            ):
                dk = logits() - b_k
        rows.append(
            {"k": k, "survival": float((dk * d0).sum() / d0.pow(2).sum()), "features": ranked[:k]}
        )
    return rows


@torch.no_grad()
def firing_rates(sae, acts: Float[Tensor, "n d"]) -> Float[Tensor, "d_sae"]:
    """Fraction of the tokens in ``acts`` on which each latent is active."""
    return (sae.encode(acts.to(sae.W_dec)) > 0).float().mean(0)


def matched_random_latents(
    rates: Float[Tensor, "d_sae"], features: Sequence[int], seed: int = 0, pool: int = 20
) -> list[int]:
    """For each latent in ``features``, a random other latent among the ``pool`` whose firing
    rates are nearest its own (the frequency-matched control for claims about those latents)."""
    if pool < 1:
        raise ValueError(f"pool must be >= 1, got {pool}")
    bad = [int(f) for f in features if not 0 <= int(f) < len(rates)]
    if bad:
        raise ValueError(f"latents {bad} are outside the {len(rates)} latents of rates")
    g = torch.Generator().manual_seed(seed)
    taken = set(int(f) for f in features)
    out = []
    for f in features:
        order = (rates - rates[f]).abs().argsort().tolist()
        near = [j for j in order if j not in taken][:pool]
        j = near[int(torch.randint(len(near), (1,), generator=g))]
        taken.add(j)
        out.append(j)
    return out


@torch.no_grad()
def error_share(sae, vec: SteeringVector | Tensor, reference_acts: Float[Tensor, "n d"]) -> float:
    """The share of a vector carried by the SAE's error term: the mean over ``reference_acts``
    of ⟨e(x + v) − e(x), v⟩ / ‖v‖², with e(x) = x − decode(encode(x)). 0 = the SAE
    reconstructs the whole push; 1 = none of it."""
    v = (vec.vector if isinstance(vec, SteeringVector) else vec).float().to(sae.W_dec.device)
    if not v.norm() > 0:
        raise ValueError("error_share of a zero vector is undefined")
    x = reference_acts.float().to(v.device)

    def err(a: Tensor) -> Tensor:
        return a - sae.decode(sae.encode(a.to(sae.W_dec.dtype))).float()

    return float(((err(x + v) - err(x)) @ v).mean() / v.pow(2).sum())
