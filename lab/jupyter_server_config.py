"""Server settings of `make lab` (passed with --config; see the Makefile's `lab` target).

The chapters are MyST Markdown files (``chapters/*.md``) that JupyterLab opens as notebooks
through jupytext. The contents manager below is jupytext's, with two additions that keep the
repository's files the single source of truth while a reader works in them:

* **Solutions start folded.** Every cell tagged ``solution`` is opened with
  ``metadata.jupyter.source_hidden = true`` (the flag JupyterLab's "collapse input" sets), so
  the solutions stay out of sight until the reader clicks the fold bar. The flag is derived
  from the tag each time a chapter is opened and never written back
  (``chapters/jupytext.toml`` filters ``jupyter`` cell metadata): folding and unfolding a
  cell does not change the file.
* **The header stays as written.** JupyterLab writes the running kernel's display name
  (``Python 3 (ipykernel)``) into the notebook metadata, and jupytext would write that and its
  own version into the YAML header on every autosave, so a reader's checkout became dirty
  after two minutes. On save, the kernelspec of the file on disk is kept when it names the same
  kernel, and ``chapters/jupytext.toml`` drops ``jupytext_version``.
"""

from __future__ import annotations

import os

import jupytext
from jupytext.async_contentsmanager import AsyncTextFileContentsManager

SOLUTION_TAG = "solution"


def fold_solutions(notebook) -> int:
    """Mark the input of every ``solution``-tagged cell as hidden; return how many."""
    folded = 0
    for cell in notebook.get("cells", []):
        if SOLUTION_TAG in cell.get("metadata", {}).get("tags", []):
            cell["metadata"].setdefault("jupyter", {})["source_hidden"] = True
            folded += 1
    return folded


class BookContentsManager(AsyncTextFileContentsManager):
    """jupytext's contents manager: solutions folded on open, the chapter header kept on save."""

    async def get(self, path, content=True, type=None, format=None, **kwargs):
        model = await super().get(path, content=content, type=type, format=format, **kwargs)
        if content and model.get("type") == "notebook" and model.get("content") is not None:
            fold_solutions(model["content"])
        return model

    async def save(self, model, path=""):
        if model.get("type") == "notebook" and model.get("content") is not None:
            self._keep_kernelspec(model["content"], path)
        return await super().save(model, path)

    def _keep_kernelspec(self, notebook, path):
        os_path = self._get_os_path(path.strip("/"))
        if not (os_path.endswith(".md") and os.path.isfile(os_path)):
            return
        try:
            on_disk = jupytext.read(os_path).metadata.get("kernelspec")
        except Exception:  # an unreadable file: let jupytext save what the reader wrote
            return
        new = notebook.get("metadata", {}).get("kernelspec")
        if on_disk and (not new or new.get("name") == on_disk.get("name")):
            notebook["metadata"]["kernelspec"] = dict(on_disk)


# Reopening a chapter must show its widgets. Two things in a restored workspace (a page reload,
# or `make lab` again) broke them, reproduced in tests/test_lab.py:
# * JupyterLab's layout restorer reopens every tab of the notebook tracker with the stock
#   "Notebook" widget factory, also the .md chapters jupytext opened with "Jupytext Notebook";
#   the reader's next click on the chapter (default viewer "Jupytext Notebook") then opened a
#   second notebook view of the file on the same kernel;
# * a chapter restored both as a notebook and in a text editor tab: after the reload, every
#   widget the chapter displayed showed "Error displaying widget: model not found" and the
#   console "Exception opening new comm" (ipywidgets keeps one widget manager per kernel; the
#   restored pair never got a working one), even after a kernel restart.
# The workspace is therefore served with each text notebook restored once, as a notebook with
# the factory that opened it, and without an editor tab of the same file. (Closing a chapter
# shuts its kernel down, lab/overrides.json, so a reopened chapter starts a fresh kernel.)
def _restore_text_notebooks_with_jupytext(workspace: dict) -> dict:
    data = workspace.get("data", {})
    notebooks = set()
    for key, value in data.items():
        args = value.get("data") if isinstance(value, dict) else None
        if (
            key.startswith("notebook:")
            and isinstance(args, dict)
            and not str(args.get("path", "")).endswith(".ipynb")
        ):
            args["factory"] = "Jupytext Notebook"
            notebooks.add(str(args.get("path")))
    dropped = {f"editor:{path}" for path in notebooks}
    for key in dropped:
        data.pop(key, None)

    def prune(area):
        if isinstance(area, dict):
            if isinstance(area.get("widgets"), list):
                area["widgets"] = [w for w in area["widgets"] if w not in dropped]
                last = max(len(area["widgets"]) - 1, 0)
                area["currentIndex"] = min(area.get("currentIndex", 0), last)
            for child in area.get("children", []) or []:
                prune(child)

    main = data.get("layout-restorer:data", {}).get("main", {})
    prune(main.get("dock"))
    if main.get("current") in dropped:
        main["current"] = next((f"notebook:{path}" for path in notebooks), None)
    return workspace


def _patch_workspace_loading() -> None:
    from jupyterlab_server.workspaces_handler import WorkspacesManager

    if getattr(WorkspacesManager.load, "_book", False):
        return
    load = WorkspacesManager.load

    def load_with_jupytext_factories(self, space_name):
        return _restore_text_notebooks_with_jupytext(load(self, space_name))

    load_with_jupytext_factories._book = True
    WorkspacesManager.load = load_with_jupytext_factories


_patch_workspace_loading()

c = get_config()  # noqa: F821  (provided by traitlets when it loads this file)
c.ServerApp.contents_manager_class = BookContentsManager
