"""Exercise checkers for chapters 11-14."""
from __future__ import annotations

__all__: list[str] = []
