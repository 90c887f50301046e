"""Interval estimates shared by the analyses (scipy / statsmodels underneath).

Only what the analyses use today; each function is tested against a textbook value or a
brute-force simulation (tests/test_stats.py).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from statsmodels.stats.proportion import proportion_confint


def wilson(k: int | np.ndarray, n: int | np.ndarray, conf: float = 0.95) -> tuple:
    """Wilson score interval for k successes out of n (elementwise). Returns (low, high)."""
    k, n = np.asarray(k), np.asarray(n)
    if np.any(n <= 0) or np.any(k < 0) or np.any(k > n):
        raise ValueError(f"wilson needs 0 <= k <= n and n > 0, got k={k}, n={n}")
    if not 0 < conf < 1:
        raise ValueError(f"conf must be in (0, 1), got {conf}")
    return proportion_confint(k, n, alpha=1 - conf, method="wilson")


def bootstrap(
    statistic: Callable[[np.random.Generator], float],
    n_boot: int = 2000,
    conf: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile interval of ``statistic(rng)`` over ``n_boot`` replicates.

    ``statistic`` draws its own resample from ``rng``, so one function covers clustered and
    paired designs (resample prompts or tasks, not tokens or samples within them).
    """
    if n_boot < 100:
        raise ValueError(f"n_boot must be >= 100 for a percentile interval, got {n_boot}")
    rng = np.random.default_rng(seed)
    reps = np.array([statistic(rng) for _ in range(n_boot)], dtype=float)
    lo, hi = np.nanquantile(reps, [(1 - conf) / 2, (1 + conf) / 2])
    return float(lo), float(hi)
