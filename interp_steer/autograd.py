"""Training paths own their autograd mode.

Researchers often leave ``torch.set_grad_enabled(False)``, ``torch.no_grad()`` or
``torch.inference_mode()`` on in a notebook (TransformerLens's tutorials start that way).
Everything in interp_steer that calls ``backward()`` runs under `trains`, so it behaves the
same whatever mode the caller is in.
"""

from __future__ import annotations

import functools

import torch
from transformer_lens import HookedTransformer


def trains(fn):
    """Run ``fn`` with gradients on and inference mode off, restoring the caller's mode after."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with torch.inference_mode(False), torch.enable_grad():
            return fn(*args, **kwargs)

    return wrapper


def check_trainable(model: HookedTransformer) -> None:
    """Raise before any work if ``model``'s weights cannot take part in a backward pass."""
    if any(p.is_inference() for p in model.parameters()):
        raise ValueError(
            "model was created under torch.inference_mode(), so its weights are inference "
            "tensors that no backward pass may use: load it outside inference_mode"
        )
