"""`python -m llmcourse grade` and `release` on a small stand-in course (two questions)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nbformat
import pytest
from conftest import ROOT
from nbfactory import make_course

from llmcourse.__main__ import main
from llmcourse.grading import GradingError, grade_notebook, read_notebook, release

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def course(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = make_course(tmp_path_factory.mktemp("course"), ROOT / "nbgrader_config.py")
    release(root)
    return root


def released(course: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "demo.ipynb"
    shutil.copyfile(course / "exercises" / "ch00_demo" / "demo.ipynb", copy)
    return copy


def edit(path: Path, change) -> Path:
    nb = nbformat.read(path, as_version=4)
    change(nb)
    nbformat.write(nb, path)
    return path


def cell(nb: nbformat.NotebookNode, grade_id: str) -> nbformat.NotebookNode:
    return next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id)


def test_release_strips_solutions_and_hidden_tests(course: Path) -> None:
    nb = read_notebook(course / "exercises" / "ch00_demo" / "demo.ipynb")
    text = json.dumps(nb)
    assert "return 2 * x" not in text and "double(-3)" not in text
    assert "raise NotImplementedError()" in cell(nb, "q1_double").source
    assert "YOUR ANSWER HERE" in cell(nb, "q3_why").source


def test_solution_gets_full_marks(course: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["grade", str(course / "solutions" / "ch00_demo" / "demo.ipynb")]) == 0
    out = capsys.readouterr().out
    assert "score: 5 / 5" in out
    assert "q3_why" in out and "graded by hand" in out


def test_stub_scores_zero_and_says_why(course: Path, tmp_path: Path) -> None:
    report = grade_notebook(released(course, tmp_path), course=course)
    assert (report.score, report.max_score) == (0, 5)
    assert {q.error for q in report.questions if q.status == "failed"} == {"NotImplementedError"}


def test_partial_work_gets_partial_marks(course: Path, tmp_path: Path) -> None:
    path = edit(
        released(course, tmp_path),
        lambda nb: setattr(cell(nb, "q1_double"), "source", "def double(x):\n    return x + x"),
    )
    report = grade_notebook(path, course=course)
    assert report.score == 2
    assert [q.status for q in report.questions] == ["passed", "failed", "manual"]


def test_a_wrong_answer_fails_the_hidden_test(course: Path, tmp_path: Path) -> None:
    # Passes the visible test (square(3) == 9) but not the hidden one (square(-4) == 16).
    wrong = "def square(x):\n    return 3 * x"
    path = edit(
        released(course, tmp_path), lambda nb: setattr(cell(nb, "q2_square"), "source", wrong)
    )
    report = grade_notebook(path, course=course)
    result = next(q for q in report.questions if q.grade_id == "q2_square_tests")
    assert result.status == "failed" and "AssertionError" in result.error


def test_edited_tests_are_restored_from_the_source(course: Path, tmp_path: Path) -> None:
    def tamper(nb: nbformat.NotebookNode) -> None:
        for gid in ("q1_double_tests", "q2_square_tests"):
            cell(nb, gid).source = "pass"

    report = grade_notebook(edit(released(course, tmp_path), tamper), course=course)
    assert report.score == 0


def test_deleted_test_cell_is_reported(course: Path, tmp_path: Path, capsys) -> None:
    def delete(nb: nbformat.NotebookNode) -> None:
        nb.cells.remove(cell(nb, "q2_square_tests"))

    path = edit(released(course, tmp_path), delete)
    before = path.read_bytes()
    assert main(["grade", str(path), "--course", str(course)]) == 1
    captured = capsys.readouterr()
    assert "q2_square_tests" in captured.err and "missing" in captured.out
    assert path.read_bytes() == before  # the learner's file is never written


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"cells": [', "not valid notebook JSON"),
        ('{"hello": 1}', "not a Jupyter notebook"),
        ("", "not valid notebook JSON"),
    ],
)
def test_malformed_notebook_exits_2(course: Path, tmp_path: Path, capsys, content, message) -> None:
    path = tmp_path / "demo.ipynb"
    path.write_text(content)
    assert main(["grade", str(path), "--course", str(course)]) == 2
    assert message in capsys.readouterr().err


def test_unknown_notebook_and_missing_file(course: Path, tmp_path: Path) -> None:
    other = tmp_path / "other.ipynb"
    nbformat.write(nbformat.v4.new_notebook(), other)
    with pytest.raises(GradingError, match="matches no assignment"):
        grade_notebook(other, course=course)
    with pytest.raises(GradingError, match="no such file"):
        grade_notebook(tmp_path / "absent.ipynb", course=course)


def test_release_of_unknown_assignment(course: Path) -> None:
    with pytest.raises(GradingError, match="no such assignment"):
        release(course, ["ch99_nothing"])
