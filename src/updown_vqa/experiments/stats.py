"""Mean, standard deviation and the two-sided paired t-test (SciPy's `ttest_rel`)."""

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
    # Here, not at import: scipy.stats takes seconds to import, and `report` without a
    # --baseline, or without seeds to pair, needs none of it (docs/experiments.md).
    from scipy.stats import ttest_rel

    result = ttest_rel(values, baseline)
    return float(result.statistic), float(result.pvalue)
