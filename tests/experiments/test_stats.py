"""The report's paired t-test: its p-values are Student's t table values, two-sided, with n - 1 degrees
of freedom."""

import math

import pytest

from updown_vqa.experiments.stats import mean_std, paired_t_test


def pairs_with_t(t: float, df: int) -> tuple[list[float], list[float]]:
    """Paired values (and a baseline) whose differences give the t statistic `t` over df + 1 pairs."""
    n = df + 1
    spread = [i - (n - 1) / 2 for i in range(n)]
    scale = math.sqrt(sum(s * s for s in spread) / (n - 1))
    differences = [t / math.sqrt(n) + s / scale for s in spread]  # mean t / sqrt(n), std 1
    baseline = [50.0 + 0.5 * i for i in range(n)]
    return [b + d for b, d in zip(baseline, differences)], baseline


@pytest.mark.parametrize("t,df,p", [
    (2.0, 4, 0.1161),       # the example
    (2.776, 4, 0.0500),     # t table: 0.975 quantile, df 4
    (2.228, 10, 0.0500),    # df 10
    (12.706, 1, 0.0500),    # df 1 (Cauchy)
    (1.0, 1, 0.5000),       # Cauchy: P(|T| >= 1) = 1/2
    (2.042, 30, 0.0500),
    (0.0, 5, 1.0),
])
def test_two_sided_p_values_match_t_tables(t, df, p):
    values, baseline = pairs_with_t(t, df)
    assert paired_t_test(values, baseline) == pytest.approx((t, p), abs=2e-4)
    assert paired_t_test(baseline, values) == pytest.approx((-t, p), abs=2e-4)


def test_paired_t_test_and_mean_std():
    t, p = paired_t_test([2.0, 4.0, 6.0], [1.0, 2.0, 3.0])  # differences 1, 2, 3: mean 2, std 1
    assert t == pytest.approx(2 * math.sqrt(3))
    assert p == pytest.approx(1 - t / math.sqrt(2 + t * t))  # df 2 has a closed form
    assert mean_std([50.0, 52.0, 54.0]) == (52.0, 2.0)
    assert math.isnan(mean_std([1.0])[1])


def test_identical_differences_are_certain_or_no_evidence_instead_of_nan():
    assert paired_t_test([1.0, 2.0], [1.0, 2.0]) == (0.0, 1.0)
    assert paired_t_test([2.0, 3.0, 4.0], [1.0, 2.0, 3.0]) == (math.inf, 0.0)
    assert paired_t_test([1.0, 2.0, 3.0], [2.0, 3.0, 4.0]) == (-math.inf, 0.0)


def test_paired_t_test_equals_scipy_ttest_rel():
    import random

    from scipy.stats import ttest_rel

    rng = random.Random(0)
    for n in (2, 3, 5, 12):
        baseline = [rng.gauss(50, 3) for _ in range(n)]
        values = [b + rng.gauss(0.5, 1) for b in baseline]
        expected = ttest_rel(values, baseline)
        assert paired_t_test(values, baseline) == pytest.approx((expected.statistic, expected.pvalue), rel=1e-12)
