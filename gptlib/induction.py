"""Induction heads (归纳头): the copying circuit, in attention-only transformers small to see.

Olsson et al. (2022) found that transformers learn to continue ``... [A][B] ... [A]`` with
``[B]`` through two attention heads in two layers: a *previous-token head* in layer 0 writes
into every position which token came before it, and an *induction head* in layer 1 attends
from the current token ``[A]`` to the position whose previous token was ``[A]`` (the ``[B]``
after its earlier occurrence) and copies it. A one-layer model cannot build that pair, so it
is the control. They saw the circuit appear abruptly, a *phase change* (相变): the loss on
repeated tokens drops and the induction score jumps at the same step.

This module holds what that experiment needs:

- :func:`recurring_batch`: random tokens in which segments of random length recur at random
  offsets (a fixed period would let one layer solve the task by position);
- :class:`AttnOnly`: an attention-only transformer (no MLPs), ``model(idx) -> logits``,
  ``model.attention_weights(idx)`` for the scores;
- :func:`repeated_tokens`, :func:`induction_score_from_attention`, :func:`head_scores`
  (induction score and previous-token score of every head), :func:`copy_losses` (loss on the
  first vs the second copy of a random sequence);
- :func:`train_attn_only`: the training loop that records those curves as it goes.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = [
    "AttnOnlyConfig",
    "AttnOnly",
    "recurring_batch",
    "repeated_tokens",
    "induction_score_from_attention",
    "previous_token_score",
    "head_scores",
    "copy_losses",
    "train_attn_only",
    "phase_change_step",
    "ablate_head",
]


# --------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------


@dataclass
class AttnOnlyConfig:
    vocab_size: int = 64
    block_size: int = 64
    n_layer: int = 2
    n_head: int = 4
    n_embd: int = 64
    pos_init: str = "sinusoidal"  # or "normal": how the learned positions start
    # Scale of the initial token and position embeddings. At 1.0 (PyTorch's default for
    # nn.Embedding) the query-key products are large enough from the start for attention to
    # sharpen onto one position; at GPT-2's 0.02 every head starts almost uniform, the
    # gradient towards a previous-token head is tiny, and the plateau outlasts a CPU budget
    # (measured: no phase change in 2,500 steps at 0.02; one at ~350 steps at 1.0).
    embed_std: float = 0.02


class _Attention(nn.Module):
    def __init__(self, cfg: AttnOnlyConfig):
        super().__init__()
        if cfg.n_embd % cfg.n_head:
            raise ValueError(f"n_embd {cfg.n_embd} must be a multiple of n_head {cfg.n_head}")
        self.n_head = cfg.n_head
        self.qkv = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=False)
        self.proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=False)

    def forward(self, x: torch.Tensor, return_weights: bool = False):
        B, T, C = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.n_head, C // self.n_head).permute(2, 0, 3, 1, 4)
        att = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
        mask = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
        att = att.masked_fill(~mask, float("-inf")).softmax(-1)
        y = (att @ v).transpose(1, 2).reshape(B, T, C)
        return self.proj(y), (att if return_weights else None)


class AttnOnly(nn.Module):
    """Token + learned position embeddings, ``n_layer`` attention layers on a residual stream
    (each reads a LayerNorm of it), a final LayerNorm and an unembedding. No MLP: everything
    the model does is moving information between positions, which is what makes its heads
    readable."""

    def __init__(self, config: AttnOnlyConfig):
        super().__init__()
        self.config = config
        self.tok = nn.Embedding(config.vocab_size, config.n_embd)
        self.pos = nn.Embedding(config.block_size, config.n_embd)
        self.norms = nn.ModuleList(nn.LayerNorm(config.n_embd) for _ in range(config.n_layer))
        self.attn = nn.ModuleList(_Attention(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd)
        self.head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        for p in self.parameters():
            if p.dim() == 2:
                nn.init.normal_(p, std=0.02)
        nn.init.normal_(self.tok.weight, std=config.embed_std)
        if config.pos_init == "normal":
            nn.init.normal_(self.pos.weight, std=config.embed_std)
        if config.pos_init == "sinusoidal":
            # the original Transformer's sinusoids (chapter 2), scaled to the token embeddings'
            # size, as the starting point of the learned positions: "one step back" is then
            # the same linear map at every position, and a previous-token head is easy to find
            with torch.no_grad():
                self.pos.weight.copy_(sinusoids(config.block_size, config.n_embd) * 0.02 * 2**0.5)
        elif config.pos_init != "normal":
            raise ValueError(f"pos_init must be 'sinusoidal' or 'normal', got {config.pos_init!r}")

    @classmethod
    def from_config(cls, config: dict) -> "AttnOnly":
        """The builder :func:`gptlib.assets.load` calls: an untrained model from a dict."""
        return cls(AttnOnlyConfig(**config))

    def _run(self, idx: torch.Tensor, weights: bool):
        T = idx.shape[1]
        if T > self.config.block_size:
            raise ValueError(
                f"sequence of {T} tokens is longer than block_size {self.config.block_size}"
            )
        x = self.tok(idx) + self.pos(torch.arange(T, device=idx.device))
        maps = []
        for norm, attn in zip(self.norms, self.attn):
            y, att = attn(norm(x), weights)
            x = x + y
            maps.append(att)
        return self.head(self.ln_f(x)), maps

    def forward(self, idx: torch.Tensor, kv_cache: None = None) -> torch.Tensor:
        """Logits ``(B, T, vocab_size)``. ``kv_cache`` is accepted for
        :func:`gptlib.sampling.generate` and must be None: this model keeps no cache."""
        if kv_cache is not None:
            raise ValueError("AttnOnly keeps no KV cache: generate with use_cache=False")
        return self._run(idx, False)[0]

    @torch.no_grad()
    def attention_weights(self, idx: torch.Tensor) -> list[torch.Tensor]:
        """One ``(B, n_head, T, T)`` map per layer (rows: queries)."""
        return self._run(idx, True)[1]

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


def sinusoids(n_pos: int, dim: int) -> torch.Tensor:
    """``(n_pos, dim)`` sinusoidal position codes of Vaswani et al. (2017)."""
    pos = torch.arange(n_pos, dtype=torch.float32)[:, None]
    freq = torch.exp(-math.log(10000.0) * torch.arange(0, dim, 2, dtype=torch.float32) / dim)
    out = torch.zeros(n_pos, dim)
    out[:, 0::2] = torch.sin(pos * freq)
    out[:, 1::2] = torch.cos(pos * freq[: dim // 2])
    return out


# --------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------


def recurring_batch(
    generator: torch.Generator,
    batch_size: int,
    block_size: int,
    vocab_size: int,
    min_len: int = 4,
    max_len: int = 16,
    copies: int = 1,
    fill: bool = False,
) -> tuple[torch.Tensor, ...]:
    """``(x, y, repeat_mask)``: random tokens with segments that recur at random offsets.

    Each row is ``block_size + 1`` uniform random tokens; then ``copies`` times a segment of
    random length in ``[min_len, max_len]`` starting at a random position is written again at a
    random later position (after its end). Segment length, source and destination vary from row
    to row, so no fixed distance predicts the copy: only matching content does. ``repeat_mask``
    marks the targets an induction head gets right: the token before the target occurred earlier,
    followed by the target (inside a recurring segment; now and then by chance).

    ``fill=True`` gives the dense version: after a random prefix of up to ``max_len`` tokens, one
    segment of random length recurs again and again to the end of the row. Its period changes
    from row to row, so position alone still predicts nothing; far more tokens are predictable,
    so the circuit forms in far fewer steps (``copies`` is then ignored).
    """
    if max_len * 2 + 2 > block_size:
        raise ValueError(
            f"max_len {max_len} does not fit twice in block_size {block_size}: "
            "lower max_len or raise block_size"
        )
    n = block_size + 1
    seq = torch.randint(vocab_size, (batch_size, n), generator=generator)
    mask = torch.zeros(batch_size, n, dtype=torch.bool)

    def rand(lo: int, hi: int) -> int:  # inclusive
        return int(torch.randint(lo, hi + 1, (1,), generator=generator))

    for b in range(batch_size):
        if fill:
            length, start = rand(min_len, max_len), rand(0, max_len)
            seg = seq[b, start : start + length].clone()
            reps = (n - start + length - 1) // length
            seq[b, start:] = seg.repeat(reps)[: n - start]
            continue
        for _ in range(copies):
            length = rand(min_len, max_len)
            src = rand(0, n - 2 * length)
            dst = rand(src + length, n - length)
            seq[b, dst : dst + length] = seq[b, src : src + length]
    # bigram (seq[t-1], seq[t]) seen before at (j-1, j), j < t: copying predicts seq[t]
    same = (seq[:, :-1, None] == seq[:, None, :-1]) & (seq[:, 1:, None] == seq[:, None, 1:])
    mask[:, 1:] = (same & torch.ones(n - 1, n - 1, dtype=torch.bool).tril(-1)).any(-1)
    return seq[:, :-1], seq[:, 1:], mask[:, 1:]


def repeated_tokens(n_seq: int, length: int, vocab_size: int, seed: int = 0) -> torch.Tensor:
    """``n_seq`` rows of ``length`` distinct random tokens followed by the same tokens again:
    shape ``(n_seq, 2 * length)`` (Olsson et al.'s test sequence)."""
    if length > vocab_size:
        raise ValueError(
            f"length {length} > vocab_size {vocab_size}: tokens of a half must be distinct"
        )
    g = torch.Generator().manual_seed(seed)
    half = torch.stack([torch.randperm(vocab_size, generator=g)[:length] for _ in range(n_seq)])
    return torch.cat([half, half], 1)


# --------------------------------------------------------------------------------------
# Scores
# --------------------------------------------------------------------------------------


def induction_score_from_attention(att: torch.Tensor, length: int) -> torch.Tensor:
    """Induction score of attention maps on a sequence repeated once (two halves of ``length``).

    ``att`` has shape ``(..., T, T)`` with ``T = 2 * length`` (rows: queries). For every query
    ``t`` of the second half the previous occurrence of its token is at ``t - length`` and the
    token after it at ``t - length + 1``: the score is the mean weight on that key over the
    ``length`` queries. 1 for a perfect induction head; about ``1 / t`` for uniform attention.
    """
    T = att.shape[-1]
    if att.shape[-2] != T or T != 2 * length:
        raise ValueError(
            f"attention of shape {tuple(att.shape)} does not fit two halves of length "
            f"{length}: the last two dimensions must both be {2 * length}"
        )
    q = torch.arange(length, T)
    return att[..., q, q - length + 1].mean(-1)


def previous_token_score(att: torch.Tensor) -> torch.Tensor:
    """Mean attention from each position ``t >= 1`` to ``t - 1``: 1 for a previous-token head."""
    T = att.shape[-1]
    t = torch.arange(1, T)
    return att[..., t, t - 1].mean(-1)


@torch.no_grad()
def head_scores(model: AttnOnly, length: int = 20, n_seq: int = 16, seed: int = 0) -> dict:
    """``{"induction": ..., "previous": ...}``, each ``(n_layer, n_head)``, on repeated tokens."""
    idx = repeated_tokens(n_seq, length, model.config.vocab_size, seed).to(_device(model))
    maps = model.attention_weights(idx)
    return {
        "induction": torch.stack(
            [induction_score_from_attention(a, length).mean(0) for a in maps]
        ).cpu(),
        "previous": torch.stack([previous_token_score(a).mean(0) for a in maps]).cpu(),
    }


@torch.no_grad()
def copy_losses(
    model: torch.nn.Module,
    length: int = 20,
    n_seq: int = 64,
    seed: int = 0,
    vocab_size: int | None = None,
) -> dict:
    """Mean loss (nats/token) on the first and on the second copy of ``length`` random tokens.

    The first copy is unpredictable (``ln vocab``); a model that copies from its context gets
    the second almost free. Positions 1..length-1 of each copy are scored (the first token of
    each has no usable predecessor). Returns ``{"first": ..., "second": ..., "uniform": ln V}``.
    """
    from gptlib.evaluate import eval_mode, token_logprobs

    vocab = vocab_size or model.config.vocab_size
    idx = repeated_tokens(n_seq, length, vocab, seed).to(_device(model))
    with eval_mode(model):
        nll = -token_logprobs(model(idx[:, :-1]), idx[:, 1:]).cpu()  # predicts positions 1..2L-1
    return {
        "first": float(nll[:, : length - 1].mean()),
        "second": float(nll[:, length:].mean()),
        "uniform": math.log(vocab),
    }


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


# --------------------------------------------------------------------------------------
# Training with the curves recorded
# --------------------------------------------------------------------------------------


def train_attn_only(
    model: AttnOnly,
    *,
    steps: int,
    lr: float = 1e-3,
    batch_size: int = 32,
    min_len: int = 4,
    max_len: int = 16,
    copies: int = 1,
    fill: bool = False,
    weight_decay: float = 0.0,
    warmup: int = 0,
    eval_every: int = 50,
    seed: int = 0,
    progress: bool = False,
) -> dict[str, Any]:
    """Train on :func:`recurring_batch` data with AdamW; returns ``{"history": [...], "wall_s"}``.

    Every ``eval_every`` steps a history entry records: ``loss`` (training loss, mean of the
    steps since the last entry), ``repeat_loss`` (the same, on predictable tokens only),
    ``copy1``/``copy2`` (:func:`copy_losses`), ``induction`` (best induction score of the last
    layer) and ``previous`` (best previous-token score of layer 0).
    """
    g = torch.Generator().manual_seed(seed)
    cfg = model.config
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay, betas=(0.9, 0.98))
    history: list[dict[str, float]] = []
    t0 = time.perf_counter()
    run_loss, run_rep, count = 0.0, 0.0, 0
    for step in range(steps + 1):
        if step % eval_every == 0 or step == steps:
            entry = {"step": step}
            if count:
                entry.update(loss=run_loss / count, repeat_loss=run_rep / count)
            entry.update(_probe(model))
            history.append(entry)
            run_loss, run_rep, count = 0.0, 0.0, 0
            if progress:
                print(
                    " ".join(
                        f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                        for k, v in entry.items()
                    ),
                    flush=True,
                )
            if step == steps:
                break
        for group in opt.param_groups:
            group["lr"] = lr * min(1.0, (step + 1) / warmup) if warmup else lr
        model.train()
        x, y, mask = recurring_batch(
            g, batch_size, cfg.block_size, cfg.vocab_size, min_len, max_len, copies, fill
        )
        nll = F.cross_entropy(model(x).flatten(0, 1), y.flatten(), reduction="none").view_as(y)
        loss = nll.mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        run_loss += loss.item()
        run_rep += nll.detach()[mask].mean().item() if mask.any() else 0.0
        count += 1
    model.eval()
    return {"history": history, "wall_s": time.perf_counter() - t0}


def _probe(model: AttnOnly) -> dict[str, float]:
    scores = head_scores(model, n_seq=8)
    losses = copy_losses(model, n_seq=32)
    return {
        "copy1": losses["first"],
        "copy2": losses["second"],
        "induction": float(scores["induction"][-1].max()),
        "previous": float(scores["previous"][0].max()),
    }


def phase_change_step(history: Sequence[dict], key: str = "copy2", drop: float = 0.5) -> int | None:
    """The first step at which ``key`` fell by more than ``drop`` (absolute) from one entry to the
    next: where the curve breaks, or None if it never does that abruptly."""
    for a, b in zip(history, history[1:]):
        if a[key] - b[key] > drop:
            return int(b["step"])
    return None


def config_dict(model: AttnOnly) -> dict:
    return asdict(model.config)


def ablate_head(model: AttnOnly, layer: int, head: int) -> AttnOnly:
    """A copy of ``model`` with head ``head`` of layer ``layer`` silenced (ablation, 消融).

    The head still attends, but its output is multiplied by zero: the columns of the output
    projection that read that head's slice of the concatenated heads are zeroed. Comparing the
    copy's loss with the original's says what the head was doing.
    """
    import copy

    cfg = model.config
    if not (0 <= layer < cfg.n_layer and 0 <= head < cfg.n_head):
        raise ValueError(
            f"no head ({layer}, {head}): the model has {cfg.n_layer} layers of "
            f"{cfg.n_head} heads (both counted from 0)"
        )
    out = copy.deepcopy(model)
    width = cfg.n_embd // cfg.n_head
    with torch.no_grad():
        out.attn[layer].proj.weight[:, head * width : (head + 1) * width] = 0
    return out.eval()
