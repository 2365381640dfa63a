"""The chapter 4 checkers accept correct answers and explain typical wrong ones."""
from __future__ import annotations

import math
import statistics

import pytest
import torch.nn.functional as F

from gptlib.checks import CheckFailed, check_gpt1_loss, check_mean_and_sem, check_mean_pool


def good_mean_pool(h, mask):
    m = mask.unsqueeze(-1).to(h.dtype)
    return (h * m).sum(1) / m.sum(1)


def test_check_mean_pool_accepts_a_masked_mean():
    assert "correct" in check_mean_pool(good_mean_pool)


def test_check_mean_pool_rejects_averaging_over_padding():
    with pytest.raises(CheckFailed, match="padding positions too"):
        check_mean_pool(lambda h, mask: h.mean(1))


def test_check_mean_pool_rejects_dividing_by_the_padded_length():
    with pytest.raises(CheckFailed, match="divides by T"):
        check_mean_pool(lambda h, mask: (h * mask.unsqueeze(-1)).sum(1) / h.shape[1])


def test_check_mean_pool_rejects_a_wrong_shape():
    with pytest.raises(CheckFailed, match="shape"):
        check_mean_pool(lambda h, mask: good_mean_pool(h, mask).unsqueeze(1))


def good_gpt1_loss(cls_logits, labels, lm_logits, ids, lam):
    lm = F.cross_entropy(lm_logits[:, :-1].reshape(-1, lm_logits.size(-1)), ids[:, 1:].reshape(-1))
    return F.cross_entropy(cls_logits, labels) + lam * lm


def test_check_gpt1_loss_accepts_the_gpt1_objective():
    assert "next-token" in check_gpt1_loss(good_gpt1_loss)


def test_check_gpt1_loss_rejects_unshifted_targets():
    def unshifted(cls_logits, labels, lm_logits, ids, lam):
        lm = F.cross_entropy(lm_logits.reshape(-1, lm_logits.size(-1)), ids.reshape(-1))
        return F.cross_entropy(cls_logits, labels) + lam * lm

    with pytest.raises(CheckFailed, match="next"):
        check_gpt1_loss(unshifted)


def test_check_gpt1_loss_rejects_lambda_on_the_wrong_term():
    def swapped(cls_logits, labels, lm_logits, ids, lam):
        lm = F.cross_entropy(lm_logits[:, :-1].reshape(-1, lm_logits.size(-1)), ids[:, 1:].reshape(-1))
        return lam * F.cross_entropy(cls_logits, labels) + lm

    with pytest.raises(CheckFailed, match="lam"):
        check_gpt1_loss(swapped)


def test_check_gpt1_loss_rejects_a_detached_loss():
    with pytest.raises(CheckFailed, match="gradients"):
        check_gpt1_loss(lambda *a: good_gpt1_loss(*a).detach())


def test_check_mean_and_sem_accepts_the_standard_error():
    def good(values):
        return statistics.mean(values), statistics.stdev(values) / math.sqrt(len(values))

    assert "correct" in check_mean_and_sem(good)


def test_check_mean_and_sem_rejects_the_standard_deviation():
    with pytest.raises(CheckFailed, match="standard deviation"):
        check_mean_and_sem(lambda v: (statistics.mean(v), statistics.stdev(v)))


def test_check_mean_and_sem_rejects_the_biased_estimator():
    with pytest.raises(CheckFailed, match="n - 1"):
        check_mean_and_sem(lambda v: (statistics.mean(v), statistics.pstdev(v) / math.sqrt(len(v))))
