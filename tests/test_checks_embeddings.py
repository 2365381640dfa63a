"""The chapter 10 checkers accept correct answers and reject typical wrong ones, helpfully."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from gptlib.checks import CheckFailed, check_info_nce, check_mrr, check_recall_at_k
from gptlib.embeddings import info_nce
from gptlib.retrieval import mrr, ranks_of_targets, recall_at_k

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


# ----------------------------------------------------------------------------- new exercises

from gptlib.checks import check_batch_info_nce, check_low_rank_adapter, check_rrf  # noqa: E402
from gptlib.embeddings import LowRankAdapter  # noqa: E402
from gptlib.retrieval import reciprocal_rank_fusion  # noqa: E402


def test_rrf_accepts_the_library_and_rejects_common_mistakes():
    check_rrf(lambda mats, k: reciprocal_rank_fusion(*mats, k=k))

    def zero_based(mats, k):
        return reciprocal_rank_fusion(*mats, k=k - 1)

    def reversed_ranks(mats, k):
        return reciprocal_rank_fusion(*[-m for m in mats], k=k)

    def summed_scores(mats, k):
        return sum(mats)

    for bad, words in [(zero_based, "start at 0"), (reversed_ranks, "reversed"),
                       (summed_scores, "added the scores")]:
        with pytest.raises(CheckFailed, match=words):
            check_rrf(bad)


def test_low_rank_adapter_accepts_the_library_and_rejects_common_mistakes():
    check_low_rank_adapter(LowRankAdapter)

    class BothZero(LowRankAdapter):
        def __init__(self, dim, rank):
            super().__init__(dim, rank)
            with torch.no_grad():
                self.A.zero_()

    class NotResidual(LowRankAdapter):
        def forward(self, x):
            return (x @ self.A) @ self.B

    class RandomStart(LowRankAdapter):
        def __init__(self, dim, rank):
            super().__init__(dim, rank)
            with torch.no_grad():
                self.B.normal_()

    for bad, words in [(BothZero, "never train"), (NotResidual, "changes its input"),
                       (RandomStart, "changes its input")]:
        with pytest.raises(CheckFailed, match=words):
            check_low_rank_adapter(bad)


def good_batch_info_nce(q, c, batch_size, scale):
    n = q.shape[0] - q.shape[0] % batch_size
    losses = [info_nce(q[i:i + batch_size], c[i:i + batch_size], scale)
              for i in range(0, n, batch_size)]
    return torch.stack(losses).mean()


def test_batch_info_nce_accepts_a_correct_answer_and_rejects_mistakes():
    check_batch_info_nce(good_batch_info_nce)

    def one_batch(q, c, batch_size, scale):
        return info_nce(q, c, scale)

    def with_remainder(q, c, batch_size, scale):
        return torch.stack([info_nce(q[i:i + batch_size], c[i:i + batch_size], scale)
                            for i in range(0, q.shape[0], batch_size)]).mean()

    with pytest.raises(CheckFailed, match="one batch"):
        check_batch_info_nce(one_batch)
    with pytest.raises(CheckFailed, match="incomplete"):
        check_batch_info_nce(with_remainder)
