"""The instructor's path, end to end, with nbgrader's own command line and gradebook.

A temporary course holds chapter 1's assignment and the repository's ``nbgrader_config.py``:
``nbgrader generate_assignment``, three students' submissions in ``submitted/``, ``nbgrader
autograde``, ``nbgrader generate_feedback`` and ``nbgrader export``. The exported grades, and
each question's in the gradebook, must equal the points the source notebook gives the questions
each student answered; ``python -m llmcourse grade`` must give the same scores.
"""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from conftest import ROOT
from nbfactory import code_points, find_cell, submission

from llmcourse.grading import grade_notebook

pytestmark = pytest.mark.slow

ASSIGNMENT = "ch01_perceptron"
NOTEBOOK = "perceptron"
SOURCE = ROOT / "solutions" / ASSIGNMENT / f"{NOTEBOOK}.ipynb"
POINTS = code_points(SOURCE)
ANSWERS = [gid.removesuffix("_tests") for gid in POINTS]
PARTIAL = ANSWERS[:3]
WRITTEN = "The points where XOR is 1 and those where it is 0 cannot be split by one line."


def tampered(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Every test cell replaced by ``pass``: nbgrader must grade with the source's tests."""
    for gid in POINTS:
        find_cell(nb, gid).source = "pass"
    return nb


def students(release: Path) -> dict[str, tuple[nbformat.NotebookNode, dict[str, float]]]:
    """``{student: (submission, {test grade_id: expected points})}``."""
    return {
        "ada": (submission(release, SOURCE, q8_why_xor=WRITTEN), dict(POINTS)),
        "ben": (
            submission(release, SOURCE, answered=PARTIAL),
            {gid: POINTS[gid] if gid.removesuffix("_tests") in PARTIAL else 0.0 for gid in POINTS},
        ),
        # Stubs for everything but the first answer, and tests that would pass anything.
        "cy": (
            tampered(submission(release, SOURCE, answered=ANSWERS[:1])),
            {gid: POINTS[gid] if gid == f"{ANSWERS[0]}_tests" else 0.0 for gid in POINTS},
        ),
    }


def nbgrader(course: Path, *args: str) -> None:
    bindir = Path(sys.executable).parent  # nbgrader shells out to alembic from here
    env = dict(os.environ, PATH=os.pathsep.join([str(bindir), os.environ.get("PATH", "")]))
    done = subprocess.run(
        [str(bindir / "nbgrader"), *args],
        cwd=course,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, f"nbgrader {' '.join(args)}:\n{done.stdout}\n{done.stderr}"


@pytest.fixture(scope="module")
def course(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("instructor")
    shutil.copytree(ROOT / "solutions" / ASSIGNMENT, root / "solutions" / ASSIGNMENT)
    shutil.copyfile(ROOT / "nbgrader_config.py", root / "nbgrader_config.py")
    nbgrader(root, "generate_assignment", ASSIGNMENT, "--force")
    release = root / "exercises" / ASSIGNMENT / f"{NOTEBOOK}.ipynb"
    for student, (nb, _) in students(release).items():
        folder = root / "submitted" / student / ASSIGNMENT
        folder.mkdir(parents=True)
        nbformat.write(nb, folder / f"{NOTEBOOK}.ipynb")
        (folder / "timestamp.txt").write_text("2030-01-01 12:00:00.000000 UTC")
    nbgrader(root, "autograde", ASSIGNMENT)
    nbgrader(root, "generate_feedback", ASSIGNMENT)
    nbgrader(root, "export")
    return root


def expected(course: Path) -> dict[str, dict[str, float]]:
    release = course / "exercises" / ASSIGNMENT / f"{NOTEBOOK}.ipynb"
    return {student: points for student, (_, points) in students(release).items()}


def test_exported_grades_equal_the_expected_scores(course: Path) -> None:
    with open(course / "grades.csv", newline="") as f:
        exported = {row["student_id"]: row for row in csv.DictReader(f)}
    assert sorted(exported) == ["ada", "ben", "cy"]
    written = 2.0  # q8, graded by hand: not yet
    for student, points in expected(course).items():
        row = exported[student]
        assert row["assignment"] == ASSIGNMENT
        assert float(row["raw_score"]) == float(row["score"]) == sum(points.values()), student
        assert float(row["max_score"]) == sum(POINTS.values()) + written


def test_gradebook_scores_each_question(course: Path) -> None:
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        for student, points in expected(course).items():
            nb = gb.find_submission_notebook(NOTEBOOK, ASSIGNMENT, student)
            scores = {g.name: float(g.score) for g in nb.grades if g.name in POINTS}
            assert scores == points, student
            # A written answer left as released needs no grader; one that was written does.
            manual = [g.name for g in nb.grades if g.needs_manual_grade]
            assert manual == (["q8_why_xor"] if student == "ada" else []), student


def test_edited_tests_were_restored_from_the_source(course: Path) -> None:
    graded = nbformat.read(course / "autograded" / "cy" / ASSIGNMENT / f"{NOTEBOOK}.ipynb", 4)
    source = nbformat.read(SOURCE, as_version=4)
    for gid in POINTS:
        assert find_cell(graded, gid).source == find_cell(source, gid).source


def test_feedback_for_every_student(course: Path) -> None:
    for student, points in expected(course).items():
        html = course / "feedback" / student / ASSIGNMENT / f"{NOTEBOOK}.html"
        text = html.read_text(encoding="utf-8")
        total = sum(POINTS.values()) + 2  # with the written answer
        assert f"Score: {sum(points.values()):.1f} / {total:.1f}" in text, student


def test_self_grading_gives_the_gradebook_scores(course: Path) -> None:
    """``python -m llmcourse grade`` (guarded execution) scores as stock nbgrader did."""
    for student, points in expected(course).items():
        if student == "ada":
            continue  # full marks: tests/test_assignments.py checks those for every chapter
        path = course / "submitted" / student / ASSIGNMENT / f"{NOTEBOOK}.ipynb"
        report = grade_notebook(path, course=course)
        assert report.score == sum(points.values()), report.table()
        assert {q.grade_id: q.points for q in report.questions if q.grade_id in POINTS} == points
