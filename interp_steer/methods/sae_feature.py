"""SAE feature: the unit decoder direction of one SAE latent (or several, as a subspace).

With ``feature=`` given, v = W_dec[feature] / ‖W_dec[feature]‖. Otherwise the latent is picked
from the contrastive data: i* = argmax_i mean_pos f_i(x) − mean_neg f_i(x), with f the SAE
encoder on the aggregated activations at the SAE's hook ("the best single SAE feature").
``top=k`` keeps the k best latents as a k-dim subspace.
"""

from __future__ import annotations

from transformer_lens import HookedTransformer

from interp_steer import sae as sae_mod
from interp_steer.activations import get_activations
from interp_steer.datasets import contrastive_pairs


def build(
    model: HookedTransformer,
    data,
    hook,
    sae=None,
    feature=None,
    top: int = 1,
    batch_size=16,
    progress=True,
):
    if sae is None:
        raise ValueError(
            "method='sae_feature' needs sae= (e.g. interp_steer.sae.load_default(model))"
        )
    if sae_mod.sae_hook(sae) != hook:
        raise ValueError(f"SAE is at {sae_mod.sae_hook(sae)}, vector requested at {hook}")
    extra: dict = {"dataset": "none"}
    if feature is None:
        pairs, label = contrastive_pairs(data)
        texts = [p for p, *_ in pairs] + [n for *_, n in pairs]
        acts = get_activations(model, texts, hook, batch_size=batch_size, progress=progress)[hook]
        ranked = sae_mod.contrast_features(sae, acts[: len(pairs)], acts[len(pairs) :], top=top)
        feature = [r["feature"] for r in ranked]
        extra = {"dataset": label, "selected_by": "contrast", "contrast": ranked}
    vec = sae_mod.feature_vector(sae, feature, model)
    return vec.directions, {**vec.metadata, **extra}
