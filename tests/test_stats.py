"""interp_steer.stats against textbook values and brute-force simulation."""

import numpy as np
import pytest

from interp_steer import stats


def test_wilson_matches_textbook_values():
    # Newcombe (1998), Table I: 81/263 -> 0.2553 to 0.3662; 15/148 -> 0.0624 to 0.1605
    lo, hi = stats.wilson(81, 263)
    assert (round(lo, 4), round(hi, 4)) == (0.2553, 0.3662)
    lo, hi = stats.wilson(np.array([15, 0]), np.array([148, 10]))
    assert np.allclose(lo, [0.0624, 0.0], atol=5e-5) and np.allclose(
        hi, [0.1605, 0.2775], atol=5e-5
    )


def test_wilson_covers_at_nominal_rate():
    rng = np.random.default_rng(0)
    p, n = 0.3, 50
    k = rng.binomial(n, p, size=20_000)
    lo, hi = stats.wilson(k, np.full_like(k, n))
    assert 0.93 < np.mean((lo <= p) & (p <= hi)) < 0.97


@pytest.mark.parametrize("k, n, conf", [(-1, 5, 0.95), (6, 5, 0.95), (1, 0, 0.95), (1, 5, 1.5)])
def test_wilson_rejects_bad_input(k, n, conf):
    with pytest.raises(ValueError, match="wilson needs|conf"):
        stats.wilson(k, n, conf)


def test_bootstrap_interval_covers_the_mean():
    # percentile bootstrap of a mean over 40 normal draws: ~95% coverage over repetitions
    rng = np.random.default_rng(1)
    hits = 0
    for rep in range(200):
        x = rng.normal(size=40)
        lo, hi = stats.bootstrap(
            lambda g, x=x: x[g.integers(0, len(x), len(x))].mean(), n_boot=400, seed=rep
        )
        hits += lo <= 0 <= hi
    assert 0.88 <= hits / 200 <= 0.99
    with pytest.raises(ValueError, match="n_boot"):
        stats.bootstrap(lambda g: 0.0, n_boot=10)
