"""Exercise checkers for chapter 3 (tokens)."""

from __future__ import annotations

import random
from typing import Callable

from gptlib.checks import CheckFailed, _fail, check_close, checker  # noqa: F401
from gptlib.tokenizer import _merge_pair  # the reference the checker compares with

__all__ = ["check_merge", "check_bpe_encode", "check_chinese_tokenizer", "check_domain_compression"]

Pair = tuple[int, int]

#: A few public-domain lines (Hamlet, Julius Caesar, Macbeth) that the checkers train on and test
#: with.
_ENGLISH = (
    "To be, or not to be, that is the question:\n"
    "Whether 'tis nobler in the mind to suffer\n"
    "The slings and arrows of outrageous fortune,\n"
    "Or to take arms against a sea of troubles\n"
    "And by opposing end them. To die: to sleep;\n"
    "No more; and by a sleep to say we end\n"
    "The heart-ache and the thousand natural shocks\n"
    "That flesh is heir to, 'tis a consummation\n"
    "Devoutly to be wish'd. To die, to sleep;\n"
    "Friends, Romans, countrymen, lend me your ears;\n"
    "I come to bury Caesar, not to praise him.\n"
    "The evil that men do lives after them;\n"
    "The good is oft interred with their bones;\n"
    "Tomorrow, and tomorrow, and tomorrow,\n"
    "Creeps in this petty pace from day to day,\n"
    "To the last syllable of recorded time;\n"
)


@checker
def check_merge(fn: Callable[[list[int], Pair, int], list[int]]) -> str:
    """``merge(ids, pair, new_id)``: every non-overlapping occurrence, scanned left to right."""
    cases = [
        ([1, 2, 3, 1, 2], (1, 2), 9, "two separate occurrences"),
        ([5, 5, 5], (5, 5), 9, "an overlapping run 'a a a'"),
        ([5, 5, 5, 5], (5, 5), 9, "the run 'a a a a'"),
        ([3, 1, 2], (1, 2), 9, "a pair at the very end"),
        ([3, 1], (1, 2), 9, "a sequence that ends with the pair's first token"),
        ([7], (1, 2), 9, "a single token"),
        ([], (1, 2), 9, "an empty sequence"),
        ([2, 1, 2, 1], (1, 2), 9, "the pair (1, 2) but not (2, 1)"),
    ]
    rng = random.Random(0)
    for _ in range(50):
        ids = [rng.randrange(4) for _ in range(rng.randrange(0, 15))]
        cases.append((ids, (rng.randrange(4), rng.randrange(4)), 4, "a random sequence"))
    for ids, pair, new_id, what in cases:
        original = list(ids)
        try:
            got = fn(list(ids), pair, new_id)
        except Exception as err:  # noqa: BLE001 - report any crash to the reader
            _fail(
                f"merge({original}, {pair}, {new_id}) raised {type(err).__name__}: {err}",
                "check the loop bounds: look at ids[i + 1] only when i + 1 < len(ids).",
            )
        expected = _merge_pair(original, pair, new_id)
        if not isinstance(got, list):
            _fail(f"merge returned {type(got).__name__}, expected a list of ints.")
        if got != expected:
            hint = None
            if len(got) < len(expected):
                hint = (
                    "a token went missing: when the pair does not match at position i, keep ids[i] "
                    "(including the last one) and move on by one."
                )
            elif len(got) > len(expected):
                hint = "after a match, jump over *both* tokens of the pair (i += 2), not just one."
            if (what.startswith("the run") or what.startswith("an overlapping")) and len(
                got
            ) >= len(expected):
                hint = (
                    "occurrences may overlap ('a a a' holds the pair (a, a) twice); merge them "
                    "left to right and skip both tokens after a match, so 'a a a' -> 'X a'."
                )
            _fail(
                f"merge({original}, {pair}, {new_id}) ({what}) gave {got}, expected {expected}.",
                hint,
            )
    return "merge: correct, including overlapping pairs and the ends of the sequence."


def _training_tokenizer(vocab_size: int = 256 + 120):
    from gptlib.tokenizer import ByteBPE

    return ByteBPE.train(_ENGLISH * 3, vocab_size)


@checker
def check_bpe_encode(fn: Callable[[str, list[tuple[Pair, int]]], list[int]]) -> str:
    """``bpe_encode(word, merges)``: one pre-token -> ids, the same as ``ByteBPE`` gives."""
    tok = _training_tokenizer()
    merges = [tuple(m) for m in tok.merges]
    words = [
        "the",
        " the",
        " to",
        " tomorrow",
        " slings",
        " arrows",
        " question",
        " Caesar",
        " nobler",
        " outrageous",
        " syllable",
        " xylophone",
        " bubble",
        "To",
        " sleep",
        "ache",
        " 'tis",
        " consummation",
        "a",
        " ",
    ]
    for word in words:
        expected = tok.encode(word)
        try:
            got = fn(word, [((a, b), i) for (a, b), i in merges])
        except Exception as err:  # noqa: BLE001
            _fail(f"bpe_encode({word!r}, merges) raised {type(err).__name__}: {err}")
        if isinstance(got, (bytes, bytearray)):
            got = list(got)
        if not isinstance(got, list):
            _fail(f"bpe_encode returned {type(got).__name__}, expected a list of token ids.")
        if got != expected:

            def show(ids):
                try:
                    return [tok.token_str(i) for i in ids]
                except (ValueError, TypeError):
                    return ids

            hint = (
                "start from list(word.encode('utf-8')) and apply the merges in the order they were "
                "learned (lowest new id first), each one everywhere in the word; a merge may use "
                "tokens made by earlier merges."
            )
            try:
                same_text = tok.decode_bytes(got) == word.encode("utf-8")
            except (ValueError, TypeError, KeyError):
                same_text = False
            if not same_text:
                hint = (
                    "your ids do not even spell the word: merging "
                    "(a, b) must replace the two ids by "
                    "the merge's new id, and nothing else. " + hint
                )
            elif len(got) > len(expected):
                hint = "too few merges were applied. " + hint
            else:
                hint = (
                    "the ids spell the word, but it is split "
                    "differently: the order of merges matters. " + hint
                )
            _fail(
                f"bpe_encode({word!r}) gave {got} {show(got)}, ByteBPE gives {expected} "
                f"{show(expected)}.",
                hint,
            )
    return f"bpe_encode: same ids as ByteBPE on {len(words)} words."


@checker
def check_chinese_tokenizer(
    tokenizer, max_vocab: int = 2048, sentence: str = "我喜欢吃苹果"
) -> str:
    """A byte-level BPE that is cheap on ``sentence`` *and* still compresses English."""
    size = tokenizer.vocab_size
    if size > max_vocab:
        _fail(
            f"the vocabulary has {size} ids; keep it at most {max_vocab}.",
            "a bigger vocabulary makes every token cheaper but the embedding table larger.",
        )
    for text in (sentence, _ENGLISH, "混合 mixed 文本!"):
        try:
            ids = tokenizer.encode(text)
            back = tokenizer.decode(ids)
        except Exception as err:  # noqa: BLE001
            _fail(
                f"encoding/decoding {text[:20]!r} raised {type(err).__name__}: {err}",
                "use a byte-level tokenizer (ByteBPE): it can encode any text.",
            )
        if back != text:
            _fail(
                "decode(encode(text)) does not give the text "
                f"back for {text[:20]!r}: got {back[:20]!r}."
            )
    n_zh = len(tokenizer.encode(sentence))
    n_bytes = len(sentence.encode("utf-8"))
    if n_zh > len(sentence):
        _fail(
            f"{sentence!r} ({len(sentence)} characters, {n_bytes} UTF-8 bytes) still costs {n_zh} "
            f"tokens; aim for at most one token per character ({len(sentence)}).",
            "merges are learned from frequent pairs in "
            "the *training text*: put Chinese text in it, "
            "often enough that its byte pairs win merges.",
        )
    english_ratio = len(_ENGLISH.encode("utf-8")) / len(tokenizer.encode(_ENGLISH))
    if english_ratio < 1.5:
        _fail(
            f"English compresses to only {english_ratio:.2f} "
            "bytes per token (a Shakespeare-trained "
            "BPE of this size gets well above 1.5).",
            "keep English (e.g. the Shakespeare training plays) in the training text too: the "
            "vocabulary has to serve both languages.",
        )
    return (
        f"Chinese: {n_zh} tokens for {len(sentence)} characters; English: {english_ratio:.2f} "
        "bytes per token. Both languages are served."
    )


@checker
def check_domain_compression(fn: Callable, prediction, tokenizer, plays: str, code: str) -> str:
    """Predict, then measure: does a BPE trained on plays compress Python code as well?

    ``fn(tokenizer, text)`` returns UTF-8 bytes per token of ``text`` under ``tokenizer``.
    ``prediction`` (a string, or a function returning it, written before measuring) is which
    text gets *more* bytes per token: ``"plays"`` or ``"code"``. The function is checked
    against ``len(text.encode()) / len(tokenizer.encode(text))`` on both texts; then the
    checker says whether the guess matched the measurement.
    """
    if callable(prediction):
        prediction = prediction()
    if prediction not in {"plays", "code"}:
        _fail(f"prediction is {prediction!r}; write 'plays' or 'code' (before you measure).")
    measured = {}
    for name, text in (("plays", plays), ("code", code)):
        expected = len(text.encode("utf-8")) / len(tokenizer.encode(text))
        got = fn(tokenizer, text)
        if not isinstance(got, (int, float)) and not (hasattr(got, "item") and got.numel() == 1):
            _fail(f"bytes_per_token returned {type(got).__name__}, expected one number.")
        got = float(got)
        if abs(got - 1 / expected) < 1e-6 * max(1.0, 1 / expected) and abs(got - expected) > 1e-6:
            _fail(
                f"on the {name} you return tokens per byte "
                f"({got:.3f}), the inverse of bytes per token.",
                "divide the number of UTF-8 bytes by the number of tokens.",
            )
        if abs(got - expected) > 1e-6 * max(1.0, expected):
            _fail(
                f"on the {name} bytes_per_token gives {got:.3f}, expected {expected:.3f}.",
                "count bytes with len(text.encode('utf-8')) (not characters), tokens with "
                "len(tokenizer.encode(text)).",
            )
        measured[name] = expected
    winner = max(measured, key=measured.get)
    shown = f"plays {measured['plays']:.2f}, code {measured['code']:.2f} bytes per token"
    if prediction != winner:
        _fail(
            f"you predicted '{prediction}', the measurement says '{winner}' ({shown}).",
            "merges are learned from frequent pairs of the training text: they fit the text "
            "they were learned on.",
        )
    return f"domain compression: {shown}; your prediction '{prediction}' was right."
