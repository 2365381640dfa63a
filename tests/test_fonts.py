"""The bundled CJK font subset covers every Chinese character the book uses, on the site and in
figures; a chapter that adds a new character fails here with the command that fixes it."""

from __future__ import annotations

import importlib.util
import logging
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location(
    "subset_cjk_font", ROOT / "scripts" / "subset_cjk_font.py"
)
subset_cjk_font = importlib.util.module_from_spec(spec)
spec.loader.exec_module(subset_cjk_font)


def test_the_subset_holds_every_cjk_character_the_book_uses():
    used = subset_cjk_font.used_characters()
    assert len(used) > 100, "the scan found almost no Chinese: is it reading the chapters?"
    lacking = {
        path: "".join(sorted(chars)) for path, chars in subset_cjk_font.missing().items() if chars
    }
    assert not lacking, (
        f"the bundled CJK font lacks characters the book uses: {lacking}. "
        f"Regenerate it: {subset_cjk_font.COMMAND} (needs apt-get install fonts-noto-cjk)"
    )


def test_a_new_character_is_caught(tmp_path):
    (tmp_path / "chapters").mkdir()
    (tmp_path / "chapters" / "99_new.md").write_text(
        "A new term, 龘 (a character no chapter uses)."
    )
    shipped = subset_cjk_font.font_characters(subset_cjk_font.OTF)
    assert "龘" not in shipped
    assert "龘" in subset_cjk_font.used_characters(tmp_path)


def test_the_font_files_are_small_and_named_apart_from_noto():
    from fontTools.ttLib import TTFont

    for path in (subset_cjk_font.OTF, subset_cjk_font.WOFF2):
        assert path.stat().st_size < 150_000, f"{path.name} is {path.stat().st_size} bytes"
        names = TTFont(path)["name"]
        assert names.getDebugName(1) == "GPT Book CJK"  # OFL: no Reserved Font Name
        assert "Open Font License" in (names.getDebugName(13) or ""), "the licence notice is gone"
        assert (path.parent / "OFL.txt").exists()


def test_figures_draw_chinese_with_the_bundled_font(caplog):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from gptlib import viz

    viz.use_book_font()
    fig, ax = plt.subplots()
    ax.set_title("强化学习 (RLHF)")
    ax.text(0.5, 0.5, "奖励模型", weight="bold")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "Glyph ... missing from font(s)" is a UserWarning
        with caplog.at_level(logging.WARNING, logger="matplotlib.font_manager"):
            viz.figure_to_png(fig)
    assert not caplog.records, [r.getMessage() for r in caplog.records]  # e.g. no bold weight


@pytest.mark.parametrize("css", ["book/_vendor/book.css"])
def test_the_site_css_declares_the_font(css):
    text = (ROOT / css).read_text()
    assert 'url("fonts/gpt-book-cjk.woff2")' in text and '"GPT Book CJK"' in text
    assert "book.css" in (ROOT / "book" / "_config.yml").read_text()
