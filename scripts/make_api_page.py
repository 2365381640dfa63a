"""Write book/api.md: every gptlib module, grouped, documented from its docstrings.

    python scripts/make_api_page.py          # rewrite book/api.md
    python scripts/make_api_page.py --check  # exit 1 if book/api.md is stale (a test runs this)

The module list is derived from the package (pkgutil), so a new module cannot be forgotten.
"""
from __future__ import annotations

import ast
import pkgutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "gptlib"
PAGE = ROOT / "book" / "api.md"

# group -> module name prefixes (first match wins); anything else lands in "More"
GROUPS = [
    ("Foundations", ["device", "paths", "attention", "model", "statedict", "tokenizer", "data",
                     "train", "trainconfig", "distributed", "checkpoint", "evaluate", "sampling",
                     "settings", "viz"]),
    ("Shipped models", ["assets", "recipes"]),
    ("The GPT papers", ["heads", "mlm", "tasks", "icl", "intents", "fewshot", "scaling",
                        "induction"]),
    ("Code", ["passk", "sandbox", "verdict", "codebench", "codex", "toycode", "fim", "edit"]),
    ("Embeddings", ["embeddings", "retrieval", "codesearch"]),
    ("Alignment", ["rlhf"]),
    ("Making it small", ["compress"]),
    ("Exercise checkers", ["checks"]),
]


def modules() -> list[str]:
    names = [m.name for m in pkgutil.walk_packages([str(PACKAGE)], prefix="gptlib.")]
    return sorted(n for n in names if not n.endswith("__main__"))


def summary(module: str) -> str:
    rel = Path(*module.split(".")[1:])
    path = PACKAGE / rel / "__init__.py" if (PACKAGE / rel).is_dir() else (PACKAGE / rel).with_suffix(".py")
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    return doc.strip().split("\n\n")[0].replace("\n", " ")


def group_of(module: str) -> str:
    top = module.split(".")[1]
    for group, prefixes in GROUPS:
        if top in prefixes:
            return group
    return "More"


def render() -> str:
    grouped: dict[str, list[str]] = {}
    for m in modules():
        grouped.setdefault(group_of(m), []).append(m)
    order = [g for g, _ in GROUPS] + ["More"]
    out = ["# gptlib reference", "",
           "The library behind every chapter, module by module, generated from the docstrings in",
           "`gptlib/` (the docstrings teach: read the source next to this page). In JupyterLab,",
           "`help(gptlib.model.GPT)` or `gptlib.model.GPT?` shows the same text. This page is",
           "written by `python scripts/make_api_page.py` from the package itself.", "",
           "A module is one idea; a chapter imports what it needs (`from gptlib.model import GPT`)",
           "and keeps only what it teaches. Table of contents:", ""]
    for g in order:
        if g in grouped:
            out.append(f"- **{g}**: " + ", ".join(f"{{py:mod}}`{m}`" for m in grouped[g]))
    for g in order:
        if g not in grouped:
            continue
        out += ["", f"## {g}"]
        for m in grouped[g]:
            out += ["", f"### `{m}`", "", summary(m) or "(no docstring)", "", "```{eval-rst}",
                    f".. automodule:: {m}", "   :members:", "```"]
    return "\n".join(out) + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if PAGE.read_text(encoding="utf-8") != text:
            print("book/api.md is stale: run python scripts/make_api_page.py")
            return 1
        return 0
    PAGE.write_text(text, encoding="utf-8")
    print(f"wrote {PAGE} ({len(modules())} modules)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
