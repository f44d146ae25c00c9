"""Running a command under a memory limit: a runaway allocation fails, not the machine.

The limit is ``RLIMIT_DATA``: the writable memory a process may map (heap, anonymous mappings,
thread stacks). Address space that is only reserved, like glibc's per-thread arenas or a GPU
driver's, does not count, unlike ``RLIMIT_AS``. Past it, ``malloc`` fails, which Python reports
as ``MemoryError`` (NumPy, PyTorch: an allocation error) in the code that asked. Linux enforces
it; on platforms without the ``resource`` module (Windows) there is no limit, and
``memory_limit_note`` says so.

``python -m llmcourse.memory_limit --limit 4G -- CMD [ARG ...]`` sets the limit on itself and
then *becomes* CMD (``exec``), so the limit covers CMD from its first instruction and CMD keeps
the process id, which signals (interrupt, kill) are sent to. This module imports nothing heavy:
the grader launches every Jupyter kernel through it.
"""

from __future__ import annotations

import argparse
import os
import re
import sys

try:
    import resource
except ImportError:  # Windows
    resource = None

DEFAULT_MEMORY_LIMIT = 4 * 2**30  # bytes

_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def parse_size(text: str) -> int | None:
    """``"4G"`` -> bytes (K, M, G, T are powers of 1024; a plain number is bytes).

    ``"0"`` or ``"none"`` mean no limit (``None``).
    """
    if text.strip().lower() == "none":
        return None
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?\s*", text, re.IGNORECASE)
    if not match:
        raise ValueError(f"not a size: {text!r} (expected e.g. 4G, 512M, or none)")
    size = int(float(match.group(1)) * _UNITS[match.group(2).upper()])
    return size or None


def format_size(size: int | None) -> str:
    """The shortest exact spelling of ``size`` that ``parse_size`` reads back."""
    if size is None:
        return "none"
    for unit in "TGMK":
        if size >= _UNITS[unit] and size % _UNITS[unit] == 0:
            return f"{size // _UNITS[unit]}{unit}"
    return str(size)


def memory_limit_note(limit: int | None) -> str:
    """Why a requested memory limit is not applied on this platform ("" when it is)."""
    if limit is not None and resource is None:
        return "this platform has no `resource` module: student code runs without a memory limit"
    return ""


def limited(cmd: list[str], limit: int | None) -> list[str]:
    """``cmd`` launched through this module under ``limit`` bytes (unchanged when none applies)."""
    if limit is None or resource is None:
        return cmd
    return [sys.executable, "-m", __name__, "--limit", str(limit), "--", *cmd]


def apply(limit: int) -> None:
    """Limit this process (and what it ``exec``s) to ``limit`` bytes of writable memory."""
    hard = resource.getrlimit(resource.RLIMIT_DATA)[1]
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)  # only a privileged process may raise its hard limit
    resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m llmcourse.memory_limit",
        description="Run a command under a memory limit (RLIMIT_DATA: the writable memory it "
        "may map). The grader launches its Jupyter kernels this way.",
    )
    parser.add_argument(
        "--limit",
        default=format_size(DEFAULT_MEMORY_LIMIT),
        help="e.g. 4G, 512M; none for no limit (default: %(default)s)",
    )
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- CMD [ARG ...]")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command given")
    try:
        limit = parse_size(args.limit)
    except ValueError as err:
        parser.error(str(err))
    if note := memory_limit_note(limit):
        print(f"note: {note}", file=sys.stderr)
    elif limit is not None:
        apply(limit)
    try:
        os.execvp(command[0], command)
    except OSError as err:
        parser.exit(127, f"cannot run {command[0]}: {err.strerror}\n")


if __name__ == "__main__":
    main()
