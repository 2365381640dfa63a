"""Checkers of chapters 11-12 pass right answers and fail typical wrong ones with a hint."""
import itertools

import pytest
import torch
import torch.nn.functional as F

from gptlib.checks import CheckFailed
from gptlib.checks.alignment import (
    check_ranking_loss,
    check_ranking_pairs,
    check_sft_labels,
    check_win_rate,
)


def _fails(checker, fn, *words):
    with pytest.raises(CheckFailed) as info:
        checker(fn)
    message = str(info.value)
    assert "Hint:" in message or "expected" in message
    for w in words:
        assert w in message, message


# ---- chapter 11


def good_labels(p, r):
    full = p + r
    return full[:-1], [-100] * (len(p) - 1) + r


def test_sft_labels():
    assert "correct" in check_sft_labels(good_labels)
    _fails(check_sft_labels, lambda p, r: ((p + r)[:-1], (p + r)[1:]), "not masked")
    _fails(check_sft_labels, lambda p, r: ((p + r)[:-1], [-100] * len(p) + r[1:]), "off by one")
    _fails(check_sft_labels, lambda p, r: (p + r, [-100] * len(p) + r), "whole sequence")
    _fails(check_sft_labels, lambda p, r: ((p + r)[:-1], [-100] * (len(p) - 1) + [-100] * len(r)))
    _fails(check_sft_labels, lambda p, r: (p + r)[:-1])


def good_win_rate(a, b):
    return sum(1.0 if x > y else 0.5 if x == y else 0.0 for x, y in zip(a, b)) / len(a)


def test_win_rate():
    assert "correct" in check_win_rate(good_win_rate)
    _fails(check_win_rate, lambda a, b: sum(x > y for x, y in zip(a, b)) / len(a), "ties")
    _fails(check_win_rate, lambda a, b: sum(x > y for x, y in zip(a, b)) + 0.5 * sum(x == y for x, y in zip(a, b)))


# ---- chapter 12


def test_ranking_pairs():
    assert "C(K, 2)" in check_ranking_pairs(lambda r: [(r[i], r[j]) for i, j in itertools.combinations(range(len(r)), 2)])
    _fails(check_ranking_pairs, lambda r: list(zip(r[:-1], r[1:])), "neighbours")
    _fails(check_ranking_pairs, lambda r: [(r[j], r[i]) for i, j in itertools.combinations(range(len(r)), 2)], "loser")
    _fails(check_ranking_pairs, lambda r: [(a, b) for a in r for b in r if a != b], "both orders")


def good_loss(rewards, ranking):
    pairs = list(itertools.combinations(range(len(ranking)), 2))
    w = torch.tensor([ranking[i] for i, _ in pairs])
    lo = torch.tensor([ranking[j] for _, j in pairs])
    return -F.logsigmoid(rewards[w] - rewards[lo]).mean()


def test_ranking_loss():
    assert "stable" in check_ranking_loss(good_loss)
    _fails(check_ranking_loss, lambda r, k: good_loss(r, k[::-1]), "flipped")
    _fails(check_ranking_loss, lambda r, k: good_loss(r, k) * len(k) * (len(k) - 1) / 2, "sum")
    _fails(check_ranking_loss, lambda r, k: -F.logsigmoid(r[k[:-1]] - r[k[1:]]).mean(), "neighbouring")

    def unstable(rewards, ranking):
        pairs = list(itertools.combinations(range(len(ranking)), 2))
        return torch.stack([-torch.log(torch.sigmoid(rewards[ranking[i]] - rewards[ranking[j]]).float())
                            for i, j in pairs]).mean()

    _fails(check_ranking_loss, unstable, "logsigmoid")
