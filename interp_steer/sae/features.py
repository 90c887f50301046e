"""Feature interventions at an SAE's hook, and the SAE's own metadata.

Interventions keep the error term by default:
    f = E(x),   x' = x + D(f') − D(f)
so only the edited latents' decoder contributions change and everything the SAE fails to
reconstruct passes through untouched. With ``keep_error=False`` the reconstruction D(f')
replaces x.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens import HookedTransformer

from interp_steer.interventions import Positions, edit_at
from interp_steer.vectors import SteeringVector, check_hook, model_fingerprint


def import_sae_lens():
    """The sae-lens module, or an ImportError that says how to install it."""
    try:
        import sae_lens
    except ImportError as e:  # a declared dependency, but say what to do if it is missing
        raise ImportError("interp_steer.sae needs sae-lens: pip install 'sae-lens>=6,<7'") from e
    return sae_lens


def set_metadata(sae, model, hook: str) -> None:
    """Record the model and hook an SAE was trained on in its sae-lens metadata."""
    sae.cfg.metadata.hook_name = hook
    sae.cfg.metadata.model_name = model.cfg.model_name
    sae.cfg.metadata.interp_steer_fingerprint = model_fingerprint(model)


def sae_hook(sae) -> str:
    hook = sae.cfg.metadata.hook_name
    if not hook:
        raise ValueError("this SAE's metadata names no hook; set sae.cfg.metadata.hook_name")
    return hook


def check_sae(model: HookedTransformer, sae) -> None:
    hook = sae_hook(sae)
    check_hook(model, hook)
    fp = sae.cfg.metadata.interp_steer_fingerprint
    if fp is not None and fp != model_fingerprint(model):
        raise ValueError(f"SAE trained on {fp}, model is {model_fingerprint(model)}")
    if (
        hook.endswith(("resid_pre", "resid_mid", "resid_post"))
        and sae.cfg.d_in != model.cfg.d_model
    ):
        raise ValueError(f"SAE d_in {sae.cfg.d_in} != model d_model {model.cfg.d_model}")
    model_device = model.W_E.device
    if sae.W_dec.device != model_device:
        raise ValueError(
            f"SAE is on {sae.W_dec.device}, model on {model_device}: "
            f"move one, e.g. sae.to({str(model_device)!r})"
        )


def _feature_index(sae, features: int | Sequence[int]) -> Tensor:
    idx = torch.as_tensor([features] if isinstance(features, int) else list(features))
    if idx.numel() == 0:
        raise ValueError("no features given")
    if idx.min() < 0 or idx.max() >= sae.cfg.d_sae:
        raise ValueError(f"features: index out of range for d_sae={sae.cfg.d_sae}")
    return idx


@contextmanager
def edit_features(
    model: HookedTransformer,
    sae,
    edit: Callable[[Tensor], Tensor],
    positions: Positions = "all_but_first",
    keep_error: bool = True,
) -> Iterator[None]:
    """Run ``edit`` on the SAE latents at the SAE's hook (hooks removed on exit).

    By default position 0 is left alone: the SAEs here are trained without it (the attention
    sink, 10-1000x the norm of other tokens), so their latents mean nothing there, and zeroing
    a latent at the sink can break every later position.
    """
    check_sae(model, sae)

    def edit_acts(x: Tensor) -> Tensor:
        f = sae.encode(x.to(sae.W_dec.dtype))
        f_new = edit(f.clone())
        if keep_error:  # only the edited latents' decoder contributions change
            return x + (sae.decode(f_new) - sae.decode(f)).to(x.dtype)
        return sae.decode(f_new).to(x.dtype)

    with edit_at(model, sae_hook(sae), edit_acts, positions):
        yield


@contextmanager
def ablate_features(
    model: HookedTransformer,
    sae,
    features: int | Sequence[int],
    mean_acts: Float[Tensor, "d_sae"] | None = None,
    positions: Positions = "all_but_first",
    keep_error: bool = True,
    scale: float = 1.0,
):
    """Zero-ablate latents, or mean-ablate them when ``mean_acts`` (see `feature_means`) is
    given. ``scale`` moves each latent that fraction of the way to its target (1: the full
    ablation, 0: no edit, 2: as far past it), a strength to calibrate against a target KL."""
    idx = _feature_index(sae, features)
    if not math.isfinite(scale):
        raise ValueError(f"scale must be finite, got {scale}")

    def edit(f: Tensor) -> Tensor:
        target = torch.zeros_like(f[..., idx]) if mean_acts is None else mean_acts.to(f)[idx]
        f[..., idx] = f[..., idx] + scale * (target - f[..., idx])
        return f

    with edit_features(model, sae, edit, positions, keep_error):
        yield


@contextmanager
def clamp_features(
    model: HookedTransformer,
    sae,
    features: int | Sequence[int],
    value: float | Sequence[float],
    positions: Positions = "all_but_first",
    keep_error: bool = True,
):
    """Set latents to ``value`` (one value, or one per feature) at every edited position."""
    idx = _feature_index(sae, features)
    v = torch.as_tensor(value, dtype=torch.float32)
    if v.ndim == 1 and v.shape[0] != len(idx):
        raise ValueError(f"{v.shape[0]} values for {len(idx)} features")
    if not torch.isfinite(v).all():
        raise ValueError("clamp value contains NaN or inf")

    def edit(f: Tensor) -> Tensor:
        f[..., idx] = v.to(f)
        return f

    with edit_features(model, sae, edit, positions, keep_error):
        yield


@torch.no_grad()
def feature_means(sae, acts: Float[Tensor, "n d"]) -> Float[Tensor, "d_sae"]:
    """Mean latent activation over reference activations (for mean ablation)."""
    return sae.encode(acts.to(sae.W_dec.device, sae.W_dec.dtype)).mean(0)


def feature_vector(sae, features: int | Sequence[int], model=None) -> SteeringVector:
    """Unit decoder direction(s) of latent(s) as a SteeringVector at the SAE's hook."""
    idx = _feature_index(sae, features)
    d = sae.W_dec.detach()[idx].float().cpu()
    d = d / d.norm(dim=-1, keepdim=True)
    fp = (
        model_fingerprint(model) if model is not None else sae.cfg.metadata.interp_steer_fingerprint
    )
    return SteeringVector(
        d, sae_hook(sae), fp, "sae_feature", {"features": idx.tolist(), "d_sae": sae.cfg.d_sae}
    )
