"""Interventions on the residual stream as context managers: steer, ablate, clamp.

Each operator maps a hook activation x (per position) to a new one:
- steer:  x + Σ_j α_j v_j                    (α per batch row allowed: batched strength sweeps)
- ablate: x − P x,   P the orthogonal projector onto span(v_1..v_k)
- clamp:  x − P x + Σ_j c_j u_j,   u_j the orthonormalised directions

Positions are counted in the *unpadded* sequence so they mean the same with and without the KV
cache: ``"all"``, ``"all_but_first"`` (all but position 0, the attention sink: where SAEs
trained without it may act), ``"prompt"`` (positions < prompt length), ``"generated"`` (the rest),
``"last_and_generated"`` (the last prompt token and every generated one: what adding at the
last position does under a KV cache, the non-identifiability paper's protocol), or
explicit ints (negative ints count back from the prompt's end, so -1 is the last prompt token).
During cached generation a hook only sees the new column(s); `positions_context` tells it
where those columns sit. Hooks are always removed on exit, also after an exception.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens import HookedTransformer

from interp_steer.vectors import SteeringVector, check_hook

# a name, or explicit unpadded positions (negative: from the prompt end)
PositionName = Literal["all", "all_but_first", "prompt", "generated", "last_and_generated"]
Positions = PositionName | Sequence[int]
POSITION_NAMES = ("all", "all_but_first", "prompt", "generated", "last_and_generated")


@dataclass
class _PosState:
    pad: Tensor  # [batch] left-padding per row
    prompt_len: Tensor  # [batch] prompt length (unpadded)
    offset: int = 0  # column index of the first column the next forward sees
    shared_prefix: bool = False  # a prompt-prefix pass whose cache other rows reuse


_STATE_ATTR = "_interp_steer_positions"


@contextmanager
def positions_context(
    model: HookedTransformer, pad: Tensor, prompt_len: Tensor
) -> Iterator[_PosState]:
    """Declare the padding/prompt layout of the forwards inside (used by `generate`)."""
    prev = getattr(model, _STATE_ATTR, None)
    state = _PosState(pad=pad, prompt_len=prompt_len)
    setattr(model, _STATE_ATTR, state)
    try:
        yield state
    finally:
        setattr(model, _STATE_ATTR, prev)


def _validate_positions(positions: Positions) -> None:
    if isinstance(positions, str):
        if positions not in POSITION_NAMES:
            raise ValueError(
                f"positions must be one of {POSITION_NAMES} or ints, got {positions!r}"
            )
    elif (
        not isinstance(positions, Sequence)
        or len(positions) == 0
        or not all(isinstance(p, int) and not isinstance(p, bool) for p in positions)
    ):
        raise ValueError(
            f"positions must be one of {POSITION_NAMES} or a non-empty list of ints, "
            f"got {positions!r}"
        )


def position_mask(
    model: HookedTransformer, positions: Positions, b: int, p: int, device
) -> Tensor | None:
    """[batch, pos] bool mask of the columns to edit, or None for every column."""
    state: _PosState | None = getattr(model, _STATE_ATTR, None)
    if state is None:
        # A plain forward: no padding known, the whole input counts as the prompt.
        if positions == "all" or positions == "prompt":
            return None
        pad = torch.zeros(b, dtype=torch.long, device=device)
        plen = torch.full((b,), p, dtype=torch.long, device=device)
        offset = 0
    else:
        pad, plen, offset = state.pad.to(device), state.prompt_len.to(device), state.offset
        if pad.shape[0] != b:
            raise RuntimeError(f"positions_context has batch {pad.shape[0]}, forward has {b}")
    pos = offset + torch.arange(p, device=device)[None] - pad[:, None]  # unpadded position
    real = pos >= 0
    if positions == "all":
        return real
    if positions == "all_but_first":
        return pos >= 1
    if positions == "prompt":
        return real & (pos < plen[:, None])
    if positions == "generated":
        return pos >= plen[:, None]
    if positions == "last_and_generated":
        return pos >= plen[:, None] - 1
    idx = torch.tensor(list(positions), device=device)
    want = torch.where(idx[None] < 0, plen[:, None] + idx[None], idx[None])  # [b, n]
    return real & (pos[:, :, None] == want[:, None, :]).any(-1)


def _as_strength(alpha) -> Tensor:
    """``alpha`` as a float tensor, or a ValueError/TypeError naming it."""
    if isinstance(alpha, str):
        raise TypeError(f"alpha must be a number, a sequence of numbers or a tensor, got {alpha!r}")
    try:
        a = torch.as_tensor(alpha, dtype=torch.float32) if not isinstance(alpha, Tensor) else alpha
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(
            f"alpha must be a number, a sequence of numbers or a tensor, got {alpha!r:.60}"
        ) from None
    if not a.is_floating_point() and a.dtype not in (torch.int32, torch.int64):
        raise TypeError(f"alpha must be numeric, got dtype {a.dtype}")
    if not torch.isfinite(a.float()).all():
        raise ValueError("alpha contains NaN or inf")
    return a


def _coefficients(alpha, b: int, k: int, like: Tensor) -> Float[Tensor, "batch k"]:
    """Broadcast a strength spec to per-row, per-direction coefficients."""
    a = _as_strength(alpha).to(like.device, like.dtype)
    if a.ndim == 0:
        return a.expand(b, k)
    if a.ndim == 1:
        if a.shape[0] == 1:  # one value, e.g. the one coordinate of a rank-1 clamp
            return a.expand(b, k)
        if k > 1 and a.shape[0] == k:
            return a[None].expand(b, k)  # one coefficient per direction
        if a.shape[0] == b:
            return a[:, None].expand(b, k)  # one strength per batch row
        raise ValueError(f"alpha has {a.shape[0]} values; expected 1, batch={b} or k={k}")
    if a.shape == (b, k):
        return a
    raise ValueError(f"alpha shape {tuple(a.shape)} does not fit batch={b}, k={k}")


def orthonormal_rows(directions: Float[Tensor, "k d"]) -> Float[Tensor, "k d"]:
    """Gram-Schmidt of the rows in order, each u_j on v_j's side (u_j · v_j > 0): Householder
    QR alone returns −v/‖v‖ for about half of all vectors, which would clamp along −v."""
    q, r = torch.linalg.qr(directions.T.double())
    sign = torch.where(r.diagonal() < 0, -1.0, 1.0).to(q.dtype)
    return (q * sign).T.to(directions.dtype)  # [k, d]


@contextmanager
def edit_at(
    model: HookedTransformer,
    hook: str,
    edit: Callable[[Tensor], Tensor],
    positions: Positions = "all",
) -> Iterator[None]:
    """The one way to edit activations: ``x -> edit(x)`` at ``hook``, kept only at
    ``positions`` (see the module docstring), for every forward inside the block. The hook is
    removed on exit, also after an exception."""
    check_hook(model, hook)
    _validate_positions(positions)

    def hook_fn(x: Tensor, hook) -> Tensor:
        b, p, _ = x.shape
        mask = position_mask(model, positions, b, p, x.device)
        state = getattr(model, _STATE_ATTR, None)
        if state is not None and state.shared_prefix and (mask is None or bool(mask.any())):
            raise RuntimeError(
                f"share_prefix=True, but an edit at {hook.name} with positions={positions!r} "
                "touches the shared prompt prefix: use positions that leave every prompt "
                "token but the last alone (e.g. 'last_and_generated'), or share_prefix=False"
            )
        if mask is not None and not bool(mask.any()):
            return x  # nothing selected: skip the edit (and its per-row coefficients)
        new = edit(x)
        return new if mask is None else torch.where(mask[..., None], new, x)

    with model.hooks(fwd_hooks=[(hook, hook_fn)]):
        yield


@contextmanager
def steer(
    model: HookedTransformer,
    vec: SteeringVector,
    alpha: float | Sequence[float] | Tensor = 1.0,
    positions: Positions = "all",
    force: bool = False,
) -> Iterator[None]:
    """Add α·v at ``vec.hook``. α: scalar, one per batch row, one per direction, or [batch, k]."""
    _as_strength(alpha)  # fail here, not inside the first forward
    cache: dict = {}

    def edit(x: Tensor) -> Tensor:
        key = (x.device, x.dtype, x.shape[0])
        if key not in cache:
            d = vec.directions.to(x.device, x.dtype)
            cache[key] = _coefficients(alpha, x.shape[0], vec.k, d) @ d  # [b, d]
        return x + cache[key][:, None, :]

    vec.check_compatible(model, force=force)
    with edit_at(model, vec.hook, edit, positions):
        yield


@contextmanager
def ablate(
    model: HookedTransformer, vec: SteeringVector, positions: Positions = "all", force: bool = False
):
    """Project span(v) out of the activation (directional ablation)."""
    with clamp(model, vec, 0.0, positions=positions, force=force):
        yield


@contextmanager
def clamp(
    model: HookedTransformer,
    vec: SteeringVector,
    value: float | Sequence[float] | Tensor,
    positions: Positions = "all",
    force: bool = False,
):
    """Set the activation's coordinates along v's orthonormalised directions to ``value``."""
    u_cpu = orthonormal_rows(vec.directions.float())
    _as_strength(value)

    def edit(x: Tensor) -> Tensor:
        u = u_cpu.to(x.device, x.dtype)
        coef = _coefficients(value, x.shape[0], vec.k, u)  # [b, k]
        return x - (x @ u.T) @ u + (coef @ u)[:, None, :]

    vec.check_compatible(model, force=force)
    with edit_at(model, vec.hook, edit, positions):
        yield
