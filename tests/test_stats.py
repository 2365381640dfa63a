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
