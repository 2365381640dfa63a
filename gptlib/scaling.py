"""Scaling laws (缩放定律) in miniature: fit ``L(N) = a N^-alpha (+ c)``; GPT-3's family for scale.

Kaplan et al. (2020) found the test loss of language models falls as a power law in the
number of parameters (and in data and compute) over many orders of magnitude; GPT-3's eight
sizes were chosen along it. :func:`fit_power_law` fits that law to a handful of small models.
"""

from __future__ import annotations

from typing import Sequence

__all__ = ["GPT3_FAMILY", "fit_power_law"]

#: GPT-3's eight sizes (Brown et al., 2020, Table 2.1): name, parameters, layers, d_model, heads.
GPT3_FAMILY = [
    ("GPT-3 Small", 125e6, 12, 768, 12),
    ("GPT-3 Medium", 350e6, 24, 1024, 16),
    ("GPT-3 Large", 760e6, 24, 1536, 16),
    ("GPT-3 XL", 1.3e9, 24, 2048, 24),
    ("GPT-3 2.7B", 2.7e9, 32, 2560, 32),
    ("GPT-3 6.7B", 6.7e9, 32, 4096, 32),
    ("GPT-3 13B", 13e9, 40, 5140, 40),
    ("GPT-3 175B", 175e9, 96, 12288, 96),
]


def fit_power_law(n: Sequence[float], loss: Sequence[float], with_offset: bool = True) -> dict:
    """Fit ``L(N) = a * N**(-alpha) + c`` (or ``c = 0``) by least squares on log L.

    For a grid of offsets ``c`` below ``min(loss)``, ``log(L - c)`` is linear in ``log N``;
    the best line over the grid wins. Returns ``dict(a, alpha, c, rmse)`` (rmse of log L).
    """
    import numpy as np

    n, loss = np.asarray(n, float), np.asarray(loss, float)
    if len(n) < 3 or len(n) != len(loss):
        raise ValueError(f"need >= 3 (N, loss) pairs of equal length, got {len(n)} and {len(loss)}")
    if (n <= 0).any() or (loss <= 0).any():
        raise ValueError("parameters and losses must be positive for a log-log fit")
    offsets = np.linspace(0, loss.min() * 0.999, 400) if with_offset else np.array([0.0])
    best = None
    x = np.log(n)
    if np.ptp(x) == 0:
        raise ValueError("all models have the same size: a fit against N needs different N")
    for c in offsets:
        y = np.log(loss - c)
        slope = float(np.sum((x - x.mean()) * (y - y.mean())) / np.sum((x - x.mean()) ** 2))
        icpt = float(y.mean() - slope * x.mean())
        pred = np.exp(icpt) * n**slope + c
        rmse = float(np.sqrt(np.mean((np.log(pred) - np.log(loss)) ** 2)))
        if best is None or rmse < best["rmse"]:
            best = dict(a=float(np.exp(icpt)), alpha=float(-slope), c=float(c), rmse=rmse)
    return best
