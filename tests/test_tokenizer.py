"""Tests for gptlib.tokenizer: round trips, errors, persistence, and BPE against a naive trainer."""
from __future__ import annotations

from collections import Counter

import pytest
import regex
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gptlib import data
from gptlib.tokenizer import (
    GPT2_SPLIT_PATTERN,
    ByteBPE,
    CharTokenizer,
    UnknownSymbolError,
    compression_ratio,
    load_tokenizer,
)

MIXED_TEXT = (
    "To be, or not to be, that is the question:\n"
    "Whether 'tis nobler in the mind to suffer\n"
    "我喜欢吃苹果。苹果很好吃！我喜欢苹果。\n"
    "Emoji: 🙂🙂🚀 👩‍👩‍👧 café naïve 1234 5678   \t\n\n"
) * 20


@pytest.fixture(scope="module")
def plays(tmp_path_factory) -> dict[str, str]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GPTLIB_CACHE", str(tmp_path_factory.mktemp("cache")))
        return data.shakespeare_plays()


@pytest.fixture(scope="module")
def mixed_bpe() -> ByteBPE:
    return ByteBPE.train(MIXED_TEXT, vocab_size=256 + 80, special_tokens=["<|endoftext|>"])


# ---- CharTokenizer ---------------------------------------------------------------------


def test_char_round_trip_and_sorted_vocab():
    tok = CharTokenizer.from_text("hello world\n")
    assert tok.symbols == sorted(set("hello world\n"))
    assert tok.vocab_size == 9  # h e l o w r d, space, newline
    assert tok.decode(tok.encode("hello\nworld")) == "hello\nworld"


def test_char_unknown_symbol_error_names_symbol_position_and_fix():
    tok = CharTokenizer.from_text("abc")
    with pytest.raises(UnknownSymbolError) as info:
        tok.encode("abcaZb")
    message = str(info.value)
    assert repr("Z") in message
    assert "position 4" in message
    assert "ByteBPE" in message
    assert isinstance(info.value, ValueError)


def test_char_save_load(tmp_path):
    tok = CharTokenizer.from_text("Wherefore art thou, Romeo? 苹")
    tok.save(tmp_path / "char.json")
    again = CharTokenizer.load(tmp_path / "char.json")
    assert again.symbols == tok.symbols
    assert isinstance(load_tokenizer(tmp_path / "char.json"), CharTokenizer)


# ---- ByteBPE: round trips ----------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "Now is the winter of our discontent",
        "我喜欢吃苹果",
        "🙂🚀 family: 👩‍👩‍👧, flag: 🇫🇷",
        "",
        "   \n\n\t  \r\n   x  ",
        "<|endoftext|>between<|endoftext|>",
    ],
)
def test_bpe_round_trip(mixed_bpe, text):
    ids = mixed_bpe.encode(text)
    assert mixed_bpe.decode(ids) == text
    assert mixed_bpe.decode_bytes(ids) == text.encode("utf-8")


@settings(
    max_examples=100,
    deadline=None,
    database=None,  # write no .hypothesis/ folder into the repository
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(st.text(max_size=60))
def test_bpe_round_trip_property(mixed_bpe, text):
    assert mixed_bpe.decode(mixed_bpe.encode(text)) == text


def test_bpe_merges_multibyte_characters(mixed_bpe):
    # "苹" is 3 UTF-8 bytes; frequent in MIXED_TEXT, so training must have fused them.
    assert len(mixed_bpe.encode("苹")) < len("苹".encode("utf-8"))


def test_special_token_is_one_fixed_id_unless_disallowed(mixed_bpe):
    eot = mixed_bpe.special_tokens["<|endoftext|>"]
    assert eot == mixed_bpe.vocab_size - 1
    ids = mixed_bpe.encode("a<|endoftext|>b")
    assert ids.count(eot) == 1
    assert eot not in mixed_bpe.encode("a<|endoftext|>b", allow_special=False)


def test_strict_decode_of_cut_character_explains_and_replace_works(mixed_bpe):
    cut = mixed_bpe.encode("苹")  # may be 1 or 2 tokens: go down to bytes to cut it for sure
    raw = b"".join(mixed_bpe.vocab[i] for i in cut)
    ids = list(raw[:2])  # the first 2 of 3 bytes, as byte tokens
    with pytest.raises(ValueError) as info:
        mixed_bpe.decode(ids)
    message = str(info.value)
    assert "middle of a multi-byte character" in message
    assert "errors='replace'" in message
    assert mixed_bpe.decode(ids, errors="replace") == "\ufffd"


def test_bpe_save_load_gives_identical_encodings(tmp_path, mixed_bpe):
    mixed_bpe.save(tmp_path / "bpe.json")
    again = ByteBPE.load(tmp_path / "bpe.json")
    assert again.merges == mixed_bpe.merges
    assert again.special_tokens == mixed_bpe.special_tokens
    assert again.encode(MIXED_TEXT) == mixed_bpe.encode(MIXED_TEXT)
    assert isinstance(load_tokenizer(tmp_path / "bpe.json"), ByteBPE)


def test_token_str_shows_partial_bytes_readably(mixed_bpe):
    assert mixed_bpe.token_str(ord("a")) == "a"
    assert mixed_bpe.token_str(0xE8) == "\\xe8"


def test_vocab_too_small_raises():
    with pytest.raises(ValueError, match="256"):
        ByteBPE.train("abc", vocab_size=100)


# ---- ByteBPE: training is exactly the naive algorithm, only faster --------------------------


def naive_merge(tokens: list[int], pair: tuple[int, int], new_id: int) -> list[int]:
    out, i = [], 0
    while i < len(tokens):
        if tokens[i : i + 2] == list(pair):
            out.append(new_id)
            i += 2
        else:
            out.append(tokens[i])
            i += 1
    return out


def naive_bpe(text: str, n_merges: int) -> tuple[list[tuple[tuple[int, int], int]], list[int]]:
    """Textbook BPE: recount every pair of every pre-token occurrence after each merge."""
    words = [list(chunk.encode("utf-8")) for chunk in regex.findall(GPT2_SPLIT_PATTERN, text)]
    merges = []
    for new_id in range(256, 256 + n_merges):
        counts = Counter(pair for w in words for pair in zip(w, w[1:]))
        if not counts:
            break
        pair = min(counts, key=lambda p: (-counts[p], p))  # most frequent, then smallest
        words = [naive_merge(w, pair, new_id) for w in words]
        merges.append((pair, new_id))
    return merges, [t for w in words for t in w]


def test_incremental_trainer_matches_naive_reference(plays):
    text = plays["Macbeth"][:12_000]
    reference_merges, reference_tokens = naive_bpe(text, 120)
    tok = ByteBPE.train(text, vocab_size=256 + 120)
    assert tok.merges == reference_merges
    # Encoding the training text reproduces the trainer's final segmentation.
    assert tok.encode(text) == reference_tokens


def test_incremental_trainer_matches_naive_on_repeats_and_unicode():
    # Runs like "aaaa" are where incremental pair counting is easy to get wrong.
    text = "aaaa aaa aa a abab abababa 苹果苹果苹果 🙂🙂🙂 " * 5
    reference_merges, _ = naive_bpe(text, 40)
    assert ByteBPE.train(text, vocab_size=256 + 40).merges == reference_merges


def test_first_merges_are_frequent_english_pairs(plays):
    tok = ByteBPE.train(plays["Hamlet"][:50_000], vocab_size=256 + 10)
    first = [tok.vocab[new_id] for _, new_id in tok.merges[:3]]
    assert set(first) & {b" t", b"he", b"th", b"e ", b"ou"}, first


def test_merges_compress_held_out_shakespeare(plays):
    tok = ByteBPE.train(plays["Hamlet"], vocab_size=512)
    held_out = plays["Othello"][:50_000]
    n_bytes = len(held_out.encode("utf-8"))
    assert len(tok.encode(held_out)) < 0.6 * n_bytes
    assert compression_ratio(tok, held_out) > 1.7
    assert compression_ratio(CharTokenizer.from_text(held_out), held_out) == pytest.approx(
        n_bytes / len(held_out))
