"""interp_steer.eval.stats against textbook values and brute-force simulation."""

import numpy as np
import pytest
from scipy import stats as scipy_stats

from interp_steer.eval import stats


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


def test_fisher_matches_the_tea_tasting_table():
    # Fisher's lady tasting tea: 3 of 4 right each way, two-sided p = 34/70
    assert stats.fisher_exact(3, 4, 1, 4) == pytest.approx(34 / 70)
    assert stats.fisher_exact(0, 10, 0, 10) == 1.0
    with pytest.raises(ValueError, match="fisher_exact needs"):
        stats.fisher_exact(5, 4, 1, 4)


def test_tost_paired_matches_the_two_one_sided_t_tests():
    rng = np.random.default_rng(0)
    a = rng.normal(size=30)
    b = a + rng.normal(0.05, 0.2, size=30)
    d = b - a
    se = d.std(ddof=1) / np.sqrt(30)
    from scipy import stats as st

    want = max(st.t.sf((d.mean() + 0.1) / se, 29), st.t.cdf((d.mean() - 0.1) / se, 29))
    assert stats.tost_paired(a, b, 0.1) == pytest.approx(want)
    with pytest.raises(ValueError, match="margin"):
        stats.tost_paired(a, b, 0.0)


@pytest.mark.parametrize("n, sd, margin, true_diff", [(20, 1.0, 0.6, 0.0), (40, 0.5, 0.2, 0.05)])
def test_tost_power_agrees_with_simulation(n, sd, margin, true_diff):
    rng = np.random.default_rng(1)
    reps = 4000
    hits = 0
    for _ in range(reps):
        a = rng.normal(size=n)
        b = a + rng.normal(true_diff, sd, size=n)
        hits += stats.tost_paired(a, b, margin) < 0.05
    sim = hits / reps
    assert stats.tost_power_paired(margin, n, sd, true_diff) == pytest.approx(sim, abs=0.03)


def test_welch_tost_power_agrees_with_simulation():
    rng = np.random.default_rng(2)
    reps, hits = 4000, 0
    for _ in range(reps):
        a, b = rng.normal(0, 1.0, 30), rng.normal(0, 0.5, 20)
        hits += stats.tost_welch(a, b, 0.7) < 0.05
    assert stats.tost_power_welch(0.7, 30, 20, 1.0, 0.5) == pytest.approx(hits / reps, abs=0.03)
    # n = 10, SD 0.39, margin 0.1 (the old study's VADER test): equivalence is unreachable
    assert stats.tost_power_welch(0.1, 10, 10, 0.39, 0.39) < 0.05


def test_cohens_d_and_dz_intervals_cover_the_truth():
    rng = np.random.default_rng(3)
    hit_d = hit_dz = 0
    reps = 1000
    for _ in range(reps):
        a, b = rng.normal(0, 1, 40), rng.normal(0.5, 1, 40)
        d, lo, hi = stats.cohens_d(a, b)
        hit_d += lo <= 0.5 <= hi
        x = rng.normal(size=40)
        y = x + rng.normal(0.3, 1, 40)  # d_z = 0.3
        dz, lo, hi = stats.cohens_dz(x, y)
        hit_dz += lo <= 0.3 <= hi
    assert 0.92 < hit_d / reps < 0.98 and 0.92 < hit_dz / reps < 0.98
    # textbook: means 1 and 0, SDs 1, pooled SD 1 -> d = 1
    assert stats.cohens_d(np.array([-1.0, 1.0]), np.array([0.0, 2.0]))[0] == pytest.approx(
        1 / np.sqrt(2)
    )


def test_cohens_d_weights_the_pooled_sd_by_group_size():
    # a: n 3, var 1; b: n 5, var 10. Pooled SD = sqrt((2 * 1 + 4 * 10) / 6) = sqrt(7); the
    # unweighted mean of the variances would give sqrt(5.5)
    a, b = np.array([1.0, 2.0, 3.0]), np.array([2.0, 4.0, 6.0, 8.0, 10.0])
    assert stats.cohens_d(a, b)[0] == pytest.approx(4 / np.sqrt(7))


def test_paired_t_matches_a_by_hand_paired_test():
    """Strongly correlated pairs: the paired p is tiny, an unpaired test's is not."""
    rng = np.random.default_rng(0)
    a = rng.normal(0, 5, 30)
    b = a + rng.normal(0.4, 1, 30)
    d = b - a
    t = d.mean() / (d.std(ddof=1) / np.sqrt(len(d)))
    p = 2 * scipy_stats.t.sf(abs(t), len(d) - 1)
    assert stats.paired_t(a, b) == pytest.approx(p, rel=1e-9)
    assert stats.paired_t(a, b) < 0.05 < scipy_stats.ttest_ind(b, a).pvalue


def test_cluster_bootstrap_resamples_whole_clusters():
    """Clustered data (20 clusters x 5 correlated draws): the cluster CI covers the true mean
    at the nominal rate; treating the 100 draws as independent would cover far less."""
    rng = np.random.default_rng(4)
    hits = 0
    reps = 200
    for rep in range(reps):
        x = rng.normal(size=(20, 1)) + 0.2 * rng.normal(size=(20, 5))
        lo, hi = stats.cluster_bootstrap(x, n_boot=500, seed=rep)
        hits += lo <= 0 <= hi
    assert 0.88 <= hits / reps <= 0.99
    with pytest.raises(ValueError, match="2 clusters"):
        stats.cluster_bootstrap(np.ones((1, 3)))


def test_spearman_ci_covers_the_population_rho():
    rng = np.random.default_rng(5)
    x = rng.normal(size=200)
    y = x + rng.normal(size=200)  # Pearson 1/sqrt(2); Spearman = 6/pi asin(r/2) = 0.6825
    rho, lo, hi = stats.spearman(x, y, n_boot=500)
    assert lo <= 6 / np.pi * np.arcsin(1 / np.sqrt(2) / 2) <= hi
    assert lo < rho < hi


def test_auroc_is_the_mann_whitney_statistic_with_a_covering_ci():
    from scipy.stats import mannwhitneyu

    rng = np.random.default_rng(6)
    y = np.r_[np.ones(30), np.zeros(30)].astype(int)
    s = np.r_[rng.normal(1, 1, 30), rng.normal(0, 1, 30)]
    auc, lo, hi = stats.auroc(y, s, n_boot=500)
    assert auc == pytest.approx(mannwhitneyu(s[:30], s[30:]).statistic / 900)
    assert lo < auc < hi
    with pytest.raises(ValueError, match="both classes"):
        stats.auroc(np.ones(4), np.arange(4.0))


def test_auc_equals_sklearn_with_ties_and_any_two_labels():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(7)
    for n in (5, 40, 301):
        y = rng.integers(0, 2, n)
        y[:2] = [0, 1]
        s = rng.integers(0, 4, n).astype(float)  # heavy ties
        assert stats.auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
        labels = np.where(y == 1, "yes", "no")  # the larger label is the positive one
        assert stats.auc(labels, s) == pytest.approx(roc_auc_score(labels, s), abs=1e-12)
    with pytest.raises(ValueError, match="finite"):
        stats.auc(np.array([0, 1, 0]), np.array([0.1, np.nan, 0.3]))
    with pytest.raises(ValueError, match="both classes"):
        stats.auc(np.array([0, 1, 2]), np.arange(3.0))


def test_logistic_threshold_recovers_a_simulated_threshold():
    """Rates drawn from a known sharp threshold (x0 = 0.1, floor 0.02, ceiling 0.6): the fit
    recovers x0, and its CI covers the truth in most of 10 simulated studies (P(< 7 of 10 | 95%
    coverage) ≈ 0.001)."""
    from interp_steer.eval.stats import logistic_threshold

    x = np.array([0.01, 0.02, 0.05, 0.08, 0.1, 0.13, 0.2, 0.3, 0.5])
    n = np.full(len(x), 200)
    p = 0.02 + 0.58 / (1 + np.exp(-(np.log(x) - np.log(0.1)) / 0.2))
    covered = 0
    for seed in range(10):
        k = np.random.default_rng(seed).binomial(n, p)
        fit = logistic_threshold(x, k, n, n_boot=100, seed=seed)
        lo, hi = fit["x0_ci"]
        covered += lo <= 0.1 <= hi
        assert 0.06 < fit["x0"] < 0.16 and fit["x0_in_range"]
    assert covered >= 7, covered
    assert abs(fit["floor"] - 0.02) < 0.03 and abs(fit["ceiling"] - 0.6) < 0.08
    with pytest.raises(ValueError, match="x > 0"):
        logistic_threshold(np.zeros(4), np.zeros(4), np.ones(4))


def test_retained_two_level_covers_when_draws_vary_and_prompts_only_does_not():
    """A simulation with prompt and δ-draw random effects (draw SD > prompt SD): the two-level
    interval covers the true retention near 95%; resampling prompts alone does not."""
    from interp_steer.eval.stats import retained_two_level

    rng = np.random.default_rng(1)
    n_p, n_s, n_d, true = 60, 2, 10, 0.9
    draw = (np.arange(n_p)[:, None] * n_s + np.arange(n_s)[None]) % n_d
    two = one = 0
    n_sim = 150
    for k in range(n_sim):
        a, b = rng.normal(0, 0.1, n_p), rng.normal(0, 0.15, n_d)
        ref = 1 + rng.normal(0, 0.05, n_p)
        ref += 1 - ref.mean()  # efficacy of v is exactly 1 in-sample
        test = true + a[:, None] + b[draw] + rng.normal(0, 0.1, (n_p, n_s))
        r, lo, hi = retained_two_level(np.zeros(n_p), ref, test, draw, n_boot=400, seed=k)
        assert r == pytest.approx(test.mean())
        two += lo <= true <= hi
        w = rng.multinomial(n_p, np.full(n_p, 1 / n_p), size=400)
        lo1, hi1 = np.quantile(w @ test.mean(1) / n_p, [0.025, 0.975])
        one += lo1 <= true <= hi1
    assert 0.88 <= two / n_sim <= 0.99
    assert one / n_sim < 0.75


def test_retained_two_level_rejects_bad_shapes():
    from interp_steer.eval.stats import retained_two_level

    with pytest.raises(ValueError, match="draw"):
        retained_two_level(np.zeros(3), np.ones(3), np.ones((3, 2)), np.zeros((3, 1), int))
    with pytest.raises(ValueError, match="same P"):
        retained_two_level(np.zeros(3), np.ones(4), np.ones((3, 2)), np.zeros((3, 2), int))


def test_holm_matches_the_step_down_by_hand():
    from interp_steer.eval.stats import holm

    p = np.array([0.01, 0.04, 0.03, 0.005])
    # sorted: 0.005*4, 0.01*3, 0.03*2, 0.04*1, each at least the previous
    expected = np.array([0.03, 0.06, 0.06, 0.02])
    assert holm(p) == pytest.approx(expected)
    assert holm([]).size == 0
