"""Principal components of paired differences (RepE / repeng style).

    d_i = a⁺_i − a⁻_i,   D = [d_i] (optionally centred),   D = U S Vᵀ
    v_j = s_j · V_j   with sign chosen so that mean_i(d_i · V_j) > 0   (toward positive)
    s_j = mean_i |d_i · V_j|   so a component has the typical size of the shift it explains

k > 1 components give a rank-k steering subspace. ``center=False`` (default) keeps the
mean shift in the data so that PC1 aligns with the concept direction; ``center=True`` is
the classic variance-only PCA.
"""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor


def fit(
    pos: Float[Tensor, "n d"],
    neg: Float[Tensor, "n d"],
    k: int = 1,
    center: bool = False,
) -> tuple[Float[Tensor, "k d"], dict]:
    d = pos.double() - neg.double()
    if k < 1 or k > min(d.shape):
        raise ValueError(f"k={k} components need 1 <= k <= min(n_pairs, d_model)={min(d.shape)}")
    x = d - d.mean(0) if center else d
    _, s, vh = torch.linalg.svd(x, full_matrices=False)
    comps = vh[:k]
    proj = d @ comps.T  # [n, k]
    sign = torch.where(proj.mean(0) >= 0, 1.0, -1.0).to(comps)
    scale = proj.abs().mean(0)
    explained = (s[:k] ** 2 / (s**2).sum()).tolist()
    return (comps * (sign * scale)[:, None]).float(), {
        "explained_variance": explained,
        "center": center,
    }
