"""The chapter-8 checkers accept right answers and explain typical wrong ones."""
from __future__ import annotations

from math import factorial

import pytest

from gptlib.checks import CheckFailed, check_pass_at_k, check_truncate_at_stop
from gptlib.codex import pass_at_k, truncate_at_stop


def test_pass_at_k_checker():
    assert "unbiased" in check_pass_at_k(pass_at_k)
    with pytest.raises(CheckFailed, match="naive"):
        check_pass_at_k(lambda n, c, k: 1 - (1 - c / n) ** k)
    with pytest.raises(CheckFailed, match="only right for k = 1"):
        check_pass_at_k(lambda n, c, k: c / n)
    with pytest.raises(CheckFailed, match="overflows"):
        def via_factorials(n, c, k):  # exact in theory, but factorial(200) does not fit a float
            f = lambda m: float(factorial(m))  # noqa: E731
            return 1.0 if n - c < k else 1 - f(n - c) / (f(k) * f(n - c - k)) / (f(n) / (f(k) * f(n - k)))
        check_pass_at_k(via_factorials)


def test_truncate_checker():
    assert "stop sequences" in check_truncate_at_stop(truncate_at_stop)
    with pytest.raises(CheckFailed, match="earliest"):
        def first_in_list(text, stops):
            for s in stops:
                if s in text:
                    return text[:text.index(s)]
            return text
        check_truncate_at_stop(first_in_list)
    with pytest.raises(CheckFailed, match="start of a line"):
        def anywhere(text, stops):  # forgets that a stop sequence starts with a newline
            cuts = [text.find(s.lstrip("\n")) for s in stops if s.lstrip("\n") in text]
            return text[:min(cuts)] if cuts else text
        check_truncate_at_stop(anywhere)


def test_best_temperature_checker():
    import numpy as np

    from gptlib.checks import check_best_temperature

    def right(rows, k):
        return max(rows, key=lambda T: np.mean([pass_at_k(n, c, k) for n, c in rows[T].values()]))

    assert "right" in check_best_temperature(right)
    with pytest.raises(CheckFailed, match="most passing samples"):
        check_best_temperature(lambda rows, k: max(rows, key=lambda T: sum(c for _, c in rows[T].values())))


def test_plain_value_checker():
    from gptlib.checks import check_plain_value

    def right(v):
        t = type(v)
        if v is None or t in (bool, int, float, str, bytes):
            return True
        if t in (list, tuple, set, frozenset):
            return all(right(x) for x in v)
        return t is dict and all(right(k) and right(x) for k, x in v.items())

    assert "exact types" in check_plain_value(right)
    with pytest.raises(CheckFailed, match="isinstance"):
        check_plain_value(lambda v: v is None or isinstance(v, (int, float, str, bytes, list, tuple,
                                                                  dict, set, frozenset)))
    with pytest.raises(CheckFailed, match="inside containers"):
        check_plain_value(lambda v: v is None or type(v) in (bool, int, float, str, bytes, list, tuple,
                                                              dict, set, frozenset))


def test_rank_by_mean_checker():
    from gptlib.checks import check_rank_by_mean

    assert "mean" in check_rank_by_mean(lambda s: max(range(len(s)), key=lambda i: sum(s[i]) / len(s[i])))
    with pytest.raises(CheckFailed, match="sum"):
        check_rank_by_mean(lambda s: max(range(len(s)), key=lambda i: sum(s[i])))
