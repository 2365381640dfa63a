"""gptlib.stats against scipy's Student t."""
import math

import pytest
import scipy.stats

from gptlib.stats import T95, t_interval


def test_table_matches_scipy_quantiles():
    for df, t in T95.items():
        assert t == pytest.approx(scipy.stats.t.ppf(0.975, df), abs=6e-4), df


@pytest.mark.parametrize("xs", [[0.1, 0.3, 0.2], [5.0, 1.0, 2.0, 8.0, 3.0], list(range(40))])
def test_interval_matches_scipy(xs):
    mean, lo, hi = t_interval(xs)
    ref_lo, ref_hi = scipy.stats.t.interval(0.95, len(xs) - 1, loc=sum(xs) / len(xs),
                                            scale=scipy.stats.sem(xs))
    tol = 1e-3 if len(xs) <= 31 else 0.05 * (ref_hi - ref_lo)  # 1.96 beyond the table
    assert mean == pytest.approx(sum(xs) / len(xs))
    assert lo == pytest.approx(ref_lo, abs=tol) and hi == pytest.approx(ref_hi, abs=tol)


def test_one_value_is_a_clear_error():
    with pytest.raises(ValueError, match="at least 2 values"):
        t_interval([0.5])
    assert not math.isnan(t_interval([1.0, 1.0])[1])


def test_bootstrap_interval_against_an_independent_resampling():
    # the same resampling written out with numpy draws (independent code, same idea): the
    # intervals agree to the Monte Carlo error; a different seed moves them a little
    import numpy as np
    import torch

    from gptlib.stats import bootstrap_interval

    torch.manual_seed(0)
    values = torch.distributions.Exponential(1.0).sample((200,)).double()
    mean, low, high = bootstrap_interval(values.tolist(), n_resamples=20_000, seed=0)
    rng = np.random.default_rng(1)
    xs = values.numpy()
    means = xs[rng.integers(0, len(xs), size=(20_000, len(xs)))].mean(axis=1)
    ref_low, ref_high = np.quantile(means, [0.025, 0.975])
    assert mean == float(xs.mean())
    assert abs(low - ref_low) < 0.02 and abs(high - ref_high) < 0.02, (low, ref_low, high, ref_high)
    se = xs.std(ddof=1) / np.sqrt(len(xs))  # and close to the normal interval for n = 200
    assert abs((high - low) - 2 * 1.96 * se) < 0.2 * 2 * 1.96 * se
    assert bootstrap_interval(values.tolist(), n_resamples=20_000, seed=1)[1] != low
    assert bootstrap_interval([3.0]) == (3.0, 3.0, 3.0)
    with pytest.raises(ValueError, match="1-D list"):
        bootstrap_interval([[1.0, 2.0]])
