"""The classroom kit: a student edition of every chapter, and autograding, through nbgrader.

The book's chapters are the single source. A cell tagged ``solution`` is the worked answer
the site folds away; this script turns it into an nbgrader *solution cell* by putting the
``### BEGIN SOLUTION`` / ``### END SOLUTION`` markers around the body of each function it
defines (or around the whole cell when it defines none). ``nbgrader generate_assignment``
then replaces each marked region by a stub (``raise NotImplementedError()``), keeping the
function's name and signature, so the checker cell that follows still runs and reports
"not written yet" rather than a NameError. Each checker cell (one that calls a
``gptlib.checks.check_*`` function) becomes a locked, autograded test worth one point.

    python scripts/classroom.py student                 # every chapter -> classroom/release/
    python scripts/classroom.py student 00_preface      # just one
    python scripts/classroom.py grade classroom/work/00_preface.ipynb --student ada

``make student`` and ``make grade NB=...`` call these. The course directory (``classroom/``)
is nbgrader's usual layout: ``source/``, ``release/``, ``submitted/``, ``autograded/`` and
``gradebook.db``.
"""
from __future__ import annotations

import argparse
import ast
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import jupytext
import nbformat

ROOT = Path(__file__).resolve().parent.parent
CHAPTERS = ROOT / "chapters"
BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
CHECK_CALL = re.compile(r"^\s*check_\w+\(", re.MULTILINE)
STUB = "# YOUR CODE HERE\nraise NotImplementedError()"


def chapter_sources(names: list[str] | None = None) -> list[Path]:
    sources = sorted(CHAPTERS.glob("[0-9][0-9]_*.md"))
    if names:
        known = {p.stem: p for p in sources}
        unknown = [n for n in names if n not in known]
        if unknown:
            raise SystemExit(f"unknown chapter(s) {unknown}; chapters are: {', '.join(known)}")
        sources = [known[n] for n in names]
    return sources


def mark_solution(source: str) -> str:
    """Wrap the body of every top-level function (after its docstring) in solution markers."""
    tree = ast.parse(source)
    functions = [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    lines = source.splitlines()
    if not functions:
        return f"{BEGIN}\n{source.rstrip()}\n{END}"
    for fn in reversed(functions):  # bottom-up, so earlier line numbers stay valid
        body = fn.body
        if len(body) > 1 and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None),
                                                                          ast.Constant) \
                and isinstance(body[0].value.value, str):
            body = body[1:]  # keep the docstring: it is part of the exercise
        first, last = body[0].lineno - 1, fn.end_lineno
        # comments just above the first statement belong to the solution too
        while first > fn.lineno and lines[first - 1].strip().startswith("#"):
            first -= 1
        indent = re.match(r"\s*", lines[body[0].lineno - 1]).group(0)
        lines[last:last] = [indent + END]
        lines[first:first] = [indent + BEGIN]
    return "\n".join(lines)


def to_nbgrader(notebook: nbformat.NotebookNode, chapter: str) -> tuple[nbformat.NotebookNode, int]:
    """The chapter as an nbgrader source notebook; returns it and the number of graded checks."""
    nb = nbformat.from_dict(json.loads(json.dumps(notebook)))  # a deep copy
    n_solutions = n_tests = 0
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        tags = cell.metadata.get("tags", [])
        if "solution" in tags:
            n_solutions += 1
            cell.source = mark_solution(cell.source)
            cell.metadata["tags"] = [t for t in tags if t not in ("solution", "hide-input")]
            cell.metadata["nbgrader"] = {"grade": False, "solution": True, "locked": False,
                                         "grade_id": f"{chapter}-solution-{n_solutions}", "schema_version": 3}
        elif CHECK_CALL.search(cell.source) and n_solutions > n_tests:
            n_tests += 1
            cell.metadata["nbgrader"] = {"grade": True, "solution": False, "locked": True, "points": 1,
                                         "grade_id": f"{chapter}-check-{n_tests}", "schema_version": 3}
    nb.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}
    return nb, n_tests


def _nbgrader(course: Path, *args: str) -> None:
    cmd = [sys.executable, "-m", "nbgrader", *args]
    # nbgrader runs `alembic` (its database migrations) by name: put this Python's bin/ first.
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=course, env=env)  # reads nbgrader_config.py
    if proc.returncode != 0:
        raise SystemExit(f"nbgrader {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")


def write_config(course: Path) -> None:
    course.mkdir(parents=True, exist_ok=True)
    (course / "nbgrader_config.py").write_text(
        "c = get_config()  # noqa: F821\n"
        f"c.CourseDirectory.root = {str(course)!r}\n"
        f"c.ClearSolutions.code_stub = {{'python': {STUB!r}}}\n"
        "c.ExecutePreprocessor.timeout = 900\n"
    )


def student(names: list[str] | None, course: Path) -> list[Path]:
    """Generate the student edition of each chapter into ``course/release/<chapter>/``."""
    write_config(course)
    made = []
    for source in chapter_sources(names):
        chapter = source.stem
        nb, n_tests = to_nbgrader(jupytext.read(source), chapter)
        if not n_tests:
            print(f"{chapter}: no exercises with checkers, skipped")
            continue
        folder = course / "source" / chapter
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        nbformat.write(nb, folder / f"{chapter}.ipynb")
        _nbgrader(course, "generate_assignment", chapter, "--force")
        made.append(course / "release" / chapter / f"{chapter}.ipynb")
        print(f"{chapter}: {n_tests} graded exercise(s) -> {made[-1].relative_to(ROOT) if made[-1].is_relative_to(ROOT) else made[-1]}")
    return made


def grade(notebook: Path, student_id: str, course: Path) -> tuple[float, float]:
    """Autograde a filled-in student notebook; returns (score, max_score)."""
    chapter = notebook.stem
    if not (course / "source" / chapter).exists():
        student([chapter], course)
    target = course / "submitted" / student_id / chapter
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    shutil.copy(notebook, target / f"{chapter}.ipynb")
    _nbgrader(course, "autograde", chapter, f"--student={student_id}", "--force")
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        submission = gb.find_submission(chapter, student_id)
        score, max_score = submission.score, submission.max_score
    print(f"{student_id}, {chapter}: {score:g} / {max_score:g} points "
          f"(graded notebook: {course / 'autograded' / student_id / chapter})")
    return score, max_score


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--course", type=Path, default=ROOT / "classroom")
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("student", help="make the student edition")
    s.add_argument("chapters", nargs="*")
    g = sub.add_parser("grade", help="autograde a filled-in notebook")
    g.add_argument("notebook", type=Path)
    g.add_argument("--student", default="student")
    args = parser.parse_args(argv)
    if args.command == "student":
        student(args.chapters, args.course.resolve())
    else:
        grade(args.notebook.resolve(), args.student, args.course.resolve())


if __name__ == "__main__":
    main()
