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
