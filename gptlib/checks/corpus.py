"""Exercise checkers for chapter 7."""
from __future__ import annotations

__all__: list[str] = []
