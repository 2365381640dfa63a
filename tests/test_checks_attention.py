"""The checkers of chapters 1-2 accept correct answers and explain typical wrong ones."""
from __future__ import annotations

import math

import pytest
import torch

from gptlib.checks import (
    CheckFailed,
    check_attention_weights,
    check_block_params,
    check_gru_step,
    check_layer_norm,
    check_mlm_masking,
    check_query_focus,
)
from gptlib.mlm import mask_tokens

# ----------------------------------------------------------------------------- attention weights


def weights_ok(q, k, mask=None):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return torch.softmax(scores, dim=-1)


def test_attention_weights_accepts_correct():
    assert "correct" in check_attention_weights(weights_ok)


@pytest.mark.parametrize(
    "wrong, message",
    [
        (lambda q, k, mask=None: torch.softmax(q @ k.transpose(-2, -1), -1), "sqrt"),
        (lambda q, k, mask=None: torch.softmax(q @ k.transpose(-2, -1) / q.size(-1), -1), "divided by d"),
        (lambda q, k, mask=None: torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.size(-1)), -2), "sum to 1"),
        (lambda q, k, mask=None: torch.softmax(k @ q.transpose(-2, -1) / math.sqrt(q.size(-1)), -1), "shape"),
        (lambda q, k, mask=None: weights_ok(q, k), "mask is False"),  # ignores the mask
        (lambda q, k, mask=None: weights_ok(q, k) * (mask if mask is not None else 1), "before"),  # masks after softmax
    ],
)
def test_attention_weights_rejects(wrong, message):
    with pytest.raises(CheckFailed, match=message):
        check_attention_weights(wrong)


def test_attention_weights_names_an_inverted_mask():
    def inverted(q, k, mask=None):
        return weights_ok(q, k, None if mask is None else ~mask | (mask.sum(-1, keepdim=True) == mask.size(-1)))

    with pytest.raises(CheckFailed, match="inverted"):
        check_attention_weights(inverted)


# ----------------------------------------------------------------------------- GRU step


def gates(x_t, h, gru):
    """A reader's own gate computation (written independently of the checker's reference)."""
    gx = x_t @ gru.weight_ih_l0.T + gru.bias_ih_l0
    gh = h @ gru.weight_hh_l0.T + gru.bias_hh_l0
    xr, xz, xn = gx.chunk(3, -1)
    hr, hz, hn = gh.chunk(3, -1)
    r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
    return r, z, xn, hn


def gru_ok(x_t, h, gru):
    r, z, xn, hn = gates(x_t, h, gru)
    return (1 - z) * torch.tanh(xn + r * hn) + z * h


def test_gru_step_accepts_correct():
    assert "agrees" in check_gru_step(gru_ok)


def test_gru_step_rejects_swapped_interpolation():
    def wrong(x_t, h, gru):
        r, z, xn, hn = gates(x_t, h, gru)
        return z * torch.tanh(xn + r * hn) + (1 - z) * h

    with pytest.raises(CheckFailed, match="wrong way round"):
        check_gru_step(wrong)


def test_gru_step_rejects_gate_order():
    def wrong(x_t, h, gru):
        z, r, xn, hn = gates(x_t, h, gru)  # r and z exchanged
        return (1 - z) * torch.tanh(xn + r * hn) + z * h

    with pytest.raises(CheckFailed, match="swapped"):
        check_gru_step(wrong)


def test_gru_step_rejects_reset_before_matmul():
    def wrong(x_t, h, gru):
        H = h.size(-1)
        r, z, xn, _ = gates(x_t, h, gru)
        n = torch.tanh(xn + (r * h) @ gru.weight_hh_l0[2 * H:].T + gru.bias_hh_l0[2 * H:])
        return (1 - z) * n + z * h

    with pytest.raises(CheckFailed, match="after"):
        check_gru_step(wrong)


# ----------------------------------------------------------------------------- query focus

WORDS = ["You", "are", "a", "good", "man"]
KEYS = torch.cat([torch.eye(5), torch.tensor([[1.0, 0, 0, 0], [0.3, 1, 0, 0], [0, 0, 1, 0],
                                               [0.5, 0, 0, 1], [1, 0, 0, 0.3]])], dim=1)


def test_query_focus_accepts_a_good_query():
    q = torch.zeros(9)
    q[4], q[5] = 4.0, 2.0
    assert "man" in check_query_focus(q, KEYS, WORDS, target="man", min_weight=0.5)


def test_query_focus_rejects_the_words_own_vector():
    with pytest.raises(CheckFailed, match="'good' gets the most weight"):
        check_query_focus(KEYS[3], KEYS, WORDS, target="man", min_weight=0.5)


def test_query_focus_rejects_a_wrong_shape():
    with pytest.raises(CheckFailed, match="one vector of 9"):
        check_query_focus(torch.zeros(5), KEYS, WORDS, target="man")


# ----------------------------------------------------------------------------- block parameters


def test_block_params_accepts_the_formula():
    assert "correct" in check_block_params(lambda d: 12 * d * d + 13 * d)


@pytest.mark.parametrize(
    "wrong, message",
    [
        (lambda d: 12 * d * d, "matrices only"),
        (lambda d: 12 * d * d + 9 * d, "layer norms"),
        (lambda d: 12 * d * d + 4 * d, "biases"),
        (lambda d: 8 * d * d + 13 * d, "a gptlib Block of width"),
    ],
)
def test_block_params_rejects(wrong, message):
    with pytest.raises(CheckFailed, match=message):
        check_block_params(wrong)


# ----------------------------------------------------------------------------- layer norm


def ln_ok(x, weight, bias, eps=1e-5):
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * weight + bias


def test_layer_norm_accepts_correct():
    assert "agrees" in check_layer_norm(ln_ok)


@pytest.mark.parametrize(
    "wrong, message",
    [
        (lambda x, w, b, eps=1e-5: (x - x.mean(-1, keepdim=True)) / torch.sqrt(x.var(-1, keepdim=True) + eps) * w + b,
         "unbiased"),
        (lambda x, w, b, eps=1e-5: ln_ok(x, torch.ones_like(w), torch.zeros_like(b), eps), "weight and bias"),
        (lambda x, w, b, eps=1e-5: (x - x.mean(0, keepdim=True)) / torch.sqrt(x.var(0, keepdim=True, unbiased=False) + eps) * w + b,
         "batch norm"),
        (lambda x, w, b, eps=1e-5: (x - x.mean(-1, keepdim=True)) / (x.std(-1, unbiased=False, keepdim=True) + eps) * w + b,
         "nearly constant"),
    ],
)
def test_layer_norm_rejects(wrong, message):
    with pytest.raises(CheckFailed, match=message):
        check_layer_norm(wrong)


# ----------------------------------------------------------------------------- BERT masking


def test_mlm_masking_accepts_gptlib_rule():
    assert "scored" in check_mlm_masking(lambda ids, m, v, r, g: mask_tokens(ids, m, v, r, g))


def test_mlm_masking_rejects_mask_everything_chosen():
    with pytest.raises(CheckFailed, match="masks only 80%"):
        check_mlm_masking(lambda ids, m, v, r, g: mask_tokens(ids, m, v, r, g, mask_share=1.0, random_share=0.0))


def test_mlm_masking_rejects_targets_everywhere():
    def wrong(ids, m, v, r, g):
        inputs, _ = mask_tokens(ids, m, v, r, g)
        return inputs, ids.clone()  # every position scored

    with pytest.raises(CheckFailed, match="-100"):
        check_mlm_masking(wrong)


def test_mlm_masking_rejects_mask_ids_as_targets():
    def wrong(ids, m, v, r, g):
        inputs, targets = mask_tokens(ids, m, v, r, g)
        return inputs, torch.where(targets != -100, inputs, targets)

    with pytest.raises(CheckFailed, match="ORIGINAL"):
        check_mlm_masking(wrong)


def test_mlm_masking_rejects_wrong_rate():
    with pytest.raises(CheckFailed, match="scored; BERT scores 15%"):
        check_mlm_masking(lambda ids, m, v, r, g: mask_tokens(ids, m, v, 0.3, g))
