"""Exercise checkers for chapter 4 (GPT-1: pre-train, then fine-tune)."""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from gptlib.checks import CheckFailed, _fail, check_close, checker  # noqa: F401

__all__ = ["check_mean_pool", "check_gpt1_loss", "check_mean_and_sem"]


@checker
def check_mean_pool(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> str:
    """``mean_pool(h, mask)``: average of ``h`` ``(B, T, C)`` over the real positions of
    ``mask``."""
    from gptlib.heads import pool_hidden

    g = torch.Generator().manual_seed(0)
    h = torch.randn(4, 6, 5, generator=g)
    lengths = torch.tensor([6, 3, 1, 4])
    mask = torch.arange(6)[None, :] < lengths[:, None]
    expected = pool_hidden(h, mask, "mean")
    try:
        got = fn(h.clone(), mask.clone())
    except Exception as err:  # noqa: BLE001 - show the reader what went wrong
        _fail(
            f"mean_pool(h, mask) raised {type(err).__name__}: {err}",
            "mask is a (B, T) bool tensor; turn it into (B, T, 1) floats to multiply with h.",
        )
    if not isinstance(got, torch.Tensor):
        _fail(
            f"mean_pool returned {type(got).__name__}, expected "
            f"a tensor of shape (B, C) = {tuple(expected.shape)}."
        )
    if got.shape != expected.shape:
        _fail(
            f"mean_pool returned shape {tuple(got.shape)}, "
            f"expected (B, C) = {tuple(expected.shape)}.",
            "average over dim=1 (the positions), one vector per sequence.",
        )
    if torch.allclose(got, h.mean(1), atol=1e-5):
        _fail(
            "mean_pool averages over the padding positions too (it equals h.mean(1)).",
            "multiply by the mask before summing, and divide "
            "by the number of real tokens, mask.sum(1).",
        )
    if torch.allclose(got, (h * mask[..., None]).sum(1) / h.shape[1], atol=1e-5):
        _fail(
            "mean_pool zeroes the padding but divides by T, the padded length: short sequences get "
            "vectors that are too small.",
            "divide by the number of real tokens of each sequence, mask.sum(1, keepdim=True).",
        )
    check_close(
        got,
        expected,
        "mean_pool(h, mask)",
        atol=1e-5,
        hint="sum h over the real positions (mask True) and divide by their number.",
    )
    return "mean_pool: correct, padding ignored."


def _reference_gpt1_loss(cls_logits, labels, lm_logits, ids, lam):
    lm = F.cross_entropy(lm_logits[:, :-1].reshape(-1, lm_logits.size(-1)), ids[:, 1:].reshape(-1))
    return F.cross_entropy(cls_logits, labels) + lam * lm


@checker
def check_gpt1_loss(fn: Callable[..., torch.Tensor]) -> str:
    """``gpt1_loss(cls_logits, labels, lm_logits, ids, lam)`` = ``CE(cls) + lam * next-token
    CE``."""
    g = torch.Generator().manual_seed(0)
    B, T, V, K = 3, 7, 11, 4
    cls_logits = torch.randn(B, K, generator=g)
    labels = torch.randint(0, K, (B,), generator=g)
    lm_logits = torch.randn(B, T, V, generator=g)
    ids = torch.randint(0, V, (B, T), generator=g)
    cls_only = F.cross_entropy(cls_logits, labels)
    for lam in (0.0, 0.5, 2.0):
        expected = _reference_gpt1_loss(cls_logits, labels, lm_logits, ids, lam)
        try:
            got = fn(cls_logits.clone(), labels.clone(), lm_logits.clone(), ids.clone(), lam)
        except Exception as err:  # noqa: BLE001
            _fail(
                f"gpt1_loss(..., lam={lam}) raised {type(err).__name__}: {err}",
                "F.cross_entropy wants (N, classes) logits "
                "and (N,) targets: reshape the LM logits.",
            )
        got = torch.as_tensor(got)
        if got.dim() != 0:
            _fail(
                f"gpt1_loss returned shape {tuple(got.shape)}; "
                "a loss is one number (a 0-d tensor).",
                "average over the batch and the positions.",
            )
        if abs(float(got) - float(expected)) <= 1e-4:
            continue
        if lam == 0.0:
            _fail(
                "with lam=0 the loss must be the classification "
                f"loss alone ({float(cls_only):.4f}); "
                f"got {float(got):.4f}.",
                "lam multiplies the LM term only: L = L_cls + lam * L_lm.",
            )
        unshifted = F.cross_entropy(cls_logits, labels) + lam * F.cross_entropy(
            lm_logits.reshape(-1, V), ids.reshape(-1)
        )
        if abs(float(got) - float(unshifted)) < 1e-4:
            _fail(
                "the LM term compares position t's logits with token t itself; it must predict the "
                "*next* token.",
                "use lm_logits[:, :-1] against ids[:, 1:].",
            )
        swapped = lam * F.cross_entropy(cls_logits, labels) + (
            _reference_gpt1_loss(cls_logits, labels, lm_logits, ids, 1.0) - cls_only
        )
        if abs(float(got) - float(swapped)) < 1e-4:
            _fail(
                "lam multiplies the classification loss; "
                "in GPT-1 it weights the auxiliary LM loss.",
                "L = L_cls + lam * L_lm.",
            )
        _fail(
            f"gpt1_loss(..., lam={lam}) = {float(got):.4f}, expected {float(expected):.4f}.",
            "L = cross_entropy(cls_logits, labels) + lam "
            "* cross_entropy(next-token logits, next tokens).",
        )
    probe = torch.randn(B, K, requires_grad=True)
    loss = fn(probe, labels, lm_logits, ids, 0.5)
    if not torch.as_tensor(loss).requires_grad:
        _fail(
            "the loss does not carry gradients back to "
            "the logits (did you call .item() or detach?)."
        )
    return "gpt1_loss: L = L_cls + lam * L_lm, with next-token targets."


@checker
def check_mean_and_sem(fn: Callable[[Sequence[float]], tuple[float, float]]) -> str:
    """``mean_and_sem(values)`` -> ``(mean, standard error of the mean)`` with the n - 1
    estimator."""
    cases = [[0.5, 0.6, 0.7], [0.25, 0.25, 0.5, 0.75, 0.3], [0.9, 0.1]]
    for values in cases:
        n = len(values)
        mean = sum(values) / n
        sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
        sem = sd / math.sqrt(n)
        try:
            got = fn(list(values))
            got_mean, got_sem = (float(x) for x in got)
        except Exception as err:  # noqa: BLE001
            _fail(
                f"mean_and_sem({values}) did not return two numbers ({type(err).__name__}: {err})."
            )
        if abs(got_mean - mean) > 1e-9:
            _fail(f"mean_and_sem({values}): mean {got_mean:.4f}, expected {mean:.4f}.")
        if abs(got_sem - sem) <= 1e-9:
            continue
        if abs(got_sem - sd) < 1e-9:
            _fail(
                f"mean_and_sem({values}) returned the standard "
                f"deviation ({sd:.4f}), not the standard "
                f"error of the mean ({sem:.4f}).",
                "divide the standard deviation by sqrt(n).",
            )
        sd0 = math.sqrt(sum((v - mean) ** 2 for v in values) / n)
        if abs(got_sem - sd0 / math.sqrt(n)) < 1e-9 or abs(got_sem - sd0) < 1e-9:
            _fail(
                f"mean_and_sem({values}): the spread uses "
                "1/n; with a handful of seeds use the unbiased "
                f"1/(n - 1) estimator (expected {sem:.4f}).",
                "statistics.stdev, or numpy's std(ddof=1).",
            )
        _fail(
            f"mean_and_sem({values}): standard error {got_sem:.4f}, expected {sem:.4f}.",
            "sem = stdev(values) / sqrt(n), with stdev using n - 1.",
        )
    return "mean_and_sem: correct."
