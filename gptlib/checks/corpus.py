"""Exercise checkers for chapter 7: the alphanumeric filter and the Jaccard similarity of
shingles."""

from __future__ import annotations

import math
from typing import Callable

from gptlib.checks import _fail, checker

__all__ = ["check_alphanumeric_share", "check_shingle_jaccard", "check_minhash_signature"]

#: Test strings for the alphanumeric share: code, a table of symbols, digits, Unicode letters.
_SHARE_CASES = [
    "def f(x):\n    return x + 1\n",
    "# ==========\n# ----------\n",
    "x = 12345\n",
    "café = 'naïve'\n",
    "   \n\t\n",
    "((((1))))",
]


def _reference_share(source: str) -> float:
    return sum(c.isalnum() for c in source) / len(source) if source else 0.0


@checker
def check_alphanumeric_share(fn: Callable[[str], float]) -> str:
    """Check ``fn(source) -> share of alphanumeric characters`` (0.0 for an empty string)."""
    for source in _SHARE_CASES:
        got = fn(source)
        if not isinstance(got, (int, float)):
            _fail(
                f"alphanumeric_share({source!r}) returned {type(got).__name__}, expected a float."
            )
        want = _reference_share(source)
        if math.isclose(got, want, abs_tol=1e-9):
            continue
        if math.isclose(got, 100 * want, abs_tol=1e-6):
            _fail(
                f"alphanumeric_share({source!r}) = {got:.4g}: "
                f"a percentage, expected a share {want:.4g}.",
                "return a number between 0 and 1 (do not multiply by 100).",
            )
        letters = sum(c.isalpha() for c in source) / len(source)
        if math.isclose(got, letters, abs_tol=1e-9):
            _fail(
                f"alphanumeric_share({source!r}) = {got:.4g}, "
                f"expected {want:.4g}: digits are not counted.",
                "count letters *and* digits: str.isalnum(), not str.isalpha().",
            )
        no_space = [c for c in source if not c.isspace()]
        if no_space and math.isclose(
            got, sum(c.isalnum() for c in no_space) / len(no_space), abs_tol=1e-9
        ):
            _fail(
                f"alphanumeric_share({source!r}) = {got:.4g}, "
                f"expected {want:.4g}: whitespace is left out "
                "of the denominator.",
                "divide by len(source): every character counts, spaces and newlines too.",
            )
        ascii_only = sum(c.isascii() and c.isalnum() for c in source) / len(source)
        if math.isclose(got, ascii_only, abs_tol=1e-9):
            _fail(
                f"alphanumeric_share({source!r}) = {got:.4g}, "
                f"expected {want:.4g}: 'é' and 'ï' are letters too.",
                "use str.isalnum(), which knows Unicode letters, "
                "rather than a check against string.ascii_letters.",
            )
        _fail(
            f"alphanumeric_share({source!r}) = {got!r}, expected {want:.4g}.",
            "count the characters c with c.isalnum() and divide by len(source).",
        )
    try:
        empty = fn("")
    except ZeroDivisionError:
        _fail(
            "alphanumeric_share('') divides by zero.",
            "return 0.0 for an empty file (it has no content).",
        )
    if empty != 0:
        _fail(f"alphanumeric_share('') = {empty!r}, expected 0.0.", "return 0.0 for an empty file.")
    return "alphanumeric_share: correct (letters and digits over all characters, 0.0 when empty)."


_JACCARD_CASES = [
    ("x = f(a, b)\nreturn x", "x = f(a, c)\nreturn x", 3),
    ("for i in range(10): total += i", "for j in range(10): total += j", 2),
    ("a a a a b", "a a b", 2),
    ("def f(): pass", "def f(): pass", 4),
    ("import os", "import sys", 1),
    ("x", "y = 1", 3),
]


def _reference_jaccard(a: str, b: str, k: int) -> float:
    from gptlib.data import jaccard, shingles

    return jaccard(shingles(a, k), shingles(b, k))


@checker
def check_shingle_jaccard(fn: Callable[[str, str, int], float]) -> str:
    """Check ``fn(a, b, k) -> Jaccard similarity of the k-token shingle sets of a and b``.

    Tokens are :func:`gptlib.data.code_tokens`; a text shorter than ``k`` tokens has one shingle
    (all of its tokens), like :func:`gptlib.data.shingles`.
    """
    from gptlib.data import code_tokens

    for a, b, k in _JACCARD_CASES:
        got = fn(a, b, k)
        want = _reference_jaccard(a, b, k)
        if isinstance(got, (int, float)) and math.isclose(got, want, abs_tol=1e-9):
            continue
        ta, tb = code_tokens(a), code_tokens(b)
        sa = [tuple(ta[i : i + k]) for i in range(len(ta) - k + 1)]
        sb = [tuple(tb[i : i + k]) for i in range(len(tb) - k + 1)]
        if sa and sb and isinstance(got, (int, float)):
            inter = len(set(sa) & set(sb))
            if math.isclose(
                got, inter / min(len(set(sa)), len(set(sb))), abs_tol=1e-9
            ) and not math.isclose(got, want):
                _fail(
                    f"jaccard({a!r}, {b!r}, k={k}) = {got:.4g}, "
                    f"expected {want:.4g}: you divided by the smaller set.",
                    "Jaccard divides the intersection by the *union*: |A & B| / |A | B|.",
                )
            multi = sum(min(sa.count(s), sb.count(s)) for s in set(sa)) / (
                len(sa) + len(sb) - sum(min(sa.count(s), sb.count(s)) for s in set(sa))
            )
            if math.isclose(got, multi, abs_tol=1e-9):
                _fail(
                    f"jaccard({a!r}, {b!r}, k={k}) = {got:.4g}, "
                    f"expected {want:.4g}: repeated shingles counted twice.",
                    "make *sets* of shingles: a shingle that occurs twice is still one element.",
                )
            short = (
                [tuple(ta[i : i + k]) for i in range(len(ta) - k)],
                [tuple(tb[i : i + k]) for i in range(len(tb) - k)],
            )
            if all(short) and math.isclose(
                got,
                len(set(short[0]) & set(short[1])) / len(set(short[0]) | set(short[1])),
                abs_tol=1e-9,
            ):
                _fail(
                    f"jaccard({a!r}, {b!r}, k={k}) = {got:.4g}, "
                    f"expected {want:.4g}: the last shingle is missing.",
                    "a text of n tokens has n - k + 1 shingles: range(len(tokens) - k + 1).",
                )
        chars = _reference_jaccard(" ".join(a), " ".join(b), k)
        if (
            isinstance(got, (int, float))
            and math.isclose(got, chars, abs_tol=1e-9)
            and not math.isclose(chars, want)
        ):
            _fail(
                f"jaccard({a!r}, {b!r}, k={k}) = {got:.4g}, "
                f"expected {want:.4g}: shingles of characters, not tokens.",
                "split with gptlib.data.code_tokens(text) first, then take windows of k tokens.",
            )
        _fail(
            f"jaccard({a!r}, {b!r}, k={k}) = {got!r}, expected {want:.4g}.",
            "tokens = code_tokens(text); shingles = {tuple(tokens[i:i+k]) "
            "for i in range(len(tokens) - k + 1)} "
            "(or {tuple(tokens)} when there are fewer than k); then |A & B| / |A | B|.",
        )
    return "shingle Jaccard: correct."


@checker
def check_minhash_signature(fn: Callable) -> str:
    """Check ``fn(hashes, a, b) -> signature``: for each ``k``, ``min((a[k] * hashes + b[k]) % P)``,
    ``P = 2**31 - 1``, as a uint64 numpy array of length ``len(a)``."""
    import numpy as np

    from gptlib.data import minhash_permutations, minhash_signature

    p = np.uint64((1 << 31) - 1)
    a, b = minhash_permutations(16, seed=1)
    rng = np.random.default_rng(0)
    hashes = np.unique(rng.integers(0, 1 << 31, size=300, dtype=np.uint64) % p)
    got = np.asarray(fn(hashes, a, b))
    want = minhash_signature(hashes, a, b)
    if got.shape != want.shape:
        _fail(
            f"signature shape {got.shape}, expected {want.shape}: one number per hash function.",
            "take the minimum over the hashes (axis 0 of "
            "a (len(hashes), len(a)) array), not over the functions.",
        )
    if np.array_equal(got.astype(np.uint64), want):
        one = np.array([5], dtype=np.uint64)
        if not np.array_equal(
            np.asarray(fn(one, a, b)).astype(np.uint64), minhash_signature(one, a, b)
        ):
            _fail(
                "a set of one hash gives the wrong signature.",
                "signature[k] = (a[k] * h + b[k]) % P for the single h.",
            )
        return "minhash_signature: correct."
    values = (a[None, :] * hashes[:, None] + b[None, :]) % p
    if np.array_equal(got.astype(np.uint64), values.max(axis=0)):
        _fail(
            "your signature takes the maximum.",
            "MinHash keeps the *minimum* of each hash function over the set.",
        )
    if np.array_equal(
        got.astype(np.uint64), (a[None, :] * hashes[:, None] + b[None, :]).min(axis=0)
    ):
        _fail(
            "the values are not reduced modulo P = 2**31 - 1.",
            "without the modulo, a * h + b keeps the order "
            "of h: every function picks the same smallest shingle.",
        )
    if np.array_equal(got.astype(np.uint64), hashes.min() * np.ones_like(want)):
        _fail(
            "every entry is the smallest hash of the set.",
            "apply each hash function (a[k] * h + b[k]) % P before the minimum.",
        )
    _fail(
        "the signature differs from min over the set of (a[k] * h + b[k]) % P.",
        "signature[k] = ((a[k] * hashes + b[k]) % P).min() for each k.",
    )
