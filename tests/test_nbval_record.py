"""The outputs the notebook tests keep for the site build (tests/nbval_record.py) and how
scripts/seed_book_cache.py files them in the site's cache."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import nbformat
import pytest
from jupyter_cache import get_cache
from myst_nb.core.read import read_myst_markdown_notebook
from nbval_record import fold_carriage_returns, static_outputs

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location(
    "seed_book_cache", ROOT / "scripts/seed_book_cache.py"
)
seed_book_cache = importlib.util.module_from_spec(spec)
sys.modules["seed_book_cache"] = seed_book_cache
spec.loader.exec_module(seed_book_cache)

V4 = nbformat.v4


def test_a_carriage_return_overwrites_its_line_as_in_a_terminal():
    assert (
        fold_carriage_returns("\rtrain 10%\rtrain 50%\rtrain 100%\ndone\n") == "train 100%\ndone\n"
    )
    assert fold_carriage_returns("a\r\nb") == "a\nb"
    assert fold_carriage_returns("no returns\n") == "no returns\n"


def test_static_outputs_drop_widget_views_and_merge_streams():
    bar = V4.new_output(
        "display_data",
        data={"application/vnd.jupyter.widget-view+json": {"model_id": "x"}, "text/plain": "HBox"},
    )
    outputs = [
        V4.new_output("stream", name="stderr", text="\rstep 1"),
        V4.new_output("stream", name="stderr", text="\rstep 2\n"),
        bar,
        V4.new_output("stream", name="stdout", text="loss 1.0\n"),
        V4.new_output("execute_result", data={"text/plain": "42"}, execution_count=3),
    ]
    kept = static_outputs(outputs)
    assert [o["output_type"] for o in kept] == ["stream", "stream", "execute_result"]
    assert kept[0]["text"] == "step 2\n" and kept[1]["text"] == "loss 1.0\n"


def _executed_copy(chapter: Path, out_dir: Path, edit=None) -> None:
    notebook = read_myst_markdown_notebook(chapter.read_text(encoding="utf-8"))
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs = [V4.new_output("stream", name="stdout", text="ran\n")]
    if edit:
        edit(notebook)
    nbformat.write(notebook, out_dir / f"{chapter.stem}.ipynb")


def test_only_chapters_unchanged_since_their_test_are_filed(tmp_path):
    executed, cache_dir = tmp_path / "executed", tmp_path / "cache"
    executed.mkdir()
    first, second = sorted((ROOT / "chapters").glob("0[01]_*.md"))
    _executed_copy(first, executed)

    def changed(notebook):  # the chapter's code was edited after the test ran
        next(c for c in notebook.cells if c.cell_type == "code").source += "\nx = 1"

    _executed_copy(second, executed, edit=changed)
    filed, skipped = seed_book_cache.seed(executed, cache_dir)
    assert filed == [first.stem] and skipped == [second.stem]
    # The site build looks the chapter up by the hash of its source: it finds the outputs.
    cache = get_cache(str(cache_dir))
    source = read_myst_markdown_notebook(first.read_text(encoding="utf-8"))
    _, merged = cache.merge_match_into_notebook(source)
    code = [c for c in merged.cells if c.cell_type == "code"]
    assert code and all(c.outputs[0]["text"] == "ran\n" for c in code)
    second_source = read_myst_markdown_notebook(second.read_text(encoding="utf-8"))
    with pytest.raises(KeyError):  # not filed: the build will execute it
        cache.match_cache_notebook(second_source)
