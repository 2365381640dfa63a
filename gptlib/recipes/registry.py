"""Which recipe makes which asset, read from the settings files alone (no torch import).

Each recipe ``NAME`` is the module ``gptlib.recipes.NAME`` with settings in
``gptlib/configs/NAME.toml``, whose ``[recipe]`` table lists the assets it writes.
"""

from __future__ import annotations

import pkgutil
from pathlib import Path

from gptlib.paths import CONFIGS
from gptlib.settings import read_toml

__all__ = ["recipe_names", "recipe_settings_path", "recipe_assets", "command_for"]

_HERE = Path(__file__).resolve().parent
_NOT_RECIPES = {"registry", "context", "runner", "__main__"}


def recipe_names() -> list[str]:
    """Every recipe: the modules of this package that have a settings file."""
    mods = {m.name for m in pkgutil.iter_modules([str(_HERE)])} - _NOT_RECIPES
    return sorted(m for m in mods if (CONFIGS / f"{m}.toml").exists())


def recipe_settings_path(name: str) -> Path:
    return CONFIGS / f"{name}.toml"


def recipe_assets(name: str) -> list[str]:
    """The assets recipe ``name`` writes (its ``[recipe] assets`` list)."""
    return list(read_toml(recipe_settings_path(name)).get("recipe", {}).get("assets", []))


def command_for(asset: str) -> str:
    """The command that makes ``asset``, or a pointer to the list of recipes."""
    for name in recipe_names():
        if asset in recipe_assets(name):
            return f"python -m gptlib.recipes {name}"
    return f"no recipe makes {asset!r} (see python -m gptlib.recipes --list)"
