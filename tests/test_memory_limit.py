"""`llmcourse.memory_limit`: the launcher the grader starts its kernels through, and sizes.

The limit inside the grader's kernels is tested on a real notebook in `test_grading.py`.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from llmcourse import memory_limit
from llmcourse.memory_limit import format_size, memory_limit_note, parse_size

ALLOCATE = "bytearray(300 * 2**20); print('allocated')"  # untouched pages: no real memory used


def run_limited(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "llmcourse.memory_limit", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


@pytest.mark.skipif(memory_limit.resource is None, reason="no `resource` module on this platform")
def test_memory_limit_turns_an_allocation_into_memory_error() -> None:
    limited = run_limited("--limit", "200M", "--", sys.executable, "-c", ALLOCATE)
    assert limited.returncode == 1 and "MemoryError" in limited.stderr
    free = run_limited("--limit", "none", "--", sys.executable, "-c", ALLOCATE)
    assert free.returncode == 0 and free.stdout.strip() == "allocated"


def test_launcher_usage_errors() -> None:
    assert "RLIMIT_DATA" in run_limited("--help").stdout
    assert run_limited("--limit", "1G").returncode == 2  # no command
    missing = run_limited("--", "no-such-program-llmcourse")
    assert missing.returncode == 127 and "cannot run no-such-program-llmcourse" in missing.stderr


@pytest.mark.parametrize(
    ("text", "size"),
    [("4G", 4 * 2**30), ("512M", 512 * 2**20), ("1.5GiB", 3 * 2**29), ("1000", 1000)],
)
def test_sizes(text: str, size: int) -> None:
    assert parse_size(text) == size
    assert parse_size(format_size(size)) == size


@pytest.mark.parametrize("text", ["none", "0", "NONE"])
def test_no_limit(text: str) -> None:
    assert parse_size(text) is None


def test_bad_size() -> None:
    with pytest.raises(ValueError, match="not a size"):
        parse_size("-3G")


def test_without_resource_there_is_no_limit_and_a_note(monkeypatch) -> None:
    monkeypatch.setattr(memory_limit, "resource", None)
    assert "without a memory limit" in memory_limit_note(2**30)
    assert memory_limit_note(None) == ""
    kernel = ["python", "-m", "ipykernel_launcher"]
    assert memory_limit.limited(kernel, 2**30) == kernel


def test_limited_kernel_command() -> None:
    kernel = ["python", "-m", "ipykernel_launcher"]
    if memory_limit.resource is not None:
        assert memory_limit.limited(kernel, 2**30)[-6:] == ["--limit", str(2**30), "--", *kernel]
    assert memory_limit.limited(kernel, None) == kernel
