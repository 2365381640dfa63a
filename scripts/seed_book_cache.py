"""File the chapters executed by the notebook tests into the site build's jupyter-cache.

    python scripts/seed_book_cache.py EXECUTED_DIR CACHE_DIR

``make test`` runs every chapter through nbval and (tests/nbval_record.py) keeps each executed
notebook in ``EXECUTED_DIR``, a folder named after the cache key of everything the chapters
depend on (``make cache-key``). ``make book`` calls this script before building: each executed
notebook whose code cells are exactly those of its chapter today is filed in the cache under the
hash myst-nb will look up, so the site build shows those outputs instead of executing the
chapter again. A chapter that changed since, or has no executed copy, is simply not filed:
the build executes it as before. Nothing here can put stale outputs on the site that the
cache key would not also have let through.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from jupyter_cache import get_cache
from jupyter_cache.base import CacheBundleIn
from myst_nb.core.read import read_myst_markdown_notebook

ROOT = Path(__file__).resolve().parent.parent
CHAPTERS = ROOT / "chapters"


def code_cells(notebook) -> list:
    return [cell for cell in notebook.cells if cell.cell_type == "code"]


def seed(executed_dir: Path, cache_dir: Path) -> tuple[list[str], list[str]]:
    """File every usable executed chapter; return (filed, skipped) chapter names."""
    cache = get_cache(str(cache_dir))
    filed, skipped = [], []
    for source in sorted(CHAPTERS.glob("*.md")):
        executed_path = executed_dir / f"{source.stem}.ipynb"
        if not executed_path.exists():
            continue
        # The notebook as the site build reads it: its hash is the cache's lookup key.
        notebook = read_myst_markdown_notebook(source.read_text(encoding="utf-8"))
        executed = nbformat.read(executed_path, as_version=4)
        ours, theirs = code_cells(notebook), code_cells(executed)
        if [c.source for c in ours] != [c.source for c in theirs]:
            skipped.append(source.stem)  # the chapter changed after it was tested
            continue
        for cell, done in zip(ours, theirs):
            cell.outputs = done.get("outputs", [])
            cell.execution_count = done.get("execution_count")
        seconds = executed.metadata.get("gptlib", {}).get("execution_seconds")
        cache.cache_notebook_bundle(
            CacheBundleIn(notebook, str(source), data={"execution_seconds": seconds}),
            check_validity=False,
            overwrite=True,
        )
        filed.append(source.stem)
    return filed, skipped


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    executed_dir, cache_dir = Path(argv[0]), Path(argv[1])
    if not executed_dir.is_dir():
        print(f"no executed chapters in {executed_dir}: the site build executes every chapter")
        return 0
    filed, skipped = seed(executed_dir, cache_dir)
    print(f"site build reuses {len(filed)} chapters executed by the tests", end="")
    print(
        f"; {len(skipped)} changed since and will execute: {', '.join(skipped)}" if skipped else ""
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
