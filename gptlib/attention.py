"""Attention: the one operation that lets a token look at the other tokens.

Everything a GPT does between its embeddings and its output layer is either attention
(tokens exchange information) or an MLP (each token thinks on its own). This module
holds the attention half, in four pieces:

- ``attention``: scaled dot-product attention written out step by step, returning the
  attention weights too, so chapters can plot who looks at whom.
- ``fused_attention``: the same maths through ``torch.nn.functional.scaled_dot_product_attention``,
  which on a GPU runs FlashAttention-style kernels that never build the (T, T) matrix.
- masks: ``causal_mask`` (no peeking at the future), ``bidirectional_mask`` (BERT-style,
  everyone sees everyone) and ``padding_mask`` (ignore padding tokens in a batch).
  Masks are boolean with **True = may attend**, and combine with ``&``.
- ``MultiHeadAttention``: the module used inside a GPT block, with a ``KVCache`` that
  makes generation cost O(T) per new token instead of re-running the whole prefix.

Shapes follow the convention ``(batch B, heads H, time T, head size d)``; the functions
work on any leading dimensions ``(..., T, d)``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "attention",
    "fused_attention",
    "causal_mask",
    "bidirectional_mask",
    "padding_mask",
    "KVCache",
    "MultiHeadAttention",
]


# ----------------------------------------------------------------------------- masks


def causal_mask(T: int, device: torch.device | str | None = None, offset: int = 0) -> torch.Tensor:
    """Lower-triangular boolean mask: query ``i`` may attend to keys ``0..i``.

    With ``offset > 0`` the ``T`` queries sit at absolute positions ``offset .. offset+T-1``
    after ``offset`` keys already held in a KV cache; the mask then has shape
    ``(T, offset + T)`` and query ``i`` may attend to keys ``0 .. offset + i``.
    That is what a cached *prefill* of several new tokens needs.

    >>> causal_mask(3).int()
    tensor([[1, 0, 0],
            [1, 1, 0],
            [1, 1, 1]], dtype=torch.int32)
    """
    ones = torch.ones(T, offset + T, dtype=torch.bool, device=device)
    # diagonal=offset shifts the triangle right by the number of cached keys.
    return torch.tril(ones, diagonal=offset)


def bidirectional_mask(T: int, device: torch.device | str | None = None) -> torch.Tensor:
    """All-True ``(T, T)`` mask: every token sees every other token (encoder-style)."""
    return torch.ones(T, T, dtype=torch.bool, device=device)


def padding_mask(lengths: torch.Tensor | list[int], T: int) -> torch.Tensor:
    """``(B, 1, 1, T)`` mask that is True on the first ``lengths[b]`` (real) tokens of row ``b``.

    The two singleton dimensions broadcast over heads and queries, so the mask hides
    padded *keys* from every query. Combine with causality by ``&``::

        mask = padding_mask(lengths, T) & causal_mask(T)   # (B, 1, T, T)
    """
    lengths = torch.as_tensor(lengths)
    positions = torch.arange(T, device=lengths.device)
    real = positions[None, :] < lengths[:, None]  # (B, T)
    return real[:, None, None, :]


# ----------------------------------------------------------------------------- attention


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scaled dot-product attention, one readable step at a time.

    Args:
        q: queries ``(..., Tq, d)``; k, v: keys and values ``(..., Tk, d)``.
        mask: boolean, broadcastable to ``(..., Tq, Tk)``; True where a query may attend.
        dropout_p: probability of dropping an attention weight (training only).

    Returns:
        ``(out, weights)`` with ``out`` of shape ``(..., Tq, d)`` and ``weights`` of shape
        ``(..., Tq, Tk)``; each row of ``weights`` is a probability distribution over keys.
    """
    d = q.size(-1)
    # 1. Similarity of every query with every key. Dividing by sqrt(d) keeps the scores'
    #    variance near 1 whatever the head size, so the softmax does not saturate.
    scores = q @ k.transpose(-2, -1) / math.sqrt(d)
    # 2. Forbidden pairs get -inf, which the softmax turns into exactly zero weight.
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    # 3. Scores -> probabilities over the keys (each row sums to 1).
    weights = torch.softmax(scores, dim=-1)
    if mask is not None:
        # A query whose keys are *all* masked (e.g. a padding position) gives softmax of
        # all -inf = NaN. Zeroing masked entries turns such rows into zeros (as the fused
        # kernel does) and leaves every other row unchanged.
        weights = weights.masked_fill(~mask, 0.0)
    if dropout_p > 0.0:
        weights = F.dropout(weights, p=dropout_p)
    # 4. Each output is the weighted average of the values.
    return weights @ v, weights


def fused_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None = None,
    is_causal: bool = False,
    dropout_p: float = 0.0,
) -> torch.Tensor:
    """The same computation as ``attention`` through PyTorch's fused kernel.

    On CUDA this dispatches to FlashAttention / memory-efficient kernels that never
    materialise the ``(Tq, Tk)`` weight matrix, so it is faster and uses less memory,
    but it cannot return the weights. ``is_causal=True`` (with no mask) is the fastest
    case. Passing both a mask and ``is_causal`` combines them (PyTorch alone refuses).
    """
    if is_causal and mask is not None:
        Tq, Tk = q.size(-2), k.size(-2)
        # Align the triangle to the *end* of the keys, which is right for cached decoding.
        mask = mask & causal_mask(Tq, q.device, offset=Tk - Tq)
        is_causal = False
    return F.scaled_dot_product_attention(
        q, k, v, attn_mask=mask, dropout_p=dropout_p, is_causal=is_causal
    )


# ----------------------------------------------------------------------------- KV cache


class KVCache:
    """Keys and values of every layer for the tokens seen so far, kept for generation.

    Without a cache, producing token ``t+1`` re-runs the model on all ``t`` previous
    tokens. But a token's key and value never change once computed (causal attention:
    later tokens cannot affect earlier ones), so we store them and feed only the new token.

    The buffers are preallocated once to ``max_len`` positions (when the first keys arrive,
    so they take the dtype and device of the model's activations, e.g. bf16 under autocast)
    and written in place; there is no ``torch.cat`` per step, which would copy the whole
    cache every token and fragment GPU memory.

    ``pos`` is the number of positions already filled, i.e. the position the next token gets.
    """

    def __init__(self, n_layer: int, max_len: int) -> None:
        self.n_layer = n_layer
        self.max_len = max_len
        self.keys: list[torch.Tensor | None] = [None] * n_layer
        self.values: list[torch.Tensor | None] = [None] * n_layer
        # Filled length per layer: plain ints, so reading them never waits for the GPU.
        self.lengths: list[int] = [0] * n_layer

    @property
    def pos(self) -> int:
        """Positions already cached (by the first layer, which is written first)."""
        return self.lengths[0]

    def reset(self) -> None:
        """Forget everything (the buffers are kept and simply overwritten)."""
        self.lengths = [0] * self.n_layer

    def update(
        self, layer_idx: int, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Append ``k, v`` of shape ``(B, H, T_new, d)`` for ``layer_idx``; return all keys/values
        so far.
        """
        start = self.lengths[layer_idx]
        end = start + k.size(-2)
        if end > self.max_len:
            raise ValueError(
                f"KV cache overflow: {end} positions needed but the cache holds "
                f"max_len={self.max_len}. "
                "Create a larger cache or crop the context."
            )
        if self.keys[layer_idx] is None:
            B, H, _, d = k.shape
            self.keys[layer_idx] = k.new_zeros(B, H, self.max_len, d)
            self.values[layer_idx] = v.new_zeros(B, H, self.max_len, d)
        k_buf, v_buf = self.keys[layer_idx], self.values[layer_idx]
        k_buf[:, :, start:end] = k  # in-place write at the current position
        v_buf[:, :, start:end] = v
        self.lengths[layer_idx] = end
        # Views, not copies: the attention reads the filled part of the buffer directly.
        return k_buf[:, :, :end], v_buf[:, :, :end]


# ----------------------------------------------------------------------------- module


class MultiHeadAttention(nn.Module):
    """Multi-head self-attention, GPT-2 layout.

    One linear layer ``c_attn`` produces queries, keys and values for all heads at once
    (a single big matmul is faster than three small ones), the heads attend in parallel,
    and ``c_proj`` mixes their outputs back into the residual stream. The names
    ``c_attn``/``c_proj`` match OpenAI's GPT-2 checkpoints, which makes conversion simple.
    """

    def __init__(
        self, n_embd: int, n_head: int, dropout: float = 0.0, bias: bool = True, causal: bool = True
    ) -> None:
        super().__init__()
        if n_embd % n_head != 0:
            raise ValueError(f"n_embd ({n_embd}) must be divisible by n_head ({n_head}).")
        self.n_embd, self.n_head, self.head_dim = n_embd, n_head, n_embd // n_head
        self.causal = causal
        self.dropout = dropout
        self.c_attn = nn.Linear(n_embd, 3 * n_embd, bias=bias)
        self.c_proj = nn.Linear(n_embd, n_embd, bias=bias)
        self.resid_dropout = nn.Dropout(dropout)

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, C) -> (B, H, T, C/H): each head gets its own slice of the channels."""
        B, T, _ = x.shape
        return x.view(B, T, self.n_head, self.head_dim).transpose(1, 2)

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None = None,
        kv_cache: KVCache | None = None,
        layer_idx: int | None = None,
        return_weights: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Attend over ``x`` of shape ``(B, T, C)``.

        Args:
            mask: extra boolean mask broadcastable to ``(B, H, T, T_keys)`` (e.g. padding),
                combined with the causal mask when the module is causal.
            kv_cache, layer_idx: cached decoding; ``x`` then holds only the new tokens and
                the keys include everything cached before them.
            return_weights: use the written-out path and also return the
                ``(B, H, T, T_keys)`` weights.
        """
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        q, k, v = self._split_heads(q), self._split_heads(k), self._split_heads(v)

        past = 0
        if kv_cache is not None:
            if layer_idx is None:
                raise ValueError("layer_idx is required when a kv_cache is given.")
            past = kv_cache.lengths[layer_idx]
            k, v = kv_cache.update(layer_idx, k, v)

        # One new token at the end of the sequence may look at every cached key, so it needs
        # no causal mask at all. Otherwise causality is a triangle, shifted by the cache.
        needs_causal = self.causal and T > 1
        # Fast path: no extra mask and nothing cached -> let the kernel apply causality itself.
        kernel_is_causal = needs_causal and mask is None and past == 0
        if needs_causal and not kernel_is_causal:
            tri = causal_mask(T, x.device, offset=past)
            mask = tri if mask is None else mask & tri

        dropout_p = self.dropout if self.training else 0.0
        weights = None
        if return_weights:
            if kernel_is_causal:
                mask = causal_mask(T, x.device)
            y, weights = attention(q, k, v, mask=mask, dropout_p=dropout_p)
        else:
            y = fused_attention(q, k, v, mask=mask, is_causal=kernel_is_causal, dropout_p=dropout_p)

        y = y.transpose(1, 2).contiguous().view(B, T, C)  # re-join the heads
        y = self.resid_dropout(self.c_proj(y))
        return (y, weights) if return_weights else y
