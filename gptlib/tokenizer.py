"""Tokenizers: how text becomes the integers a GPT reads.

Two tokenizers, from the simplest possible to the one GPT-2 uses:

- :class:`CharTokenizer` gives every distinct character its own id. Tiny vocabulary,
  long sequences, and it cannot encode a character it never saw.
- :class:`ByteBPE` is byte-level Byte-Pair Encoding. Text is split into pre-tokens
  ("words" with their leading space, numbers, punctuation runs, whitespace), each
  pre-token becomes its UTF-8 bytes, and the 256 possible bytes form the base vocabulary,
  so *any* text can be encoded. Training then repeatedly fuses the most frequent adjacent
  pair of tokens into a new token, until the vocabulary has the size we asked for.

Both share one small interface (``encode``, ``decode``, ``vocab_size``, ``save``/``load``),
which is all the data pipeline and the sampler need; :func:`load_tokenizer` reads
back either kind from its JSON file.

Example::

    >>> tok = ByteBPE.train("low lower lowest " * 50, vocab_size=260)
    >>> tok.decode(tok.encode("lowest"))
    'lowest'
"""

from __future__ import annotations

import heapq
import json
import os
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Iterable, Protocol, Sequence

import regex

__all__ = [
    "Tokenizer",
    "CharTokenizer",
    "UnknownSymbolError",
    "ByteBPE",
    "GPT2_SPLIT_PATTERN",
    "compression_ratio",
    "load_tokenizer",
    "tokenizer_from_dict",
    "IdTokenizer",
]


class Tokenizer(Protocol):
    """What the rest of gptlib needs from a tokenizer."""

    @property
    def vocab_size(self) -> int: ...

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...

    def to_dict(self) -> dict[str, Any]: ...


def _write_json_atomically(path: str | os.PathLike, payload: dict[str, Any]) -> None:
    # Write next to the target, then rename: a crash never leaves a half-written file.
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(payload, ensure_ascii=False), encoding="utf-8")
    os.replace(tmp, path)


# --------------------------------------------------------------------------------------
# Character-level tokenizer
# --------------------------------------------------------------------------------------


class UnknownSymbolError(ValueError):
    """Raised when a :class:`CharTokenizer` meets a character outside its vocabulary."""


class CharTokenizer:
    """One id per distinct character: the simplest tokenizer that works.

    The vocabulary is the sorted set of characters of the text it was built from, so the
    same text always gives the same ids. Sorting also makes the ids readable: ``"\\n"`` and
    space come first, then punctuation, digits, capitals, lower case.

    >>> tok = CharTokenizer.from_text("hello")
    >>> tok.symbols, tok.encode("hell")
    (['e', 'h', 'l', 'o'], [1, 0, 2, 2])
    """

    def __init__(self, symbols: Iterable[str]):
        symbols = list(symbols)
        if any(len(s) != 1 for s in symbols):
            raise ValueError("CharTokenizer symbols must be single characters.")
        if len(set(symbols)) != len(symbols):
            raise ValueError("CharTokenizer symbols must be distinct.")
        self.symbols: list[str] = symbols
        self._id_of: dict[str, int] = {s: i for i, s in enumerate(symbols)}

    @classmethod
    def from_text(cls, text: str) -> CharTokenizer:
        """Build the vocabulary from every distinct character of ``text`` (sorted)."""
        return cls(sorted(set(text)))

    @property
    def vocab_size(self) -> int:
        return len(self.symbols)

    def encode(self, text: str) -> list[int]:
        """Map each character to its id; raise :class:`UnknownSymbolError` on a new one."""
        try:
            return [self._id_of[ch] for ch in text]
        except KeyError as err:
            raise self._unknown_symbol_error(text, err.args[0]) from None

    def _unknown_symbol_error(self, text: str, symbol: str) -> UnknownSymbolError:
        position = text.index(symbol)
        return UnknownSymbolError(
            f"CharTokenizer cannot encode the symbol {symbol!r} at position {position}: "
            f"it is not in its vocabulary of {self.vocab_size} symbols. Build the tokenizer "
            "from a text that contains it (CharTokenizer.from_text(all_your_text)), or use "
            "ByteBPE, which works on bytes and can encode any text."
        )

    def decode(self, ids: Sequence[int]) -> str:
        """Map ids back to characters and join them."""
        return "".join(self.symbols[i] for i in ids)

    def to_dict(self) -> dict[str, Any]:
        return {"type": "CharTokenizer", "symbols": self.symbols}

    @classmethod
    def from_dict(cls, payload: dict[str, Any]) -> CharTokenizer:
        return cls(payload["symbols"])

    def save(self, path: str | os.PathLike) -> None:
        """Write the vocabulary as JSON (human readable: the list of symbols)."""
        _write_json_atomically(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike) -> CharTokenizer:
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))

    def __repr__(self) -> str:
        return f"CharTokenizer(vocab_size={self.vocab_size})"


# --------------------------------------------------------------------------------------
# Byte-level BPE
# --------------------------------------------------------------------------------------

#: GPT-2's pre-tokenizer: English contractions, letters with an optional leading space,
#: digits, punctuation runs, and whitespace. ``\s+(?!\S)`` keeps the last space of a run
#: for the word that follows, so " the" is the same pre-token after one space or three.
GPT2_SPLIT_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""

Pair = tuple[int, int]


def _merge_pair(tokens: Sequence[int], pair: Pair, new_id: int) -> list[int]:
    """Replace every non-overlapping occurrence of ``pair`` (left to right) by ``new_id``."""
    first, second = pair
    merged: list[int] = []
    i = 0
    while i < len(tokens):
        if i + 1 < len(tokens) and tokens[i] == first and tokens[i + 1] == second:
            merged.append(new_id)
            i += 2
        else:
            merged.append(tokens[i])
            i += 1
    return merged


def _pair_counts(tokens: Sequence[int]) -> Counter[Pair]:
    """How often each adjacent pair occurs in one token sequence."""
    return Counter(zip(tokens, tokens[1:]))


class _PairStatistics:
    """The bookkeeping that makes BPE training fast.

    A naive trainer recounts every adjacent pair of the whole corpus after each merge:
    O(corpus) work per merge. Here, instead:

    1. The corpus is counted *once* into unique pre-tokens with multiplicities
       (" the" may occur 20 000 times but is stored once, with count 20 000).
    2. ``pair_count[p]`` holds the weighted count of pair ``p`` over all words, and
       ``words_with[p]`` the indices of the words that contain it.
    3. A merge of ``p`` rewrites only the words in ``words_with[p]`` and updates the counts
       of the pairs in those words (a few hundred words, not a million bytes).
    4. The most frequent pair comes from a max-heap with lazy deletion: each time a count
       changes we push the new value; stale entries are skipped when popped.

    Ties are broken by the smaller pair ``(a, b)``, which makes training deterministic.
    """

    def __init__(self, word_counts: dict[bytes, int]):
        self.words: list[list[int]] = [list(word) for word in word_counts]
        self.counts: list[int] = list(word_counts.values())
        self.pair_count: dict[Pair, int] = {}
        self.words_with: dict[Pair, set[int]] = {}
        for index, word in enumerate(self.words):
            for pair, n in _pair_counts(word).items():
                self.pair_count[pair] = self.pair_count.get(pair, 0) + n * self.counts[index]
                self.words_with.setdefault(pair, set()).add(index)
        self.heap: list[tuple[int, Pair]] = [(-n, p) for p, n in self.pair_count.items()]
        heapq.heapify(self.heap)

    def most_frequent_pair(self) -> Pair | None:
        """Pop the current best pair (highest count, then smallest), or None if none left."""
        while self.heap:
            negative_count, pair = heapq.heappop(self.heap)
            if self.pair_count.get(pair) == -negative_count:
                return pair
            # Otherwise the entry is stale: the count changed and a fresher entry was pushed.
        return None

    def merge(self, pair: Pair, new_id: int) -> None:
        """Fuse ``pair`` into ``new_id`` in every word containing it; update counts locally."""
        changed: defaultdict[Pair, int] = defaultdict(int)  # pair -> change of its count
        for index in self.words_with.pop(pair):
            old_word = self.words[index]
            new_word = _merge_pair(old_word, pair, new_id)
            self.words[index] = new_word
            old_pairs, new_pairs = _pair_counts(old_word), _pair_counts(new_word)
            weight = self.counts[index]  # the word stands for `weight` occurrences
            for p, n in old_pairs.items():
                changed[p] -= n * weight
            for p, n in new_pairs.items():
                changed[p] += n * weight
            for p in old_pairs.keys() - new_pairs.keys():
                if p != pair:
                    self.words_with[p].discard(index)
            for p in new_pairs.keys() - old_pairs.keys():
                self.words_with.setdefault(p, set()).add(index)
        for p, delta in changed.items():
            if delta == 0:  # e.g. pairs far from the merge site: nothing to update
                continue
            count = self.pair_count.get(p, 0) + delta
            if count > 0:
                self.pair_count[p] = count
                heapq.heappush(self.heap, (-count, p))
            else:
                # Every occurrence was merged away (this includes ``pair`` itself).
                self.pair_count.pop(p, None)
                self.words_with.pop(p, None)


class ByteBPE:
    """Byte-level Byte-Pair Encoding, as in GPT-2.

    Attributes:
        merges: the learned merges in the order they were learned, as ``((a, b), new_id)``.
            Merge ``k`` creates id ``256 + k``, so an id's value is also its *rank*: lower
            ids were learned earlier, from more frequent pairs.
        vocab: id -> the bytes it stands for (ids 0..255 are the single bytes).
        special_tokens: e.g. ``{"<|endoftext|>": 1000}``: strings that always map to one
            fixed id and are never split by merges.

    Train with :meth:`train`, then :meth:`encode` / :meth:`decode`. ``decode(encode(s)) == s``
    holds for every string, because every step is a lossless operation on UTF-8 bytes.
    """

    _ENCODE_CACHE_LIMIT = 200_000  # distinct pre-tokens kept; bounds memory on huge corpora

    def __init__(
        self,
        merges: Sequence[tuple[Pair, int]] = (),
        special_tokens: dict[str, int] | None = None,
        pattern: str = GPT2_SPLIT_PATTERN,
    ):
        self.merges: list[tuple[Pair, int]] = [((int(a), int(b)), int(i)) for (a, b), i in merges]
        self.pattern = pattern
        self._splitter = regex.compile(pattern)
        self.vocab: dict[int, bytes] = {i: bytes([i]) for i in range(256)}
        for (a, b), new_id in self.merges:
            if new_id != len(self.vocab):
                raise ValueError(f"merge ids must be consecutive from 256; got {new_id}")
            self.vocab[new_id] = self.vocab[a] + self.vocab[b]
        # rank of a pair == the id it creates: the encoder applies low ids first.
        self._merged_id: dict[Pair, int] = {pair: new_id for pair, new_id in self.merges}
        self.special_tokens: dict[str, int] = dict(special_tokens or {})
        self._special_of_id = {i: s for s, i in self.special_tokens.items()}
        if any(i < len(self.vocab) for i in self._special_of_id):
            raise ValueError("special token ids must come after the byte and merge ids")
        self._special_splitter = (
            regex.compile(
                "("
                + "|".join(
                    regex.escape(s) for s in sorted(self.special_tokens, key=len, reverse=True)
                )
                + ")"
            )
            if self.special_tokens
            else None
        )
        self._cache: dict[str, list[int]] = {}

    # ---- training --------------------------------------------------------------------

    @classmethod
    def train(
        cls,
        text: str,
        vocab_size: int,
        special_tokens: Sequence[str] = (),
        verbose: bool = False,
        pattern: str = GPT2_SPLIT_PATTERN,
    ) -> ByteBPE:
        """Learn ``vocab_size - 256 - len(special_tokens)`` merges from ``text``.

        Each step fuses the most frequent adjacent pair of tokens (counted inside
        pre-tokens only, never across them, so " the" and "." are never glued together).
        Special tokens are removed from the training text and get the last ids.
        Training stops early if no pair is left (a tiny text); the vocabulary is then smaller.
        """
        n_merges = vocab_size - 256 - len(special_tokens)
        if n_merges < 0:
            raise ValueError(
                f"vocab_size={vocab_size} is too small: byte-level BPE needs the 256 byte "
                f"tokens plus {len(special_tokens)} special token(s)."
            )
        word_counts = cls._count_pretokens(text, pattern, special_tokens)
        stats = _PairStatistics(word_counts)
        merges: list[tuple[Pair, int]] = []
        vocab = {i: bytes([i]) for i in range(256)}
        for new_id in range(256, 256 + n_merges):
            pair = stats.most_frequent_pair()
            if pair is None:
                break
            if verbose:
                merged = vocab[pair[0]] + vocab[pair[1]]
                print(
                    f"merge {new_id - 255}/{n_merges}: {pair} -> {new_id} {merged!r} "
                    f"(count {stats.pair_count[pair]})"
                )
            stats.merge(pair, new_id)
            merges.append((pair, new_id))
            vocab[new_id] = vocab[pair[0]] + vocab[pair[1]]
        first_special = 256 + len(merges)
        specials = {s: first_special + k for k, s in enumerate(special_tokens)}
        return cls(merges, specials, pattern)

    @staticmethod
    def _count_pretokens(
        text: str, pattern: str, special_tokens: Sequence[str]
    ) -> dict[bytes, int]:
        """Count each distinct pre-token (as UTF-8 bytes) once: the trainer works on these."""
        pieces = [text]
        if special_tokens:
            splitter = "|".join(regex.escape(s) for s in special_tokens)
            pieces = regex.split(splitter, text)
        counts: Counter[str] = Counter()
        splitter_re = regex.compile(pattern)
        for piece in pieces:
            counts.update(splitter_re.findall(piece))
        return {chunk.encode("utf-8"): n for chunk, n in counts.items()}

    # ---- encoding --------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        return len(self.vocab) + len(self.special_tokens)

    def _encode_chunk(self, chunk: str) -> list[int]:
        """Encode one pre-token: start from bytes, apply the lowest-ranked merge repeatedly.

        Applying merges in the order they were learned reproduces, on new text, exactly the
        segmentation training produced on the training text.
        """
        tokens = list(chunk.encode("utf-8"))
        while len(tokens) > 1:
            ranked = [self._merged_id.get(p) for p in zip(tokens, tokens[1:])]
            best = min((r for r in ranked if r is not None), default=None)
            if best is None:
                break
            tokens = _merge_pair(tokens, self.merges[best - 256][0], best)
        if len(self._cache) >= self._ENCODE_CACHE_LIMIT:
            self._cache.clear()
        self._cache[chunk] = tokens
        return tokens

    def _encode_ordinary(self, text: str) -> list[int]:
        ids: list[int] = []
        cache = self._cache  # most pre-tokens repeat (" the", ","): look them up first
        for chunk in self._splitter.findall(text):
            tokens = cache.get(chunk)
            ids.extend(tokens if tokens is not None else self._encode_chunk(chunk))
        return ids

    def encode(self, text: str, allow_special: bool = True) -> list[int]:
        """Text -> ids. Special tokens in ``text`` become their single id.

        Pass ``allow_special=False`` for untrusted text: then ``"<|endoftext|>"`` typed by a user
        is encoded as ordinary characters and cannot forge a document boundary.
        """
        if not (allow_special and self._special_splitter):
            return self._encode_ordinary(text)
        ids: list[int] = []
        for k, piece in enumerate(self._special_splitter.split(text)):
            # regex.split with one capturing group alternates: text, special, text, ...
            if k % 2:
                ids.append(self.special_tokens[piece])
            else:
                ids.extend(self._encode_ordinary(piece))
        return ids

    # ---- decoding --------------------------------------------------------------------

    def _token_bytes(self, token_id: int) -> bytes:
        if token_id in self.vocab:
            return self.vocab[token_id]
        if token_id in self._special_of_id:
            return self._special_of_id[token_id].encode("utf-8")
        raise ValueError(f"token id {token_id} is outside the vocabulary (size {self.vocab_size})")

    def decode_bytes(self, ids: Sequence[int]) -> bytes:
        """Ids -> the raw bytes they stand for (always possible, even mid-character)."""
        return b"".join(self._token_bytes(int(i)) for i in ids)

    def decode(self, ids: Sequence[int], errors: str = "strict") -> str:
        """Ids -> text. ``errors`` is passed to ``bytes.decode`` ("strict", "replace", ...).

        A token may hold only part of a multi-byte character (e.g. one of the 3 bytes of
        "苹"), so an arbitrary slice of ids need not be valid UTF-8. With the default
        ``errors="strict"`` that raises a ValueError; streaming samplers use "replace".
        """
        raw = self.decode_bytes(ids)
        try:
            return raw.decode("utf-8", errors=errors)
        except UnicodeDecodeError as err:
            raise ValueError(
                f"The ids decode to bytes that are not valid UTF-8 (byte {err.start} of "
                f"{len(raw)}: {err.reason}). The ids probably end or start in the middle of a "
                "multi-byte character, e.g. a sequence cut in the middle of an emoji or a "
                "Chinese character. Decode the whole sequence, or pass errors='replace' to "
                "show the broken character as '\ufffd'."
            ) from err

    def token_str(self, token_id: int) -> str:
        """A printable form of one token; partial UTF-8 shows as escapes like '\\xe8'."""
        return self._token_bytes(token_id).decode("utf-8", errors="backslashreplace")

    # ---- persistence -----------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": "ByteBPE",
            "version": 1,
            "pattern": self.pattern,
            "merges": [[a, b, new_id] for (a, b), new_id in self.merges],
            "special_tokens": self.special_tokens,
        }

    @classmethod
    def from_dict(cls, payload: dict[str, Any]) -> ByteBPE:
        merges = [((a, b), new_id) for a, b, new_id in payload["merges"]]
        specials = payload.get("special_tokens", {})
        return cls(merges, specials, payload.get("pattern", GPT2_SPLIT_PATTERN))

    def save(self, path: str | os.PathLike) -> None:
        """Write the merges (and pattern, special tokens) as JSON; the vocab is rebuilt."""
        _write_json_atomically(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike) -> ByteBPE:
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))

    def __repr__(self) -> str:
        return f"ByteBPE(vocab_size={self.vocab_size}, merges={len(self.merges)})"


# --------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------


class IdTokenizer:
    """Ids that stand for nothing but themselves (random-token tasks: induction heads).

    ``encode`` checks each id is below ``vocab_size`` and returns the list; ``decode``
    returns it unchanged. It exists so a model of abstract tokens ships like any other.
    """

    def __init__(self, vocab_size: int):
        if vocab_size < 1:
            raise ValueError(f"IdTokenizer needs vocab_size >= 1, got {vocab_size}")
        self.vocab_size = int(vocab_size)

    def encode(self, ids: Iterable[int]) -> list[int]:
        ids = [int(i) for i in ids]
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise ValueError(
                f"ids {bad[:5]} are outside 0..{self.vocab_size - 1}: "
                f"this tokenizer's vocabulary has {self.vocab_size} ids"
            )
        return ids

    def decode(self, ids: Iterable[int]) -> list[int]:
        return [int(i) for i in ids]

    def to_dict(self) -> dict[str, Any]:
        return {"type": "IdTokenizer", "vocab_size": self.vocab_size}

    @classmethod
    def from_dict(cls, payload: dict[str, Any]) -> IdTokenizer:
        return cls(payload["vocab_size"])

    def save(self, path: str | os.PathLike) -> None:
        _write_json_atomically(path, self.to_dict())


def tokenizer_from_dict(payload: dict[str, Any]) -> CharTokenizer | ByteBPE:
    """Rebuild either tokenizer from its ``to_dict()`` (e.g. stored inside a checkpoint)."""
    kinds = {"CharTokenizer": CharTokenizer, "ByteBPE": ByteBPE, "IdTokenizer": IdTokenizer}
    kind = payload.get("type")
    if kind not in kinds:
        raise ValueError(f"unknown tokenizer type {kind!r}; expected one of {sorted(kinds)}")
    return kinds[kind].from_dict(payload)


def load_tokenizer(path: str | os.PathLike) -> CharTokenizer | ByteBPE | IdTokenizer:
    """Load a tokenizer saved by either class's ``save``."""
    return tokenizer_from_dict(json.loads(Path(path).read_text(encoding="utf-8")))


def compression_ratio(tokenizer: Tokenizer, text: str) -> float:
    """UTF-8 bytes per token: how much text one token carries on average.

    A character tokenizer on English gets about 1.0; GPT-2's BPE gets about 4 on English
    prose. Higher means shorter sequences, so more text fits in the model's context.
    """
    if not text:
        raise ValueError("compression_ratio needs a non-empty text")
    return len(text.encode("utf-8")) / len(tokenizer.encode(text))
