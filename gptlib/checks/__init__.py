"""Exercise checkers: call one on your answer, get a pass or a message that helps.

Every chapter ends with exercises. Each exercise has a checker here that compares the
reader's function (or value) with a reference on fresh random inputs and, when they
disagree, says *how* they disagree (shape, a wrong normalisation, a missing mask...),
not just "wrong". Checkers raise :class:`CheckFailed` (an ``AssertionError``) so they
work as notebook test cells and as nbgrader autograded tests alike.

The general helpers and the preface's checker live here; each part of the book keeps its
checkers in a submodule (``attention``, ``tokens``, ``finetune``, ``generation``...), and
``from gptlib.checks import check_x`` finds every one of them (module ``__getattr__``).

Every checker is registered with the :func:`checker` decorator, which turns the two ways an
exercise is not done yet into a hint instead of a traceback:

* the answer is still the stub of the student edition (``raise NotImplementedError()``);
* the answer's name is not defined (its cell was not run, or it raises before assigning).
  Pass the *name* as a string for that case: ``check_query_focus("q_good", ...)`` looks
  ``q_good`` up in the notebook; ``check_query_focus(q_good, ...)`` would fail with Python's
  ``NameError`` before the checker could say anything.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
import sys
import textwrap
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


def _caller_names() -> dict:
    """The names visible where a checker was called (a notebook cell: the notebook's names)."""
    frame = sys._getframe(2)  # 0: here, 1: the checker's wrapper, 2: its caller
    return {**frame.f_globals, **frame.f_locals}


def _resolve(answer, caller_globals: dict):
    """An answer given by name (a string) is looked up where the checker was called from."""
    if not (isinstance(answer, str) and answer.isidentifier()):
        return answer
    if answer in caller_globals:
        return caller_globals[answer]
    _fail(
        f"`{answer}` is not defined yet.",
        f"write `{answer}` in the exercise cell above and run that cell (Shift+Enter), "
        "then run this one again.",
    )
    return None  # unreachable


class Feedback(str):
    """A checker's message. It is a ``str``; a notebook shows it as plain text wrapped at 88
    characters (the width of the book's output boxes) instead of a one-line quoted repr."""

    def wrapped(self) -> str:
        return "\n".join(textwrap.fill(line, 88) if line else "" for line in self.split("\n"))

    def _repr_pretty_(self, printer, cycle) -> None:  # IPython's display of a cell's value
        printer.text(self.wrapped())


def checker(check: Callable) -> Callable:
    """Register a checker: unfinished answers get a hint, not a traceback.

    The first argument may be given by name (``check_x("my_answer")``): it is looked up in the
    calling notebook, and a missing name says which cell to run. A later argument that is a
    string naming a *function* of the notebook is replaced by that function. A stub that still
    raises
    ``NotImplementedError``, or an answer that uses a name not defined anywhere, is reported
    the same way. Checkers' own failures (:class:`CheckFailed`) pass through unchanged.
    """

    @functools.wraps(check)
    def run(*args, **kwargs):
        if args:
            names = _caller_names()
            # later arguments: a string naming a function of the notebook is that function
            rest = [
                names[a] if isinstance(a, str) and callable(names.get(a)) else a for a in args[1:]
            ]
            args = (_resolve(args[0], names), *rest)
        try:
            result = check(*args, **kwargs)
            return Feedback(result) if isinstance(result, str) else result
        except NotImplementedError:
            _fail(
                "your answer is not written yet: it still raises NotImplementedError.",
                "replace `raise NotImplementedError()` with "
                "your code, run that cell, then this one.",
            )
        except NameError as err:
            _fail(
                f"your answer uses a name that is not defined: {err}.",
                "define it (or run the cell that defines it) before running the checker.",
            )

    run.is_checker = True
    return run


@checker
def check_softmax(fn: Callable[[torch.Tensor], torch.Tensor]) -> str:
    """Check a softmax over the last dimension, including its numerical stability."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 5, 7, generator=g)
    out = fn(x.clone())
    if not isinstance(out, torch.Tensor):
        _fail(f"softmax returned {type(out).__name__}, expected a torch.Tensor.")
    sums = out.sum(-1)
    if out.shape == x.shape and not torch.allclose(sums, torch.ones_like(sums), atol=1e-5):
        _fail(
            "softmax rows do not sum to 1 over the last dimension.",
            "normalise over dim=-1 (the keys), not over the whole tensor or dim=0.",
        )
    check_close(out, torch.softmax(x, -1), "softmax(x)", atol=1e-5)
    big = torch.tensor([[1000.0, 1001.0, 1002.0]])
    out_big = fn(big)
    if not torch.isfinite(out_big).all():
        _fail(
            "softmax overflows on large inputs (got inf/NaN for [1000, 1001, 1002]).",
            "subtract the row maximum before exponentiating: exp(x - x.max(-1, keepdim=True)).",
        )
    check_close(out_big, torch.softmax(big, -1), "softmax of large inputs", atol=1e-5)
    return "softmax: correct and numerically stable."


def _entropy(p: torch.Tensor) -> float:
    return float(-(p * p.clamp_min(1e-30).log()).sum())


@checker
def check_temperature_for_entropy(fn: Callable[[torch.Tensor, float], float]) -> str:
    """Check ``fn(scores, target)``: a temperature at which softmax(scores / T) has entropy target.

    Tested on several score vectors and targets strictly between 0 and log(n); the entropy of
    softmax(scores / T) at the returned T must be within 0.01 nats of the target.
    """
    g = torch.Generator().manual_seed(3)
    for n in (3, 5, 9):
        scores = torch.randn(n, generator=g) * 2
        top = torch.log(torch.tensor(float(n))).item()
        for target in (0.1 * top, 0.5 * top, 0.9 * top):
            t = fn(scores.clone(), target)
            if isinstance(t, torch.Tensor):
                t = t.item()
            if not isinstance(t, (int, float)) or not t > 0:
                _fail(
                    f"for target {target:.3f} nats you returned "
                    f"{t!r}: a temperature is a number > 0."
                )
            got = _entropy(torch.softmax(scores / t, -1))
            if abs(got - target) > 0.01:
                hint = (
                    "entropy grows with the temperature: search T between a small and a large "
                    "value (bisection), raising T when the entropy is too low."
                )
                _fail(
                    f"softmax(scores / {t:.4g}) has entropy {got:.3f} nats, target {target:.3f} "
                    f"(scores {[round(v, 2) for v in scores.tolist()]}).",
                    hint,
                )
    return "temperature for entropy: every target reached within 0.01 nats."


@checker
def check_zero_temperature(fn: Callable[[torch.Tensor], torch.Tensor], prediction) -> str:
    """Predict, then measure: the distribution softmax(scores / T) tends to as T -> 0.

    ``prediction`` (a string, or a function returning it) is one of ``"uniform"``, ``"one-hot"``
    or ``"unchanged"``; ``fn(scores)`` returns the limit distribution, which is compared with
    softmax at a tiny temperature, also for scores with a tie for the maximum.
    """
    if callable(prediction):
        prediction = prediction()
    if prediction not in {"uniform", "one-hot", "unchanged"}:
        _fail(f"prediction is {prediction!r}; write 'uniform', 'one-hot' or 'unchanged'.")
    if prediction != "one-hot":
        cold = torch.softmax(torch.tensor([2.0, 1.0, 0.5]) / 0.01, -1).tolist()
        _fail(
            f"you predicted '{prediction}'; at T = 0.01 the scores [2, 1, 0.5] give "
            f"{[round(v, 3) for v in cold]}.",
            "dividing by a tiny T blows up the gaps between scores: the largest takes everything.",
        )
    for scores in (torch.tensor([2.0, 1.0, 0.5, 0.1]), torch.tensor([1.0, 3.0, 3.0, -2.0])):
        out = torch.as_tensor(fn(scores.clone()), dtype=torch.float32)
        limit = torch.softmax(scores.double() / 1e-4, -1).float()
        check_close(
            out,
            limit,
            f"limit for scores {scores.tolist()}",
            atol=1e-3,
            hint="probability 1 on the largest score; a tie of k maxima gets 1/k each.",
        )
    return "zero temperature: the distribution becomes one-hot on the largest score (ties share)."


def _parts() -> list[str]:
    """The submodules holding the parts' checkers (every module of this package: a new part is
    found without being listed anywhere)."""
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def __getattr__(name: str):
    """``gptlib.checks.check_x`` for a checker that lives in one of the parts' submodules."""
    if name.startswith("check_"):
        for part in _parts():
            module = importlib.import_module(f"gptlib.checks.{part}")
            if name in getattr(module, "__all__", ()):
                found = getattr(module, name)
                return found if getattr(found, "is_checker", False) else checker(found)
    raise AttributeError(f"module 'gptlib.checks' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_all_checkers()))


def _all_checkers() -> list[str]:
    names = []
    for part in _parts():
        names += getattr(importlib.import_module(f"gptlib.checks.{part}"), "__all__", [])
    return names
