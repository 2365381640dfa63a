"""Shared pytest set-up: headless plotting, fast mode, static widgets, CUDA marker."""
from __future__ import annotations

import os

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("GPTLIB_FAST", "1")
os.environ.setdefault("GPTLIB_STATIC", "1")

import pytest


def pytest_collection_modifyitems(config, items):
    """Skip `@pytest.mark.cuda` tests on machines without a GPU (they run, not skip, on one)."""
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:
        has_cuda = False
    if has_cuda:
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (run on the GPU machine; see benchmarks/RESULTS.md)")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
