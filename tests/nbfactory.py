"""Build small nbgrader notebooks in tests (a stand-in course independent of the chapters)."""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook


def nbgrader_cell(cell: nbformat.NotebookNode, grade_id: str, **flags: object):
    meta = {
        "grade": False,
        "grade_id": grade_id,
        "locked": False,
        "schema_version": 3,
        "solution": False,
        "task": False,
    }
    meta.update(flags)
    cell.metadata["nbgrader"] = meta
    return cell


def demo_notebook() -> nbformat.NotebookNode:
    """Two autograded questions (2 and 3 points) and one written answer (1 point)."""
    nb = new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nb.cells = [
        nbgrader_cell(new_markdown_cell("# Demo"), "intro", locked=True),
        nbgrader_cell(
            new_code_cell(
                "def double(x):\n    ### BEGIN SOLUTION\n    return 2 * x\n    ### END SOLUTION"
            ),
            "q1_double",
            solution=True,
        ),
        nbgrader_cell(
            new_code_cell(
                "assert double(2) == 4\n### BEGIN HIDDEN TESTS\nassert double(-3) == -6\n"
                "### END HIDDEN TESTS"
            ),
            "q1_double_tests",
            grade=True,
            locked=True,
            points=2,
        ),
        nbgrader_cell(
            new_code_cell(
                "def square(x):\n    ### BEGIN SOLUTION\n    return x * x\n    ### END SOLUTION"
            ),
            "q2_square",
            solution=True,
        ),
        nbgrader_cell(
            new_code_cell(
                "assert square(3) == 9\n### BEGIN HIDDEN TESTS\nassert square(-4) == 16\n"
                "### END HIDDEN TESTS"
            ),
            "q2_square_tests",
            grade=True,
            locked=True,
            points=3,
        ),
        nbgrader_cell(
            new_markdown_cell("### BEGIN SOLUTION\nBecause.\n### END SOLUTION"),
            "q3_why",
            grade=True,
            solution=True,
            points=1,
        ),
    ]
    return nb


def make_course(root: Path, config: Path) -> Path:
    """A course folder with one assignment, ``ch00_demo/demo.ipynb``, and the repo's config."""
    (root / "solutions" / "ch00_demo").mkdir(parents=True)
    nbformat.write(demo_notebook(), root / "solutions" / "ch00_demo" / "demo.ipynb")
    (root / "nbgrader_config.py").write_text(config.read_text())
    return root


# --------------------------------------------------------------------------- chapter notebooks


def nbgrader_id(cell: nbformat.NotebookNode) -> str | None:
    return cell.metadata.get("nbgrader", {}).get("grade_id")


def find_cell(nb: nbformat.NotebookNode, grade_id: str) -> nbformat.NotebookNode:
    return next(c for c in nb.cells if nbgrader_id(c) == grade_id)


def model_answer(source: nbformat.NotebookNode, grade_id: str) -> str:
    """The source's answer to ``grade_id`` as a learner would type it (no solution markers)."""
    markers = {"### BEGIN SOLUTION", "### END SOLUTION"}
    lines = find_cell(source, grade_id).source.splitlines()
    return "\n".join(line for line in lines if line.strip() not in markers)


def submission(
    release: Path, source: Path, answered: list[str] | None = None, **cells: str
) -> nbformat.NotebookNode:
    """A learner's version of a released chapter notebook.

    The code answers named in ``answered`` (default: all) are filled in from the source, the
    others keep the release's stub; ``cells`` then replaces the source of any cell by grade_id
    (``q2_predict="while True: pass"``).
    """
    nb = nbformat.read(release, as_version=4)
    reference = nbformat.read(source, as_version=4)
    for cell in nb.cells:
        meta = cell.metadata.get("nbgrader", {})
        wanted = answered is None or meta.get("grade_id") in answered
        if meta.get("solution") and cell.cell_type == "code" and wanted:
            cell.source = model_answer(reference, meta["grade_id"])
    for grade_id, text in cells.items():
        find_cell(nb, grade_id).source = text
    return nb


def code_points(source: Path) -> dict[str, float]:
    """``{grade_id: points}`` of the autograded (code) test cells of a source notebook."""
    nb = nbformat.read(source, as_version=4)
    return {
        c.metadata["nbgrader"]["grade_id"]: float(c.metadata["nbgrader"]["points"])
        for c in nb.cells
        if c.cell_type == "code" and c.metadata.get("nbgrader", {}).get("grade")
    }
