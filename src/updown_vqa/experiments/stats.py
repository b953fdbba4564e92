"""Mean, standard deviation and the two-sided paired t-test, its p-value from SciPy's Student t."""

from __future__ import annotations

import math


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1; nan for a single value)."""
    n = len(values)
    if n == 0:
        return math.nan, math.nan
    mean = sum(values) / n
    if n == 1:
        return mean, math.nan
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))


def paired_t_test(values: list[float], baseline: list[float]) -> tuple[float, float]:
    """t statistic and two-sided p-value of the mean paired difference values - baseline (n >= 2)."""
    differences = [v - b for v, b in zip(values, baseline, strict=True)]
    mean, std = mean_std(differences)
    if std == 0:  # identical differences (SciPy says nan): certain if non-zero, no evidence if all zero
        return (math.copysign(math.inf, mean), 0.0) if mean else (0.0, 1.0)
    t = mean / (std / math.sqrt(len(differences)))
    # Student's t CDF from scipy.special (the function scipy.stats.ttest_rel's p-value comes from), imported
    # here: scipy.special costs about a third of scipy.stats' import time, and a report without a
    # --baseline, or without seeds to pair, needs neither (docs/experiments.md).
    from scipy.special import stdtr

    return t, float(2 * stdtr(len(differences) - 1, -abs(t)))
