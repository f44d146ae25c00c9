"""``python -m llmcourse``: course commands for learners and instructors.

- ``grade PATH.ipynb``: autograde one exercise notebook against the chapter's hidden tests.
- ``release [ASSIGNMENT ...]``: regenerate ``exercises/`` from ``solutions/`` with nbgrader.

Each reference module has its own command line: ``python -m llmcourse.<module> --help``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from llmcourse.grading import (
    DEFAULT_TIMEOUT,
    GradingError,
    find_course_root,
    grade_notebook,
    release,
)
from llmcourse.memory_limit import (
    DEFAULT_MEMORY_LIMIT,
    format_size,
    memory_limit_note,
    parse_size,
)

EXIT_DAMAGED = 1  # graded, but cells the grading needs were missing
EXIT_UNGRADABLE = 2


def _seconds(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, not {text!r}")
    return value


def _size(text: str) -> int | None:
    try:
        return parse_size(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


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
        "notebook is only read, never written. A cell that runs too long, runs out of memory or "
        "crashes the kernel fails its question; the others are still graded. Exit status: 0 "
        "graded, 1 graded but graded or answer cells were missing, 2 the notebook could not be "
        "graded.",
    )
    grade.add_argument("notebook", type=Path, help="the .ipynb file to grade")
    grade.add_argument("--course", type=Path, help="the course checkout (default: found upwards)")
    grade.add_argument(
        "--timeout",
        type=_seconds,
        default=DEFAULT_TIMEOUT,
        help="seconds each cell may run (default: %(default)s)",
    )
    grade.add_argument(
        "--memory-limit",
        type=_size,
        default=DEFAULT_MEMORY_LIMIT,
        help="memory your code may use, e.g. 2G, 512M, none "
        f"(default: {format_size(DEFAULT_MEMORY_LIMIT)})",
    )
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
            if note := memory_limit_note(args.memory_limit):
                print(f"note: {note}", file=sys.stderr)
            report = grade_notebook(
                args.notebook,
                course=args.course,
                timeout=args.timeout,
                memory_limit=args.memory_limit,
            )
            print(f"{args.notebook}: assignment {report.assignment}\n")
            print(report.table())
            if report.missing:
                print(
                    f"\nerror: cells of the exercise are missing from {args.notebook}: "
                    f"{', '.join(report.missing)}. They were deleted, or their nbgrader metadata "
                    "was removed, so the questions that need them fail. Copy them back from the "
                    "released notebook in exercises/ (your other cells are untouched).",
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
