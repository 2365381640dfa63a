"""Code search data: (docstring summary, function) pairs, in the stdlib and outside it.

For every documented function, the *query* is the docstring's first paragraph on one line and
the *document* is the function's source with the docstring removed (otherwise the answer
would contain the question). Every system of chapter 10 reads the same text: documents cut
to their first :data:`CODE_CHARS` characters (all-MiniLM-L6-v2's 128 tokens hold nearly all of
them), queries to :data:`QUERY_CHARS`.

- :func:`code_search_pairs`: the Python standard library after chapter 7's filters, split
  *by top-level module* into train / val / test, so that no test function has a training
  neighbour in the same file.
- :func:`outside_pairs`: a fixed, seeded selection of functions from installed third-party
  packages (numpy, requests, scikit-learn...; scipy, sympy, sphinx... for chapter 10's outside
  test set): code from outside the stdlib, never trained on, to see whether tuning on the
  stdlib generalises.
"""
from __future__ import annotations

import ast
import hashlib
import json
import os
import random
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

__all__ = ["CodePair", "CODE_CHARS", "QUERY_CHARS", "OUTSIDE_PACKAGES", "module_of",
           "OUTSIDE_TEST_PACKAGES", "split_modules", "extract_functions", "code_search_pairs",
           "outside_pairs", "outside_test_pairs", "unpack_pairs"]

#: Characters of a function every system reads (MiniLM's 128 tokens hold ~98% of such cuts).
CODE_CHARS = 320
#: Characters of a docstring summary every system reads.
QUERY_CHARS = 200
#: Third-party packages the out-of-domain test functions come from (those installed are used).
OUTSIDE_PACKAGES = ("numpy", "requests", "urllib3", "jinja2", "click", "networkx", "packaging",
                    "httpx", "rich", "sklearn")
#: Ten *other* installed packages, for a larger outside test set that no choice looked at
#: (chapter 10's outside dev draw came from :data:`OUTSIDE_PACKAGES`).
OUTSIDE_TEST_PACKAGES = ("scipy", "sympy", "matplotlib", "tornado", "docutils", "sqlalchemy",
                         "IPython", "babel", "fontTools", "sphinx")
_VERSION = 2  # bump when extraction changes, so stale caches are not reused


@dataclass(frozen=True)
class CodePair:
    """One documented function: its docstring summary (the query) and its code."""

    module: str   # top-level module or package, e.g. "email" or "numpy"
    path: str     # file inside the stdlib or the package's folder
    name: str     # function name (qualified by its class, if any)
    query: str    # the first paragraph of the docstring, on one line
    code: str     # the function's source with the docstring removed


def module_of(path: str) -> str:
    """The top-level module a file belongs to: ``email/mime/text.py`` -> ``email``."""
    first = path.split("/")[0]
    return first[:-3] if first.endswith(".py") else first


def split_modules(modules: Sequence[str], fractions: Sequence[float] = (0.8, 0.05, 0.15),
                  seed: int = 0) -> dict[str, str]:
    """Assign each module to ``"train"``, ``"val"`` or ``"test"`` by a hash of its name and
    ``seed``.

    A module's split depends on its name alone, not on which other modules are present, so a
    filter that drops some files never moves the others from one split to another.
    """
    if len(fractions) != 3 or abs(sum(fractions) - 1) > 1e-9 or min(fractions) <= 0:
        raise ValueError(f"fractions must be three positive shares summing to 1, got {fractions}")
    split = {}
    for m in sorted(set(modules)):
        u = int(hashlib.sha1(f"{seed}:{m}".encode()).hexdigest(), 16) / 16**40  # uniform [0, 1)
        split[m] = ("test" if u < fractions[2] else
                    "val" if u < fractions[2] + fractions[1] else "train")
    return split


def _summary(doc: str) -> str:
    first = doc.strip().split("\n\n")[0]
    return " ".join(first.split())


def extract_functions(source: str, min_words: int = 3,
                      max_code_chars: int = 2000) -> list[tuple[str, str, str]]:
    """``(name, docstring summary, code without docstring)`` of each documented function.

    Skipped: functions with no docstring, a summary shorter than ``min_words`` words, or no
    code besides the docstring. Code longer than ``max_code_chars`` is cut.
    """
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return []
    lines = source.splitlines()
    out = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef):
                visit(child, prefix + child.name + ".")
            elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(child)
                if doc and len(child.body) > 1:
                    summary = _summary(doc)
                    if len(summary.split()) >= min_words:
                        d = child.body[0]
                        keep = [lines[i] for i in range(child.lineno - 1, child.end_lineno)
                                if not d.lineno - 1 <= i < d.end_lineno]
                        code = textwrap.dedent("\n".join(keep)).strip("\n")[:max_code_chars]
                        out.append((prefix + child.name, summary, code))
                visit(child, prefix + child.name + ".")

    visit(tree, "")
    return out


def _cached(name: str, key_parts: list, make) -> list:
    """``make()`` cached as JSON in ``gptlib.paths.cache_dir`` under a key of ``key_parts``."""
    from gptlib.paths import cache_dir

    key = hashlib.sha1(json.dumps([_VERSION, *key_parts]).encode()).hexdigest()[:16]
    path = cache_dir() / f"{name}-{key}.json"
    if path.exists():
        return [tuple(row) for row in json.loads(path.read_text())]
    rows = make()
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(rows))
    os.replace(tmp, path)
    return [tuple(row) for row in rows]


def _stdlib_functions() -> list[tuple[str, str, str, str, str]]:
    """``(module, path, name, query, code)`` of every documented stdlib function (cached)."""
    import sys

    from gptlib.data import filtered_python_code

    files = filtered_python_code()
    return _cached("stdlib-functions", [sys.version, sorted((p, len(s)) for p, s in files.items())],
                   lambda: [(module_of(p), p, *f) for p in sorted(files)
                            for f in extract_functions(files[p])])


def _cut(text: str, n: int) -> str:
    return text[:n]


def code_search_pairs(split: str = "test", seed: int = 0, max_pairs: int | None = None,
                      fractions: Sequence[float] = (0.8, 0.05, 0.15)) -> list[CodePair]:
    """(docstring summary, function) pairs of the stdlib modules in one ``split``.

    Modules (top-level packages) are split by :func:`split_modules`, so no function of a
    test module is ever seen in training. Code is cut to :data:`CODE_CHARS` characters and
    queries to :data:`QUERY_CHARS`; pairs with a query or a code text already seen (in this
    split) are dropped, so each query has exactly one right answer. ``max_pairs`` keeps a
    seeded random sample (the same for the same seed).
    """
    if split not in ("train", "val", "test"):
        raise ValueError(f"split must be 'train', 'val' or 'test', got {split!r}")
    functions = _stdlib_functions()
    assignment = split_modules([f[0] for f in functions], fractions, seed)
    pairs, seen_q, seen_c = [], set(), set()
    for module, path, name, query, code in functions:
        query, code = _cut(query, QUERY_CHARS), _cut(code, CODE_CHARS)
        if assignment[module] != split or query in seen_q or code in seen_c:
            continue
        seen_q.add(query)
        seen_c.add(code)
        pairs.append(CodePair(module, path, name, query, code))
    if max_pairs is not None and len(pairs) > max_pairs:
        rows = sorted(random.Random(seed).sample(range(len(pairs)), max_pairs))
        pairs = [pairs[i] for i in rows]
    return pairs


def _package_dir(package: str) -> Path | None:
    """Where an installed package's sources are, found without importing it."""
    import importlib.util

    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def _skip(rel: str) -> bool:
    parts = rel.split("/")
    return any(p in ("tests", "test", "testing", "_vendor", "vendored", "externals") or
               p.startswith("test_") for p in parts)


def _package_functions(package: str) -> list[tuple[str, str, str, str, str]]:
    """``(package, path, name, query, code)`` of the documented functions of one package."""
    from importlib.metadata import PackageNotFoundError, version

    root = _package_dir(package)
    if root is None:
        return []
    try:
        ver = version(package if package != "sklearn" else "scikit-learn")
    except PackageNotFoundError:
        ver = "unknown"

    def make():
        rows = []
        for f in sorted(root.rglob("*.py")):
            rel = f.relative_to(root.parent).as_posix()
            if _skip(rel):
                continue
            source = f.read_text(encoding="utf-8", errors="replace")
            rows += [(package, rel, *fn) for fn in extract_functions(source)]
        return rows

    return _cached(f"functions-{package}", [package, ver, str(root)], make)


def outside_pairs(n: int = 600, seed: int = 0,
                  packages: Sequence[str] = OUTSIDE_PACKAGES) -> list[CodePair]:
    """A fixed, seeded selection of ``n`` functions from installed third-party ``packages``.

    Every installed package of the list gives an equal share (so that the biggest does not
    dominate); functions in test folders or vendored code are skipped, and so is any pair
    whose query or code also occurs in the stdlib. Same packages, versions and seed -> the
    same selection. Packages that are not installed are skipped (the selection then differs:
    the asset records the versions it used).
    """
    stdlib = _stdlib_functions()
    seen_q = {_cut(f[3], QUERY_CHARS) for f in stdlib}
    seen_c = {_cut(f[4], CODE_CHARS) for f in stdlib}
    per_package = {}
    for package in packages:
        rows = []
        for module, path, name, query, code in _package_functions(package):
            query, code = _cut(query, QUERY_CHARS), _cut(code, CODE_CHARS)
            if query in seen_q or code in seen_c:
                continue
            seen_q.add(query)
            seen_c.add(code)
            rows.append(CodePair(module, path, name, query, code))
        if rows:
            per_package[package] = rows
    if not per_package:
        raise RuntimeError(f"none of the packages {list(packages)} is installed: install one "
                           "(e.g. pip install requests) or pass packages=")
    rng = random.Random(seed)
    names = sorted(per_package)
    quota = {p: n // len(names) + (i < n % len(names)) for i, p in enumerate(names)}
    out = []
    for p in names:
        rows = per_package[p]
        out += [rows[i] for i in sorted(rng.sample(range(len(rows)), min(quota[p], len(rows))))]
    return out


def outside_test_pairs(n: int = 600, dev_seed: int = 0,
                       packages: Sequence[str] = OUTSIDE_PACKAGES) -> list[CodePair]:
    """The outside *test* draw: :func:`outside_pairs` with seed ``dev_seed + 1``, without the
    functions of the ``dev_seed`` draw (which chapter 10 looked at while making choices)."""
    dev = {(p.path, p.name) for p in outside_pairs(n, dev_seed, packages)}
    return [p for p in outside_pairs(n, dev_seed + 1, packages) if (p.path, p.name) not in dev]


def unpack_pairs(packed) -> list[CodePair]:
    """The pairs a recipe stored as a uint8 tensor (zlib-compressed UTF-8 JSON rows of
    ``[module, path, name, query, code]``), e.g. ``embeddings/code-search``'s test sets."""
    import zlib

    data = bytes(packed.numpy().tobytes()) if hasattr(packed, "numpy") else bytes(packed)
    return [CodePair(*row) for row in json.loads(zlib.decompress(data).decode())]
