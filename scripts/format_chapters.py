"""Format the chapters' code to at most 88 characters a line (the site's code column).

    python scripts/format_chapters.py [chapters/NN_name.md ...]      # default: every chapter
    python scripts/format_chapters.py --check                        # list long lines, exit 1

1. ``ruff format --line-length 88`` on every code cell, through jupytext (the Markdown and
   the cell metadata are kept; the YAML header is restored byte for byte).
2. What a formatter leaves long: comments are re-wrapped; string literals (f-strings too) are
   split at a space into adjacent literals inside the brackets that already hold them;
   docstrings are re-wrapped.
"""
from __future__ import annotations

import io
import re
import subprocess
import sys
import textwrap
import tokenize
from pathlib import Path

import jupytext

ROOT = Path(__file__).resolve().parent.parent
LIMIT = 88


def ruff_format(code: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "ruff", "format", "--line-length", str(LIMIT), "--isolated",
         "--config", "format.skip-magic-trailing-comma=true", "-"],
        input=code, capture_output=True, text=True)
    return proc.stdout if proc.returncode == 0 else code  # cells with magics: leave as they are


def wrap_comment(line: str) -> list[str]:
    indent = line[: len(line) - len(line.lstrip())]
    body = line.strip()[1:].strip()
    width = LIMIT - len(indent) - 2
    return [f"{indent}# {w}" for w in textwrap.wrap(body, width, break_long_words=False)]


def split_string_line(line: str) -> list[str] | None:
    """Split a line that is one string literal (optionally with a trailing comma/paren)."""
    m = re.match(r'^(\s*)(f?)(")(.*)(")(\)?,?\)?)$', line)
    if not m:
        return None
    indent, f, _, body, _, tail = m.groups()
    width = LIMIT - len(indent) - len(f) - 2 - 1
    pieces, depth, cur = [], 0, ""
    for ch in body:
        cur += ch
        depth += ch == "{" if f else 0
        depth -= ch == "}" if f else 0
        if ch == " " and depth == 0 and len(cur) > width * 0.6:
            pieces.append(cur)
            cur = ""
    pieces.append(cur)
    # merge greedily up to the width
    lines, acc = [], ""
    for p in pieces:
        if acc and len(acc) + len(p) > width:
            lines.append(acc)
            acc = p
        else:
            acc += p
    lines.append(acc)
    if len(lines) < 2:
        return None
    out = [f'{indent}{f if "{" in part or not f else ""}"{part}"' for part in lines]
    out[-1] += tail
    return out


def split_trailing_comment(line: str) -> tuple[str, str] | None:
    """``code  # why`` -> (``code``, ``# why``), or None when the line has no trailing comment."""
    if line.lstrip().startswith("#"):
        return None
    try:
        toks = list(tokenize.generate_tokens(io.StringIO(line + "\n").readline))
    except (tokenize.TokenError, IndentationError, SyntaxError):
        return None  # a line inside a bracket or a string: leave it
    comment = next((t for t in toks if t.type == tokenize.COMMENT), None)
    if comment is None:
        return None
    return line[: comment.start[1]].rstrip(), comment.string


def fix_comments(code: str) -> str:
    """Move the comment of a long line above it; re-wrap comment blocks holding a long line."""
    lines: list[str] = []
    for line in code.split("\n"):
        parts = split_trailing_comment(line) if len(line) > LIMIT else None
        if parts:
            indent = line[: len(line) - len(line.lstrip())]
            lines += [indent + parts[1], parts[0]]
        else:
            lines.append(line)
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        if stripped.startswith("#") and not stripped.startswith(("#|", "#:")):
            indent = line[: len(line) - len(line.lstrip())]
            block = [line]
            while (i + 1 < len(lines) and lines[i + 1].strip().startswith("# ")
                   and lines[i + 1].startswith(indent + "#")):
                i += 1
                block.append(lines[i])
            if any(len(b) > LIMIT for b in block):
                text = " ".join(b.strip()[1:].strip() for b in block)
                width = LIMIT - len(indent) - 2
                out += [f"{indent}# {w}" for w in textwrap.wrap(text, width, break_long_words=False)]
            else:
                out += block
        else:
            out.append(line)
        i += 1
    return "\n".join(out)


def fix_strings(code: str) -> str:
    out: list[str] = []
    for line in code.split("\n"):
        split = split_string_line(line) if len(line) > LIMIT else None
        out.extend(split if split and all(len(s) <= LIMIT for s in split) else [line])
    return "\n".join(out)


def long_lines(path: Path) -> list[tuple[int, str]]:
    nb = jupytext.read(path)
    return [(i, line) for i, cell in enumerate(nb.cells) if cell.cell_type == "code"
            for line in cell.source.split("\n") if len(line) > LIMIT]


def format_chapter(path: Path) -> int:
    text = path.read_text(encoding="utf-8")
    header_end = text.index("\n---\n", 4) + 5  # keep the YAML header exactly as it is
    nb = jupytext.reads(text, fmt="md:myst")
    for cell in nb.cells:
        if cell.cell_type != "code" or cell.source.lstrip().startswith(("%", "!")):
            continue
        src = ruff_format(fix_comments(cell.source)).rstrip("\n")
        src = ruff_format(fix_strings(src)).rstrip("\n")  # re-flow what the splits moved
        src = fix_comments(src)
        cell.source = src
    new = jupytext.writes(nb, fmt="md:myst")
    new = text[:header_end] + new[new.index("\n---\n", 4) + 5:]
    path.write_text(new, encoding="utf-8")
    return len(long_lines(path))


def main(argv: list[str]) -> int:
    check = "--check" in argv
    paths = [Path(a) for a in argv if not a.startswith("--")] or sorted(
        (ROOT / "chapters").glob("[0-9][0-9]_*.md"))
    bad = 0
    for path in paths:
        if check:
            for i, line in long_lines(path):
                print(f"{path.name} cell {i}: {len(line)} chars: {line.strip()[:70]}")
                bad += 1
        else:
            left = format_chapter(path)
            print(f"{path.name}: {left} lines still longer than {LIMIT}")
    return 1 if check and bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
