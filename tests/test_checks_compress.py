"""The chapter 15 checkers accept correct answers and reject typical wrong ones, helpfully."""
from __future__ import annotations

import pytest
import torch

from gptlib.checks import (
    CheckFailed,
    check_absmax_quantize,
    check_magnitude_mask,
    check_obs_saliency,
)


def good_quantize(w):
    absmax = w.abs().amax(dim=1, keepdim=True)
    scale = torch.where(absmax > 0, absmax / 127, torch.ones_like(absmax))
    return torch.round(w / scale).clamp(-127, 127).to(torch.int8), scale


def good_dequantize(q, scale):
    return q.float() * scale


def test_absmax_accepts_a_correct_answer():
    assert "correct" in check_absmax_quantize(good_quantize, good_dequantize)


def test_absmax_rejects_one_scale_per_matrix():
    def per_tensor(w):
        scale = w.abs().max() / 127
        return torch.round(w / scale).to(torch.int8), scale

    with pytest.raises(CheckFailed, match="per row"):
        check_absmax_quantize(per_tensor, good_dequantize)


def test_absmax_rejects_truncation():
    def truncating(w):
        scale = w.abs().amax(dim=1, keepdim=True) / 127
        return (w / scale).to(torch.int8), scale

    with pytest.raises(CheckFailed, match="rounded"):
        check_absmax_quantize(truncating, good_dequantize)


def test_absmax_rejects_wrong_level_count():
    def by_128(w):
        scale = w.abs().amax(dim=1, keepdim=True) / 128
        return torch.round(w / scale).clamp(-127, 127).to(torch.int8), scale

    with pytest.raises(CheckFailed, match="127"):
        check_absmax_quantize(by_128, good_dequantize)


def test_absmax_rejects_float_q():
    def floats(w):
        q, s = good_quantize(w)
        return q.float(), s

    with pytest.raises(CheckFailed, match="int8"):
        check_absmax_quantize(floats, good_dequantize)


def test_absmax_rejects_a_dequantize_without_scale():
    with pytest.raises(CheckFailed, match="dequantize"):
        check_absmax_quantize(good_quantize, lambda q, scale: q.float())


def good_mask(w, sparsity):
    k = round(sparsity * w.numel())
    keep = torch.ones(w.numel(), dtype=torch.bool)
    keep[torch.argsort(w.abs().flatten())[:k]] = False
    return keep.view_as(w)


def test_mask_accepts_a_correct_answer():
    assert "correct" in check_magnitude_mask(good_mask)


def test_mask_rejects_swapped_meaning():
    with pytest.raises(CheckFailed, match="swapped"):
        check_magnitude_mask(lambda w, s: ~good_mask(w, s))


def test_mask_rejects_signed_sort():
    def signed(w, s):
        k = round(s * w.numel())
        keep = torch.ones(w.numel(), dtype=torch.bool)
        keep[torch.argsort(w.flatten())[:k]] = False
        return keep.view_as(w)

    with pytest.raises(CheckFailed, match="absolute"):
        check_magnitude_mask(signed)


def test_mask_rejects_per_row_pruning():
    def per_row(w, s):
        keep = torch.ones_like(w, dtype=torch.bool)
        return keep.scatter(1, torch.argsort(w.abs(), dim=1)[:, :round(s * w.shape[1])], False)

    with pytest.raises(CheckFailed, match="row"):
        check_magnitude_mask(per_row)


def test_mask_rejects_a_float_mask_and_wrong_count():
    with pytest.raises(CheckFailed, match="bool"):
        check_magnitude_mask(lambda w, s: good_mask(w, s).float())

    def threshold_quantile(w, s):
        return w.abs() > w.abs().quantile(s) + 0.01

    with pytest.raises(CheckFailed, match="exactly"):
        check_magnitude_mask(threshold_quantile)


def test_saliency_accepts_a_correct_answer_and_rejects_obd():
    assert "correct" in check_obs_saliency(lambda w, H: w ** 2 / torch.linalg.inv(H).diagonal())
    with pytest.raises(CheckFailed, match="inverse"):
        check_obs_saliency(lambda w, H: w ** 2 * H.diagonal())
    with pytest.raises(CheckFailed, match="inverse"):
        check_obs_saliency(lambda w, H: w ** 2 / H.diagonal())
    with pytest.raises(CheckFailed, match="squared"):
        check_obs_saliency(lambda w, H: w.abs() / torch.linalg.inv(H).diagonal())
