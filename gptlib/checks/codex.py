"""Exercise checkers for chapters 8-9."""
from __future__ import annotations

__all__: list[str] = []
