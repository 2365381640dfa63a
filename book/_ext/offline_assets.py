"""Sphinx extension: make the built site work with no network.

The widget manager (vendored in book/_vendor/html-manager) asks for its icon fonts at
``<page folder>/@jupyter-widgets/html-manager/dist/<hash>.woff2``, i.e. relative to each
page, not to the site root. Pages live in several folders (``book/``, ``chapters/``), so
after the build we copy the fonts next to every folder that holds pages.

sphinx-thebe (live code cells through Binder) needs the network and is switched off in
_config.yml, yet Jupyter Book 1 still injects its loader, twice, which throws
"Identifier 'THEBE_JS_URL' has already been declared" on every page. We drop those scripts.
"""
from __future__ import annotations

import shutil
from pathlib import Path

FONTS = Path(__file__).resolve().parent.parent / "_extra" / "@jupyter-widgets"


def _copy_widget_fonts(app, exception) -> None:
    if exception is not None or app.builder.format != "html":
        return
    out = Path(app.outdir)
    page_dirs = {p.parent for p in out.rglob("*.html") if "_static" not in p.parts}
    for folder in page_dirs:
        shutil.copytree(FONTS, folder / "@jupyter-widgets", dirs_exist_ok=True)


def _drop_thebe_scripts(app, pagename, templatename, context, doctree) -> None:
    scripts = context.get("script_files")
    if not scripts:
        return

    def is_thebe(script) -> bool:
        name = str(getattr(script, "filename", None) or script)
        body = str(getattr(script, "attributes", {}).get("body", ""))
        return "thebe" in name.lower() or "THEBE_JS_URL" in body or "thebe" in body[:80].lower()

    context["script_files"] = [s for s in scripts if not is_thebe(s)]


def setup(app):
    app.connect("build-finished", _copy_widget_fonts)
    app.connect("html-page-context", _drop_thebe_scripts)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
