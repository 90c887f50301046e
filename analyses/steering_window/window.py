"""The window from a target curve and a capability curve, and its bootstrap CI."""

from __future__ import annotations

import warnings

import numpy as np

from interp_steer.eval.stats import bootstrap


def first_majority(rel, target_rate) -> float | None:
    """The first strength where the steered target is the majority answer (None: never)."""
    hits = np.nonzero(np.asarray(target_rate) > 0.5)[0]
    return float(np.asarray(rel, float)[hits[0]]) if len(hits) else None


def window(rel, target_rate, capability, floor: float) -> dict:
    """First r with a target majority, last r before capability first drops below ``floor``,
    and the window between them (0 when the target never wins before capability is lost)."""
    r = np.asarray(rel, float)
    first = first_majority(r, target_rate)
    below = np.nonzero(np.asarray(capability) < floor)[0]
    if len(below) == 0:
        last, censored = float(r[-1]), True  # capable over the whole grid
    else:
        last, censored = (float(r[below[0] - 1]) if below[0] > 0 else None), False
    size = max(0.0, last - first) if first is not None and last is not None else 0.0
    return {
        "first_majority": first,
        "last_capable": last,
        "window": size,
        "capable_to_max": censored,
    }


def window_ci(
    rel, hits: np.ndarray, passes: np.ndarray, floor_frac: float, n_boot: int, seed: int
) -> dict:
    """Bootstrap CIs. ``hits`` [strength, sample] 0/1; ``passes`` [strength, task, sample]."""
    n_s, n_t = hits.shape[1], passes.shape[1]

    def draw(rng, key):
        h = hits[np.arange(len(rel))[:, None], rng.integers(0, n_s, hits.shape)]
        cap = passes[:, rng.integers(0, n_t, n_t)].mean((1, 2))
        return window(rel, h.mean(1), cap, floor_frac * cap[0])[key]

    out = {}
    for key in ("window", "first_majority", "last_capable"):
        seen = []

        def stat(rng, key=key, seen=seen):
            v = draw(rng, key)
            seen.append(v is not None)
            return np.nan if v is None else v

        with warnings.catch_warnings():  # all-None replicates: reported as such below
            warnings.simplefilter("ignore", RuntimeWarning)
            lo, hi = bootstrap(stat, n_boot=n_boot, seed=seed)
        # None where no replicate had the point (e.g. the target never wins)
        out[key] = None if np.isnan(lo) else (lo, hi)
        out[f"{key}_defined_fraction"] = float(np.mean(seen))
    return out
