"""Exercise checkers for chapter 15."""
from __future__ import annotations

__all__: list[str] = []
