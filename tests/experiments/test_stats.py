"""Student's t from our own incomplete beta function, against textbook values."""

import math

import pytest

from updown_vqa.experiments.stats import incomplete_beta, mean_std, paired_t_test, t_two_sided_p


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
    assert t_two_sided_p(t, df) == pytest.approx(p, abs=2e-4)
    assert t_two_sided_p(-t, df) == pytest.approx(p, abs=2e-4)


def test_incomplete_beta_matches_closed_forms():
    assert incomplete_beta(2, 3, 0.4) == pytest.approx(0.5248)  # 1 - P(Binomial(4, 0.4) <= 1)
    assert incomplete_beta(1, 1, 0.3) == pytest.approx(0.3)     # the uniform
    assert incomplete_beta(0.5, 0.5, 0.5) == pytest.approx(0.5)  # symmetry
    assert incomplete_beta(3, 2, 0.0) == 0 and incomplete_beta(3, 2, 1.0) == 1


def test_paired_t_test_and_mean_std():
    t, p = paired_t_test([2.0, 4.0, 6.0], [1.0, 2.0, 3.0])  # differences 1, 2, 3: mean 2, std 1
    assert t == pytest.approx(2 * math.sqrt(3))
    assert p == pytest.approx(1 - t / math.sqrt(2 + t * t))  # df 2 has a closed form
    assert mean_std([50.0, 52.0, 54.0]) == (52.0, 2.0)
    assert math.isnan(mean_std([1.0])[1])
    assert paired_t_test([1.0, 2.0], [1.0, 2.0]) == (0.0, 1.0)
