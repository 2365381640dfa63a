"""Exercise checkers for chapters 8-9 (Codex: pass@k, stop sequences; insert and edit).

- :func:`check_pass_at_k`: the unbiased pass@k estimator, stable for large ``n``;
- :func:`check_truncate_at_stop`: cutting a completion at the first stop sequence.
"""

from __future__ import annotations

from math import comb
from typing import Callable, Sequence

from gptlib.checks import CheckFailed, _fail  # noqa: F401

__all__ = [
    "check_pass_at_k",
    "check_truncate_at_stop",
    "check_best_temperature",
    "check_plain_value",
    "check_rank_by_mean",
]


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
                _fail(
                    f"pass_at_k({n}, {c}, {k}) = {got:.6f}: that is the naive 1 - (1 - c/n)^k "
                    f"(expected {expected:.6f}).",
                    "the k samples are drawn without replacement: count the k-subsets with no "
                    "passing sample, C(n - c, k), out of all C(n, k).",
                )
            if abs(got - c / n) < 1e-9:
                _fail(
                    f"pass_at_k({n}, {c}, {k}) = c/n = {got:.6f}, which is only right for k = 1 "
                    f"(expected {expected:.6f})."
                )
            _fail(
                f"pass_at_k({n}, {c}, {k}) = {got:.6f}, expected {expected:.6f}.",
                "pass@k = 1 - C(n - c, k) / C(n, k); when n - c < k every k-subset passes: 1.0.",
            )
    n, c, k = 200, 37, 100
    expected = 1 - comb(n - c, k) / comb(n, k)
    try:
        got = float(fn(n, c, k))
    except OverflowError:
        _fail(
            f"pass_at_k({n}, {c}, {k}) overflows.",
            "use the product form 1 - prod_{i=n-c+1}^{n} (1 - k/i) instead of the binomials "
            "as floats.",
        )
    if not abs(got - expected) < 1e-9:
        _fail(
            f"pass_at_k({n}, {c}, {k}) = {got!r}, expected {expected:.12f} "
            "(large n loses precision).",
            "use the product form 1 - prod_{i=n-c+1}^{n} (1 - k/i).",
        )
    return "pass@k: unbiased and stable for n = 200."


def check_truncate_at_stop(fn: Callable[[str, Sequence[str]], str]) -> str:
    """Check ``fn(completion, stops)``: cut at the *earliest* stop sequence, dropping it."""
    stops = ("\nclass", "\ndef", "\n#", "\nif", "\nprint")
    cases = [
        (
            "    if x:\n        return 1\n    return 0\nif __name__ == '__main__':\n",
            "    if x:\n        return 1\n    return 0",
        ),
        ("    return x + 1\n\ndef g():\n    pass\n", "    return x + 1\n"),
        ("    y = 2\n    return y\nprint(f(1))\n# done\n", "    y = 2\n    return y"),
        ("    return 1", "    return 1"),
        ("    return x  # done\n#\nclass A: pass", "    return x  # done"),
    ]
    for completion, expected in cases:
        got = fn(completion, stops)
        if got != expected:
            hint = (
                "cut at the earliest position where any stop sequence starts, not at the first "
                "stop sequence in the list."
                if isinstance(got, str) and len(got) > len(expected)
                else "a stop sequence starts with a newline at the *start of a line*: the indented "
                "'    if x:' inside the body must stay."
            )
            _fail(f"truncate({completion!r}) = {got!r}, expected {expected!r}.", hint)
    return "stop sequences: the body ends where a new top-level statement would begin."


# --------------------------------------------------------------------------------------
# Chapter 9: insert and edit (fill in the middle)
# --------------------------------------------------------------------------------------


def check_best_temperature(fn: Callable[[dict, int], float]) -> str:
    """Check ``fn(rows, k)``: the temperature with the highest unbiased pass@k, where
    ``rows = {T: {task_id: (n, c)}}``."""
    from gptlib.passk import pass_at_k

    # Cold: one problem solved often, two never. Hot: all three solved now and then.
    rows = {
        0.2: {"a": (10, 7), "b": (10, 0), "c": (10, 0)},
        0.8: {"a": (10, 3), "b": (10, 2), "c": (10, 1)},
    }
    expected = {
        k: max(rows, key=lambda T: sum(pass_at_k(n, c, k) for n, c in rows[T].values()))
        for k in (1, 5)
    }  # {1: 0.2, 5: 0.8}
    for k, want in expected.items():
        got = fn(rows, k)
        if got != want:
            naive = max(rows, key=lambda T: sum(1 - (1 - c / n) ** k for n, c in rows[T].values()))
            total = max(rows, key=lambda T: sum(c for _, c in rows[T].values()))
            hint = (
                "that is the temperature with the most passing samples, which is pass@1's "
                "answer: for k > 1 what counts is how many problems get at least one pass."
                if got == total and k > 1
                else "average pass_at_k(n, c, k) over the problems at each temperature, then take "
                "the temperature with the largest mean."
            )
            if got == naive and naive != want:
                hint = "use the unbiased estimator, not 1 - (1 - c/n)^k."
            _fail(f"best temperature for pass@{k}: got {got!r}, expected {want!r}.", hint)
    return "best temperature: right for pass@1 and for pass@k with k > 1."


def check_plain_value(fn: Callable[[object], bool]) -> str:
    """Check ``fn(value)``: True only for plain values (None, bool, int, float, str, bytes and
    list/tuple/dict/set/frozenset of them), checked by exact type, recursively."""

    class Int(int):
        def __eq__(self, other):
            return True

        __hash__ = int.__hash__

    class Str(str):
        pass

    class List(list):
        pass

    class Anything:
        def __eq__(self, other):
            return True

    plain = [
        None,
        True,
        3,
        -(2**80),
        2.5,
        float("nan"),
        "s",
        b"b",
        [1, [2, "x"]],
        (1, 2.0),
        {"k": [1, 2]},
        {1, 2},
        frozenset({"a"}),
        [],
        {},
    ]
    rigged = [
        Int(3),
        Str("s"),
        List(),
        Anything(),
        [1, Int(2)],
        (Anything(),),
        {"k": Str("v")},
        {Int(1): 2},
        [[[Anything()]]],
        {frozenset({Int(4)})},
    ]
    for value in plain:
        if fn(value) is not True:
            _fail(f"my_is_plain({value!r}) should be True: it is a plain value.")
    for value in rigged:
        if fn(value) is not False:
            inside = isinstance(value, (list, tuple, dict, set, frozenset)) and type(value) in (
                list,
                tuple,
                dict,
                set,
                frozenset,
            )
            _fail(
                f"my_is_plain({value!r}) should be False.",
                "look inside containers too (keys and values of a dict), recursively."
                if inside
                else "compare type(value) with the allowed types exactly: isinstance() accepts "
                "subclasses, whose __eq__ can be rigged.",
            )
    return "plain values: exact types, all the way down."


def check_rank_by_mean(fn: Callable[[list], int]) -> str:
    """Check ``fn(samples)``: the index of the sample with the highest *mean* log-probability,
    where ``samples`` is a list of per-token log-probability lists."""
    cases = [
        ([[-0.2, -0.2, -0.2, -0.2, -0.2], [-0.5]], 0),  # the sum prefers the short one
        ([[-1.0, -2.0], [-0.2, -0.3, -0.4]], 1),
        ([[-0.3], [-0.3, -0.3], [-0.1, -2.0]], 0),  # ties: the first
    ]
    for samples, want in cases:
        got = fn(samples)
        if got != want:
            by_sum = max(range(len(samples)), key=lambda i: sum(samples[i]))
            hint = (
                "that is the highest *sum*, which favours short samples; divide by the length."
                if got == by_sum
                else "mean = sum(logprobs) / len(logprobs); on ties keep the first."
            )
            _fail(f"for {samples} you picked sample {got}, expected {want}.", hint)
    return "ranking: by mean log-probability, as in the Codex paper."


def _fim_cases():
    import random

    rng = random.Random(0)
    docs = [
        'def f(x):\n    """Double x."""\n    return x * 2\n',
        "abcdef",
        "for v in xs:\n    total += v\n",
    ]
    cases = [(docs[0], 10, 31), (docs[1], 0, 6), (docs[1], 3, 3), (docs[2], 5, 13)]
    for _ in range(20):
        doc = rng.choice(docs)
        i, j = sorted((rng.randint(0, len(doc)), rng.randint(0, len(doc))))
        cases.append((doc, i, j))
    return cases


def check_psm(fn) -> str:
    """Check ``fn(doc, i, j)``: cut ``doc`` at ``i <= j`` and return the PSM training string
    ``<PRE>prefix<SUF>suffix<MID>middle<EOT>`` (sentinels from ``gptlib.fim``)."""
    from gptlib.fim import EOT, MID, PRE, SUF, psm, show, spm

    for doc, i, j in _fim_cases():
        prefix, middle, suffix = doc[:i], doc[i:j], doc[j:]
        expected = psm(prefix, middle, suffix)
        got = fn(doc, i, j)
        if not isinstance(got, str):
            _fail(
                f"my_psm returned {type(got).__name__}, expected a str.",
                "join the pieces and the sentinel characters into one string.",
            )
        if got == expected:
            continue
        where = f"for doc={doc!r}, i={i}, j={j}"
        if got == spm(prefix, middle, suffix):
            _fail(
                f"{where} you returned the SPM order (suffix first).",
                "PSM is <PRE> prefix <SUF> suffix <MID> middle <EOT>.",
            )
        if got in (PRE + prefix + SUF + suffix + MID + middle, expected[:-1]):
            _fail(
                f"{where} the result does not end with <EOT>.",
                "append EOT after the middle: it is how the model learns to stop infilling.",
            )
        if got == PRE + prefix + MID + middle + SUF + suffix + EOT:
            _fail(
                f"{where} the middle comes before the suffix: that is the original order.",
                "the whole trick is to move the middle to the end, after <SUF> suffix <MID>.",
            )
        if got == PRE + suffix + SUF + prefix + MID + middle + EOT:
            _fail(
                f"{where} prefix and suffix are swapped.",
                "<PRE> is followed by the prefix, <SUF> by the suffix.",
            )
        for di, dj in ((1, 0), (0, 1), (1, 1), (-1, 0), (0, -1), (-1, -1)):
            a, b = i + di, j + dj
            if 0 <= a <= b <= len(doc) and got == psm(doc[:a], doc[a:b], doc[b:]):
                _fail(
                    f"{where} the cut points are off by one.",
                    "prefix = doc[:i], middle = doc[i:j], suffix = doc[j:] "
                    "(Python slices, end excluded).",
                )
        if sorted(got) != sorted(expected):
            _fail(
                f"{where} your string has other characters than the document plus the four "
                "sentinels:\n"
                f"  got      {show(got)!r}\n  expected {show(expected)!r}",
                "the transform only rearranges: every character of the document appears "
                "exactly once.",
            )
        _fail(f"{where}:\n  got      {show(got)!r}\n  expected {show(expected)!r}")
    return "PSM transform: correct (order, cut points and <EOT>)."


def check_fim_prompt(fn) -> str:
    """Check ``fn(prefix, suffix)``: the PSM infilling prompt ``<PRE>prefix<SUF>suffix<MID>``."""
    from gptlib.fim import EOT, MID, PRE, SUF, fim_prompt, show

    for doc, i, j in _fim_cases():
        prefix, suffix = doc[:i], doc[j:]
        expected = fim_prompt(prefix, suffix)
        got = fn(prefix, suffix)
        if not isinstance(got, str):
            _fail(f"my_fim_prompt returned {type(got).__name__}, expected a str.")
        if got == expected:
            continue
        where = f"for prefix={prefix!r}, suffix={suffix!r}"
        if got == expected[:-1] or got == PRE + prefix + SUF + suffix:
            _fail(
                f"{where} the prompt does not end with <MID>.",
                "the model writes the middle right after <MID>: the prompt must end with it.",
            )
        if got.startswith(expected) and got[len(expected) :] in (EOT, MID):
            _fail(
                f"{where} there is an extra sentinel after <MID>.",
                "stop at <MID>: the model writes the middle and then <EOT> itself.",
            )
        if got == EOT + expected:
            _fail(
                f"{where} the prompt starts with <EOT>.",
                "gptlib.fim.infill adds that document boundary itself; the prompt starts "
                "with <PRE>.",
            )
        if got == PRE + suffix + SUF + prefix + MID:
            _fail(f"{where} prefix and suffix are swapped.", "<PRE> prefix <SUF> suffix <MID>.")
        if got == PRE + SUF + suffix + MID + prefix:
            _fail(
                f"{where} you built the SPM prompt.",
                "this exercise asks for PSM: <PRE> prefix <SUF> suffix <MID>.",
            )
        _fail(f"{where}:\n  got      {show(got)!r}\n  expected {show(expected)!r}")
    return "fim_prompt: correct PSM infilling prompt."


__all__ += ["check_psm", "check_fim_prompt"]
