"""Turning next-token scores into text: decoding strategies and the generation loop.

A language model gives, for the next position, a score (logit) per vocabulary entry.
How we *choose* a token from those scores changes the text a lot:

- greedy: always the most likely token (deterministic, often repetitive);
- temperature: divide logits by ``T`` before the softmax; ``T < 1`` sharpens, ``T > 1`` flattens;
- top-k: sample only among the ``k`` most likely tokens;
- top-p (nucleus): sample among the smallest set of tokens whose total probability reaches ``p``.

Each step is a small function (``apply_temperature``, ``top_k_filter``, ``top_p_filter``,
``sample_next``) so chapters can show them one at a time; ``generate`` strings them together
with a KV cache.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

__all__ = ["apply_temperature", "top_k_filter", "top_p_filter", "sample_next", "generate"]


def apply_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """``logits / temperature``. Must be > 0 (temperature 0 means greedy: use ``sample_next``)."""
    if temperature <= 0:
        raise ValueError(
            f"temperature must be > 0, got {temperature} (for greedy decoding use greedy=True)."
        )
    return logits / temperature


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the ``k`` largest logits of the last dimension; set all others to ``-inf``.

    Exactly ``k`` survive even when there are ties at the boundary. ``k >= vocab`` is a no-op.
    """
    if k < 1:
        raise ValueError(f"top_k must be >= 1, got {k}.")
    if k >= logits.size(-1):
        return logits
    top = torch.topk(logits, k, dim=-1)
    filtered = torch.full_like(logits, float("-inf"))
    return filtered.scatter(-1, top.indices, top.values)


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus filter: keep the smallest set of most likely tokens whose probability sums to >=
    ``p``.

    The most likely token is always kept (so ``p`` close to 0 is greedy); ``p = 1`` keeps all.
    """
    if not 0.0 < p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {p}.")
    if p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    probs = torch.softmax(sorted_logits.float(), dim=-1)
    # Probability mass of all *more* likely tokens. A token is dropped when those alone
    # already reach p; the first token has 0 before it and always stays.
    mass_before = torch.cumsum(probs, dim=-1) - probs
    drop_sorted = mass_before >= p
    drop = drop_sorted.scatter(-1, order, drop_sorted)  # back to vocabulary order
    return logits.masked_fill(drop, float("-inf"))


def sample_next(
    logits: torch.Tensor,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    greedy: bool = False,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Pick one token per row from ``logits`` of shape ``(B, V)``; returns ``(B,)`` token ids.

    ``greedy=True`` or ``temperature == 0`` takes the argmax. Otherwise: temperature, then
    top-k, then top-p, then a draw from the softmax. ``generator`` makes the draw reproducible;
    a generator on another device than ``logits`` (e.g. a CPU one) is honoured by sampling there.
    """
    if greedy or temperature == 0:
        return logits.argmax(dim=-1)
    logits = apply_temperature(logits.float(), temperature)  # fp32: bf16 probabilities are coarse
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    if top_p is not None:
        logits = top_p_filter(logits, top_p)
    probs = torch.softmax(logits, dim=-1)
    if generator is not None and generator.device != probs.device:
        return (
            torch.multinomial(probs.to(generator.device), 1, generator=generator)
            .squeeze(-1)
            .to(probs.device)
        )
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def _next_logits(model: nn.Module, context: torch.Tensor, kv_cache) -> torch.Tensor:
    """Logits ``(B, V)`` for the token after ``context``."""
    # GPT can skip the LM head for all but the last position (a model says so by this flag;
    # checking the class instead would make this module import gptlib.model, which imports it)
    if getattr(model, "supports_last_only", False):
        return model(context, kv_cache=kv_cache, last_only=True)[:, -1, :]
    return model(context, kv_cache=kv_cache)[:, -1, :]


def _ends_with(tokens: list[int], stop: Sequence[Sequence[int]]) -> int:
    """Length of the stop sequence that ``tokens`` ends with, or 0."""
    for seq in stop:
        n = len(seq)
        if n and len(tokens) >= n and tokens[-n:] == list(seq):
            return n
    return 0


@torch.no_grad()
def generate(
    model: nn.Module,
    idx: torch.Tensor,
    max_new_tokens: int,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    greedy: bool = False,
    stop: Sequence[Sequence[int]] | None = None,
    use_cache: bool = True,
    generator: torch.Generator | None = None,
    eos_token: int | None = None,
    pad_token: int | None = None,
) -> torch.Tensor:
    """Extend the prompt ``idx`` ``(B, T)`` by up to ``max_new_tokens`` sampled tokens.

    Returns the prompt followed by the new tokens, ``(B, T + n)`` with ``n <= max_new_tokens``.

    Args:
        temperature, top_k, top_p, greedy, generator: see ``sample_next``.
        stop: token-id sequences; a row stops as soon as its *generated* tokens end with one,
            and the stop sequence itself is removed from the output. With ``B > 1`` generation
            continues until every row has stopped (or hit ``eos_token``).
        eos_token: a row stops after producing this token; unlike a stop sequence it is kept.
        pad_token: with ``B > 1``, fills the positions of rows that stopped before the others
            (and replaces their stripped stop sequence); defaults to ``eos_token``, else 0.
        use_cache: decode with a KV cache (each step feeds only the newest token).

    Context longer than ``block_size``: the model only knows ``block_size`` positions, so
    the context is cropped to the last ``block_size`` tokens. With the cache on, once the
    cache is full generation falls back to that cropped, uncached mode (cached keys carry
    their old positions, so they cannot simply be shifted); it never stops with an error.

    The model is put in eval mode (no dropout) for the call and restored afterwards.
    """
    if idx.dim() != 2:
        raise ValueError(f"idx must be (batch, time) token ids, got shape {tuple(idx.shape)}.")
    if not getattr(model.config, "causal", True):
        raise ValueError(
            "generate() needs a causal model: this one attends in both directions "
            "(a masked LM, GPTConfig(causal=False)), so it was never trained to predict "
            "the next token. Fill blanks with gptlib.mlm instead."
        )
    block_size = model.config.block_size
    B, T0 = idx.shape
    stop = [list(s) for s in stop] if stop else []
    if pad_token is None:
        pad_token = eos_token if eos_token is not None else 0
    track = (
        bool(stop) or eos_token is not None
    )  # needs a GPU->CPU sync per step, so only when asked

    # Output buffer written in place (no torch.cat per step).
    out = torch.full((B, T0 + max_new_tokens), pad_token, dtype=torch.long, device=idx.device)
    out[:, :T0] = idx
    length = T0
    generated: list[list[int]] = [[] for _ in range(B)]
    end_of_row: list[int | None] = [None] * B  # final length of each finished row

    kv_cache = model.new_kv_cache() if use_cache and hasattr(model, "new_kv_cache") else None
    was_training = model.training
    model.eval()
    try:
        for _ in range(max_new_tokens):
            if kv_cache is not None and kv_cache.pos >= block_size:
                kv_cache = None  # cache full: fall back to cropped, uncached decoding
            if kv_cache is None:
                context = out[:, max(0, length - block_size) : length]
            elif kv_cache.pos == 0:
                context = out[:, max(0, length - block_size) : length]  # prefill with the prompt
            else:
                context = out[:, length - 1 : length]  # only the newest token
            logits = _next_logits(model, context, kv_cache)
            next_token = sample_next(
                logits,
                temperature=temperature,
                top_k=top_k,
                top_p=top_p,
                greedy=greedy,
                generator=generator,
            )
            if track and any(e is not None for e in end_of_row):
                finished = torch.tensor([e is not None for e in end_of_row], device=idx.device)
                next_token = next_token.masked_fill(finished, pad_token)
            out[:, length] = next_token
            length += 1

            if track:
                for b, token in enumerate(next_token.tolist()):
                    if end_of_row[b] is not None:
                        continue
                    generated[b].append(token)
                    n_stop = _ends_with(generated[b], stop)
                    if n_stop:
                        end_of_row[b] = length - n_stop
                        out[b, length - n_stop : length] = pad_token  # strip the stop sequence
                    elif token == eos_token:
                        end_of_row[b] = length
                if all(e is not None for e in end_of_row):
                    break
    finally:
        model.train(was_training)

    if track:
        # Crop to the longest row; shorter rows keep padding after their end.
        length = max(e if e is not None else length for e in end_of_row)
    return out[:, :length]
