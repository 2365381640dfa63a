"""Settings files: one TOML format for the train CLI and every recipe, with overrides.

A settings file is TOML: top-level keys and tables (``[model]``, ``[data]``...). Recipe files
add three reserved tables: ``[recipe]`` (what the recipe makes: ``assets = [...]``), and
``[quick]`` / ``[full]``, overrides applied by ``--quick`` (seconds, for tests) and ``--full``
(full size, for a GPU). TOML puts every key after a ``[table]`` header into that table,
so top-level settings come first. On the command line ``--key value`` and ``--table.key=value``
override any setting; an unknown key fails with the valid keys and a "did you mean".
"""

from __future__ import annotations

import copy
import difflib
from pathlib import Path
from typing import Any, Mapping, Sequence

import tomllib

__all__ = [
    "SettingsError",
    "read_toml",
    "parse_value",
    "parse_overrides",
    "check_key",
    "apply_override",
    "resolve",
]

RESERVED = ("recipe", "quick", "full")


class SettingsError(ValueError):
    """A settings file or an override is wrong; the message names the fix."""


def read_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML file; a missing or malformed file gives one clear line."""
    path = Path(path)
    if not path.exists():
        near = difflib.get_close_matches(
            path.name,
            [p.name for p in path.parent.glob("*.toml")] if path.parent.is_dir() else [],
            n=1,
        )
        hint = f" Did you mean {str(path.parent / near[0])!r}?" if near else ""
        raise SettingsError(f"settings file {str(path)!r} does not exist.{hint}")
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise SettingsError(f"settings file {str(path)!r} is not valid TOML: {e}") from None


def parse_value(text: str) -> Any:
    """``"200"`` -> 200, ``"3e-4"`` -> 0.0003, ``"true"`` -> True, ``"[0.9, 0.95]"`` -> list;
    anything that is not a TOML value (``runs/x``) stays a string."""
    if text.lower() in ("none", "null"):
        return None
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def parse_overrides(args: Sequence[str]) -> dict[str, Any]:
    """``["--max_iters", "200", "--model.dropout=0", "--compile"]`` -> a dict of overrides.

    A flag with no value (followed by another ``--flag`` or nothing) means ``True``.
    """
    overrides: dict[str, Any] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--"):
            raise SettingsError(f"expected --key value, got {arg!r}")
        key, eq, value = arg[2:].partition("=")
        key = key.replace("-", "_")
        if eq:
            overrides[key] = parse_value(value)
            i += 1
        elif i + 1 < len(args) and not args[i + 1].startswith("--"):
            overrides[key] = parse_value(args[i + 1])
            i += 2
        else:
            overrides[key] = True
            i += 1
    return overrides


def check_key(key: str, valid: Sequence[str], where: str, what: str = "setting") -> None:
    """Raise :class:`SettingsError` with a "did you mean" unless ``key`` is in ``valid``."""
    if key in valid:
        return
    close = difflib.get_close_matches(key, list(valid), n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise SettingsError(
        f"unknown {what} {key!r} in {where}.{hint}\nValid {what}s: {', '.join(sorted(valid))}"
    )


def apply_override(
    values: dict[str, Any], key: str, value: Any, where: str = "the overrides"
) -> None:
    """``values["model"]["n_layer"] = 2`` for ``key="model.n_layer"``; only existing keys."""
    table, _, rest = key.partition(".")
    if rest:
        check_key(table, [k for k, v in values.items() if isinstance(v, dict)], where, what="table")
        apply_override(values[table], rest, value, where=f"the [{table}] table of {where}")
        return
    check_key(key, list(values), where)
    if isinstance(values[key], dict) and isinstance(value, Mapping):
        for sub, v in value.items():
            apply_override(values[key], sub, v, where=f"the [{key}] table of {where}")
    else:
        values[key] = value


def resolve(
    raw: Mapping[str, Any],
    mode: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    where: str = "settings",
) -> dict[str, Any]:
    """A recipe file's settings: defaults, then the ``[quick]``/``[full]`` table, then overrides."""
    values = {k: copy.deepcopy(v) for k, v in raw.items() if k not in RESERVED}
    if mode is not None:
        if mode not in ("quick", "full"):
            raise SettingsError(f"mode must be 'quick' or 'full', not {mode!r}")
        for key, value in raw.get(mode, {}).items():
            apply_override(values, key, value, where=f"the [{mode}] table of {where}")
    for key, value in (overrides or {}).items():
        apply_override(values, key, value, where="the command line")
    return values
