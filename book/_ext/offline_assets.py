"""Sphinx extension: make the built site work with no network.

The widget manager (vendored in book/_vendor/html-manager) asks for its icon fonts at
``<page folder>/@jupyter-widgets/html-manager/dist/<hash>.woff2``, i.e. relative to each
page, not to the site root. Pages live in several folders (``book/``, ``chapters/``), so
after the build we copy the fonts next to every folder that holds pages.

sphinx-thebe (live code cells through Binder) needs the network and is switched off in
_config.yml, yet Jupyter Book 1 still injects its loader, twice, which throws
"Identifier 'THEBE_JS_URL' has already been declared" on every page. We drop those scripts.

Each chapter page also offers its notebook for download: the chapter's MyST source is
converted to ``.ipynb`` with jupytext next to the page, and a link is put at the top.
"""
from __future__ import annotations

import shutil
from pathlib import Path

FONTS = Path(__file__).resolve().parent.parent / "_extra" / "@jupyter-widgets"


def _copy_widget_fonts(app, exception) -> None:
    if exception is not None or app.builder.format != "html":
        return
    out = Path(app.outdir)
    # The root index.html is a bare redirect with no <link rel=icon>, so a browser asks for
    # /favicon.ico while it follows it: serve the book's icon there too (browsers accept PNG).
    icon = Path(__file__).resolve().parent.parent / "favicon.png"
    if icon.exists():
        shutil.copyfile(icon, out / "favicon.ico")
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


def _is_chapter(pagename: str) -> bool:
    return pagename.startswith("chapters/") and pagename.split("/")[-1][:2].isdigit()


def _link_notebook(app, pagename, templatename, context, doctree) -> None:
    if not _is_chapter(pagename) or "body" not in context:
        return
    name = pagename.split("/")[-1]
    link = (f'<p class="download-ipynb"><a href="{name}.ipynb" download>Download this chapter as a '
            f'notebook ({name}.ipynb)</a> &middot; run it in JupyterLab with <code>make lab</code></p>')
    context["body"] = link + context["body"]


def _write_notebooks(app, exception) -> None:
    if exception is not None or app.builder.format != "html":
        return
    import jupytext

    for doc in app.env.found_docs:
        if _is_chapter(doc):
            notebook = jupytext.read(Path(app.srcdir) / f"{doc}.md")
            target = Path(app.outdir) / f"{doc}.ipynb"
            target.parent.mkdir(parents=True, exist_ok=True)
            jupytext.write(notebook, target)


def setup(app):
    app.connect("build-finished", _copy_widget_fonts)
    app.connect("build-finished", _write_notebooks)
    app.connect("html-page-context", _drop_thebe_scripts)
    app.connect("html-page-context", _link_notebook)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
