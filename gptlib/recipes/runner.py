"""Run a recipe: resolve its settings, call its ``run(ctx)``; ``python -m gptlib.recipes``."""

from __future__ import annotations

import importlib
import shlex
import textwrap
from pathlib import Path
from typing import Sequence

from gptlib.paths import ASSETS
from gptlib.recipes.context import RecipeContext
from gptlib.recipes.registry import recipe_assets, recipe_names, recipe_settings_path
from gptlib.settings import SettingsError, check_key, parse_overrides, read_toml, resolve

__all__ = ["run_recipe", "main"]


def run_recipe(
    name: str,
    mode: str | None = None,
    out: str | Path | None = None,
    overrides: dict | None = None,
    command: str | None = None,
) -> RecipeContext:
    """Run recipe ``name``; returns its context (``ctx.out`` holds the assets it wrote)."""
    check_key(
        name,
        recipe_names(),
        where="gptlib/recipes (python -m gptlib.recipes --list)",
        what="recipe",
    )
    raw = read_toml(recipe_settings_path(name))
    settings = resolve(raw, mode=mode, overrides=overrides, where=str(recipe_settings_path(name)))
    flags = ([f"--{mode}"] if mode else []) + [f"--{k}={v}" for k, v in (overrides or {}).items()]
    command = command or shlex.join(["python", "-m", "gptlib.recipes", name, *flags])
    ctx = RecipeContext(
        name=name,
        settings=settings,
        command=command,
        out=Path(out) if out is not None else ASSETS,
        mode=mode,
    )
    module = importlib.import_module(f"gptlib.recipes.{name}")
    module.run(ctx)
    return ctx


def main(argv: Sequence[str] | None = None) -> int:
    import sys

    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        import gptlib.recipes as pkg

        print(pkg.__doc__.split("\n\n")[1])
        return 0 if argv else 2
    if argv[0] == "--list":
        for name in recipe_names():
            doc = (importlib.import_module(f"gptlib.recipes.{name}").__doc__ or "").strip()
            # The first sentence of the docstring's first paragraph, however it is wrapped.
            summary = " ".join(doc.split("\n\n")[0].split()).split(". ")[0].rstrip(".")
            pad = " " * 19
            wrapped = textwrap.fill(summary + ".", 100, initial_indent=pad, subsequent_indent=pad)
            print(f"{name:18s} {', '.join(recipe_assets(name))}\n{wrapped}")
        return 0
    name, rest = argv[0], argv[1:]
    mode = None
    out = None
    try:
        overrides = parse_overrides(rest)
        for flag in ("quick", "full"):
            if overrides.pop(flag, False):
                if mode:
                    raise SettingsError("--quick and --full exclude each other")
                mode = flag
        out = overrides.pop("out", None)
        # the rebuild command: everything but --out
        kept = [
            a
            for i, a in enumerate(rest)
            if not (a.startswith("--out") or (i and rest[i - 1] == "--out"))
        ]
        command = shlex.join(["python", "-m", "gptlib.recipes", name, *kept])
        run_recipe(name, mode=mode, out=out, overrides=overrides, command=command)
    except SettingsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
