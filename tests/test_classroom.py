"""`make student` / `make grade`: the nbgrader student edition is made from the chapters' own
solution cells, runs, fails helpfully on its stubs, and gives full marks once solved."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import jupytext
import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import classroom  # noqa: E402

CHAPTER = "00_preface"  # the quickest chapter with an exercise


def test_solution_markers_wrap_function_bodies_and_keep_signatures():
    source = 'def f(x):\n    """Doc."""\n    # why\n    y = x + 1\n    return y\n\nanswer = f(1)\n'
    marked = classroom.mark_solution(source)
    assert marked.splitlines()[:3] == ["def f(x):", '    """Doc."""', "    ### BEGIN SOLUTION"]
    assert "    ### END SOLUTION" in marked.splitlines()
    assert classroom.mark_solution("answer = 42").startswith("### BEGIN SOLUTION")


def test_every_chapter_exercise_becomes_a_graded_cell():
    for source in classroom.chapter_sources():
        notebook = jupytext.read(source)
        n_solutions = sum("solution" in c.metadata.get("tags", []) for c in notebook.cells)
        _, n_tests = classroom.to_nbgrader(notebook, source.stem)
        assert n_tests == n_solutions, f"{source.name}: {n_solutions} solutions but {n_tests} checker cells"


@pytest.mark.slow
def test_student_edition_fails_helpfully_and_solutions_score_full_marks(tmp_path):
    course = tmp_path / "course"
    env_python = sys.executable
    subprocess.run([env_python, str(ROOT / "scripts" / "classroom.py"), "--course", str(course),
                    "student", CHAPTER], check=True, capture_output=True, text=True)
    release = course / "release" / CHAPTER / f"{CHAPTER}.ipynb"
    student_nb = nbformat.read(release, as_version=4)
    solution_cells = [c for c in student_nb.cells if c.metadata.get("nbgrader", {}).get("solution")]
    assert solution_cells and all("raise NotImplementedError()" in c.source for c in solution_cells)
    assert all("BEGIN SOLUTION" not in c.source for c in student_nb.cells)

    # A student who puts the book's solutions back gets full marks; one who does nothing gets 0.
    book = {c.metadata["nbgrader"]["grade_id"]: c.source
            for c in nbformat.read(course / "source" / CHAPTER / f"{CHAPTER}.ipynb", as_version=4).cells
            if c.metadata.get("nbgrader", {}).get("solution")}
    solved = nbformat.read(release, as_version=4)
    for cell in solved.cells:
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        if grade_id in book:
            cell.source = "\n".join(line for line in book[grade_id].splitlines() if "SOLUTION" not in line)
    work = tmp_path / "work"
    work.mkdir()
    nbformat.write(solved, work / f"{CHAPTER}.ipynb")
    score, max_score = classroom.grade(work / f"{CHAPTER}.ipynb", "ada", course)
    assert max_score >= 1 and score == max_score
    # The untouched student edition, autograded: 0 points, and the checker cells' output says
    # what is missing (one run serves both checks: every run starts a kernel and imports torch).
    nbformat.write(nbformat.read(release, as_version=4), work / f"{CHAPTER}.ipynb")
    score, _ = classroom.grade(work / f"{CHAPTER}.ipynb", "bob", course)
    assert score == 0
    graded = nbformat.read(course / "autograded" / "bob" / CHAPTER / f"{CHAPTER}.ipynb", as_version=4)
    outputs = "".join(str(o) for c in graded.cells if c.metadata.get("nbgrader", {}).get("grade")
                      for o in c.get("outputs", []))
    assert "not written yet" in outputs
