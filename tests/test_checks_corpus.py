"""The checkers of chapter 7 pass right answers and explain typical wrong ones."""
import numpy as np
import pytest

from gptlib.checks import (
    CheckFailed,
    check_alphanumeric_share,
    check_minhash_signature,
    check_shingle_jaccard,
)
from gptlib.data import code_tokens


def share(source):
    return sum(c.isalnum() for c in source) / len(source) if source else 0.0


def test_alphanumeric_share_passes_a_right_answer():
    assert "correct" in check_alphanumeric_share(share)


@pytest.mark.parametrize("wrong, hint", [
    (lambda s: 100 * share(s), "multiply by 100"),
    (lambda s: sum(c.isalpha() for c in s) / len(s) if s else 0.0, "isalpha"),
    (lambda s: sum(c.isalnum() for c in s) / max(1, sum(not c.isspace() for c in s)), "len(source)"),
    (lambda s: sum(c.isascii() and c.isalnum() for c in s) / len(s) if s else 0.0, "Unicode"),
    (lambda s: sum(c.isalnum() for c in s) / len(s), "empty file"),
    (lambda s: 0.5, "isalnum"),
])
def test_alphanumeric_share_explains_wrong_answers(wrong, hint):
    with pytest.raises(CheckFailed, match="Hint") as err:
        check_alphanumeric_share(wrong)
    assert hint in str(err.value)


def _shingle_set(text, k):
    t = code_tokens(text)
    return {tuple(t[i:i + k]) for i in range(len(t) - k + 1)} if len(t) >= k else {tuple(t)}


def jaccard_right(a, b, k):
    A, B = _shingle_set(a, k), _shingle_set(b, k)
    return len(A & B) / len(A | B)


def test_shingle_jaccard_passes_a_right_answer():
    assert "correct" in check_shingle_jaccard(jaccard_right)


def _min_denominator(a, b, k):
    A, B = _shingle_set(a, k), _shingle_set(b, k)
    return len(A & B) / min(len(A), len(B))


def _multiset(a, b, k):
    ta, tb = code_tokens(a), code_tokens(b)
    if len(ta) < k or len(tb) < k:
        return jaccard_right(a, b, k)
    sa = [tuple(ta[i:i + k]) for i in range(len(ta) - k + 1)]
    sb = [tuple(tb[i:i + k]) for i in range(len(tb) - k + 1)]
    inter = sum(min(sa.count(s), sb.count(s)) for s in set(sa))
    return inter / (len(sa) + len(sb) - inter)


def _off_by_one(a, b, k):
    ta, tb = code_tokens(a), code_tokens(b)
    A = {tuple(ta[i:i + k]) for i in range(len(ta) - k)}
    B = {tuple(tb[i:i + k]) for i in range(len(tb) - k)}
    return len(A & B) / len(A | B) if A | B else 1.0


def _characters(a, b, k):
    A = {a[i:i + k] for i in range(len(a) - k + 1)}
    B = {b[i:i + k] for i in range(len(b) - k + 1)}
    return len(A & B) / len(A | B)


@pytest.mark.parametrize("wrong, hint", [
    (_min_denominator, "union"),
    (_multiset, "sets"),
    (_off_by_one, "n - k + 1"),
    (lambda a, b, k: 0.5, "code_tokens"),
])
def test_shingle_jaccard_explains_wrong_answers(wrong, hint):
    with pytest.raises(CheckFailed, match="Hint") as err:
        check_shingle_jaccard(wrong)
    assert hint in str(err.value)


def test_character_shingles_fail():
    with pytest.raises(CheckFailed, match="Hint"):
        check_shingle_jaccard(_characters)


P = np.uint64((1 << 31) - 1)


def sig_right(hashes, a, b):
    return ((a[None, :] * hashes[:, None] + b[None, :]) % P).min(axis=0)


def test_minhash_signature_passes_a_right_answer():
    assert "correct" in check_minhash_signature(sig_right)


@pytest.mark.parametrize("wrong, hint", [
    (lambda h, a, b: ((a[None, :] * h[:, None] + b[None, :]) % P).max(axis=0), "minimum"),
    (lambda h, a, b: (a[None, :] * h[:, None] + b[None, :]).min(axis=0), "modulo"),
    (lambda h, a, b: ((a[None, :] * h[:, None] + b[None, :]) % P).min(axis=1), "axis 0"),
    (lambda h, a, b: np.full(a.shape, h.min()), "before the minimum"),
    (lambda h, a, b: sig_right(h, a, b) + np.uint64(1), "signature[k]"),
])
def test_minhash_signature_explains_wrong_answers(wrong, hint):
    with pytest.raises(CheckFailed, match="Hint") as err:
        check_minhash_signature(wrong)
    assert hint in str(err.value)
