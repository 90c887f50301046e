"""Interval estimates shared by the analyses (scipy / statsmodels underneath).

Wilson intervals, cluster bootstrap, Fisher's exact test, paired and Welch TOST with their
power, Cohen's d / d_z with CIs, Spearman's ρ and AUROC with bootstrap CIs. Each function is
tested against a textbook value, an independent implementation or a brute-force simulation
(tests/test_stats.py).
"""

from __future__ import annotations

import numbers
import warnings
from collections.abc import Callable

import numpy as np
from scipy import stats as scipy_stats
from statsmodels.stats.proportion import proportion_confint
from statsmodels.stats.weightstats import ttost_ind, ttost_paired


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


def cluster_bootstrap(
    x: np.ndarray,
    statistic: Callable[[np.ndarray], float] = np.mean,
    n_boot: int = 2000,
    conf: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """CI of ``statistic(x)`` resampling whole clusters: the rows of ``x`` [cluster, ...].

    Observations within a prompt are correlated (same prompt, several samples), so the
    prompt is the unit that is resampled (``scipy.stats.bootstrap``, BCa; percentile when
    BCa is undefined, e.g. for a constant statistic).
    """
    x = np.asarray(x, float)
    if x.ndim < 1 or x.shape[0] < 2:
        raise ValueError(f"cluster_bootstrap needs >= 2 clusters (rows), got shape {x.shape}")
    if n_boot < 100:
        raise ValueError(f"n_boot must be >= 100, got {n_boot}")
    idx = np.arange(x.shape[0])

    def stat(i):
        return statistic(x[i.astype(int)])

    for method in ("BCa", "percentile"):
        # scipy warns when BCa is undefined (degenerate data); the percentile fallback below
        # is this function's documented answer, so the warning would only be noise
        with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
            warnings.simplefilter("ignore", RuntimeWarning)
            warnings.simplefilter("ignore", scipy_stats.DegenerateDataWarning)
            res = scipy_stats.bootstrap(
                (idx,),
                stat,
                n_resamples=n_boot,
                confidence_level=conf,
                method=method,
                vectorized=False,
                random_state=np.random.default_rng(seed),
            )
        lo, hi = res.confidence_interval
        if np.isfinite(lo) and np.isfinite(hi):
            return float(lo), float(hi)
    return float(lo), float(hi)


def auc(y: np.ndarray, score: np.ndarray) -> float:
    """AUROC of ``score`` for binary labels ``y`` (the larger label is positive), as the
    Mann–Whitney statistic: the rank sum of the positives, ties at their average rank. The
    same number as ``sklearn.metrics.roc_auc_score`` at ~1% of its cost, which the bootstrap
    in `auroc` pays thousands of times."""
    y, score = np.asarray(y), np.asarray(score, float)
    labels = np.unique(y)
    if y.shape != score.shape or y.ndim != 1 or len(labels) != 2:
        raise ValueError(f"auroc needs one score per label and both classes, got {y.shape}")
    if not np.isfinite(score).all():
        raise ValueError("auroc needs finite scores; drop the NaN ones first")
    pos = y == labels[1]
    n1 = int(pos.sum())
    n0 = len(y) - n1
    u = scipy_stats.rankdata(score)[pos].sum() - n1 * (n1 + 1) / 2
    return float(u / (n1 * n0))


def auroc(
    y: np.ndarray, score: np.ndarray, n_boot: int = 2000, conf: float = 0.95, seed: int = 0
) -> tuple[float, float, float]:
    """AUROC of ``score`` for binary labels ``y``, with a percentile bootstrap CI over items
    (resamples holding one class only are skipped): (auroc, low, high)."""
    value = auc(y, score)  # validates
    y, score = np.asarray(y), np.asarray(score, float)

    def stat(g):
        i = g.integers(0, len(y), len(y))
        return auc(y[i], score[i]) if len(np.unique(y[i])) == 2 else np.nan

    lo, hi = bootstrap(stat, n_boot=n_boot, conf=conf, seed=seed)
    return value, lo, hi


def fisher_exact(k1: int, n1: int, k2: int, n2: int) -> float:
    """Two-sided p of Fisher's exact test that k1/n1 and k2/n2 share one rate."""
    for k, n in ((k1, n1), (k2, n2)):
        if not 0 <= k <= n or n <= 0:
            raise ValueError(f"fisher_exact needs 0 <= k <= n and n > 0, got k={k}, n={n}")
    return float(scipy_stats.fisher_exact([[k1, n1 - k1], [k2, n2 - k2]])[1])


def _check_margin(margin: float) -> None:
    # numbers.Real: numpy scalars (np.float32 from a classifier's scores) count as numbers
    if not (isinstance(margin, numbers.Real) and margin > 0 and np.isfinite(margin)):
        raise ValueError(f"margin must be a positive number, got {margin!r}")


def tost_paired(a: np.ndarray, b: np.ndarray, margin: float) -> float:
    """p of the paired two one-sided tests that |mean(b − a)| < margin (statsmodels)."""
    _check_margin(margin)
    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.shape != b.shape or a.ndim != 1 or len(a) < 2:
        raise ValueError(
            f"tost_paired needs two 1-d arrays of equal length >= 2, got {a.shape}, {b.shape}"
        )
    d = b - a
    if np.ptp(d) == 0:  # no variance: the test degenerates to a comparison
        return 0.0 if abs(d[0]) < margin else 1.0
    return float(ttost_paired(b, a, -margin, margin)[0])


def tost_welch(a: np.ndarray, b: np.ndarray, margin: float) -> float:
    """p of Welch's two one-sided tests that |mean(b) − mean(a)| < margin (statsmodels)."""
    _check_margin(margin)
    a, b = np.asarray(a, float), np.asarray(b, float)
    if min(len(a), len(b)) < 2:
        raise ValueError("tost_welch needs >= 2 observations per group")
    if a.var() == 0 and b.var() == 0:
        return 0.0 if abs(b.mean() - a.mean()) < margin else 1.0
    return float(ttost_ind(b, a, -margin, margin, usevar="unequal")[0])


def _tost_power(margin, se, df, true_diff, alpha):
    # P(T1 > t_c and T2 < -t_c) ≈ P(T1 > t_c) + P(T2 < -t_c) − 1 with noncentral t marginals
    # (the usual approximation; exact up to the joint tail, which is tiny once power > 0.5)
    tc = scipy_stats.t.ppf(1 - alpha, df)
    p1 = scipy_stats.nct.sf(tc, df, (true_diff + margin) / se)
    p2 = scipy_stats.nct.cdf(-tc, df, (true_diff - margin) / se)
    return float(max(0.0, p1 + p2 - 1))


def tost_power_paired(
    margin: float, n: int, sd: float, true_diff: float = 0.0, alpha: float = 0.05
) -> float:
    """Power of the paired TOST with ``n`` pairs whose differences have SD ``sd``."""
    _check_margin(margin)
    if n < 2 or not sd > 0:
        raise ValueError(f"power needs n >= 2 and sd > 0, got n={n}, sd={sd}")
    return _tost_power(margin, sd / np.sqrt(n), n - 1, true_diff, alpha)


def tost_power_welch(
    margin: float,
    n1: int,
    n2: int,
    sd1: float,
    sd2: float,
    true_diff: float = 0.0,
    alpha: float = 0.05,
) -> float:
    """Power of Welch's TOST for groups of n1, n2 with SDs sd1, sd2 (Welch–Satterthwaite df)."""
    _check_margin(margin)
    if min(n1, n2) < 2 or not (sd1 > 0 and sd2 > 0):
        raise ValueError("power needs n >= 2 per group and positive SDs")
    v1, v2 = sd1**2 / n1, sd2**2 / n2
    df = (v1 + v2) ** 2 / (v1**2 / (n1 - 1) + v2**2 / (n2 - 1))
    return _tost_power(margin, np.sqrt(v1 + v2), df, true_diff, alpha)


def cohens_d(a: np.ndarray, b: np.ndarray, conf: float = 0.95) -> tuple[float, float, float]:
    """Cohen's d = (mean(b) − mean(a)) / pooled SD, with the Hedges–Olkin normal CI."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    n1, n2 = len(a), len(b)
    if min(n1, n2) < 2:
        raise ValueError("cohens_d needs >= 2 observations per group")
    pooled = np.sqrt(((n1 - 1) * a.var(ddof=1) + (n2 - 1) * b.var(ddof=1)) / (n1 + n2 - 2))
    if pooled == 0:
        return 0.0, 0.0, 0.0
    d = (b.mean() - a.mean()) / pooled
    se = np.sqrt((n1 + n2) / (n1 * n2) + d**2 / (2 * (n1 + n2)))
    z = scipy_stats.norm.ppf((1 + conf) / 2)
    return float(d), float(d - z * se), float(d + z * se)


def cohens_dz(a: np.ndarray, b: np.ndarray, conf: float = 0.95) -> tuple[float, float, float]:
    """Paired effect size d_z = mean(b − a) / SD(b − a), with a normal-approximation CI."""
    d = np.asarray(b, float) - np.asarray(a, float)
    n = len(d)
    if n < 2:
        raise ValueError("cohens_dz needs >= 2 pairs")
    sd = d.std(ddof=1)
    if sd == 0:
        return 0.0, 0.0, 0.0
    dz = d.mean() / sd
    se = np.sqrt(1 / n + dz**2 / (2 * n))
    z = scipy_stats.norm.ppf((1 + conf) / 2)
    return float(dz), float(dz - z * se), float(dz + z * se)


def paired_t(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sided p of the paired t-test that mean(b − a) = 0."""
    d = np.asarray(b, float) - np.asarray(a, float)
    if np.ptp(d) == 0:
        return 1.0 if d[0] == 0 else 0.0
    return float(scipy_stats.ttest_rel(b, a).pvalue)


def spearman(
    x: np.ndarray, y: np.ndarray, n_boot: int = 2000, conf: float = 0.95, seed: int = 0
) -> tuple[float, float, float]:
    """Spearman's ρ with a bootstrap CI over (x, y) pairs: (rho, low, high)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if x.shape != y.shape or len(x) < 3:
        raise ValueError(
            f"spearman needs two equal-length arrays of >= 3, got {x.shape}, {y.shape}"
        )
    rho = float(scipy_stats.spearmanr(x, y).statistic)
    lo, hi = cluster_bootstrap(
        np.c_[x, y],
        lambda xy: scipy_stats.spearmanr(xy[:, 0], xy[:, 1]).statistic,
        n_boot=n_boot,
        conf=conf,
        seed=seed,
    )
    return rho, lo, hi


def logistic_threshold(
    x: np.ndarray,
    k: np.ndarray,
    n: np.ndarray,
    n_boot: int = 500,
    conf: float = 0.95,
    seed: int = 0,
) -> dict:
    """A sharp-threshold fit of rates k/n against a positive strength x (e.g. magnitude).

    Model, logistic in log-magnitude with a floor and a ceiling:
        p(x) = lo + (hi − lo) · σ((log x − log x₀) / s),  0 ≤ lo ≤ hi ≤ 1, s > 0,
    fitted by maximum binomial likelihood. ``x0`` is the threshold (half-way from floor to
    ceiling) and ``s`` its width in log units (small = sharp). The CI on x₀ is a parametric
    bootstrap (redraw each k ~ Binomial(n, k/n), refit); a fit whose x₀ falls outside the
    measured range is reported as such (``x0_in_range``), since then there is no threshold
    inside the grid to speak of.
    """
    from scipy.optimize import minimize
    from scipy.special import expit, logit

    x, k, n = (np.asarray(a, float) for a in (x, k, n))
    if not (x.shape == k.shape == n.shape) or x.ndim != 1 or len(x) < 4:
        raise ValueError("logistic_threshold needs 1-D x, k, n of one length >= 4")
    if np.any(x <= 0) or np.any(n <= 0) or np.any(k < 0) or np.any(k > n):
        raise ValueError("logistic_threshold needs x > 0, n > 0 and 0 <= k <= n")
    lx = np.log(x)
    span = lx.max() - lx.min()

    def unpack(t):
        lo, hi = np.sort(expit(t[:2]))
        return lo, hi, t[2], np.exp(t[3])

    def nll(t, kk):
        lo, hi, m, s = unpack(t)
        p = np.clip(lo + (hi - lo) * expit((lx - m) / s), 1e-9, 1 - 1e-9)
        return -(kk * np.log(p) + (n - kk) * np.log1p(-p)).sum()

    def fit(kk, starts):
        best = min(
            (minimize(nll, t0, args=(kk,), method="L-BFGS-B") for t0 in starts),
            key=lambda res: res.fun,
        )
        return best.x

    r = np.clip(k / n, 0.01, 0.99)
    # a few starts along the grid: the likelihood is not convex in the threshold
    starts = [
        [logit(r.min()), logit(r.max()), m0, np.log(max(span, 1e-3) / 4)]
        for m0 in np.linspace(lx.min(), lx.max(), 5)
    ]
    t_hat = fit(k, starts)
    lo, hi, m, s = unpack(t_hat)
    rng = np.random.default_rng(seed)
    # bootstrap refits start from the estimate and from the grid's middle
    boot_starts = [t_hat, starts[2]]
    boots = np.array(
        [unpack(fit(rng.binomial(n.astype(int), k / n), boot_starts))[2] for _ in range(n_boot)]
    )
    q = np.quantile(boots, [(1 - conf) / 2, (1 + conf) / 2])
    return {
        "x0": float(np.exp(m)),
        "x0_ci": (float(np.exp(q[0])), float(np.exp(q[1]))),
        "width_log": float(s),
        "floor": float(lo),
        "ceiling": float(hi),
        "x0_in_range": bool(lx.min() <= m <= lx.max()),
    }


def retained_two_level(
    base: np.ndarray,
    ref: np.ndarray,
    test: np.ndarray,
    draw: np.ndarray,
    n_boot: int = 2000,
    conf: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """Efficacy retained, mean(test − base) / mean(ref − base), with a two-level bootstrap CI.

    Prompts and δ draws are crossed random factors: each replicate resamples prompts and,
    independently, draws (a percentile interval). Treating the draws as fixed would ignore
    their spread and give intervals that are too narrow.

    Args:
        base: [P] per-prompt mean score without steering.
        ref: [P] per-prompt mean score under v.
        test: [P, S] scores under v + δ, one per sample.
        draw: [P, S] which δ draw (0..D-1) each sample used.
        n_boot: bootstrap replicates (>= 100).
        conf: the interval's coverage.
        seed: the resampling seed.

    Returns:
        (retained, low, high).
    """
    base, ref = np.asarray(base, float), np.asarray(ref, float)
    test, draw = np.asarray(test, float), np.asarray(draw, int)
    if base.ndim != 1 or ref.shape != base.shape or test.shape[0] != base.shape[0]:
        raise ValueError("base and ref must be [P] and test [P, S] with the same P")
    if draw.shape != test.shape or draw.min() < 0:
        raise ValueError(f"draw must be non-negative ids shaped like test {test.shape}")
    if n_boot < 100:
        raise ValueError(f"n_boot must be >= 100 for a percentile interval, got {n_boot}")
    n_p, n_d = base.shape[0], int(draw.max()) + 1
    gain = test - base[:, None]

    def ratio(w, u):  # w [B, P] prompt weights, u [B, D] draw weights
        ud = u[:, draw]  # [B, P, S]
        num = np.einsum("bp,bps,ps->b", w, ud, gain) / np.einsum("bp,bps->b", w, ud)
        return num / ((w @ (ref - base)) / w.sum(1))

    point = float(ratio(np.ones((1, n_p)), np.ones((1, n_d)))[0])
    rng = np.random.default_rng(seed)
    reps = []
    for i in range(0, n_boot, 500):
        b = min(500, n_boot - i)
        w = rng.multinomial(n_p, np.full(n_p, 1 / n_p), size=b).astype(float)
        u = rng.multinomial(n_d, np.full(n_d, 1 / n_d), size=b).astype(float)
        with np.errstate(invalid="ignore", divide="ignore"):
            reps.append(ratio(w, u))
    lo, hi = np.nanquantile(np.concatenate(reps), [(1 - conf) / 2, (1 + conf) / 2])
    return point, float(lo), float(hi)


def holm(p_values) -> np.ndarray:
    """Holm-adjusted p-values (statsmodels), in the input's order."""
    from statsmodels.stats.multitest import multipletests

    p = np.asarray(p_values, float)
    if p.size == 0:
        return p
    return multipletests(p, method="holm")[1]
