"""Exercise checkers for chapter 3 (tokens)."""
from __future__ import annotations

from gptlib.checks import CheckFailed, _fail, check_close  # noqa: F401

__all__: list[str] = []
