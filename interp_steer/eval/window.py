"""The viable steering window from a strength grid: where success first reaches a majority
and where capability last holds, interpolated on log r rather than read off grid points.

A window read off grid points scores a vector with one working strength 0, the same as one
that never works; interpolating the two crossings on log r gives both a width,
``log(last / first)``, that does not depend on where the grid happens to fall.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np


def crossing(
    r: Sequence[float], y: Sequence[float], level: float, direction: str = "up"
) -> float | None:
    """The r at which ``y`` first crosses ``level``, interpolated linearly in log r.

    Args:
        r: strengths, increasing, all > 0 (r = 0 has no logarithm: leave it out).
        y: the measure at each r.
        level: the level crossed.
        direction: ``"up"``: the first r where y reaches ``level`` from below (None if it
            never does; r[0] if y[0] is already there). ``"down"``: the last r before y falls
            below ``level`` for good (None if y[0] is already below; r[-1] if it never falls).
    """
    r, y = np.asarray(r, float), np.asarray(y, float)
    if r.ndim != 1 or r.shape != y.shape or len(r) == 0:
        raise ValueError(f"r and y must be 1-d of the same length, got {r.shape}, {y.shape}")
    if not (r > 0).all() or not (np.diff(r) > 0).all():
        raise ValueError("r must be positive and increasing (interpolation is in log r)")
    if direction not in ("up", "down"):
        raise ValueError(f"direction must be 'up' or 'down', got {direction!r}")
    lr = np.log(r)
    if direction == "up":
        hit = np.nonzero(y >= level)[0]
        if len(hit) == 0:
            return None
        i = hit[0]
        if i == 0:
            return float(r[0])
    else:
        if y[0] < level:
            return None
        below = np.nonzero(y < level)[0]
        if len(below) == 0:
            return float(r[-1])
        # the last step down through the level, after which y stays below it
        after = [k for k in below if (y[k:] < level).all()]
        i = after[0]
        if i == 0:
            return None
    t = (level - y[i - 1]) / (y[i] - y[i - 1])
    return float(np.exp(lr[i - 1] + t * (lr[i] - lr[i - 1])))


def window(
    r: Sequence[float],
    success: Sequence[float],
    capability: Sequence[float],
    baseline_capability: float,
    success_level: float = 0.5,
    capability_fraction: float = 0.5,
) -> dict:
    """First success (``success`` ≥ ``success_level``; 0.5: a majority), last capable r
    (capability ≥ ``capability_fraction`` × the unsteered rate) and the window between them.

    Returns ``first_majority_r``, ``last_capable_r`` (None where there is no crossing),
    ``log_window`` = log(last / first) (0 when the first majority comes after capability is
    lost; None when success never reaches a majority) and ``working_strengths``, the number
    of grid points inside the window.
    """
    first = crossing(r, success, success_level, "up")
    last = crossing(r, capability, capability_fraction * baseline_capability, "down")
    if first is None:
        log_w = None
    elif last is None:
        log_w = 0.0
    else:
        log_w = max(0.0, float(np.log(last / first)))
    inside = sum(1 for x in r if first is not None and last is not None and first <= x <= last)
    return {
        "first_majority_r": first,
        "last_capable_r": last,
        "log_window": log_w,
        "working_strengths": inside,
    }


def window_ci(
    compute: Callable[[np.random.Generator], dict],
    n_boot: int = 1000,
    seed: int = 0,
    conf: float = 0.95,
) -> list[float | None]:
    """Percentile CI of ``log_window`` over bootstrap replicates: ``compute(rng)`` resamples
    (prompts, tasks ...) and returns a `window` dict. Replicates without a majority count as
    no window (−inf), so a window found in only some resamples gets a lower bound of None."""
    rng = np.random.default_rng(seed)
    vals = []
    for _ in range(n_boot):
        w = compute(rng)["log_window"]
        vals.append(-np.inf if w is None else w)
    # inverted_cdf picks order statistics: no interpolation between −inf and a finite width
    lo, hi = np.quantile(vals, [(1 - conf) / 2, (1 + conf) / 2], method="inverted_cdf")
    return [None if not np.isfinite(lo) else float(lo), None if not np.isfinite(hi) else float(hi)]
