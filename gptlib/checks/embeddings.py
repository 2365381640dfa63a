"""Exercise checkers for chapter 10 (contrastive embeddings and retrieval metrics)."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from gptlib.checks import _fail, check_close

__all__ = ["check_info_nce", "check_recall_at_k", "check_mrr"]


def _reference_info_nce(x: torch.Tensor, y: torch.Tensor, scale: float) -> torch.Tensor:
    """Written as a loop over the batch, to be obviously right."""
    B = x.shape[0]
    total = 0.0
    for i in range(B):
        xy = scale * (x[i] * y).sum(-1)  # x_i against every y_j
        yx = scale * (y[i] * x).sum(-1)  # y_i against every x_j
        total = total - torch.log_softmax(xy, 0)[i] - torch.log_softmax(yx, 0)[i]
    return total / (2 * B)


def _unit(shape, g) -> torch.Tensor:
    return F.normalize(torch.randn(*shape, generator=g, dtype=torch.float64), dim=-1)


def check_info_nce(fn: Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]) -> str:
    """``fn(x, y, scale)``: symmetric InfoNCE of unit vectors ``x``, ``y`` ``(B, C)`` with in-batch negatives."""
    g = torch.Generator().manual_seed(10)
    for B, C, scale in [(4, 8, 1.0), (7, 5, 20.0), (16, 32, 14.3)]:
        x = _unit((B, C), g)
        y = F.normalize(x + 0.8 * torch.randn(B, C, generator=g, dtype=torch.float64), dim=-1)
        out = fn(x.clone(), y.clone(), scale)
        if not isinstance(out, torch.Tensor):
            _fail(f"info_nce returned {type(out).__name__}, expected a torch.Tensor (a scalar).")
        if out.numel() != 1:
            _fail(f"info_nce returned shape {tuple(out.shape)}, expected a scalar (the mean loss).",
                  "average the cross entropy over the batch (F.cross_entropy does by default).")
        want = _reference_info_nce(x, y, scale)
        got = out.double().reshape(())
        if torch.isclose(got, want, atol=1e-6):
            continue
        labels = torch.arange(B)
        logits = scale * x @ y.T
        one_way = F.cross_entropy(logits, labels)
        other_way = F.cross_entropy(logits.T, labels)
        if torch.isclose(got, one_way, atol=1e-6) or torch.isclose(got, other_way, atol=1e-6):
            _fail("your loss is only one direction (x -> y or y -> x).",
                  "symmetric InfoNCE averages both: (CE(logits, labels) + CE(logits.T, labels)) / 2.")
        unscaled = _reference_info_nce(x, y, 1.0)
        if scale != 1.0 and torch.isclose(got, unscaled, atol=1e-6):
            _fail("the loss ignores the scale (the inverse temperature).",
                  "multiply the similarities by scale before the softmax: logits = scale * x @ y.T.")
        if torch.isclose(got, want * B, atol=1e-5) or torch.isclose(got, want * 2 * B, atol=1e-5):
            _fail("the loss is summed, not averaged, over the batch.", "take the mean over the B rows.")
        if torch.isclose(got, want * 2, atol=1e-6):
            _fail("the loss is the sum of the two directions, not their mean.", "divide the sum by 2.")
        check_close(got, want, f"info_nce with B={B}, scale={scale}", atol=1e-6,
                    hint="logits[i, j] = scale * <x_i, y_j>; the right 'class' of row i is column i.")
    return "info_nce: correct (equal to a loop over the batch, both directions, any scale)."


def _reference_ranks(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    right = scores.gather(1, targets[:, None])
    return (scores >= right).sum(1)


def _cases(g):
    scores = torch.randn(30, 12, generator=g)
    targets = torch.randint(0, 12, (30,), generator=g)
    tied = torch.zeros(3, 5)  # a scorer that scores everything the same: the answer is not found
    tied[0, 4] = 1.0
    tied_targets = torch.tensor([4, 2, 0])
    rounded = (torch.randn(20, 8, generator=g) * 2).round()  # many ties
    rounded_targets = torch.randint(0, 8, (20,), generator=g)
    return [(scores, targets), (tied, tied_targets), (rounded, rounded_targets)]


def check_recall_at_k(fn: Callable[[torch.Tensor, torch.Tensor, int], float]) -> str:
    """``fn(scores (Q, N), targets (Q,), k)``: share of queries whose answer is in the top k."""
    g = torch.Generator().manual_seed(11)
    for scores, targets in _cases(g):
        ranks = _reference_ranks(scores, targets)
        for k in (1, 3, 5):
            if k > scores.shape[1]:
                continue
            got = float(fn(scores.clone(), targets.clone(), k))
            want = float((ranks <= k).double().mean())
            if abs(got - want) < 1e-6:
                continue
            if abs(got - float((ranks <= k + 1).double().mean())) < 1e-6 or \
                    abs(got - float((ranks < k).double().mean())) < 1e-6:
                _fail(f"recall@{k} is off by one position ({got:.3f}, expected {want:.3f}).",
                      "rank 1 is the best; the answer counts if its rank is <= k.")
            optimistic = (scores > scores.gather(1, targets[:, None])).sum(1) + 1
            if abs(got - float((optimistic <= k).double().mean())) < 1e-6:
                _fail(f"recall@{k} counts ties in the answer's favour ({got:.3f}, expected {want:.3f}).",
                      "a candidate scoring the same as the answer must rank above it: "
                      "count scores >= the answer's score.")
            _fail(f"recall@{k} = {got:.4f}, expected {want:.4f}.",
                  "for each query, rank = number of candidates scoring >= the right one; recall@k = mean(rank <= k).")
    return "recall@k: correct (including ties)."


def check_mrr(fn: Callable[[torch.Tensor, torch.Tensor], float]) -> str:
    """``fn(scores (Q, N), targets (Q,))``: mean reciprocal rank of the right answers."""
    g = torch.Generator().manual_seed(12)
    for scores, targets in _cases(g):
        ranks = _reference_ranks(scores, targets)
        got = float(fn(scores.clone(), targets.clone()))
        want = float((1.0 / ranks.double()).mean())
        if abs(got - want) < 1e-6:
            continue
        if got != got or got == float("inf"):
            _fail("MRR is NaN or infinite: a rank of 0 slipped in.", "ranks are 1-based: the best answer has rank 1.")
        optimistic = (scores > scores.gather(1, targets[:, None])).sum(1) + 1
        if abs(got - float((1.0 / optimistic.double()).mean())) < 1e-6:
            _fail(f"MRR counts ties in the answer's favour ({got:.4f}, expected {want:.4f}).",
                  "count the candidates scoring >= the right one (including itself) as its rank.")
        if abs(got - float((1.0 / (ranks.double() + 1)).mean())) < 1e-6:
            _fail("MRR uses rank + 1.", "the rank already counts the answer itself; rank 1 gives 1/1.")
        _fail(f"MRR = {got:.4f}, expected {want:.4f}.", "MRR = mean over queries of 1 / rank of the right answer.")
    return "MRR: correct (including ties)."
