"""Every chapter is a test: convert the MyST source with jupytext, execute it with nbval.

Each chapter runs in its own pytest subprocess (``--nbval-lax``: every cell must run without
error; the chapter's check cells assert its facts; cells tagged ``raises-exception`` must
raise). With pytest-xdist the chapters are spread over the CPU cores. A failing chapter
shows nbval's report: the failing cell and its traceback. With ``GPTLIB_EXECUTED_DIR`` set (as
``make test`` does), each chapter that passes is also kept there with its outputs, and
``make book`` files it in the site's cache instead of executing the chapter again.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
import unicodedata
from pathlib import Path

import jupytext
import nbformat
import pytest
from conftest import threads_per_worker

TESTS = Path(__file__).resolve().parent
CHAPTERS = TESTS.parent / "chapters"
SOURCES = sorted(CHAPTERS.glob("[0-9][0-9]_*.md")) + [CHAPTERS / "_template.md"]
OUTPUT_WIDTH = 88  # characters of a printed line that fit the site's output box (1280 px)
FAST_BUDGET_S = 90  # DESIGN: every chapter runs in <= 90 s in fast mode on 2 cores


@pytest.mark.notebook
@pytest.mark.parametrize("source", SOURCES, ids=[p.stem for p in SOURCES])
def test_chapter_runs(source: Path, tmp_path: Path):
    notebook = jupytext.read(source)
    ipynb = tmp_path / (source.stem + ".ipynb")
    jupytext.write(notebook, ipynb)
    env = dict(os.environ, GPTLIB_FAST="1", GPTLIB_STATIC="1", PYTHONHASHSEED="0")
    env.pop("MPLBACKEND", None)  # the kernel must use its inline backend, as in JupyterLab
    env.setdefault("OMP_NUM_THREADS", str(threads_per_worker()))
    # keep the executed chapter: for the site build (see tests/nbval_record.py) and for the
    # check of its printed lines below
    executed = Path(os.environ.get("GPTLIB_EXECUTED_DIR") or f"{tmp_path}-executed")
    executed.mkdir(parents=True, exist_ok=True)
    env["GPTLIB_EXECUTED_OUT"] = str(executed.resolve() / ipynb.name)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS), env.get("PYTHONPATH")]))
    record = ["-p", "nbval_record"]
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "--nbval-lax", "--current-env",
         "--nbval-cell-timeout=900", "-p", "no:cacheprovider", "-p", "no:xdist", *record, "-q",
         str(ipynb)],
        cwd=tmp_path, env=env, capture_output=True, text=True,
    )
    elapsed = time.perf_counter() - start
    print(f"{source.name}: {elapsed:.1f} s in fast mode")
    assert proc.returncode == 0, f"{source.name} failed under nbval:\n{proc.stdout[-20000:]}\n{proc.stderr[-5000:]}"
    # A chapter must not litter its working directory (e.g. a training run writing checkpoints
    # relative to it: in the site build that directory is chapters/).
    left = sorted(p.name for p in tmp_path.iterdir() if p != ipynb and not p.name.startswith("."))
    assert not left, f"{source.name} wrote {left} into its working directory"
    too_wide = wide_output_lines(nbformat.read(executed / ipynb.name, as_version=4))
    assert not too_wide, (
        f"{source.name}: printed lines wider than {OUTPUT_WIDTH} characters scroll inside "
        "their output box on the site; print them in two lines, wrap them (textwrap.fill) or "
        "narrow the table:\n" + "\n".join(too_wide[:20]))


def wide_output_lines(notebook) -> list[str]:
    """Printed lines (streams, plain-text results) wider than OUTPUT_WIDTH; not tracebacks."""
    wide = []
    for cell in notebook.cells:
        if cell.cell_type != "code" or "raises-exception" in cell.metadata.get("tags", []):
            continue
        for out in cell.get("outputs", []):
            if out.output_type == "stream" and out.name == "stdout":
                text = out.text
            elif out.output_type == "execute_result":
                text = out.get("data", {}).get("text/plain", "")
            else:
                continue
            wide += [f"{display_width(line)}: {line[:100]}" for line in text.splitlines()
                     if display_width(line) > OUTPUT_WIDTH]
    return wide


def display_width(line: str) -> int:
    """Columns on screen: a Chinese character (East Asian wide or full-width) takes two."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in line)


def test_solution_cells_are_hidden_on_the_site():
    """A cell tagged `solution` must also be folded on the site (tag `hide-input`)."""
    for source in SOURCES:
        for cell in jupytext.read(source).cells:
            tags = cell.get("metadata", {}).get("tags", [])
            if "solution" in tags:
                assert "hide-input" in tags or "remove-cell" in tags, (
                    f"{source.name}: a `solution` cell must also be tagged hide-input:\n{cell.source[:200]}"
                )


def test_every_chapter_is_in_the_toc():
    toc = (CHAPTERS.parent / "book" / "_toc.yml").read_text()
    for source in SOURCES:
        if source.name.startswith("_"):
            continue
        assert f"chapters/{source.stem}" in toc, f"{source.name} is not listed in book/_toc.yml"


def test_chapters_write_nothing_outside_their_folder():
    """A figure saved to /tmp (a leftover of looking at it while writing) fails on a reader's
    Windows machine and litters everyone else's; chapters show figures, they do not save them."""
    for source in SOURCES:
        for cell in jupytext.read(source).cells:
            if cell.cell_type == "code":
                assert "/tmp/" not in cell.source and ".savefig(" not in cell.source, (
                    f"{source.name}: a code cell writes a file:\n{cell.source[:300]}"
                )
