"""Where the book's files live, found from the package itself (not from the working directory).

Chapters run with different working directories (JupyterLab: chapters/; nbval: a temp dir;
the site build: chapters/), so they locate assets through these constants.
gptlib is installed in editable mode by the Makefile, so REPO_ROOT is the checkout.
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_DIR.parent
ASSETS = REPO_ROOT / "assets"
CONFIGS = PACKAGE_DIR / "configs"


def cache_dir() -> Path:
    """User cache for derived data (the plain-text corpus, trained tokenizers).

    ``$GPTLIB_CACHE`` overrides ``~/.cache/gptlib``.
    """
    root = Path(os.environ.get("GPTLIB_CACHE", Path.home() / ".cache" / "gptlib"))
    root.mkdir(parents=True, exist_ok=True)
    return root
