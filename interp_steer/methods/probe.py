"""Logistic-regression probe direction.

    p(positive | a) = σ(w·a + b),   fit on {a⁺_i → 1, a⁻_i → 0} with L2 penalty C
    v = ((mean(a⁺) − mean(a⁻)) · ŵ) ŵ,   ŵ = w / ‖w‖

The direction is the probe's normal; its length is the class-mean gap along it, so the
vector is on the same scale as mean_diff. Train accuracy is recorded (held-out accuracy
belongs to the caller, who knows the split).
"""

from __future__ import annotations

import numpy as np
import torch
from jaxtyping import Float
from sklearn.linear_model import LogisticRegression
from torch import Tensor


def fit(
    pos: Float[Tensor, "n d"],
    neg: Float[Tensor, "n d"],
    C: float = 1.0,  # noqa: N803
    seed: int = 0,
) -> tuple[Float[Tensor, "1 d"], dict]:
    x = torch.cat([pos, neg]).double().numpy()
    y = np.r_[np.ones(len(pos)), np.zeros(len(neg))]
    # standardise for the optimiser, then map the weights back to raw activation space
    mu, sd = x.mean(0), x.std(0) + 1e-8
    clf = LogisticRegression(C=C, max_iter=2000, random_state=seed).fit((x - mu) / sd, y)
    w = torch.from_numpy(clf.coef_[0] / sd)
    w_hat = w / w.norm()
    gap = (pos.double().mean(0) - neg.double().mean(0)) @ w_hat
    acc = float(clf.score((x - mu) / sd, y))
    return (gap * w_hat)[None].float(), {"train_accuracy": acc, "C": C}
