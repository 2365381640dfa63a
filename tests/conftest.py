"""Shared pytest set-up: headless plotting, fast mode, static widgets, CUDA marker."""
from __future__ import annotations

import os

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("GPTLIB_FAST", "1")
os.environ.setdefault("GPTLIB_STATIC", "1")

import pytest


def threads_per_worker() -> int:
    """CPU threads each test process may use: the cores shared out among pytest-xdist workers.

    Two workers each running torch with every core oversubscribe the CPU, which makes the
    whole run several times slower on a 2-core machine.
    """
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    return max(1, (os.cpu_count() or 1) // max(1, workers))


def pytest_configure(config):
    try:
        import torch
    except ImportError:
        return
    torch.set_num_threads(threads_per_worker())


def pytest_collection_modifyitems(config, items):
    """Run the chapters first; skip `@pytest.mark.cuda` tests on machines without a GPU.

    A chapter takes 5-90 s, a unit test mostly under one: started first, the chapters are
    dealt out to the workers in turn (`--dist load` deals its first batch round-robin) and the
    short tests fill the gaps, instead of one worker finishing a long chapter alone at the end.
    """
    items.sort(key=lambda item: "notebook" not in item.keywords)  # stable: order kept within
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


@pytest.fixture(scope="module")
def one_thread():
    """Run a module's tests on one torch thread.

    Their models are tiny: a second thread buys nothing, and on a busy machine OpenMP
    threads waiting for each other can make every step many times slower.
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
