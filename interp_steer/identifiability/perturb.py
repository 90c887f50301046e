"""Orthogonal perturbations v' = v + δ, δ ⟂ v, ‖δ‖ = eps·‖v‖, drawn from a chosen subspace."""

from __future__ import annotations

import torch
from torch import Tensor

from interp_steer.identifiability.nullspace import NullSpace
from interp_steer.vectors import SteeringVector


def perturb(
    vec: SteeringVector,
    eps: float,
    source: str | Tensor = "random",
    n: int = 1,
    seed: int = 0,
    keep_norm: bool = False,
    null_space: NullSpace | None = None,
) -> list[SteeringVector]:
    """v' = v + δ, δ ⟂ v, ‖δ‖ = eps·‖v‖, δ drawn uniformly in a subspace.

    ``source``: "random" (all of ℝᵈ), "null" (null_space.basis), "principal"
    (null_space.signal, a control that should break equivalence) or an explicit [d, m]
    basis. ``keep_norm`` rescales v' to ‖v‖ (a rotation by atan(eps)).
    """
    v = vec.vector.double()
    d = v.shape[0]
    if isinstance(source, Tensor):
        basis = source.double()
    elif source == "random":
        basis = torch.eye(d, dtype=torch.float64)
    elif source in ("null", "principal"):
        if null_space is None:
            raise ValueError(f"source={source!r} needs null_space=...")
        basis = null_space.basis if source == "null" else null_space.signal
    else:
        raise ValueError("source must be 'random', 'null', 'principal' or a basis tensor")
    if basis.ndim != 2 or basis.shape[0] != d:
        raise ValueError(f"basis must be [d_model={d}, m], got {tuple(basis.shape)}")
    if basis.shape[1] == 0:
        raise ValueError("the basis is empty: there is no subspace to draw δ from")
    # δ must lie in span(basis) ∩ v⊥. With Q an orthonormal basis of span(basis) and
    # w = Qᵀv, that intersection is {Qz : z ⟂ w}. (Projecting the basis off v instead spans
    # the projection of span(basis) onto v⊥, which leaves the subspace when v overlaps it.)
    q, r = torch.linalg.qr(basis)
    diag = r.diagonal().abs()
    q = q[:, diag > 1e-8 * max(1.0, float(diag.max()))]
    w = q.T @ v
    w_hat = w / w.norm() if float(w.norm()) > 1e-10 * float(v.norm()) else None
    if q.shape[1] - (w_hat is not None) < 1:
        raise ValueError("the chosen subspace has no direction orthogonal to v")
    gen = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        z = torch.randn(q.shape[1], generator=gen, dtype=torch.float64)
        if w_hat is not None:
            z = z - w_hat * (w_hat @ z)  # isotropic in the intersection
        delta = q @ z
        delta = delta / delta.norm() * eps * v.norm()
        new = v + delta
        if keep_norm:
            new = new * (v.norm() / new.norm())
        meta = dict(
            vec.metadata,
            perturbation={
                "eps": eps,
                "source": source if isinstance(source, str) else "basis",
                "seed": seed,
                "index": i,
                "keep_norm": keep_norm,
            },
        )
        out.append(
            SteeringVector(
                new.to(vec.directions.dtype)[None],
                vec.hook,
                vec.model_fingerprint,
                vec.method,
                meta,
            )
        )
    return out
