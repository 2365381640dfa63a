"""Measuring search: ranks, MRR, recall@k, exact indexes, word-matching baselines, fusion.

A search system gives every (query, candidate) pair a score; a query has one right answer,
and what matters is the *rank* of that answer among all candidates (:func:`ranks_of_targets`,
ties counted against it). Two summaries of the ranks: the mean reciprocal rank :func:`mrr`
and :func:`recall_at_k`. Baselines that need no training: :class:`TfidfRetriever` and
:class:`BM25Retriever` on words split from identifiers (:func:`code_words`).
:func:`reciprocal_rank_fusion` merges the rankings of several systems, and
:func:`paired_bootstrap` puts a confidence interval on the MRR difference of two systems
measured on the same queries.
"""
from __future__ import annotations

import re
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from gptlib.stats import bootstrap_interval

__all__ = ["ranks_of_targets", "mrr", "recall_at_k", "retrieval_metrics", "random_mrr",
           "ExactIndex", "FaissIndex", "code_words", "TfidfRetriever", "BM25Retriever",
           "reciprocal_rank_fusion", "paired_bootstrap", "mrr_interval"]


def ranks_of_targets(scores: torch.Tensor, targets: torch.Tensor | Sequence[int]) -> torch.Tensor:
    """1-based rank of each query's right answer: ``scores`` ``(Q, N)``, ``targets`` ``(Q,)``.

    Ties count against the answer: its rank is the number of candidates scoring at least as
    high, so a scorer that gives everything 0 gets rank N, not 1.
    """
    scores = torch.as_tensor(scores)
    targets = torch.as_tensor(targets, dtype=torch.long)
    if scores.dim() != 2:
        raise ValueError(f"scores must be (queries, candidates), got shape {tuple(scores.shape)}")
    if targets.shape != (scores.shape[0],):
        raise ValueError(f"need one target per query: {scores.shape[0]} queries, targets of "
                         f"shape {tuple(targets.shape)}")
    if scores.shape[1] == 0:
        raise ValueError("no candidates: the corpus is empty")
    if targets.numel() and (targets.min() < 0 or targets.max() >= scores.shape[1]):
        raise ValueError(f"targets must index the {scores.shape[1]} candidates "
                         f"(0..{scores.shape[1] - 1})")
    right = scores.gather(1, targets[:, None])
    return (scores >= right).sum(dim=1)


def mrr(ranks: torch.Tensor | Sequence[int]) -> float:
    """Mean reciprocal rank: the average of 1 / rank (1.0 if the answer is always first)."""
    ranks = torch.as_tensor(ranks, dtype=torch.float64)
    if ranks.numel() == 0:
        raise ValueError("mrr of no queries is undefined")
    if (ranks < 1).any():
        raise ValueError("ranks are 1-based: the best possible rank is 1")
    return float((1.0 / ranks).mean())


def random_mrr(n: int) -> float:
    """MRR of guessing among ``n`` candidates: the harmonic number ``H_n`` over ``n``."""
    if n < 1:
        raise ValueError(f"need at least one candidate, got {n}")
    return sum(1.0 / r for r in range(1, n + 1)) / n


def recall_at_k(ranks: torch.Tensor | Sequence[int], k: int,
                n_candidates: int | None = None) -> float:
    """Share of queries whose right answer is in the top ``k``."""
    ranks = torch.as_tensor(ranks)
    if ranks.numel() == 0:
        raise ValueError("recall@k of no queries is undefined")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if n_candidates is not None and k > n_candidates:
        raise ValueError(f"k={k} is larger than the corpus ({n_candidates} candidates): every "
                         "answer would be found; use k <= the number of candidates")
    return float((ranks <= k).double().mean())


def retrieval_metrics(scores: torch.Tensor, targets: torch.Tensor | Sequence[int],
                      ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """``{"MRR": ..., "R@1": ..., "R@5": ..., "R@10": ...}`` from a score matrix ``(Q, N)``."""
    ranks = ranks_of_targets(scores, targets)
    out = {"MRR": mrr(ranks)}
    for k in ks:
        out[f"R@{k}"] = recall_at_k(ranks, k, n_candidates=torch.as_tensor(scores).shape[1])
    return out


def _check_search_input(n: int, dim: int, queries: torch.Tensor, k: int) -> None:
    if queries.dim() != 2 or queries.shape[1] != dim:
        raise ValueError(f"queries must have shape (Q, {dim}) like the indexed vectors, "
                         f"got {tuple(queries.shape)}")
    if not 1 <= k <= n:
        raise ValueError(f"k={k} but the index holds {n} vectors: choose 1 <= k <= {n}")


class ExactIndex:
    """Exact cosine search: the vectors in one matrix, queries scored by a matrix product.

    Vectors are L2-normalised on the way in, so the inner product is the cosine similarity.
    """

    def __init__(self, vectors: torch.Tensor, batch_size: int = 1024) -> None:
        vectors = torch.as_tensor(vectors, dtype=torch.float32)
        if vectors.dim() != 2:
            raise ValueError(f"vectors must have shape (N, dim), got {tuple(vectors.shape)}")
        if vectors.shape[0] == 0:
            raise ValueError("cannot build an index of an empty corpus: add at least one vector")
        self.vectors = F.normalize(vectors, dim=-1)
        self.batch_size = batch_size

    def __len__(self) -> int:
        return self.vectors.shape[0]

    def search(self, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(scores (Q, k), ids (Q, k))`` of the ``k`` most similar vectors, best first."""
        queries = torch.as_tensor(queries, dtype=torch.float32)
        _check_search_input(len(self), self.vectors.shape[1], queries, k)
        queries = F.normalize(queries, dim=-1)
        scores, ids = [], []
        for start in range(0, queries.shape[0], self.batch_size):
            top = (queries[start:start + self.batch_size] @ self.vectors.T).topk(k, dim=1)
            scores.append(top.values)
            ids.append(top.indices)
        return torch.cat(scores), torch.cat(ids)


class FaissIndex:
    """The same exact search through faiss (``IndexFlatIP``: flat, inner product)."""

    def __init__(self, vectors: torch.Tensor) -> None:
        import faiss

        vectors = torch.as_tensor(vectors, dtype=torch.float32)
        if vectors.dim() != 2:
            raise ValueError(f"vectors must have shape (N, dim), got {tuple(vectors.shape)}")
        if vectors.shape[0] == 0:
            raise ValueError("cannot build an index of an empty corpus: add at least one vector")
        self.dim = vectors.shape[1]
        self.index = faiss.IndexFlatIP(self.dim)
        self.index.add(np.ascontiguousarray(F.normalize(vectors, dim=-1).numpy()))

    def __len__(self) -> int:
        return self.index.ntotal

    def search(self, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        queries = torch.as_tensor(queries, dtype=torch.float32)
        _check_search_input(len(self), self.dim, queries, k)
        q = np.ascontiguousarray(F.normalize(queries, dim=-1).numpy())
        scores, ids = self.index.search(q, k)
        return torch.from_numpy(scores), torch.from_numpy(ids)


def code_words(text: str) -> list[str]:
    """Lower-case words of text or code, identifiers split: ``readLine_count`` -> read, line,
    count."""
    words = []
    for token in re.findall(r"[A-Za-z]+|\d+", text):
        words.extend(w.lower() for w in re.findall(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|\d+", token))
    return words


class TfidfRetriever:
    """TF-IDF vectors (sublinear tf ``1 + log tf``, smoothed idf), cosine similarity."""

    def __init__(self, documents: Sequence[str]) -> None:
        if len(documents) == 0:
            raise ValueError("TfidfRetriever needs at least one document")
        tokenized = [code_words(d) for d in documents]
        self.vocab: dict[str, int] = {}
        for words in tokenized:
            for w in words:
                self.vocab.setdefault(w, len(self.vocab))
        counts = self._counts(tokenized)
        df = (counts > 0).sum(axis=0)
        self.idf = np.log((1 + len(documents)) / (1 + df)) + 1.0
        self.doc_vectors = self._weigh(counts)

    def _counts(self, tokenized: Sequence[list[str]]) -> np.ndarray:
        counts = np.zeros((len(tokenized), len(self.vocab)), dtype=np.float32)
        for i, words in enumerate(tokenized):
            for w in words:
                j = self.vocab.get(w)
                if j is not None:
                    counts[i, j] += 1
        return counts

    def _weigh(self, counts: np.ndarray) -> np.ndarray:
        tf = np.where(counts > 0, 1.0 + np.log(np.maximum(counts, 1.0)), 0.0)
        v = tf * self.idf
        return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)

    def scores(self, queries: Sequence[str]) -> torch.Tensor:
        """``(Q, N)`` cosine similarities of the queries to the documents."""
        q = self._weigh(self._counts([code_words(t) for t in queries]))
        return torch.from_numpy((q @ self.doc_vectors.T).astype(np.float32))


class BM25Retriever:
    """Okapi BM25 (Robertson & Zaragoza, 2009) through ``rank_bm25``, on :func:`code_words`."""

    def __init__(self, documents: Sequence[str], k1: float = 1.5, b: float = 0.75) -> None:
        from rank_bm25 import BM25Okapi

        if len(documents) == 0:
            raise ValueError("BM25Retriever needs at least one document")
        self.bm25 = BM25Okapi([code_words(d) or ["<empty>"] for d in documents], k1=k1, b=b)

    def scores(self, queries: Sequence[str]) -> torch.Tensor:
        """``(Q, N)`` BM25 scores of the documents for each query."""
        return torch.tensor(np.stack([self.bm25.get_scores(code_words(q)) for q in queries]),
                            dtype=torch.float32)


def reciprocal_rank_fusion(*score_matrices: torch.Tensor, k: float = 60.0) -> torch.Tensor:
    """Reciprocal rank fusion (Cormack et al., 2009): ``sum over systems of 1 / (k + rank)``.

    Each ``(Q, N)`` score matrix is turned into ranks (1 = best, ties broken by position) and
    only the ranks are combined, so systems whose scores live on different scales (BM25's
    unbounded sums, cosines in [-1, 1]) can be fused without calibration. ``k = 60`` is the
    paper's constant: it damps the weight of the very top ranks.
    """
    if not score_matrices:
        raise ValueError("reciprocal_rank_fusion needs at least one score matrix")
    shape = torch.as_tensor(score_matrices[0]).shape
    fused = torch.zeros(shape, dtype=torch.float64)
    for s in score_matrices:
        s = torch.as_tensor(s)
        if s.shape != shape:
            raise ValueError(f"all score matrices must have the same (queries, candidates) shape: "
                             f"{tuple(shape)} vs {tuple(s.shape)}")
        order = s.argsort(dim=1, descending=True, stable=True)
        ranks = torch.empty_like(order)
        ranks.scatter_(1, order, torch.arange(1, shape[1] + 1).expand_as(order).contiguous())
        fused += 1.0 / (k + ranks.double())
    return fused


def paired_bootstrap(ranks_a: torch.Tensor | Sequence[int], ranks_b: torch.Tensor | Sequence[int],
                     n_resamples: int = 2000, seed: int = 0,
                     level: float = 0.95) -> tuple[float, float, float]:
    """``(difference, low, high)``: MRR(a) - MRR(b) and a percentile bootstrap interval.

    Both systems answered the same queries, so the queries are resampled *in pairs*: the
    interval reflects which queries happen to be in the test set, for both systems at once.
    """
    a = 1.0 / torch.as_tensor(ranks_a, dtype=torch.float64)
    b = 1.0 / torch.as_tensor(ranks_b, dtype=torch.float64)
    if a.shape != b.shape or a.dim() != 1 or a.numel() == 0:
        raise ValueError(f"need the ranks of the same queries for both systems, got shapes "
                         f"{tuple(a.shape)} and {tuple(b.shape)}")
    return bootstrap_interval(a - b, n_resamples=n_resamples, seed=seed, level=level)


def mrr_interval(ranks: torch.Tensor | Sequence[int], n_resamples: int = 2000, seed: int = 0,
                 level: float = 0.95) -> tuple[float, float, float]:
    """``(MRR, low, high)``: a percentile bootstrap interval over the queries."""
    rr = 1.0 / torch.as_tensor(ranks, dtype=torch.float64)
    if rr.dim() != 1 or rr.numel() == 0:
        raise ValueError(f"need a 1-D tensor of ranks, got shape {tuple(rr.shape)}")
    return bootstrap_interval(rr, n_resamples=n_resamples, seed=seed, level=level)
