#!/usr/bin/env python3
"""One entry point for the course's chores; needs only Python 3.10+ to start.

    python3 tasks.py test        # the whole test suite (pytest)
    python3 tasks.py book        # build the HTML book into _build/html
    python3 tasks.py browser     # open every built page in headless Chromium (after `book`)
    python3 tasks.py lint        # ruff
    python3 tasks.py release     # regenerate exercises/ from solutions/ with nbgrader
    python3 tasks.py checkpoints # train the course checkpoints the book loads (once, cached)

Each command first makes sure the local virtual environment `.venv` exists and holds the
project with its `dev` extra (versions pinned by `constraints.txt`); it reinstalls only when
`pyproject.toml` or `constraints.txt` changed. Extra arguments go to the tool, e.g.
`python3 tasks.py test -k perceptron`. Set LLMCOURSE_VENV to use another environment folder.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = Path(os.environ.get("LLMCOURSE_VENV", ROOT / ".venv"))
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PYTHON = BIN / ("python.exe" if os.name == "nt" else "python")
STAMP = VENV / ".llmcourse-installed"


def run(*cmd: str | Path, **kwargs) -> None:
    print("+", " ".join(str(c) for c in cmd), flush=True)
    subprocess.run([str(c) for c in cmd], check=True, **kwargs)


def ensure_venv() -> None:
    """Create `.venv` and install the project into it, unless it is already up to date."""
    inputs = hashlib.sha256()
    for name in ("pyproject.toml", "constraints.txt"):
        inputs.update((ROOT / name).read_bytes())
    wanted = inputs.hexdigest()
    if STAMP.is_file() and STAMP.read_text().strip() == wanted:
        return
    if not PYTHON.exists():
        print(f"creating the virtual environment {VENV}", flush=True)
        venv.create(VENV, with_pip=True)
    pip = (PYTHON, "-m", "pip", "install", "--disable-pip-version-check")
    run(*pip, "--upgrade", "pip")
    run(*pip, "-c", ROOT / "constraints.txt", "-e", f"{ROOT}[dev]")
    STAMP.write_text(wanted + "\n")


def env() -> dict[str, str]:
    """The environment with the venv's bin/ first (nbgrader shells out to its tools)."""
    e = dict(os.environ)
    e["PATH"] = os.pathsep.join([str(BIN), e.get("PATH", "")])
    e["VIRTUAL_ENV"] = str(VENV)
    return e


def test(args: list[str]) -> None:
    run(PYTHON, "-m", "pytest", *args, cwd=ROOT, env=env())


def drop_stale_execution_cache() -> None:
    """The book's execution cache is keyed on each page's code, not on the package it imports:
    after a change under src/, executing the pages again is the only way to show its effect.
    Sphinx, too, re-reads only pages whose text changed, so its saved doctrees go as well."""
    digest = hashlib.sha256()
    for path in sorted((ROOT / "src").rglob("*.py")):
        digest.update(path.relative_to(ROOT).as_posix().encode() + path.read_bytes())
    stamp = ROOT / "_build" / ".src-digest"
    if stamp.is_file() and stamp.read_text() == digest.hexdigest():
        return
    for cache in (".jupyter_cache", ".doctrees"):
        shutil.rmtree(ROOT / "_build" / cache, ignore_errors=True)
    stamp.parent.mkdir(exist_ok=True)
    stamp.write_text(digest.hexdigest())


def book(args: list[str]) -> None:
    drop_stale_execution_cache()
    # The pages run on the CPU, so the book shows the same numbers on every machine
    # (set LLMCOURSE_DEVICE yourself to override).
    book_env = env()
    book_env.setdefault("LLMCOURSE_DEVICE", "cpu")
    # -W turns warnings into errors, and with it a code cell that raises fails the build.
    run(BIN / "jupyter-book", "build", ".", "-W", "--keep-going", *args, cwd=ROOT, env=book_env)
    print(f"\nthe book is at {ROOT / '_build' / 'html' / 'index.html'}")


def browser(args: list[str]) -> None:
    """The built book checked in headless Chromium (tests/test_browser.py). Unlike in the
    test suite, a missing build, Chromium or Playwright is an error here, not a skip."""
    browser_env = env()
    browser_env["LLMCOURSE_BROWSER_REQUIRED"] = "1"
    run(PYTHON, "-m", "pytest", "tests/test_browser.py", "-q", *args, cwd=ROOT, env=browser_env)


def checkpoints(args: list[str]) -> None:
    """Train every course checkpoint into the cache on one thread (a no-op for those cached):
    CI runs it beside the tests, so the book build finds them ready."""
    checkpoint_env = env()
    checkpoint_env.setdefault("LLMCOURSE_DEVICE", "cpu")
    run(PYTHON, "-m", "llmcourse.course_models", "--all", "--threads", "1", *args, cwd=ROOT,
        env=checkpoint_env)  # fmt: skip


def lint(args: list[str]) -> None:
    run(BIN / "ruff", "check", *(args or ["."]), cwd=ROOT, env=env())
    run(BIN / "ruff", "format", "--check", *(args or ["."]), cwd=ROOT, env=env())


def release(args: list[str]) -> None:
    run(PYTHON, "-m", "llmcourse", "release", *args, cwd=ROOT, env=env())


COMMANDS = {
    "test": test,
    "book": book,
    "browser": browser,
    "lint": lint,
    "release": release,
    "checkpoints": checkpoints,
}


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in COMMANDS:
        print(__doc__)
        return 2
    ensure_venv()
    try:
        COMMANDS[argv[0]](argv[1:])
    except subprocess.CalledProcessError as err:
        return err.returncode or 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
