"""Where the computation runs, and how reproducibly.

- ``get_device()``: CUDA if present, then Apple's MPS, else the CPU.
- ``autocast(device)``: bf16 mixed precision on CUDA (no loss scaling needed, unlike fp16),
  a no-op elsewhere so CPU results stay exact fp32.
- ``seed_everything(seed)``: one call seeds Python, NumPy and torch (all devices).
- ``FAST``: chapters use it to pick a laptop-sized run (tests, CI, the site build) instead of
  the full-size GPU run. ``GPTLIB_FAST=1`` forces it on, ``GPTLIB_FAST=0`` off; unset, it is
  on unless a CUDA GPU is present.
- ``maybe_compile(model, enabled)``: ``torch.compile`` when asked and available.
"""

from __future__ import annotations

import contextlib
import os
import random

import numpy as np
import torch


def _fast_from_env() -> bool:
    """GPTLIB_FAST=1/0 decides; unset means full size on a CUDA GPU and fast mode elsewhere."""
    value = os.environ.get("GPTLIB_FAST")
    if value is None or value == "":
        return not torch.cuda.is_available()
    return value.lower() in {"1", "true", "yes", "on"}


FAST: bool = _fast_from_env()


def get_device(prefer: str | None = None) -> torch.device:
    """Return the best available device: cuda > mps > cpu.

    ``prefer`` (or the environment variable ``GPTLIB_DEVICE``) forces one, e.g. ``"cpu"``.
    """
    prefer = prefer or os.environ.get("GPTLIB_DEVICE")
    if prefer:
        return torch.device(prefer)
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def autocast_dtype(device: torch.device | str) -> torch.dtype | None:
    """The mixed-precision dtype used on ``device``: bf16 on CUDA, None (full fp32) elsewhere."""
    return torch.bfloat16 if torch.device(device).type == "cuda" else None


def autocast(device: torch.device | str, enabled: bool = True):
    """Context manager for mixed precision: bf16 autocast on CUDA, a no-op on CPU/MPS."""
    dtype = autocast_dtype(device)
    if not enabled or dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch (CPU and all GPUs); return a CPU generator seeded the same."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def enable_tf32() -> None:
    """Let CUDA matmuls use TF32 tensor cores (a large speed-up for fp32 work on Ampere+)."""
    if torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def maybe_compile(model: torch.nn.Module, enabled: bool = False) -> torch.nn.Module:
    """``torch.compile(model)`` when ``enabled`` and supported, else ``model`` unchanged.

    Compilation pays off on GPUs for long runs; it costs tens of seconds of start-up,
    which is why the book leaves it off in fast mode.
    """
    if not enabled or not hasattr(torch, "compile"):
        return model
    return torch.compile(model)


def describe() -> str:
    """One line that says what this machine offers, for chapter headers and benchmarks."""
    dev = get_device()
    if dev.type == "cuda":
        name = torch.cuda.get_device_name(dev)
        return f"cuda ({name}), torch {torch.__version__}, bf16 autocast"
    return f"{dev.type}, {torch.get_num_threads()} threads, torch {torch.__version__}"
