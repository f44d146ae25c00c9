"""``python -m llmcourse``: course commands for learners and instructors.

- ``grade PATH.ipynb``: autograde one exercise notebook against the chapter's hidden tests.
- ``release [ASSIGNMENT ...]``: regenerate ``exercises/`` from ``solutions/`` with nbgrader.

Each reference module has its own command line: ``python -m llmcourse.<module> --help``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from llmcourse.grading import GradingError, find_course_root, grade_notebook, release

EXIT_DAMAGED = 1  # graded, but graded cells were missing
EXIT_UNGRADABLE = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m llmcourse",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    grade = sub.add_parser(
        "grade",
        help="autograde one completed exercise notebook",
        description="Autograde a notebook with nbgrader against its chapter's visible and hidden "
        "tests, restored from solutions/ (edited or deleted test cells change nothing). Your "
        "notebook is only read, never written. Exit status: 0 graded, 1 graded but graded cells "
        "were missing, 2 the notebook could not be graded.",
    )
    grade.add_argument("notebook", type=Path, help="the .ipynb file to grade")
    grade.add_argument("--course", type=Path, help="the course checkout (default: found upwards)")
    grade.add_argument("--timeout", type=int, help="seconds a cell may run (default: 300)")
    rel = sub.add_parser(
        "release",
        help="regenerate exercises/ from solutions/ (instructors)",
        description="Run nbgrader generate_assignment for each named assignment (default: all) "
        "and replace exercises/<assignment>/ with the result.",
    )
    rel.add_argument("assignments", nargs="*", help="e.g. ch01_perceptron")
    rel.add_argument("--course", type=Path, help="the course checkout (default: found upwards)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "grade":
            report = grade_notebook(args.notebook, course=args.course, timeout=args.timeout)
            print(f"{args.notebook}: assignment {report.assignment}\n")
            print(report.table())
            if report.missing:
                print(
                    f"\nerror: graded cells are missing from {args.notebook}: "
                    f"{', '.join(report.missing)}. They were deleted, or their nbgrader metadata "
                    "was removed, and score 0. Copy them back from the released notebook in "
                    "exercises/ (your other cells are untouched).",
                    file=sys.stderr,
                )
                return EXIT_DAMAGED
            return 0
        course = args.course or find_course_root()
        for path in release(course, args.assignments):
            print(f"wrote {path.relative_to(course)}")
        return 0
    except GradingError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_UNGRADABLE


if __name__ == "__main__":
    sys.exit(main())
