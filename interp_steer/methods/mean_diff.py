"""Difference of means (CAA / ActAdd).

    v = (1/N) Σ_i (a⁺_i − a⁻_i) = mean(a⁺) − mean(a⁻)

a± are the aggregated activations of the positive / negative text of pair i at the hook.
Unnormalised: its norm carries the typical size of the concept shift.
"""

from __future__ import annotations

from jaxtyping import Float
from torch import Tensor


def fit(pos: Float[Tensor, "n d"], neg: Float[Tensor, "n d"]) -> tuple[Float[Tensor, "1 d"], dict]:
    v = (pos.double() - neg.double()).mean(0, keepdim=True)
    return v.float(), {}
