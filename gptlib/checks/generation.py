"""Exercise checkers for chapter 5 (GPT-2: zero-shot tasks, sampling, KV cache)."""
from __future__ import annotations

from gptlib.checks import CheckFailed, _fail, check_close  # noqa: F401

__all__: list[str] = []
