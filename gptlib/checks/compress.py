"""Exercise checkers for chapter 15 (making it small: quantization and pruning).

- :func:`check_absmax_quantize`: per-row symmetric int8 quantization and its inverse;
- :func:`check_magnitude_mask`: an unstructured magnitude pruning mask of exact sparsity;
- :func:`check_obs_saliency`: the Optimal Brain Surgeon saliency ``w_q^2 / [H^-1]_qq``.
"""

from __future__ import annotations

from typing import Callable

import torch

from gptlib.checks import _fail, check_close, checker

__all__ = ["check_absmax_quantize", "check_magnitude_mask", "check_obs_saliency"]


def _weights(seed: int, rows: int = 6, cols: int = 40) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(rows, cols, generator=g) * torch.logspace(-2, 0, rows).unsqueeze(
        1
    )  # rows of different ranges
    return w


@checker
def check_absmax_quantize(quantize: Callable, dequantize: Callable) -> str:
    """Check ``quantize(w) -> (q, scale)`` (int8, one absmax scale per row) and ``dequantize(q,
    scale)``.
    """
    w = _weights(0)
    out = quantize(w.clone())
    if not (isinstance(out, tuple) and len(out) == 2):
        _fail(f"absmax_quantize returned {type(out).__name__}, expected a tuple (q, scale).")
    q, scale = out
    if not isinstance(q, torch.Tensor) or q.dtype != torch.int8:
        _fail(
            f"q has dtype {getattr(q, 'dtype', type(q).__name__)}, expected torch.int8.",
            "convert after rounding and clamping: torch.round(w "
            "/ scale).clamp(-127, 127).to(torch.int8).",
        )
    if q.shape != w.shape:
        _fail(f"q has shape {tuple(q.shape)}, expected the weight's shape {tuple(w.shape)}.")
    scale = torch.as_tensor(scale, dtype=torch.float32)
    if scale.numel() == 1:
        _fail(
            "you used one scale for the whole matrix.",
            "absmax per row (output channel): w.abs().amax(dim=1, keepdim=True) / 127.",
        )
    if scale.shape != (w.shape[0], 1):
        _fail(
            f"scale has shape {tuple(scale.shape)}, expected ({w.shape[0]}, 1): one scale per row.",
            "keep the dimension so it broadcasts: amax(dim=1, keepdim=True).",
        )
    expected = w.abs().amax(dim=1, keepdim=True) / 127
    if torch.allclose(scale, w.abs().amax(dim=1, keepdim=True) / 128, rtol=1e-5) or torch.allclose(
        scale, w.abs().amax(dim=1, keepdim=True) / 255, rtol=1e-5
    ):
        _fail(
            "the scale divides by the wrong number of levels.",
            "the symmetric int8 range is -127..127, so "
            "scale = absmax / 127 (the largest weight maps to 127).",
        )
    if torch.allclose(scale, w.abs().amax(dim=0)[: w.shape[0]].unsqueeze(1) / 127, rtol=1e-5):
        _fail("the scales are per column.", "take the absmax over each row: amax(dim=1).")
    check_close(scale, expected, "scale", atol=1e-7, hint="scale = (largest |w| of the row) / 127.")
    if int(q.abs().max()) > 127:
        _fail(
            f"q holds {int(q.abs().max())}, outside -127..127.",
            "clamp(-127, 127) before .to(torch.int8).",
        )
    ref_q = torch.round(w / expected).clamp(-127, 127).to(torch.int8)
    if not torch.equal(q, ref_q):
        trunc = (w / expected).trunc().to(torch.int8)
        if torch.equal(q, trunc):
            _fail(
                "q is truncated towards zero, not rounded.",
                "use torch.round(w / scale) before converting.",
            )
        _fail(f"{int((q != ref_q).sum())} of {q.numel()} integers differ from round(w / scale).")
    w_hat = dequantize(q, scale)
    if not isinstance(w_hat, torch.Tensor) or not torch.is_floating_point(w_hat):
        _fail("dequantize must return a float tensor.", "q.float() * scale.")
    check_close(
        w_hat,
        ref_q.float() * expected,
        "dequantize(q, scale)",
        atol=1e-6,
        hint="w_hat = q.float() * scale.",
    )
    if not ((w - w_hat).abs() <= expected / 2 * (1 + 1e-5)).all():
        _fail("the round trip moves some weight by more than half a step (scale / 2).")
    zero = torch.zeros(3, 8)
    zq, zs = quantize(zero)
    back = dequantize(zq, torch.as_tensor(zs))
    if not torch.isfinite(back).all() or back.abs().max() != 0:
        _fail(
            "a row of zeros gives NaN or non-zero values after the round trip.",
            "absmax is 0 there: use a scale of 1 for such "
            "rows, e.g. torch.where(absmax > 0, absmax / 127, 1).",
        )
    return "absmax_quantize / dequantize: correct, and every weight within scale/2."


@checker
def check_magnitude_mask(fn: Callable[[torch.Tensor, float], torch.Tensor]) -> str:
    """Check ``fn(w, sparsity)``: a boolean keep-mask removing the ``round(sparsity * numel)``
    smallest ``|w|``.
    """
    w = _weights(1, rows=8, cols=50)
    for target in (0.1, 0.5, 0.73):
        mask = fn(w.clone(), target)
        if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
            _fail(
                f"the mask has dtype {getattr(mask, 'dtype', type(mask).__name__)}, "
                "expected torch.bool.",
                "True for the weights to keep; e.g. build "
                "it with torch.ones(..., dtype=torch.bool).",
            )
        if mask.shape != w.shape:
            _fail(
                f"the mask has shape {tuple(mask.shape)}, expected {tuple(w.shape)}.",
                "reshape with .view_as(w).",
            )
        k = round(target * w.numel())
        removed = int((~mask).sum())
        if removed == w.numel() - k and removed != k:
            _fail(
                f"at sparsity {target} you kept {int(mask.sum())} "
                f"weights and removed {removed}: True and False are swapped.",
                "True means keep; remove (False) the smallest ones.",
            )
        if removed != k:
            _fail(
                f"at sparsity {target} the mask removes {removed} "
                f"of {w.numel()} weights, expected exactly {k}.",
                "remove k = round(sparsity * w.numel()) weights.",
            )
        order = torch.argsort(w.abs().flatten())
        ref = torch.ones(w.numel(), dtype=torch.bool)
        ref[order[:k]] = False
        ref = ref.view_as(w)
        if torch.equal(mask, ref):
            continue
        signed = torch.ones(w.numel(), dtype=torch.bool)
        signed[torch.argsort(w.flatten())[:k]] = False
        if torch.equal(mask, signed.view_as(w)):
            _fail(
                "you removed the most negative weights, not the smallest in absolute value.",
                "sort by w.abs().",
            )
        per_row = torch.ones_like(w, dtype=torch.bool)
        kr = round(target * w.shape[1])
        per_row.scatter_(1, torch.argsort(w.abs(), dim=1)[:, :kr], False)
        if torch.equal(mask, per_row):
            _fail(
                "you pruned each row separately.",
                "rank all the weights of the matrix together: w.abs().flatten().",
            )
        if torch.equal(mask, ~ref):
            _fail(
                f"at sparsity {target} True and False are swapped.",
                "True means keep; remove (False) the smallest ones.",
            )
        largest = torch.ones(w.numel(), dtype=torch.bool)
        largest[order[-k:]] = False
        if torch.equal(mask, largest.view_as(w)):
            _fail(
                "you removed the largest weights.",
                "argsort is ascending: the first k indices are the smallest.",
            )
        _fail(
            f"at sparsity {target} the mask removes the wrong weights.",
            "remove the k weights with the smallest |w| over the whole matrix.",
        )
    return "magnitude_mask: correct (exact sparsity, smallest |w| removed)."


@checker
def check_obs_saliency(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> str:
    """Check ``fn(w, H)`` returns ``w**2 / diag(H^-1)`` for a row ``w`` and a Hessian ``H``."""
    g = torch.Generator().manual_seed(2)
    X = torch.randn(12, 200, generator=g, dtype=torch.float64) * torch.linspace(
        0.2, 3, 12, dtype=torch.float64
    ).unsqueeze(1)
    X[1] += 0.9 * X[0]  # correlated inputs: H^-1's diagonal differs from 1 / H's diagonal
    H = 2 * X @ X.T / X.shape[1]
    w = torch.randn(12, generator=g, dtype=torch.float64)
    out = fn(w.clone(), H.clone())
    if not isinstance(out, torch.Tensor) or out.shape != w.shape:
        _fail(
            f"obs_saliency returned shape {tuple(getattr(out, 'shape', ()))}, "
            f"expected {tuple(w.shape)}."
        )
    expected = w**2 / torch.linalg.inv(H).diagonal()
    if torch.allclose(out.double(), w**2 * H.diagonal(), rtol=1e-4):
        _fail(
            "you used the diagonal of H, not of its inverse "
            "(that is Optimal Brain Damage's approximation).",
            "OBS divides by [H^-1]_qq: torch.linalg.inv(H).diagonal().",
        )
    if torch.allclose(out.double(), w**2 / H.diagonal(), rtol=1e-4):
        _fail(
            "you divided by H_qq; the saliency divides by the diagonal of the *inverse* Hessian.",
            "use torch.linalg.inv(H).diagonal().",
        )
    if torch.allclose(out.double(), w.abs() / torch.linalg.inv(H).diagonal(), rtol=1e-4):
        _fail("the weight must be squared.", "saliency = w**2 / [H^-1]_qq.")
    check_close(
        out.double(),
        expected,
        "obs_saliency(w, H)",
        atol=1e-6 * float(expected.abs().max()),
        hint="saliency = w**2 / torch.linalg.inv(H).diagonal().",
    )
    return "obs_saliency: correct."
