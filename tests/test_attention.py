"""Tests for gptlib.attention: the written-out and fused paths, masks, and the KV cache."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gptlib.attention import (
    KVCache,
    MultiHeadAttention,
    attention,
    bidirectional_mask,
    causal_mask,
    fused_attention,
    padding_mask,
)

MASK_KINDS = ["causal", "bidirectional", "padding", "padding&causal"]


def make_mask(kind: str, B: int, T: int, lengths: torch.Tensor) -> torch.Tensor:
    if kind == "causal":
        return causal_mask(T)
    if kind == "bidirectional":
        return bidirectional_mask(T)
    if kind == "padding":
        return padding_mask(lengths, T)
    return padding_mask(lengths, T) & causal_mask(T)


@settings(max_examples=40, deadline=None)
@given(
    B=st.integers(1, 3),
    H=st.integers(1, 4),
    T=st.integers(1, 12),
    d=st.sampled_from([4, 8, 16]),
    kind=st.sampled_from(MASK_KINDS),
    seed=st.integers(0, 2**16),
)
def test_written_out_matches_fused(B, H, T, d, kind, seed):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(B, H, T, d, generator=g) for _ in range(3))
    lengths = torch.randint(1, T + 1, (B,), generator=g)
    mask = make_mask(kind, B, T, lengths)
    out, weights = attention(q, k, v, mask)
    fused = fused_attention(q, k, v, mask)
    torch.testing.assert_close(out, fused, atol=1e-5, rtol=1e-5)
    assert weights.shape == (B, H, T, T)


def test_fused_is_causal_flag_matches_explicit_mask():
    q, k, v = (torch.randn(2, 3, 7, 8) for _ in range(3))
    out, _ = attention(q, k, v, causal_mask(7))
    torch.testing.assert_close(fused_attention(q, k, v, is_causal=True), out, atol=1e-5, rtol=1e-5)
    # is_causal together with a padding mask: both restrictions apply.
    pad = padding_mask([7, 4], 7)
    out_both, _ = attention(q, k, v, pad & causal_mask(7))
    torch.testing.assert_close(fused_attention(q, k, v, mask=pad, is_causal=True), out_both, atol=1e-5, rtol=1e-5)


def test_weights_rows_sum_to_one_and_causal_is_lower_triangular():
    q, k, v = (torch.randn(2, 4, 9, 8) for _ in range(3))
    _, weights = attention(q, k, v, causal_mask(9))
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 4, 9))
    above_diagonal = ~causal_mask(9)
    assert torch.all(weights[..., above_diagonal] == 0)
    assert torch.all(weights[..., causal_mask(9)] > 0)


def test_padding_mask_zeroes_padded_keys():
    T = 6
    lengths = torch.tensor([6, 3])
    mask = padding_mask(lengths, T)
    assert mask.shape == (2, 1, 1, T)
    q, k, v = (torch.randn(2, 2, T, 4) for _ in range(3))
    _, weights = attention(q, k, v, mask)
    assert torch.all(weights[1, :, :, 3:] == 0)
    assert torch.all(weights[0] > 0)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 2, T))
    # Changing the values behind padded keys must not change anything.
    v2 = v.clone()
    v2[1, :, 3:] = 1e3
    out1, _ = attention(q, k, v, mask)
    out2, _ = attention(q, k, v2, mask)
    torch.testing.assert_close(out1, out2)


def test_fully_masked_rows_give_zeros_not_nan():
    q, k, v = (torch.randn(1, 1, 3, 4) for _ in range(3))
    mask = torch.tensor([[False, False, False], [True, True, False], [True, True, True]])
    out, weights = attention(q, k, v, mask)
    assert not torch.isnan(out).any()
    assert torch.all(weights[..., 0, :] == 0)
    torch.testing.assert_close(out, fused_attention(q, k, v, mask), atol=1e-5, rtol=1e-5)


def test_causal_mask_with_offset_is_the_bottom_of_the_full_triangle():
    full = causal_mask(7)
    assert torch.equal(causal_mask(3, offset=4), full[4:])
    assert causal_mask(1, offset=5).all()


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("use_padding", [False, True])
def test_mha_weights_path_matches_fused_path(causal, use_padding):
    torch.manual_seed(0)
    mha = MultiHeadAttention(n_embd=32, n_head=4, causal=causal).eval()
    x = torch.randn(2, 10, 32)
    mask = padding_mask([10, 6], 10) if use_padding else None
    fused = mha(x, mask=mask)
    written, weights = mha(x, mask=mask, return_weights=True)
    torch.testing.assert_close(fused, written, atol=1e-5, rtol=1e-5)
    assert weights.shape == (2, 4, 10, 10)
    if causal:
        assert torch.all(weights[..., ~causal_mask(10)] == 0)
    else:
        assert torch.all(weights[0] > 0)  # bidirectional: everyone sees everyone


def test_mha_kv_cache_step_by_step_matches_full():
    torch.manual_seed(0)
    mha = MultiHeadAttention(n_embd=32, n_head=4).eval()
    x = torch.randn(2, 9, 32)
    full = mha(x)
    cache = KVCache(n_layer=1, max_len=16)
    pieces = [mha(x[:, :4], kv_cache=cache, layer_idx=0)]  # prefill of 4 tokens
    for t in range(4, 9):
        pieces.append(mha(x[:, t:t + 1], kv_cache=cache, layer_idx=0))
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=1e-5, rtol=1e-5)
    assert cache.pos == 9


def test_kv_cache_writes_in_place_and_refuses_overflow():
    cache = KVCache(n_layer=2, max_len=5)
    k = torch.randn(1, 2, 3, 4)
    k_all, v_all = cache.update(0, k, k)
    buffer = cache.keys[0]
    assert buffer.shape == (1, 2, 5, 4)  # preallocated to max_len
    k_all, _ = cache.update(0, torch.ones(1, 2, 2, 4), torch.ones(1, 2, 2, 4))
    assert cache.keys[0].data_ptr() == buffer.data_ptr()  # same storage, no reallocation
    assert k_all.shape == (1, 2, 5, 4)
    torch.testing.assert_close(k_all[:, :, :3], k)
    assert cache.lengths == [5, 0] and cache.pos == 5
    with pytest.raises(ValueError, match="max_len=5"):
        cache.update(0, k[:, :, :1], k[:, :, :1])
    cache.reset()
    assert cache.pos == 0


def test_mha_rejects_indivisible_heads():
    with pytest.raises(ValueError, match="divisible"):
        MultiHeadAttention(n_embd=30, n_head=4)
