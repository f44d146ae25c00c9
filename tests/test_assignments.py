"""Every chapter's assignment: well-formed, in sync with nbgrader, and graded correctly.

For each assignment in ``solutions/``:
- the source notebook autogrades to full marks and the released one, unedited, to zero on every
  autograded question (so each test can fail);
- a submission whose test cells were edited to ``pass`` is still graded on the original tests;
- the released notebook completed with the source's solutions gets full marks;
- ``exercises/`` is exactly what a fresh ``nbgrader generate_assignment`` produces.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from conftest import ROOT

from llmcourse.grading import grade_ids, grade_notebook

SOLUTIONS = ROOT / "solutions"
EXERCISES = ROOT / "exercises"
NOTEBOOKS = sorted(SOLUTIONS.glob("ch*/*.ipynb"))
IDS = [p.parent.name for p in NOTEBOOKS]


def meta(cell: nbformat.NotebookNode) -> dict:
    return cell.metadata.get("nbgrader", {})


def released(source: Path) -> Path:
    return EXERCISES / source.parent.name / source.name


def autograded_tests(nb: nbformat.NotebookNode) -> list[str]:
    return [gid for gid, c in grade_ids(nb).items() if c.cell_type == "code"]


def test_every_chapter_has_an_assignment() -> None:
    assert IDS, "no assignment found in solutions/"
    assert sorted(p.name for p in EXERCISES.iterdir() if p.is_dir()) == IDS


@pytest.mark.parametrize("source", NOTEBOOKS, ids=IDS)
def test_assignment_shape(source: Path) -> None:
    """4-8 autograded questions with points and hidden tests, a written answer, no outputs."""
    nb = nbformat.read(source, as_version=4)
    tests = autograded_tests(nb)
    written = [gid for gid, c in grade_ids(nb).items() if c.cell_type == "markdown"]
    assert 4 <= len(tests) <= 8, tests
    assert written, "at least one manually graded written answer"
    for cell in nb.cells:
        m = meta(cell)
        if m.get("grade"):
            assert m.get("points", 0) > 0, m["grade_id"]
        if m.get("grade") and cell.cell_type == "code":
            assert "### BEGIN HIDDEN TESTS" in cell.source, m["grade_id"]
            assert m["grade_id"].endswith("_tests"), m["grade_id"]
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, "commit without outputs"


@pytest.mark.slow
@pytest.mark.parametrize("source", NOTEBOOKS, ids=IDS)
def test_exercises_equal_a_fresh_nbgrader_release(source: Path, tmp_path: Path) -> None:
    assignment = source.parent.name
    shutil.copytree(SOLUTIONS / assignment, tmp_path / "solutions" / assignment)
    shutil.copyfile(ROOT / "nbgrader_config.py", tmp_path / "nbgrader_config.py")
    env = dict(
        os.environ, PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])
    )
    subprocess.run(
        [Path(sys.executable).parent / "nbgrader", "generate_assignment", assignment, "--force"],
        cwd=tmp_path,
        env=env,
        check=True,
        capture_output=True,
    )
    fresh = sorted((tmp_path / "exercises" / assignment).rglob("*"))
    committed = sorted((EXERCISES / assignment).rglob("*"))
    assert [p.relative_to(tmp_path / "exercises") for p in fresh] == [
        p.relative_to(EXERCISES) for p in committed
    ]
    for new, old in zip(fresh, committed, strict=True):
        if new.suffix == ".ipynb":
            assert json.loads(new.read_text()) == json.loads(old.read_text()), (
                f"{old} is stale: run `python -m llmcourse release {assignment}`"
            )
        elif new.is_file():
            assert new.read_bytes() == old.read_bytes()


@pytest.mark.slow
@pytest.mark.parametrize("source", NOTEBOOKS, ids=IDS)
def test_solution_scores_full_marks(source: Path) -> None:
    report = grade_notebook(source, course=ROOT)
    assert report.max_score > 0
    assert report.score == report.max_score, report.table()


@pytest.mark.slow
@pytest.mark.parametrize("source", NOTEBOOKS, ids=IDS)
def test_unedited_release_scores_zero_everywhere(source: Path) -> None:
    report = grade_notebook(released(source), course=ROOT)
    autograded = [q for q in report.questions if q.status != "manual"]
    assert len(autograded) == len(autograded_tests(nbformat.read(source, as_version=4)))
    assert all(q.points == 0 and q.status == "failed" for q in autograded), report.table()


@pytest.mark.slow
@pytest.mark.parametrize("source", NOTEBOOKS, ids=IDS)
def test_tampered_tests_are_restored(source: Path, tmp_path: Path) -> None:
    nb = nbformat.read(released(source), as_version=4)
    for cell in nb.cells:
        if meta(cell).get("grade") and cell.cell_type == "code":
            cell.source = "pass"
    path = tmp_path / source.name
    nbformat.write(nb, path)
    report = grade_notebook(path, course=ROOT)
    assert report.score == 0, report.table()


@pytest.mark.slow
@pytest.mark.parametrize("source", NOTEBOOKS, ids=IDS)
def test_completed_release_scores_full_marks(source: Path, tmp_path: Path) -> None:
    """The release, with each answer cell filled in as a student would, passes everything."""
    answers = {
        meta(c)["grade_id"]: c.source
        for c in nbformat.read(source, as_version=4).cells
        if meta(c).get("solution")
    }
    nb = nbformat.read(released(source), as_version=4)
    for cell in nb.cells:
        if meta(cell).get("solution"):
            lines = answers[meta(cell)["grade_id"]].splitlines()
            markers = {"### BEGIN SOLUTION", "### END SOLUTION"}
            cell.source = "\n".join(line for line in lines if line.strip() not in markers)
    path = tmp_path / source.name
    nbformat.write(nb, path)
    report = grade_notebook(path, course=ROOT)
    assert report.score == report.max_score, report.table()
