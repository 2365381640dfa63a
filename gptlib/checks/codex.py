"""Exercise checkers for chapters 8-9 (Codex: pass@k, stop sequences; insert and edit).

- :func:`check_pass_at_k`: the unbiased pass@k estimator, stable for large ``n``;
- :func:`check_truncate_at_stop`: cutting a completion at the first stop sequence.
"""
from __future__ import annotations

from math import comb
from typing import Callable, Sequence

from gptlib.checks import CheckFailed, _fail  # noqa: F401

__all__ = ["check_pass_at_k", "check_truncate_at_stop"]


def check_pass_at_k(fn: Callable[[int, int, int], float]) -> str:
    """Check ``fn(n, c, k)`` = 1 - C(n-c, k) / C(n, k), including n = 200 and the edge cases."""
    small = [(5, 0, 1), (5, 5, 3), (10, 3, 1), (10, 3, 5), (10, 8, 5), (20, 1, 10)]
    for n, c, k in small:
        expected = 1 - comb(n - c, k) / comb(n, k)
        got = fn(n, c, k)
        try:
            got = float(got)
        except (TypeError, ValueError):
            _fail(f"pass_at_k({n}, {c}, {k}) returned {got!r}, expected a number.")
        if abs(got - expected) > 1e-9:
            if abs(got - (1 - (1 - c / n) ** k)) < 1e-9 and c not in (0, n):
                _fail(f"pass_at_k({n}, {c}, {k}) = {got:.6f}: that is the naive 1 - (1 - c/n)^k "
                      f"(expected {expected:.6f}).",
                      "the k samples are drawn without replacement: count the k-subsets with no "
                      "passing sample, C(n - c, k), out of all C(n, k).")
            if abs(got - c / n) < 1e-9:
                _fail(f"pass_at_k({n}, {c}, {k}) = c/n = {got:.6f}, which is only right for k = 1 "
                      f"(expected {expected:.6f}).")
            _fail(f"pass_at_k({n}, {c}, {k}) = {got:.6f}, expected {expected:.6f}.",
                  "pass@k = 1 - C(n - c, k) / C(n, k); when n - c < k every k-subset passes: 1.0.")
    n, c, k = 200, 37, 100
    expected = 1 - comb(n - c, k) / comb(n, k)
    try:
        got = float(fn(n, c, k))
    except OverflowError:
        _fail(f"pass_at_k({n}, {c}, {k}) overflows.",
              "use the product form 1 - prod_{i=n-c+1}^{n} (1 - k/i) instead of the binomials as floats.")
    if not abs(got - expected) < 1e-9:
        _fail(f"pass_at_k({n}, {c}, {k}) = {got!r}, expected {expected:.12f} (large n loses precision).",
              "use the product form 1 - prod_{i=n-c+1}^{n} (1 - k/i).")
    return "pass@k: unbiased and stable for n = 200."


def check_truncate_at_stop(fn: Callable[[str, Sequence[str]], str]) -> str:
    """Check ``fn(completion, stops)``: cut at the *earliest* stop sequence, dropping it."""
    stops = ("\nclass", "\ndef", "\n#", "\nif", "\nprint")
    cases = [
        ("    if x:\n        return 1\n    return 0\nif __name__ == '__main__':\n", "    if x:\n        return 1\n    return 0"),
        ("    return x + 1\n\ndef g():\n    pass\n", "    return x + 1\n"),
        ("    y = 2\n    return y\nprint(f(1))\n# done\n", "    y = 2\n    return y"),
        ("    return 1", "    return 1"),
        ("    return x  # done\n#\nclass A: pass", "    return x  # done"),
    ]
    for completion, expected in cases:
        got = fn(completion, stops)
        if got != expected:
            hint = ("cut at the earliest position where any stop sequence starts, not at the first "
                    "stop sequence in the list." if isinstance(got, str) and len(got) > len(expected)
                    else "a stop sequence starts with a newline at the *start of a line*: the indented "
                         "'    if x:' inside the body must stay.")
            _fail(f"truncate({completion!r}) = {got!r}, expected {expected!r}.", hint)
    return "stop sequences: the body ends where a new top-level statement would begin."
