"""Exercise checkers: call one on your answer, get a pass or a message that helps.

Every chapter ends with exercises. Each exercise has a checker here that compares the
reader's function (or value) with a reference on fresh random inputs and, when they
disagree, says *how* they disagree (shape, a wrong normalisation, a missing mask...),
not just "wrong". Checkers raise :class:`CheckFailed` (an ``AssertionError``) so they
work as notebook test cells and as nbgrader autograded tests alike.

The general helpers and the preface's checker live here; each part of the book keeps its
checkers in a submodule (``attention``, ``tokens``, ``finetune``, ``generation``), all
re-exported below so that ``from gptlib.checks import check_x`` works for every exercise.
"""
from __future__ import annotations

from typing import Callable

import torch


class CheckFailed(AssertionError):
    """Raised by a checker; the message says what differs and hints at the fix."""


def _fail(message: str, hint: str | None = None) -> None:
    raise CheckFailed(message + (f"\nHint: {hint}" if hint else ""))


def check_close(actual, expected, what: str, atol: float = 1e-5, hint: str | None = None) -> None:
    """Compare two tensors (or things convertible to tensors) and explain any mismatch."""
    actual = torch.as_tensor(actual)
    expected = torch.as_tensor(expected)
    if actual.shape != expected.shape:
        _fail(f"{what}: shape {tuple(actual.shape)}, expected {tuple(expected.shape)}.", hint)
    if not torch.is_floating_point(actual):
        actual = actual.double()
    err = (actual.double() - expected.double()).abs().max().item() if actual.numel() else 0.0
    if not err <= atol:  # also catches NaN
        _fail(f"{what}: values differ by up to {err:.3g} (tolerance {atol:g}).", hint)


def check_softmax(fn: Callable[[torch.Tensor], torch.Tensor]) -> str:
    """Check a softmax over the last dimension, including its numerical stability."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 5, 7, generator=g)
    out = fn(x.clone())
    if not isinstance(out, torch.Tensor):
        _fail(f"softmax returned {type(out).__name__}, expected a torch.Tensor.")
    sums = out.sum(-1)
    if out.shape == x.shape and not torch.allclose(sums, torch.ones_like(sums), atol=1e-5):
        _fail("softmax rows do not sum to 1 over the last dimension.",
              "normalise over dim=-1 (the keys), not over the whole tensor or dim=0.")
    check_close(out, torch.softmax(x, -1), "softmax(x)", atol=1e-5)
    big = torch.tensor([[1000.0, 1001.0, 1002.0]])
    out_big = fn(big)
    if not torch.isfinite(out_big).all():
        _fail("softmax overflows on large inputs (got inf/NaN for [1000, 1001, 1002]).",
              "subtract the row maximum before exponentiating: exp(x - x.max(-1, keepdim=True)).")
    check_close(out_big, torch.softmax(big, -1), "softmax of large inputs", atol=1e-5)
    return "softmax: correct and numerically stable."


# Checkers of the chapters, one submodule per part of the book (imported last: they use the helpers above).
from gptlib.checks.attention import *  # noqa: E402,F401,F403  chapters 1-2
from gptlib.checks.tokens import *  # noqa: E402,F401,F403  chapter 3
from gptlib.checks.finetune import *  # noqa: E402,F401,F403  chapter 4
from gptlib.checks.generation import *  # noqa: E402,F401,F403  chapter 5
from gptlib.checks.icl import *  # noqa: E402,F401,F403  chapter 6
from gptlib.checks.corpus import *  # noqa: E402,F401,F403  chapter 7
from gptlib.checks.codex import *  # noqa: E402,F401,F403  chapters 8-9
from gptlib.checks.embeddings import *  # noqa: E402,F401,F403  chapter 10
from gptlib.checks.alignment import *  # noqa: E402,F401,F403  chapters 11-14
from gptlib.checks.compress import *  # noqa: E402,F401,F403  chapter 15


def _explain_unwritten(check):
    """Wrap a checker: a function still raising NotImplementedError (the stub of the student
    edition, see scripts/classroom.py) gets a message saying so, not a traceback."""
    import functools

    @functools.wraps(check)
    def wrapper(*args, **kwargs):
        try:
            return check(*args, **kwargs)
        except NotImplementedError:
            _fail("your function is not written yet: it still raises NotImplementedError.",
                  "replace `raise NotImplementedError()` with your code, run that cell, then this one.")

    return wrapper


for _name in [n for n in list(globals()) if n.startswith("check_") and callable(globals()[n])]:
    globals()[_name] = _explain_unwritten(globals()[_name])
