"""Self-grading and releasing the course's nbgrader assignments, without a course database.

nbgrader grades a notebook in three moves: ``generate_assignment`` records every graded cell of
the instructors' *source* notebook (with its points and a checksum) in a gradebook;
``autograde`` copies the test cells of the source back into the submission (so a learner who
edits or deletes a test changes nothing), executes it, and scores each test cell: full points
if it runs without an error, zero otherwise. Written answers wait for a person.

``grade_notebook`` does exactly that in a throw-away course folder, with nbgrader itself, for one
notebook: it never writes to the learner's file. The notebook runs under the guards of
``llmcourse.sandbox`` (a time limit per cell, a memory limit, a new kernel when one dies), so a
cell that loops forever or crashes fails its question and the others are still graded.
``release`` regenerates the student versions in ``exercises/`` from ``solutions/``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from llmcourse.memory_limit import DEFAULT_MEMORY_LIMIT

CONFIG_FILE = "nbgrader_config.py"
SOURCE_DIR = "solutions"
RELEASE_DIR = "exercises"
STUDENT = "learner"
DEFAULT_TIMEOUT = 30  # seconds each cell may run


class GradingError(RuntimeError):
    """The notebook cannot be graded (malformed, unknown, or the course files are missing)."""


@dataclass(frozen=True)
class QuestionResult:
    """The outcome of one graded cell."""

    grade_id: str
    max_points: float
    points: float | None  # None: waits for manual grading
    status: str  # "passed", "failed", "manual", "missing"
    error: str = ""


@dataclass
class GradeReport:
    """Per-question results of one notebook, and its autograded score."""

    assignment: str
    notebook: str
    questions: list[QuestionResult] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # cells the grading needs, deleted

    @property
    def score(self) -> float:
        return sum(q.points or 0.0 for q in self.questions if q.status != "manual")

    @property
    def max_score(self) -> float:
        return sum(q.max_points for q in self.questions if q.status != "manual")

    @property
    def manual_points(self) -> float:
        return sum(q.max_points for q in self.questions if q.status == "manual")

    def table(self) -> str:
        """A plain-text table of the questions, then ``score: X / Y``."""
        rows = [("question", "points", "status")]
        for q in self.questions:
            got = "-" if q.points is None else _fmt(q.points)
            status = q.status + (f": {q.error}" if q.error else "")
            rows.append(
                (q.grade_id.removesuffix("_tests"), f"{got} / {_fmt(q.max_points)}", status)
            )
        widths = [max(len(r[i]) for r in rows) for i in range(2)]
        lines = [f"{r[0]:<{widths[0]}}  {r[1]:>{widths[1]}}  {r[2]}" for r in rows]
        lines.insert(1, "-" * (widths[0] + widths[1] + 12))
        lines.append("")
        lines.append(f"score: {_fmt(self.score)} / {_fmt(self.max_score)}")
        if self.manual_points:
            points = _fmt(self.manual_points)
            lines.append(f"(written answers, {points} point(s), are graded by hand)")
        return "\n".join(lines)


def _fmt(x: float) -> str:
    return f"{x:g}"


# --------------------------------------------------------------------------- course discovery


def find_course_root(start: Path | None = None) -> Path:
    """The folder holding ``nbgrader_config.py`` and ``solutions/``, searched upwards.

    The search starts at ``start`` (a notebook or a folder), then the working directory, then
    the checkout this package was installed from.
    """
    here = Path(__file__).resolve()
    candidates = [start, Path.cwd(), here.parent]
    for candidate in candidates:
        if candidate is None:
            continue
        candidate = candidate.resolve()
        for folder in [candidate, *candidate.parents]:
            if (folder / CONFIG_FILE).is_file() and (folder / SOURCE_DIR).is_dir():
                return folder
    raise GradingError(
        f"cannot find the course files ({CONFIG_FILE} and {SOURCE_DIR}/): run this from a clone "
        "of the course repository, or pass --course DIR"
    )


def assignments(course: Path) -> list[str]:
    """The assignment ids (``chNN_<name>``) found in ``solutions/``."""
    return sorted(p.name for p in (course / SOURCE_DIR).iterdir() if any(p.glob("*.ipynb")))


def read_notebook(path: Path) -> nbformat.NotebookNode:
    """Read and validate a notebook, turning every way it can be broken into a clear message."""
    if not path.is_file():
        raise GradingError(f"{path}: no such file")
    if path.suffix != ".ipynb":
        raise GradingError(f"{path}: expected a Jupyter notebook (.ipynb)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise GradingError(
            f"{path} is not valid notebook JSON ({err}); was it saved completely? The last "
            "checkpoint may be in .ipynb_checkpoints/ next to it"
        ) from err
    if not isinstance(data, dict) or "cells" not in data or "nbformat" not in data:
        raise GradingError(f"{path} is JSON but not a Jupyter notebook (no cells or nbformat)")
    try:
        nb = nbformat.reads(json.dumps(data), as_version=4)
    except Exception as err:  # nbformat raises several types for foreign JSON
        raise GradingError(f"{path} is not a Jupyter notebook: {err}") from err
    try:
        nbformat.validate(nb)
    except nbformat.ValidationError as err:
        raise GradingError(f"{path} is not a valid notebook: {err.message}") from err
    return nb


def grade_ids(nb: nbformat.NotebookNode) -> dict[str, nbformat.NotebookNode]:
    """The cells that nbgrader grades, by ``grade_id``."""
    found = {}
    for cell in nb.cells:
        meta = cell.metadata.get("nbgrader", {})
        if meta.get("grade") and meta.get("grade_id"):
            found[meta["grade_id"]] = cell
    return found


def required_cells(nb: nbformat.NotebookNode) -> dict[str, nbformat.NotebookNode]:
    """The cells grading needs, by ``grade_id``: graded ones, answers, and locked code (setup).

    nbgrader restores the *content* of locked and graded cells from the source, but only of the
    cells still present: a deleted one is simply gone.
    """
    found = {}
    for cell in nb.cells:
        meta = cell.metadata.get("nbgrader", {})
        locked_code = meta.get("locked") and cell.cell_type == "code"
        if meta.get("grade_id") and (meta.get("grade") or meta.get("solution") or locked_code):
            found[meta["grade_id"]] = cell
    return found


def identify(course: Path, submission: nbformat.NotebookNode, path: Path) -> tuple[str, Path]:
    """Find the source notebook a submission was released from.

    The graded cells' ids decide (a renamed file still grades); the file name breaks ties.
    """
    ids = set(grade_ids(submission))
    best: tuple[int, int, str, Path] | None = None
    for assignment in assignments(course):
        for source in sorted((course / SOURCE_DIR / assignment).glob("*.ipynb")):
            overlap = len(ids & set(grade_ids(read_notebook(source))))
            same_name = int(source.name == path.name)
            key = (overlap, same_name, assignment, source)
            if (overlap or same_name) and (best is None or key[:2] > best[:2]):
                best = key
    if best is None:
        known = ", ".join(assignments(course)) or "none"
        raise GradingError(
            f"{path} matches no assignment of this course (assignments: {known}); is it a course "
            "exercise notebook with its nbgrader cells intact?"
        )
    return best[2], best[3]


# --------------------------------------------------------------------------- running nbgrader


@contextlib.contextmanager
def _nbgrader_env() -> Iterator[None]:
    """Quiet, reproducible surroundings for nbgrader.

    nbgrader shells out to ``alembic`` from the interpreter's ``bin/``, so that goes on PATH;
    its database layer warns about its own bookkeeping, which says nothing to a learner.
    """
    from sqlalchemy.exc import SAWarning

    old = os.environ.get("PATH", "")
    os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), old])
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SAWarning)
            yield
    finally:
        os.environ["PATH"] = old


def _api(
    course_copy: Path,
    config_file: Path,
    timeout: int = DEFAULT_TIMEOUT,
    memory_limit: int | None = DEFAULT_MEMORY_LIMIT,
):
    from nbgrader.apps import NbGraderAPI
    from nbgrader.converters import Autograde
    from nbgrader.preprocessors import Execute
    from traitlets.config.loader import PyFileConfigLoader

    from llmcourse.sandbox import GuardedExecute

    config = PyFileConfigLoader(config_file.name, str(config_file.parent)).load_config()
    config.CourseDirectory.root = str(course_copy)
    config.CourseDirectory.db_url = f"sqlite:///{course_copy / 'gradebook.db'}"
    # nbgrader's pipeline, with its Execute swapped for the guarded one.
    steps = Autograde.class_traits()["autograde_preprocessors"].default()
    config.Autograde.autograde_preprocessors = [
        GuardedExecute if step is Execute else step for step in steps
    ]
    config.GuardedExecute.timeout = timeout
    config.GuardedExecute.memory_limit = memory_limit
    # The kernel's own start-up chatter (ipykernel warns that a local kernel talks over TCP)
    # says nothing about the notebook; errors raised by the student's code are still reported.
    # (nbclient still adds its in-memory history file to these arguments itself.)
    config.Execute.extra_arguments = ["--IPKernelApp.log_level=ERROR"]
    return NbGraderAPI(config=config)


def _check(result: dict, what: str) -> None:
    from llmcourse.sandbox import KERNEL_FAILED

    if result.get("success"):
        return
    log = result.get("log") or ""
    for line in log.splitlines():  # the notebook could not run at all: say why in one line
        if KERNEL_FAILED in line:
            raise GradingError(line[line.index(KERNEL_FAILED) :].strip())
    detail = result.get("error") or log or "no details"
    raise GradingError(f"nbgrader {what} failed:\n{detail.strip()[-3000:]}")


def generate_release(course: Path, assignment: str, out: Path) -> list[Path]:
    """Run ``nbgrader generate_assignment`` on one assignment; write the release into ``out``."""
    with tempfile.TemporaryDirectory(prefix="llmcourse-release-") as tmp, _nbgrader_env():
        work = Path(tmp)
        shutil.copytree(course / SOURCE_DIR / assignment, work / SOURCE_DIR / assignment)
        api = _api(work, course / CONFIG_FILE)
        _check(api.generate_assignment(assignment, force=True), "generate_assignment")
        if out.exists():
            shutil.rmtree(out)
        shutil.copytree(work / RELEASE_DIR / assignment, out)
    return sorted(out.rglob("*.ipynb"))


def release(course: Path, which: list[str] | None = None) -> list[Path]:
    """Regenerate ``exercises/<assignment>/`` from ``solutions/`` for the named assignments."""
    names = which or assignments(course)
    unknown = sorted(set(names) - set(assignments(course)))
    if unknown:
        raise GradingError(f"no such assignment in {SOURCE_DIR}/: {', '.join(unknown)}")
    written = []
    for name in names:
        written += generate_release(course, name, course / RELEASE_DIR / name)
    return written


def grade_notebook(
    path: str | Path,
    course: Path | None = None,
    timeout: int = DEFAULT_TIMEOUT,
    memory_limit: int | None = DEFAULT_MEMORY_LIMIT,
) -> GradeReport:
    """Autograde one notebook against its assignment's tests (restored from the source).

    Each cell may run ``timeout`` seconds, the kernel may map ``memory_limit`` bytes (``None``:
    no limit); see ``llmcourse.sandbox``.
    """
    if timeout <= 0:
        raise GradingError(f"the time limit must be a positive number of seconds, not {timeout}")
    path = Path(path)
    submission = read_notebook(path)
    course = course or find_course_root(path.parent)
    assignment, source_path = identify(course, submission, path)
    source = read_notebook(source_path)
    source_cells = grade_ids(source)
    missing = [gid for gid in required_cells(source) if gid not in required_cells(submission)]

    with tempfile.TemporaryDirectory(prefix="llmcourse-grade-") as tmp, _nbgrader_env():
        work = Path(tmp)
        shutil.copytree(course / SOURCE_DIR / assignment, work / SOURCE_DIR / assignment)
        submitted = work / "submitted" / STUDENT / assignment
        submitted.mkdir(parents=True)
        # nbgrader matches a submission to the source by file name.
        shutil.copyfile(path, submitted / source_path.name)
        api = _api(work, course / CONFIG_FILE, timeout, memory_limit)
        _check(api.generate_assignment(assignment, force=True), "generate_assignment")
        _check(api.autograde(assignment, STUDENT, force=True, create=True), "autograde")
        graded = nbformat.read(
            work / "autograded" / STUDENT / assignment / source_path.name, as_version=4
        )
        report = GradeReport(assignment=assignment, notebook=source_path.stem, missing=missing)
        scores = _scores(api, assignment, source_path.stem)
    errors = _errors(graded)
    deleted = _deleted_answers(source, missing)
    for gid, cell in source_cells.items():
        max_points, points, manual = scores[gid]
        if gid in missing:
            status, error = "missing", "deleted or its nbgrader metadata removed; scored 0"
            points = 0.0
        elif cell.cell_type == "markdown" or manual:
            status, error, points = "manual", "", None
        else:
            status = "passed" if (points or 0) >= max_points else "failed"
            error = errors.get(gid, "") if status == "failed" else ""
            if status == "failed" and gid in deleted:
                error = f"{error} ({deleted[gid]})" if error else deleted[gid]
        report.questions.append(QuestionResult(gid, max_points, points, status, error))
    return report


def _deleted_answers(source: nbformat.NotebookNode, missing: list[str]) -> dict[str, str]:
    """``{graded cell: "answer cell X was deleted"}`` for the cells missing before each one."""
    found: dict[str, str] = {}
    gone: list[str] = []
    for gid, cell in required_cells(source).items():
        if cell.metadata["nbgrader"].get("grade"):
            if gone:
                found[gid] = f"{', '.join(gone)} was deleted"
            gone = []
        elif gid in missing:
            gone.append(gid)
    return found


def _scores(api, assignment: str, notebook: str) -> dict[str, tuple[float, float | None, bool]]:
    """``{grade_id: (max_score, score, needs_manual_grade)}`` from the gradebook."""
    from nbgrader.api import Gradebook

    with Gradebook(api.coursedir.db_url) as gb:
        nb = gb.find_submission_notebook(notebook, assignment, STUDENT)
        return {
            g.name: (
                float(g.max_score),
                None if g.score is None else float(g.score),
                bool(g.needs_manual_grade),
            )
            for g in nb.grades
        }


def _errors(nb: nbformat.NotebookNode) -> dict[str, str]:
    """Why each failing graded code cell failed, in one line, by ``grade_id``.

    A cell since the previous graded one (the answer, typically) that timed out or killed the
    kernel is the reason. Otherwise it is the first error the graded cell raised, followed by
    the error of an earlier cell when one raised (a ``NameError`` in the test often means the
    answer cell failed).
    """
    from llmcourse.sandbox import INCIDENTS

    found: dict[str, str] = {}
    incident = earlier = ""  # what the cells since the previous graded cell did
    for index, cell in enumerate(nb.cells, start=1):
        meta = cell.metadata.get("nbgrader", {})
        error = next((o for o in cell.get("outputs", []) if o.get("output_type") == "error"), None)
        where = meta.get("grade_id") or f"cell {index}"
        if not (meta.get("grade") and meta.get("grade_id")):
            if error is not None and error.get("ename") in INCIDENTS:
                incident = incident or f"{error.get('evalue', '')} (in {where})"
            elif error is not None:
                earlier = earlier or f"{where} raised {error.get('ename', 'an error')}"
            continue
        if incident:
            found[where] = incident
        elif error is not None:
            if error.get("ename") in INCIDENTS:
                message = error.get("evalue", "")
            else:
                message = f"{error.get('ename', 'Error')}: {error.get('evalue', '')}"
            message = message.strip().splitlines()[0][:120].rstrip(": ")
            found[where] = f"{message} ({earlier})" if earlier else message
        incident = earlier = ""
    return found
