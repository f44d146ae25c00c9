"""`python -m llmcourse grade` and `release`: on a small stand-in course (two questions), then
on chapter 1's real notebook with submissions that loop, crash, exhaust memory or lost cells."""

from __future__ import annotations

import json
import shutil
import signal
from pathlib import Path

import nbformat
import pytest
from conftest import ROOT
from nbfactory import find_cell, make_course, model_answer, submission

from llmcourse.__main__ import main
from llmcourse.grading import GradingError, grade_notebook, read_notebook, release
from llmcourse.sandbox import death_reason

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


# --------------------------------------------------------------------------- bad submissions
# Chapter 1's real notebook, with answers that misbehave in every way the grader must survive.

CH01_SOURCE = ROOT / "solutions" / "ch01_perceptron" / "perceptron.ipynb"
CH01_RELEASE = ROOT / "exercises" / "ch01_perceptron" / "perceptron.ipynb"
TIMEOUT = 10  # s: the setup cell's `import torch` must fit, on a busy machine too

ENDLESS_CALL = """def perceptron_decision(inputs, weights, threshold):
    while True:
        pass"""
ENDLESS_DEAF = """import time

while True:  # swallows the interrupt: only a new kernel stops it
    try:
        time.sleep(0.1)
    except BaseException:
        pass"""
EXIT = "import os\n\nos._exit(1)"
SEGFAULT = "import ctypes\n\nctypes.string_at(0)"
ALLOCATE_2G = "hog = bytearray(2**31)\n\n"


def ch01(tmp_path: Path, name: str, **kwargs) -> Path:
    path = tmp_path / name
    nbformat.write(submission(CH01_RELEASE, CH01_SOURCE, **kwargs), path)
    return path


def rows(out: str) -> dict[str, str]:
    """``{question: "points  status"}`` from the printed table."""
    found = {}
    for line in out.splitlines():
        name, _, rest = line.partition(" ")
        if name.startswith("q") and "/" in rest:
            found[name] = " ".join(rest.split())
    return found


def test_misbehaving_cells_fail_their_question_and_the_rest_is_graded(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """Endless loops, a process exit, a segfault and a memory bomb cost only their question."""
    path = ch01(
        tmp_path,
        "perceptron.ipynb",
        q1_perceptron_decision=ENDLESS_CALL,  # loops in the test cell; the interrupt stops it
        q2_predict=ENDLESS_DEAF,
        q3_perceptron_update=EXIT,
        q4_run_epoch=SEGFAULT,
        q5_train=ALLOCATE_2G + model_answer(nbformat.read(CH01_SOURCE, 4), "q5_train"),
    )
    args = ["grade", str(path), "--timeout", str(TIMEOUT), "--memory-limit", "1G"]
    assert main(args) == 0
    out = capsys.readouterr().out
    table = rows(out)
    assert table["q1_perceptron_decision"] == f"0 / 1 failed: timed out after {TIMEOUT} s"
    assert table["q2_predict"] == f"0 / 2 failed: timed out after {TIMEOUT} s (in q2_predict)"
    assert table["q3_perceptron_update"] == (
        "0 / 2 failed: the kernel died: the code ended its process, exit status 1 "
        "(in q3_perceptron_update)"
    )
    assert table["q4_run_epoch"] == "0 / 2 failed: the kernel crashed (SIGSEGV) (in q4_run_epoch)"
    assert table["q5_train"].startswith("0 / 2 failed: NameError")
    assert table["q5_train"].endswith("(q5_train raised MemoryError)")
    # The questions after them ran in a kernel that had every earlier definition replayed.
    assert table["q6_network_predict"] == "2 / 2 passed"
    assert table["q7_xor_layers"] == "1 / 1 passed"
    assert "score: 3 / 12" in out


def test_deleted_answer_cell_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A deleted answer cell is reported, the rest graded; the default limits let work through."""
    path = ch01(
        tmp_path,
        "mine.ipynb",
        # 2 GiB (untouched pages) is within the default memory limit
        q5_train=ALLOCATE_2G + model_answer(nbformat.read(CH01_SOURCE, 4), "q5_train"),
    )
    nb = nbformat.read(path, as_version=4)
    nb.cells.remove(find_cell(nb, "q2_predict"))
    nbformat.write(nb, path)
    assert main(["grade", str(path)]) == 1
    captured = capsys.readouterr()
    assert "missing from" in captured.err and "q2_predict" in captured.err
    table = rows(captured.out)
    assert table["q2_predict"].startswith("0 / 2 failed: NameError")
    assert table["q2_predict"].endswith("(q2_predict was deleted)")
    assert table["q5_train"] == "2 / 2 passed"
    assert "score: 10 / 12" in captured.out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--timeout", "0"], "positive number of seconds"),
        (["--memory-limit", "lots"], "not a size"),
    ],
)
def test_bad_limits_are_usage_errors(course: Path, argv, message, capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["grade", str(course / "solutions" / "ch00_demo" / "demo.ipynb"), *argv])
    assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_death_reasons() -> None:
    assert "exit status 1" in death_reason(1)
    assert "crashed (SIGSEGV)" in death_reason(-signal.SIGSEGV)
    assert "ran out of memory" in death_reason(-signal.SIGKILL)
    assert death_reason(None) == "the kernel died"


def test_a_kernel_that_cannot_start_is_one_clear_error(course: Path, capsys) -> None:
    solution = course / "solutions" / "ch00_demo" / "demo.ipynb"
    assert main(["grade", str(solution), "--course", str(course), "--memory-limit", "20M"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: the kernel could not start") and "(20M) too small" in err
