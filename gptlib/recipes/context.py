"""What a recipe's ``run`` receives: its settings, where to write, and how to save an asset."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gptlib import assets

__all__ = ["RecipeContext"]


@dataclass
class RecipeContext:
    """``ctx.save("fim/fim", model=..., metrics=...)`` fills in command, settings and wall time."""

    name: str
    settings: dict[str, Any]
    command: str
    out: Path
    mode: str | None = None
    started: float = field(default_factory=time.perf_counter)

    @property
    def quick(self) -> bool:
        return self.mode == "quick"

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def root_of(self, asset: str) -> Path | None:
        """Where to load ``asset`` from: ``out`` if this run's output folder holds it (made by
        an earlier step or an earlier run there), else None (the shipped ``assets/``)."""
        return self.out if (self.out / asset / "meta.json").exists() else None

    def save(self, asset: str, **kwargs: Any) -> Path:
        """Write ``asset`` under ``out`` (see :func:`gptlib.assets.save` for the keywords)."""
        kwargs.setdefault("wall_s", self.elapsed())
        kwargs.setdefault("settings", self.settings)
        path = assets.save(asset, command=self.command, root=self.out, **kwargs)
        print(f"[{self.name}] wrote {path} ({kwargs['wall_s']:.0f} s so far)")
        return path
