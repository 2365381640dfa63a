"""A pytest plugin for the inner nbval run: keep the outputs nbval saw, for the site build.

nbval executes a chapter cell by cell and compares nothing in ``--nbval-lax`` mode, but it does
collect every cell's outputs. When the whole chapter passed, this plugin writes the notebook
with those outputs to ``$GPTLIB_EXECUTED_OUT``; ``scripts/seed_book_cache.py`` then files it in
the site build's jupyter-cache, so ``make book`` right after ``make test`` does not execute
every chapter a second time.

Two kinds of output are adjusted, because a static page cannot use them as a live kernel does:
- widget views (tqdm's notebook bar) are dropped: their state lives in comm messages that
  nbval does not keep, and a bar on a static page says nothing;
- stream text is folded the way a terminal shows it: a carriage return overwrites the line
  (a text progress bar's many updates become its last state).
"""

from __future__ import annotations

import os
import re
import time

import nbformat
import pytest

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def fold_carriage_returns(text: str) -> str:
    r"""What a terminal shows for ``text``: on each line, only what follows its last ``\r``."""
    lines = text.split("\n")
    return "\n".join(re.split(r"\r(?!$)", line)[-1].rstrip("\r") for line in lines)


def static_outputs(outputs: list) -> list:
    """``outputs`` as a static page should show them (see the module docstring)."""
    kept = []
    for out in outputs:
        if out.get("output_type") in ("display_data", "execute_result"):
            if WIDGET_VIEW in out.get("data", {}):
                continue
        if out.get("output_type") == "stream":
            if kept and kept[-1].get("output_type") == "stream" and kept[-1]["name"] == out["name"]:
                kept[-1]["text"] = kept[-1]["text"] + out["text"]
                continue
            out = nbformat.NotebookNode(dict(out))
        kept.append(out)
    for out in kept:
        if out.get("output_type") == "stream":
            out["text"] = fold_carriage_returns(out["text"])
    return [out for out in kept if out.get("output_type") != "stream" or out["text"]]


_started = time.perf_counter()


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session, exitstatus):
    target = os.environ.get("GPTLIB_EXECUTED_OUT")
    if not target or exitstatus != 0:
        return
    cells = [item for item in session.items if hasattr(item, "test_outputs")]
    if not cells:
        return
    notebook = cells[0].parent.nb
    count = 0
    for item in cells:
        count += 1
        item.cell["outputs"] = static_outputs(item.test_outputs or [])
        item.cell["execution_count"] = count
    seconds = round(time.perf_counter() - _started, 1)
    notebook.metadata.setdefault("gptlib", {})["execution_seconds"] = seconds
    tmp = target + ".tmp"
    nbformat.write(notebook, tmp)
    os.replace(tmp, target)  # whole or absent: a half-written notebook would be cached
