"""Making a trained model smaller: int8 quantization and pruning, measured honestly.

Two ways to shrink a network, both applied *after* training, with no retraining:

**Quantization** (量化) stores each weight in fewer bits. Here: int8 with one scale per
output channel (per row of a ``Linear`` weight), the *absmax* rule::

    scale_i = max_j |W_ij| / 127          q_ij = round(W_ij / scale_i)  in [-127, 127]
    W_ij ~= q_ij * scale_i                 |W_ij - q_ij * scale_i| <= scale_i / 2

- :func:`absmax_quantize` / :func:`dequantize`: the rule above, for one weight matrix;
- :class:`Int8Linear`: a drop-in ``nn.Linear`` that *stores* int8 weights (4x smaller than
  fp32) and either dequantizes them on the fly (``mode="weight_only"``) or also quantizes its
  input per token and multiplies integers (``mode="w8a8"``, via ``torch._int_mm``);
- :func:`quantize_model`: a copy of a model with its ``Linear`` layers replaced;
- :func:`torch_dynamic_int8`: PyTorch's own ``torch.ao.quantization.quantize_dynamic`` (qint8,
  per-channel weights, dynamically quantized activations) for comparison.

**Pruning** (剪枝) sets weights to zero. Both methods here are *unstructured* (any single weight
may go) and *per layer* (each ``Linear`` loses the same share):

- :func:`magnitude_mask` / :func:`prune_magnitude`: drop the weights of smallest ``|w|``;
- :func:`sparsegpt_prune_linear` / :func:`prune_sparsegpt`: the one-shot second-order method of
  SparseGPT (Frantar & Alistarh, 2023), in the Optimal Brain Surgeon tradition (Hassibi & Stork,
  1993). For a layer ``y = W x`` and calibration inputs ``X`` (columns = tokens), the loss of
  the layer's output ``||W X - W' X||^2`` has Hessian ``H = 2 X X^T`` (the same for every
  row). Removing weight ``q`` of a row costs ``w_q^2 / [H^-1]_qq`` if the other weights of the
  row are *updated* to compensate, by ``-w_q / [H^-1]_qq * H^-1[:, q]``. SparseGPT prunes the
  columns left to right, choosing the mask of each block of columns by that saliency and
  updating the not-yet-pruned columns; a Cholesky factor of ``H^-1`` gives all the needed
  inverses at once.

Measuring: :func:`perplexity`, :func:`latency`, :func:`model_size_bytes`, :func:`sparsity`,
and :func:`report` which prints a size / latency / perplexity table.

Everything works on the :class:`gptlib.model.GPT` of this book; the quantization helpers work
on any module made of ``nn.Linear`` layers.
"""

from __future__ import annotations

import copy
import io
import statistics
import time
import warnings
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

# perplexity lives with the book's other held-out measurements; chapter 15 calls it from here
from gptlib.evaluate import perplexity

__all__ = [
    "absmax_quantize",
    "dequantize",
    "Int8Linear",
    "quantize_model",
    "torch_dynamic_int8",
    "to_bf16",
    "model_size_bytes",
    "linear_layers",
    "magnitude_mask",
    "prune_magnitude",
    "calibration_hessians",
    "sparsegpt_prune_linear",
    "prune_sparsegpt",
    "sparsity",
    "perplexity",
    "latency",
    "Row",
    "report",
    "format_table",
]

#: Layers the book never quantizes or prunes by default: the output layer of a GPT is tied to
#: the token embedding (one matrix, two uses), so changing it would change the embedding too.
DEFAULT_SKIP: tuple[str, ...] = ("lm_head",)


# ----------------------------------------------------------------------------- int8 quantization


def absmax_quantize(weight: torch.Tensor, bits: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-row quantization: ``(q, scale)`` with ``weight ~= q * scale``.

    ``weight`` is ``(out_features, in_features)``; ``scale`` is ``(out_features, 1)`` float32,
    ``q`` is int8 in ``[-(2^(bits-1) - 1), 2^(bits-1) - 1]`` (so ``[-127, 127]`` for 8 bits:
    the range is symmetric and -128 is never used). A row of zeros gets scale 1 (any scale works).
    """
    if weight.dim() != 2:
        raise ValueError(
            f"absmax_quantize expects a 2-D weight (out_features, in_features), got shape "
            f"{tuple(weight.shape)}; reshape it first, e.g. weight.flatten(1)."
        )
    if not 2 <= bits <= 8:
        raise ValueError(f"bits must be between 2 and 8 (stored in int8), got {bits}")
    qmax = 2 ** (bits - 1) - 1
    w = weight.detach().float()
    absmax = w.abs().amax(dim=1, keepdim=True)
    scale = torch.where(absmax > 0, absmax / qmax, torch.ones_like(absmax))
    q = torch.round(w / scale).clamp_(-qmax, qmax).to(torch.int8)
    return q, scale


def dequantize(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """The float weight that ``(q, scale)`` stands for: ``q * scale`` (float32)."""
    return q.float() * scale


def _int8_matmul(x8: torch.Tensor, w8_t: torch.Tensor) -> torch.Tensor:
    """``x8 @ w8_t`` for int8 matrices with an int32 result (integer multiply-accumulate)."""
    if hasattr(torch, "_int_mm"):
        try:
            return torch._int_mm(x8, w8_t)
        except RuntimeError:  # e.g. shapes the CUDA kernel does not accept (rows <= 16)
            pass
    return x8.to(torch.int32) @ w8_t.to(torch.int32)


class Int8Linear(nn.Module):
    """A ``Linear`` layer whose weight is stored in int8 with one float scale per output.

    ``mode="weight_only"``: the forward pass dequantizes the weight (``q * scale``) in the input's
    dtype and does an ordinary float matmul. Memory shrinks 4x; arithmetic stays float, so this is
    slower than fp32 on a CPU (an extra multiply per weight) but is what most LLM int8 inference
    on GPUs does, where reading the weights from memory is the bottleneck.

    ``mode="w8a8"``: the input is also quantized, per token (row) with its own absmax scale, the
    product is computed in integers (int8 x int8 -> int32) and rescaled by
    ``scale_x * scale_w``; this is what ``torch.ao``'s dynamic quantization does too.
    """

    def __init__(
        self, in_features: int, out_features: int, bias: bool = True, mode: str = "weight_only"
    ) -> None:
        super().__init__()
        if mode not in ("weight_only", "w8a8"):
            raise ValueError(f"mode must be 'weight_only' or 'w8a8', got {mode!r}")
        self.in_features, self.out_features, self.mode = in_features, out_features, mode
        self.register_buffer(
            "weight_int8", torch.zeros(out_features, in_features, dtype=torch.int8)
        )
        self.register_buffer("scale", torch.ones(out_features, 1))
        self.register_buffer("bias", torch.zeros(out_features) if bias else None)

    @classmethod
    def from_linear(cls, linear: nn.Linear, mode: str = "weight_only") -> "Int8Linear":
        """Quantize an existing ``nn.Linear`` (its weight with :func:`absmax_quantize`)."""
        if not isinstance(linear, nn.Linear):
            raise TypeError(
                f"Int8Linear.from_linear needs an nn.Linear, got {type(linear).__name__}"
            )
        layer = cls(linear.in_features, linear.out_features, linear.bias is not None, mode)
        q, scale = absmax_quantize(linear.weight)
        layer.weight_int8.copy_(q)
        layer.scale.copy_(scale)
        if linear.bias is not None:
            layer.bias.copy_(linear.bias.detach().float())
        return layer.to(linear.weight.device)

    def dequantized_weight(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The float weight this layer computes with in ``weight_only`` mode."""
        return self.weight_int8.to(dtype) * self.scale.to(dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x @ W^T + b`` with the int8 weight, in the way ``mode`` says."""
        bias = None if self.bias is None else self.bias.to(x.dtype)
        if self.mode == "weight_only":
            return F.linear(x, self.dequantized_weight(x.dtype), bias)
        shape = x.shape
        x2 = x.reshape(-1, shape[-1]).float()
        x_scale = x2.abs().amax(dim=1, keepdim=True).clamp_min(1e-12) / 127  # one scale per token
        x8 = torch.round(x2 / x_scale).clamp_(-127, 127).to(torch.int8)
        acc = _int8_matmul(x8, self.weight_int8.t().contiguous())  # (tokens, out) int32
        y = acc.float() * x_scale * self.scale.t()
        if bias is not None:
            y = y + self.bias
        return y.reshape(*shape[:-1], self.out_features).to(x.dtype)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}, mode={self.mode!r}"
        )


def linear_layers(model: nn.Module, skip: Iterable[str] = DEFAULT_SKIP) -> dict[str, nn.Linear]:
    """The ``nn.Linear`` layers of ``model`` by name, in forward order, minus those named in
    ``skip``.
    """
    skip = tuple(skip)
    return {
        name: m
        for name, m in model.named_modules()
        if isinstance(m, nn.Linear) and not any(name == s or name.startswith(s + ".") for s in skip)
    }


def _set_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def quantize_model(
    model: nn.Module, mode: str = "weight_only", skip: Iterable[str] = DEFAULT_SKIP
) -> nn.Module:
    """A copy of ``model`` with every ``nn.Linear`` (except ``skip``) replaced by
    :class:`Int8Linear`.

    The original is left untouched. By default the GPT's ``lm_head`` is skipped because it is the
    token embedding matrix (weight tying); embeddings, LayerNorms and biases stay float32.
    """
    qmodel = copy.deepcopy(model)
    layers = linear_layers(qmodel, skip)
    if not layers:
        raise ValueError("quantize_model found no nn.Linear layers to quantize (check `skip`).")
    for name, layer in layers.items():
        _set_module(qmodel, name, Int8Linear.from_linear(layer, mode))
    return qmodel.eval()


def torch_dynamic_int8(
    model: nn.Module, skip: Iterable[str] = DEFAULT_SKIP, per_channel: bool = True
) -> nn.Module:
    """PyTorch's dynamic int8 quantization of the ``Linear`` layers (CPU only), for comparison.

    ``torch.ao.quantization.quantize_dynamic`` stores qint8 weights (per output channel with
    ``per_channel=True``, like ours) and quantizes each input on the fly, calling the fbgemm /
    qnnpack int8 kernels. torch.ao is deprecated in favour of the separate ``torchao`` package;
    its warnings are silenced here. Raises ``RuntimeError`` if no quantized engine is available.
    """
    if (
        not torch.backends.quantized.supported_engines
        or torch.backends.quantized.supported_engines == ["none"]
    ):
        raise RuntimeError(
            "this PyTorch build has no quantized CPU engine (fbgemm/qnnpack); "
            "torch_dynamic_int8 cannot run here"
        )
    from torch.ao.quantization import (
        default_dynamic_qconfig,
        per_channel_dynamic_qconfig,
        quantize_dynamic,
    )

    names = set(linear_layers(model, skip))
    qconfig = per_channel_dynamic_qconfig if per_channel else default_dynamic_qconfig
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return quantize_dynamic(
            copy.deepcopy(model).cpu().eval(), {name: qconfig for name in names}, dtype=torch.qint8
        )


def to_bf16(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with every float parameter and buffer in bfloat16 (2 bytes a weight)."""
    return copy.deepcopy(model).to(torch.bfloat16).eval()


def model_size_bytes(model: nn.Module) -> int:
    """Bytes of ``model``'s state dict when saved with ``torch.save`` (tied weights counted once).

    Serialising is the one measure that treats all three kinds of model alike: float parameters,
    our int8 buffers and torch.ao's packed quantized weights. It includes a little overhead
    (names, pickle structure), a few kB.
    """
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.save(model.state_dict(), buffer)
    return buffer.getbuffer().nbytes


# ----------------------------------------------------------------------------- pruning


def _check_sparsity(value: float) -> None:
    if not 0.0 <= value < 1.0:
        raise ValueError(
            f"sparsity is the fraction of weights set to zero and must be in [0, 1), got {value}"
        )


def magnitude_mask(weight: torch.Tensor, target: float) -> torch.Tensor:
    """Boolean mask (True = keep) that zeroes the ``round(target * numel)`` weights of smallest
    ``|w|``.

    Exactly that many weights are removed, even with ties (a stable sort decides between equals).
    """
    _check_sparsity(target)
    k = int(round(target * weight.numel()))
    keep = torch.ones(weight.numel(), dtype=torch.bool, device=weight.device)
    if k:
        order = torch.argsort(weight.detach().abs().flatten(), stable=True)
        keep[order[:k]] = False
    return keep.view_as(weight)


def prune_magnitude(
    model: nn.Module, target: float, skip: Iterable[str] = DEFAULT_SKIP
) -> nn.Module:
    """A copy of ``model`` whose ``Linear`` weights (except ``skip``) each lose their smallest
    ``target`` share.
    """
    pruned = copy.deepcopy(model)
    with torch.no_grad():
        for layer in linear_layers(pruned, skip).values():
            layer.weight.mul_(magnitude_mask(layer.weight, target))
    return pruned.eval()


def sparsity(model: nn.Module, skip: Iterable[str] = DEFAULT_SKIP) -> dict[str, float]:
    """Share of exactly-zero weights in each ``Linear`` of ``model`` (except ``skip``), plus
    ``"all"``.
    """
    out, zeros, total = {}, 0, 0
    for name, layer in linear_layers(model, skip).items():
        w = layer.weight
        z = int((w == 0).sum())
        out[name] = z / w.numel()
        zeros, total = zeros + z, total + w.numel()
    out["all"] = zeros / max(total, 1)
    return out


@torch.no_grad()
def calibration_hessians(
    model: nn.Module,
    calib_ids: torch.Tensor,
    skip: Iterable[str] = DEFAULT_SKIP,
    batch_size: int = 16,
) -> dict[str, torch.Tensor]:
    """``H = 2 X X^T / n`` (float64, ``(in, in)``) for the input ``X`` of every ``Linear``, from
    hooks.

    ``calib_ids`` is ``(N, T)`` token ids; every row is run through the model and each layer's
    inputs (all ``N * T`` positions) are accumulated. Dividing by the number of tokens ``n`` only
    rescales ``H``; it keeps the numbers in a friendly range.
    """
    device = next(model.parameters()).device

    def run() -> None:
        for i in range(0, calib_ids.shape[0], batch_size):
            model(calib_ids[i : i + batch_size].to(device))

    return _input_hessians(linear_layers(model, skip), run)


def _input_hessians(
    layers: dict[str, nn.Linear], run: Callable[[], object]
) -> dict[str, torch.Tensor]:
    """``H = 2 X X^T / n`` of each layer's inputs while ``run()`` drives the forward passes."""
    sums = {
        name: torch.zeros(m.in_features, m.in_features, dtype=torch.float64)
        for name, m in layers.items()
    }
    counts = dict.fromkeys(layers, 0)

    def hook(name):
        def fn(module, inputs, output):
            x = inputs[0].detach().reshape(-1, module.in_features).float()
            sums[name] += (x.T @ x).to("cpu", torch.float64)  # float32 product, float64 running sum
            counts[name] += x.shape[0]

        return fn

    handles = [m.register_forward_hook(hook(name)) for name, m in layers.items()]
    try:
        with torch.no_grad():
            run()
    finally:
        for h in handles:
            h.remove()
    return {name: 2 * sums[name] / max(counts[name], 1) for name in layers}


@torch.no_grad()
def sparsegpt_prune_linear(
    weight: torch.Tensor,
    hessian: torch.Tensor,
    target: float,
    block_size: int = 128,
    damp: float = 0.01,
) -> torch.Tensor:
    """Prune one weight matrix the SparseGPT way; returns the new (sparse, updated) weight.

    ``weight`` is ``(out, in)``, ``hessian`` is ``H = 2 X X^T / n`` of the layer's inputs,
    ``(in, in)``. Steps, following Frantar & Alistarh (2023), Algorithm 1:

    1. Dampen: ``H += damp * mean(diag H) * I`` (so it is safely invertible); inputs that are
       always zero (``H_qq = 0``) get weight 0.
    2. ``U = cholesky(H^-1)`` as an upper triangle. Row ``q`` of ``U``, divided by ``U_qq``, is the
       OBS update direction once the columns before ``q`` have been dealt with, and ``U_qq^2``
       is the matching ``[H^-1]_qq``.
    3. For each block of ``block_size`` columns, choose the mask: the smallest saliencies
       ``w^2 / U_qq^2`` in the block (exactly ``target`` of the block, so the whole matrix ends
       at exactly ``round(target * numel)`` zeros).
    4. Go through the block's columns one by one: zero the masked weights, and spread the error
       ``(w - w_pruned) / U_qq`` over the later columns with row ``q`` of ``U``. After the block,
       apply its accumulated errors to all later columns at once (the "lazy batch" update).
    """
    _check_sparsity(target)
    W = weight.detach().to(torch.float64).clone()
    rows, cols = W.shape
    H = hessian.detach().to(torch.float64).clone()
    if H.shape != (cols, cols):
        raise ValueError(
            f"hessian has shape {tuple(H.shape)}, but the weight has {cols} inputs: "
            f"expected ({cols}, {cols}); compute it from this layer's inputs"
        )
    dead = torch.diag(H) == 0
    H[dead, dead] = 1.0
    W[:, dead] = 0.0
    H += damp * torch.mean(torch.diag(H)) * torch.eye(cols, dtype=H.dtype)
    U = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True)

    pruned_so_far = 0
    for i1 in range(0, cols, block_size):
        i2 = min(i1 + block_size, cols)
        W1, U1 = W[:, i1:i2].clone(), U[i1:i2, i1:i2]
        Err1 = torch.zeros_like(W1)
        # exactly round(target * (weights up to the end of this block)) zeros so far
        k = int(round(target * rows * i2)) - pruned_so_far
        saliency = W1**2 / torch.diag(U1).reshape(1, -1) ** 2
        prune = torch.zeros(W1.numel(), dtype=torch.bool)
        if k > 0:
            prune[torch.argsort(saliency.flatten(), stable=True)[:k]] = True
        prune = prune.view_as(W1)
        pruned_so_far += k
        for i in range(i2 - i1):
            w = W1[:, i]
            d = U1[i, i]
            q = w.clone()
            q[prune[:, i]] = 0.0
            err = (w - q) / d
            W1[:, i:] -= err.unsqueeze(1) @ U1[i, i:].unsqueeze(0)
            W1[:, i] = q  # exactly zero where pruned (the update above leaves rounding residue)
            Err1[:, i] = err
        W[:, i1:i2] = W1
        W[:, i2:] -= Err1 @ U[i1:i2, i2:]
    return W.to(weight.dtype)


@torch.no_grad()
def prune_sparsegpt(
    model: nn.Module,
    calib_ids: torch.Tensor,
    target: float,
    skip: Iterable[str] = DEFAULT_SKIP,
    block_size: int = 128,
    damp: float = 0.01,
    sequential: bool = True,
    hessians: dict[str, torch.Tensor] | None = None,
) -> nn.Module:
    """A copy of ``model`` with every ``Linear`` (except ``skip``) pruned by
    :func:`sparsegpt_prune_linear`.

    ``sequential=True`` (as in SparseGPT, for a :class:`gptlib.model.GPT`): the blocks are pruned
    one after another, and the Hessians of block ``b`` come from the calibration text run through
    the *already pruned* blocks ``0 .. b-1``, so each block compensates its predecessors' errors.
    It costs about two forward passes of the calibration text.
    ``sequential=False``: all Hessians come from the dense model in one pass (pass them in as
    ``hessians`` to reuse them across sparsity levels; much cheaper for a sweep).
    """
    pruned = copy.deepcopy(model).eval()
    if not sequential or not hasattr(pruned, "h"):
        if hessians is None:
            hessians = calibration_hessians(pruned, calib_ids, skip)
        for name, layer in linear_layers(pruned, skip).items():
            layer.weight.copy_(
                sparsegpt_prune_linear(layer.weight, hessians[name], target, block_size, damp)
            )
        return pruned
    # sequential, block by block (GPT layout: embeddings -> blocks h.0 .. h.{n-1} -> ln_f ->
    # lm_head)
    device = next(pruned.parameters()).device
    ids = calib_ids.to(device)
    positions = torch.arange(ids.shape[1], device=device)
    x = pruned.drop(pruned.wte(ids) + pruned.wpe(positions))
    for b, block in enumerate(pruned.h):
        hs = calibration_hessians_block(block, x, prefix=f"h.{b}.", skip=skip)
        for name, layer in linear_layers(block).items():
            full = f"h.{b}.{name}"
            if full in hs:
                layer.weight.copy_(
                    sparsegpt_prune_linear(layer.weight, hs[full], target, block_size, damp)
                )
        x = block(x)  # the pruned block's output feeds the next block
    return pruned


def calibration_hessians_block(
    block: nn.Module, x: torch.Tensor, prefix: str = "", skip: Iterable[str] = DEFAULT_SKIP
) -> dict[str, torch.Tensor]:
    """:func:`calibration_hessians` for one block, given its input activations ``x`` (N, T, C)."""
    skip = tuple(skip)
    layers = {
        prefix + n: m
        for n, m in linear_layers(block, ()).items()
        if not any((prefix + n) == s or (prefix + n).startswith(s + ".") for s in skip)
    }
    return _input_hessians(layers, lambda: block(x))


# ----------------------------------------------------------------------------- measuring


@torch.no_grad()
def latency(model: nn.Module, ids: torch.Tensor, repeats: int = 5, warmup: int = 1) -> float:
    """Median wall-clock seconds of one forward pass of ``model`` on the batch ``ids`` (B, T)."""
    device = next(iter(model.state_dict().values())).device
    ids = ids.to(device)
    for _ in range(warmup):
        model(ids)
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        model(ids)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


@dataclass
class Row:
    """One line of the :func:`report` table."""

    name: str
    size_bytes: int
    latency_s: float
    perplexity: float


def report(
    models: dict[str, nn.Module],
    val_ids: torch.Tensor,
    latency_ids: torch.Tensor,
    max_windows: int | None = 64,
    repeats: int = 5,
) -> list[Row]:
    """Size, forward latency and validation perplexity of each model (name -> model)."""
    rows = []
    for name, m in models.items():
        rows.append(
            Row(
                name,
                model_size_bytes(m),
                latency(m, latency_ids, repeats),
                perplexity(m, val_ids, max_windows=max_windows),
            )
        )
    return rows


def format_table(rows: Sequence[Row], baseline: str | None = None) -> str:
    """The rows as a fixed-width text table; sizes and latencies also relative to ``baseline``
    (first row by default).
    """
    base = next((r for r in rows if r.name == baseline), rows[0])
    lines = [
        f"{'model':<26}{'size':>10}{'x':>7}{'latency':>11}{'x':>7}{'perplexity':>12}{'change':>9}"
    ]
    for r in rows:
        lines.append(
            f"{r.name:<26}{r.size_bytes / 1e6:>8.2f}MB{r.size_bytes / base.size_bytes:>7.2f}"
            f"{r.latency_s * 1e3:>9.1f}ms{r.latency_s / base.latency_s:>7.2f}"
            f"{r.perplexity:>12.3f}{r.perplexity / base.perplexity - 1:>+9.2%}"
        )
    return "\n".join(lines)
