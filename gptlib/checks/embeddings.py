"""Exercise checkers for chapter 10 (contrastive embeddings, adapters, fusion, metrics)."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from gptlib.checks import _fail, check_close, checker

__all__ = [
    "check_info_nce",
    "check_recall_at_k",
    "check_mrr",
    "check_rrf",
    "check_low_rank_adapter",
    "check_batch_info_nce",
]


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


@checker
def check_info_nce(fn: Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]) -> str:
    """``fn(x, y, scale)``: symmetric InfoNCE of unit vectors ``x``, ``y`` ``(B, C)`` with
    in-batch negatives."""
    g = torch.Generator().manual_seed(10)
    for B, C, scale in [(4, 8, 1.0), (7, 5, 20.0), (16, 32, 14.3)]:
        x = _unit((B, C), g)
        y = F.normalize(x + 0.8 * torch.randn(B, C, generator=g, dtype=torch.float64), dim=-1)
        out = fn(x.clone(), y.clone(), scale)
        if not isinstance(out, torch.Tensor):
            _fail(f"info_nce returned {type(out).__name__}, expected a torch.Tensor (a scalar).")
        if out.numel() != 1:
            _fail(
                f"info_nce returned shape {tuple(out.shape)}, expected a scalar (the mean loss).",
                "average the cross entropy over the batch (F.cross_entropy does by default).",
            )
        want = _reference_info_nce(x, y, scale)
        got = out.double().reshape(())
        if torch.isclose(got, want, atol=1e-6):
            continue
        labels = torch.arange(B)
        logits = scale * x @ y.T
        one_way = F.cross_entropy(logits, labels)
        other_way = F.cross_entropy(logits.T, labels)
        if torch.isclose(got, one_way, atol=1e-6) or torch.isclose(got, other_way, atol=1e-6):
            _fail(
                "your loss is only one direction (x -> y or y -> x).",
                "symmetric InfoNCE averages both: (CE(logits, labels) + CE(logits.T, labels)) / 2.",
            )
        unscaled = _reference_info_nce(x, y, 1.0)
        if scale != 1.0 and torch.isclose(got, unscaled, atol=1e-6):
            _fail(
                "the loss ignores the scale (the inverse temperature).",
                "multiply the similarities by scale before the softmax: logits = scale * x @ y.T.",
            )
        if torch.isclose(got, want * B, atol=1e-5) or torch.isclose(got, want * 2 * B, atol=1e-5):
            _fail(
                "the loss is summed, not averaged, over the batch.",
                "take the mean over the B rows.",
            )
        if torch.isclose(got, want * 2, atol=1e-6):
            _fail(
                "the loss is the sum of the two directions, not their mean.", "divide the sum by 2."
            )
        check_close(
            got,
            want,
            f"info_nce with B={B}, scale={scale}",
            atol=1e-6,
            hint="logits[i, j] = scale * <x_i, y_j>; the right 'class' of row i is column i.",
        )
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


@checker
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
            if (
                abs(got - float((ranks <= k + 1).double().mean())) < 1e-6
                or abs(got - float((ranks < k).double().mean())) < 1e-6
            ):
                _fail(
                    f"recall@{k} is off by one position ({got:.3f}, expected {want:.3f}).",
                    "rank 1 is the best; the answer counts if its rank is <= k.",
                )
            optimistic = (scores > scores.gather(1, targets[:, None])).sum(1) + 1
            if abs(got - float((optimistic <= k).double().mean())) < 1e-6:
                _fail(
                    f"recall@{k} counts ties in the answer's favour ({got:.3f}, "
                    f"expected {want:.3f}).",
                    "a candidate scoring the same as the answer must rank above it: "
                    "count scores >= the answer's score.",
                )
            _fail(
                f"recall@{k} = {got:.4f}, expected {want:.4f}.",
                "for each query, rank = number of candidates scoring >= the right one; "
                "recall@k = mean(rank <= k).",
            )
    return "recall@k: correct (including ties)."


@checker
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
            _fail(
                "MRR is NaN or infinite: a rank of 0 slipped in.",
                "ranks are 1-based: the best answer has rank 1.",
            )
        optimistic = (scores > scores.gather(1, targets[:, None])).sum(1) + 1
        if abs(got - float((1.0 / optimistic.double()).mean())) < 1e-6:
            _fail(
                f"MRR counts ties in the answer's favour ({got:.4f}, expected {want:.4f}).",
                "count the candidates scoring >= the right one (including itself) as its rank.",
            )
        if abs(got - float((1.0 / (ranks.double() + 1)).mean())) < 1e-6:
            _fail(
                "MRR uses rank + 1.", "the rank already counts the answer itself; rank 1 gives 1/1."
            )
        _fail(
            f"MRR = {got:.4f}, expected {want:.4f}.",
            "MRR = mean over queries of 1 / rank of the right answer.",
        )
    return "MRR: correct (including ties)."


def _reference_rrf(matrices, k: float) -> torch.Tensor:
    fused = torch.zeros(matrices[0].shape, dtype=torch.float64)
    for s in matrices:
        for q in range(s.shape[0]):
            order = sorted(range(s.shape[1]), key=lambda j: -float(s[q, j]))
            for rank, j in enumerate(order, start=1):
                fused[q, j] += 1.0 / (k + rank)
    return fused


@checker
def check_rrf(fn: Callable) -> str:
    """``fn(matrices, k)``: reciprocal rank fusion of a list of ``(Q, N)`` score matrices."""
    g = torch.Generator().manual_seed(13)
    for n_sys, Q, N, k in [(2, 3, 5, 60.0), (3, 4, 7, 1.0), (1, 2, 4, 10.0)]:
        mats = [torch.randn(Q, N, generator=g) * (10.0**i) for i in range(n_sys)]
        got = torch.as_tensor(fn([m.clone() for m in mats], k)).double()
        if got.shape != (Q, N):
            _fail(
                f"the fused scores have shape {tuple(got.shape)}, expected {(Q, N)}.",
                "one fused score per (query, candidate).",
            )
        want = _reference_rrf(mats, k)
        if torch.allclose(got, want, atol=1e-9):
            continue
        if torch.allclose(got, _reference_rrf(mats, k - 1), atol=1e-9):
            _fail("the ranks start at 0.", "the best candidate has rank 1: 1 / (k + 1).")
        if torch.allclose(got, _reference_rrf([-m for m in mats], k), atol=1e-9):
            _fail(
                "the ranks are reversed: the lowest score got rank 1.",
                "sort by score in descending order (the highest score is rank 1).",
            )
        if torch.allclose(got, sum(m.double() for m in mats), atol=1e-6):
            _fail(
                "you added the scores, not reciprocal ranks.",
                "turn each system's scores into ranks first; fusion only uses the ranks.",
            )
        _fail(
            f"fused scores differ from 1 / (k + rank) summed over systems (k={k}).",
            "for each system and query: rank 1 = highest score; add 1 / (k + rank).",
        )
    return "reciprocal rank fusion: correct (any scale of scores, any number of systems)."


@checker
def check_low_rank_adapter(cls: Callable) -> str:
    """``cls(dim, rank)``: an ``nn.Module`` mapping ``x -> x + (x A) B`` with ``A`` (dim, rank),
    ``B`` (rank, dim), starting as the identity and trainable from there."""
    dim, rank = 12, 3
    torch.manual_seed(0)
    model = cls(dim, rank)
    if not isinstance(model, torch.nn.Module):
        _fail(f"{cls.__name__}(dim, rank) is a {type(model).__name__}, not an nn.Module.")
    x = torch.randn(7, dim)
    out = model(x)
    if out.shape != x.shape:
        _fail(
            f"output shape {tuple(out.shape)}, expected {tuple(x.shape)}: "
            "the adapter keeps the size."
        )
    n_params = sum(p.numel() for p in model.parameters())
    if n_params != 2 * dim * rank:
        _fail(
            f"{n_params} parameters, expected 2 * dim * rank = {2 * dim * rank}.",
            "A is (dim, rank) and B is (rank, dim); no other parameters.",
        )
    if not torch.allclose(out, x, atol=1e-6):
        _fail(
            "an untrained adapter changes its input.",
            "start B at zero so that x + (x A) B = x: training starts from the pre-trained "
            "embedding (zero-shot) and moves away only as far as the data asks.",
        )
    (out * torch.randn(7, dim)).sum().backward()
    if all(p.grad is None or not p.grad.abs().sum() for p in model.parameters()):
        _fail(
            "no parameter gets a gradient at the start: it would never train.",
            "start B at zero but A random (if both are zero, both gradients are zero).",
        )
    with torch.no_grad():
        for p in model.parameters():
            p.normal_()
        delta = model(x) - x
        if torch.linalg.matrix_rank(delta) > rank:
            _fail("the change x -> out has rank above `rank`: it is not x + (x A) B.")
        y = torch.randn(7, dim)
        if not torch.allclose(model(x + y), model(x) + model(y), atol=1e-4):
            _fail("the adapter is not linear in x: x + (x A) B has no bias and no nonlinearity.")
        a, b = [p for p in model.parameters() if p.dim() == 2][:2]
        want = x + (x @ a) @ b if a.shape == (dim, rank) else x + (x @ b) @ a
        if not torch.allclose(model(x), want, atol=1e-4):
            _fail("the output is not x + (x A) B.")
    return "low-rank adapter: correct (identity at the start, rank-r residual update, trainable)."


def _reference_batch_info_nce(q, c, batch_size, scale):
    losses = []
    labels = torch.arange(batch_size)
    for start in range(0, q.shape[0] - batch_size + 1, batch_size):
        x, y = q[start : start + batch_size], c[start : start + batch_size]
        logits = scale * x @ y.T
        losses.append((F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2)
    return torch.stack(losses).mean()


def _with_remainder(q, c, batch_size, scale):
    losses = []
    for start in range(0, q.shape[0], batch_size):
        x, y = q[start : start + batch_size], c[start : start + batch_size]
        labels = torch.arange(x.shape[0])
        logits = scale * x @ y.T
        losses.append((F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2)
    return torch.stack(losses).mean()


@checker
def check_batch_info_nce(fn: Callable) -> str:
    """``fn(q, c, batch_size, scale)``: mean symmetric InfoNCE over consecutive batches of
    ``batch_size`` rows (a last incomplete batch is dropped)."""
    g = torch.Generator().manual_seed(14)
    for n, bs, scale in [(40, 8, 20.0), (50, 16, 10.0), (33, 4, 1.0)]:
        q = _unit((n, 6), g)
        c = F.normalize(q + 0.5 * torch.randn(n, 6, generator=g, dtype=torch.float64), dim=-1)
        got = torch.as_tensor(fn(q.clone(), c.clone(), bs, scale)).double().reshape(())
        want = _reference_batch_info_nce(q, c, bs, scale)
        if torch.isclose(got, want, atol=1e-6):
            continue
        if torch.isclose(got, _reference_batch_info_nce(q, c, n, scale), atol=1e-6):
            _fail(
                "you scored all rows as one batch.",
                "cut q and c into consecutive batches of batch_size rows; average their losses.",
            )
        if n % bs and torch.isclose(got, _with_remainder(q, c, bs, scale), atol=1e-6):
            _fail(
                "the last, incomplete batch is included.",
                "drop it: a smaller batch has fewer negatives, so its loss is not comparable.",
            )
        _fail(
            f"batch InfoNCE = {float(got):.4f}, expected {float(want):.4f} (n={n}, "
            f"batch_size={bs}).",
            "drop the last incomplete batch; both directions; times scale.",
        )
    return "batched InfoNCE: correct."
