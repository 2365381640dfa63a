"""The chapter 3 checkers accept correct answers and explain typical wrong ones."""
from __future__ import annotations

import pytest

from gptlib.checks import CheckFailed, check_bpe_encode, check_chinese_tokenizer, check_merge
from gptlib.checks.tokens import _ENGLISH
from gptlib.tokenizer import ByteBPE


def good_merge(ids, pair, new_id):
    out, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and (ids[i], ids[i + 1]) == tuple(pair):
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def test_check_merge_accepts_a_correct_merge():
    assert "correct" in check_merge(good_merge)


def test_check_merge_rejects_a_merge_that_drops_the_last_token():
    def drops_last(ids, pair, new_id):
        out, i = [], 0
        while i < len(ids) - 1:
            if (ids[i], ids[i + 1]) == pair:
                out.append(new_id)
                i += 2
            else:
                out.append(ids[i])
                i += 1
        return out

    with pytest.raises(CheckFailed, match="went missing"):
        check_merge(drops_last)


def test_check_merge_rejects_a_merge_that_does_not_skip_the_second_token():
    def no_skip(ids, pair, new_id):
        out = []
        for i, t in enumerate(ids):
            out.append(new_id if i + 1 < len(ids) and (t, ids[i + 1]) == pair else t)
        return out

    with pytest.raises(CheckFailed, match=r"merge\(\[1, 2, 3, 1, 2\]"):
        check_merge(no_skip)


def test_check_merge_explains_overlapping_runs():
    def right_to_left(ids, pair, new_id):
        return good_merge(ids[::-1], pair[::-1], new_id)[::-1]

    with pytest.raises(CheckFailed, match="overlap"):
        check_merge(right_to_left)


def test_check_merge_reports_a_crash():
    with pytest.raises(CheckFailed, match="raised IndexError"):
        check_merge(lambda ids, pair, new_id: [ids[i] for i in range(len(ids) + 1)])


def encode_in_order(word, merges):
    ids = list(word.encode("utf-8"))
    for pair, new_id in merges:
        ids = good_merge(ids, pair, new_id)
    return ids


def test_check_bpe_encode_accepts_merges_applied_in_learned_order():
    assert "same ids" in check_bpe_encode(encode_in_order)


def test_check_bpe_encode_rejects_reversed_order_with_a_hint():
    with pytest.raises(CheckFailed, match="order of merges matters|too few merges"):
        check_bpe_encode(lambda word, merges: encode_in_order(word, merges[::-1]))


def test_check_bpe_encode_rejects_plain_bytes():
    with pytest.raises(CheckFailed, match="ByteBPE gives"):
        check_bpe_encode(lambda word, merges: list(word.encode("utf-8")))


def test_check_chinese_tokenizer_accepts_a_mixed_tokenizer():
    chinese = "我喜欢吃苹果。苹果很好吃。我喜欢吃梨。" * 30
    tok = ByteBPE.train(_ENGLISH * 20 + chinese, 512)
    assert "Both languages" in check_chinese_tokenizer(tok)


def test_check_chinese_tokenizer_rejects_an_english_only_tokenizer():
    tok = ByteBPE.train(_ENGLISH * 20, 512)
    with pytest.raises(CheckFailed, match="still costs 18 tokens"):
        check_chinese_tokenizer(tok)


def test_check_chinese_tokenizer_rejects_a_chinese_only_tokenizer():
    tok = ByteBPE.train("我喜欢吃苹果。苹果很好吃。" * 50, 300)
    with pytest.raises(CheckFailed, match="English compresses"):
        check_chinese_tokenizer(tok)


def test_check_chinese_tokenizer_rejects_a_huge_vocabulary():
    tok = ByteBPE.train(_ENGLISH, 300)
    with pytest.raises(CheckFailed, match="at most 100"):
        check_chinese_tokenizer(tok, max_vocab=100)
