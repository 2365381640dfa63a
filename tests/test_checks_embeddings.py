"""The chapter 10 checkers accept correct answers and reject typical wrong ones, helpfully."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from gptlib.checks import CheckFailed, check_info_nce, check_mrr, check_recall_at_k
from gptlib.embeddings import info_nce, mrr, ranks_of_targets, recall_at_k

# ----------------------------------------------------------------------------- InfoNCE


def good_info_nce(x, y, scale):
    logits = scale * x @ y.T
    labels = torch.arange(x.shape[0])
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


def test_info_nce_accepts_correct_answers():
    assert "correct" in check_info_nce(good_info_nce)
    assert "correct" in check_info_nce(info_nce)


def test_info_nce_rejects_one_direction():
    def one_way(x, y, scale):
        return F.cross_entropy(scale * x @ y.T, torch.arange(x.shape[0]))

    with pytest.raises(CheckFailed, match="one direction") as e:
        check_info_nce(one_way)
    assert "Hint" in str(e.value)


def test_info_nce_rejects_missing_scale():
    with pytest.raises(CheckFailed, match="scale"):
        check_info_nce(lambda x, y, scale: good_info_nce(x, y, 1.0))


def test_info_nce_rejects_sum_of_directions():
    with pytest.raises(CheckFailed, match="sum of the two directions"):
        check_info_nce(lambda x, y, scale: 2 * good_info_nce(x, y, scale))


def test_info_nce_rejects_summed_batch():
    def summed(x, y, scale):
        logits = scale * x @ y.T
        labels = torch.arange(x.shape[0])
        return (F.cross_entropy(logits, labels, reduction="sum")
                + F.cross_entropy(logits.T, labels, reduction="sum")) / 2

    with pytest.raises(CheckFailed, match="summed"):
        check_info_nce(summed)


def test_info_nce_rejects_wrong_positives():
    def shifted(x, y, scale):
        return good_info_nce(x, y.roll(1, 0), scale)

    with pytest.raises(CheckFailed, match="differ"):
        check_info_nce(shifted)


# ----------------------------------------------------------------------------- recall@k and MRR


def good_recall(scores, targets, k):
    return recall_at_k(ranks_of_targets(scores, targets), k)


def good_mrr(scores, targets):
    return mrr(ranks_of_targets(scores, targets))


def optimistic_ranks(scores, targets):
    return (scores > scores.gather(1, targets[:, None])).sum(1) + 1


def test_recall_accepts_a_correct_answer():
    assert "correct" in check_recall_at_k(good_recall)


def test_recall_rejects_off_by_one():
    with pytest.raises(CheckFailed, match="off by one"):
        check_recall_at_k(lambda s, t, k: float((ranks_of_targets(s, t) < k).double().mean()))


def test_recall_rejects_optimistic_ties():
    with pytest.raises(CheckFailed, match="ties"):
        check_recall_at_k(lambda s, t, k: float((optimistic_ranks(s, t) <= k).double().mean()))


def test_recall_rejects_a_wrong_answer():
    with pytest.raises(CheckFailed, match="expected"):
        check_recall_at_k(lambda s, t, k: 0.5)


def test_mrr_accepts_a_correct_answer():
    assert "correct" in check_mrr(good_mrr)


def test_mrr_rejects_zero_based_ranks():
    with pytest.raises(CheckFailed, match="1-based"):
        check_mrr(lambda s, t: float((1.0 / (ranks_of_targets(s, t) - 1).double()).mean()))


def test_mrr_rejects_optimistic_ties():
    with pytest.raises(CheckFailed, match="ties"):
        check_mrr(lambda s, t: float((1.0 / optimistic_ranks(s, t).double()).mean()))


def test_mrr_rejects_rank_plus_one():
    with pytest.raises(CheckFailed, match="rank \\+ 1"):
        check_mrr(lambda s, t: float((1.0 / (ranks_of_targets(s, t) + 1).double()).mean()))
