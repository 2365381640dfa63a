"""Confidence intervals: Student's t over a few seeds, the bootstrap over many test items.

With three to five training seeds the normal approximation (mean ± 1.96 standard errors) is
far too narrow: Student's t quantile for 2 degrees of freedom is 4.30, not 1.96. Chapters that
compare conditions seed by seed (pre-trained vs scratch, clean vs raw data, PPO with and
without its KL penalty) use :func:`t_interval` on the per-seed values or on the per-seed
differences of paired runs.

Over many test items (prompts, queries, problems) chapters use :func:`bootstrap_interval`:
resample the items with replacement and read the interval off the resampled means. Two systems
scored on the same items are compared on the per-item differences (a *paired* bootstrap:
the items' own difficulty drops out of the noise).
"""
from __future__ import annotations

import math
import statistics
from typing import Sequence

__all__ = ["T95", "bootstrap_interval", "t_interval"]

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


def bootstrap_interval(values: Sequence[float], *, n_resamples: int = 10_000, seed: int = 0,
                       level: float = 0.95) -> tuple[float, float, float]:
    """``(mean, low, high)``: the mean of per-item ``values`` and its percentile bootstrap
    interval (the items resampled with replacement ``n_resamples`` times, a seeded torch
    generator). For a paired comparison pass the per-item differences."""
    import torch

    xs = torch.as_tensor(values, dtype=torch.float64)
    if xs.dim() != 1 or xs.numel() == 0:
        raise ValueError(f"a bootstrap interval needs a 1-D list of values, got shape "
                         f"{tuple(xs.shape)}")
    g = torch.Generator().manual_seed(seed)
    means = xs[torch.randint(0, xs.numel(), (n_resamples, xs.numel()), generator=g)].mean(dim=1)
    tail = (1 - level) / 2
    low, high = torch.quantile(means, torch.tensor([tail, 1 - tail], dtype=torch.float64))
    return float(xs.mean()), float(low), float(high)
