"""Exercise checkers for chapter 1-2 (attention, the Transformer block)."""
from __future__ import annotations

from gptlib.checks import CheckFailed, _fail, check_close  # noqa: F401

__all__: list[str] = []
