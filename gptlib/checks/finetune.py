"""Exercise checkers for chapter 4 (GPT-1: pre-train, then fine-tune)."""
from __future__ import annotations

from gptlib.checks import CheckFailed, _fail, check_close  # noqa: F401

__all__: list[str] = []
