"""The shape of gptlib: every module importable by name, none too long, no import cycles.

Cycles are counted with imports inside functions too: an import deferred into a function
hides a cycle from Python's loader, not from the reader who has to understand both modules.
"""
from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path

import pytest

import gptlib

PACKAGE = Path(gptlib.__file__).resolve().parent
MAX_LINES = 600


def all_modules() -> list[str]:
    return sorted(m.name for m in pkgutil.walk_packages([str(PACKAGE)], prefix="gptlib.")
                  if not m.name.endswith("__main__"))


def source_of(module: str) -> Path:
    rel = Path(*module.split(".")[1:])
    path = PACKAGE / rel
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def imported_gptlib_modules(module: str, known: set[str]) -> set[str]:
    """Every gptlib module that ``module`` imports anywhere in its file (functions included)."""
    is_package = source_of(module).name == "__init__.py"
    package = module if is_package else module.rsplit(".", 1)[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(source_of(module).read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{base}.{node.module}" if node.module else base
            else:
                base = node.module or ""
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            # the longest known module that the name refers to
            while name and name not in known:
                name = name.rsplit(".", 1)[0] if "." in name else ""
            if name and name != module and name != "gptlib":
                out.add(name)
    return out


def import_graph() -> dict[str, set[str]]:
    known = set(all_modules())
    return {m: imported_gptlib_modules(m, known) for m in known}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return components


def test_cycle_finder_finds_a_planted_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert find_cycles(graph) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles_in_gptlib():
    cycles = find_cycles(import_graph())
    assert not cycles, "import cycles (imports inside functions count):\n" + "\n".join(
        " <-> ".join(c) for c in cycles)


def test_library_never_imports_the_recipes():
    graph = import_graph()
    offenders = {m: sorted(d for d in deps if d.startswith("gptlib.recipes"))
                 for m, deps in graph.items() if not m.startswith("gptlib.recipes")}
    # gptlib.assets reads the recipe registry (settings files only) to name a missing asset's maker
    offenders = {m: d for m, d in offenders.items() if d and d != ["gptlib.recipes.registry"]}
    assert not offenders, offenders


@pytest.mark.parametrize("module", all_modules())
def test_module_imports_and_is_short(module):
    importlib.import_module(module)
    lines = source_of(module).read_text(encoding="utf-8").count("\n")
    assert lines <= MAX_LINES, f"{module} has {lines} lines (at most {MAX_LINES}: split it by idea)"


def test_every_top_level_module_is_reachable_as_an_attribute():
    top = {m.split(".")[1] for m in all_modules()}
    for name in sorted(top):
        assert getattr(gptlib, name).__name__ == f"gptlib.{name}"
    with pytest.raises(AttributeError, match="no attribute 'nonexistent'"):
        gptlib.nonexistent  # noqa: B018


def test_api_page_lists_every_module():
    import subprocess
    import sys

    root = PACKAGE.parent
    proc = subprocess.run([sys.executable, str(root / "scripts" / "make_api_page.py"), "--check"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_chapter_code_fits_the_page():
    """Code lines of at most 88 characters: longer ones hide behind a scroll bar on the site."""
    import subprocess
    import sys

    root = PACKAGE.parent
    proc = subprocess.run([sys.executable, str(root / "scripts" / "format_chapters.py"), "--check"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, (
        "chapter code longer than 88 characters (run python scripts/format_chapters.py):\n"
        + proc.stdout)
