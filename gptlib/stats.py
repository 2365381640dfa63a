"""Confidence intervals over a few seeds: the mean and Student's t interval.

With three to five training seeds the normal approximation (mean ± 1.96 standard errors) is
far too narrow: Student's t quantile for 2 degrees of freedom is 4.30, not 1.96. Chapters that
compare conditions seed by seed (pre-trained vs scratch, clean vs raw data, PPO with and
without its KL penalty) use :func:`t_interval` on the per-seed values or on the per-seed
differences of paired runs.
"""
from __future__ import annotations

import math
import statistics
from typing import Sequence

__all__ = ["T95", "t_interval"]

# two-sided 95% quantiles of Student's t, by degrees of freedom (n - 1); from 31 on, 1.96 is
# within 4%: the table stops where a few-seed experiment does
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
       9: 2.262, 10: 2.228, 11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120,
       17: 2.110, 18: 2.101, 19: 2.093, 20: 2.086, 21: 2.080, 22: 2.074, 23: 2.069, 24: 2.064,
       25: 2.060, 26: 2.056, 27: 2.052, 28: 2.048, 29: 2.045, 30: 2.042}


def t_interval(values: Sequence[float]) -> tuple[float, float, float]:
    """``(mean, low, high)``: the mean of ``values`` and its two-sided 95% t interval.

    >>> t_interval([1.0, 2.0, 3.0])  # mean 2, standard error 1/sqrt(3), t = 4.303
    (2.0, -0.484..., 4.484...)
    """
    xs = [float(v) for v in values]
    if len(xs) < 2:
        raise ValueError(f"a confidence interval needs at least 2 values (seeds), got {len(xs)}")
    mean = statistics.fmean(xs)
    df = len(xs) - 1
    half = T95.get(df, 1.96) * statistics.stdev(xs) / math.sqrt(len(xs))
    return mean, mean - half, mean + half
