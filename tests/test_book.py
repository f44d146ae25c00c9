"""The book's structure and its offline MathJax extension.

The full build runs in `.ci/run` (`python3 tasks.py book`, warnings as errors); these tests catch
the cheap mistakes early: a page missing from the table of contents (it would silently not be
built), a table-of-contents entry without a page, a page with code that would not be executed,
and MathJax pointing at a CDN the reader may not reach.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import yaml
from conftest import ROOT

BOOK = ROOT / "book"
CODE_CELL = re.compile(r"^```\{code-cell\}", re.MULTILINE)


def _toc_files(node: object) -> list[str]:
    """Every `file:` and `root:` entry of `_toc.yml`, in order."""
    found: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("file", "root") and isinstance(value, str):
                found.append(value)
            else:
                found.extend(_toc_files(value))
    elif isinstance(node, list):
        for item in node:
            found.extend(_toc_files(item))
    return found


def _pages() -> list[Path]:
    return sorted(p for p in BOOK.rglob("*.md") if "_ext" not in p.parts)


def test_toc_and_pages_agree():
    toc = _toc_files(yaml.safe_load((ROOT / "_toc.yml").read_text()))
    assert len(toc) == len(set(toc)), "a page is listed twice in _toc.yml"
    listed = {ROOT / f"{entry}.md" for entry in toc}
    missing = sorted(str(p.relative_to(ROOT)) for p in listed if not p.is_file())
    assert not missing, f"_toc.yml lists pages that do not exist: {missing}"
    unlisted = sorted(str(p.relative_to(ROOT)) for p in _pages() if p not in listed)
    assert not unlisted, f"pages not in _toc.yml (they would not be built): {unlisted}"


@pytest.mark.parametrize("page", _pages(), ids=lambda p: str(p.relative_to(BOOK)))
def test_pages_with_code_are_executed_notebooks(page: Path):
    text = page.read_text()
    if not CODE_CELL.search(text):
        return
    front = yaml.safe_load(text.split("---", 2)[1]) if text.startswith("---") else None
    assert front and front.get("kernelspec", {}).get("name") == "python3", (
        f"{page.relative_to(ROOT)} has code cells but no python3 kernelspec in its front "
        "matter, so the build would show them without running them"
    )


def test_config_executes_and_fails_on_errors():
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert config["execute"]["execute_notebooks"] in ("cache", "force")
    assert config["execute"]["allow_errors"] is False
    assert config["sphinx"]["local_extensions"] == {"offline_mathjax": "book/_ext"}


def test_offline_mathjax_is_served_from_the_site(tmp_path: Path):
    """A one-page Sphinx build with the extension: the page loads MathJax from _static/."""
    from sphinx.application import Sphinx

    src = tmp_path / "src"
    src.mkdir()
    (src / "conf.py").write_text(
        f"import sys\nsys.path.insert(0, {str(BOOK / '_ext')!r})\n"
        "extensions = ['sphinx.ext.mathjax', 'offline_mathjax']\n"
    )
    (src / "index.rst").write_text("Math\n====\n\n.. math:: E = \\frac{1}{2}(t - o)^2\n")
    out = tmp_path / "html"
    app = Sphinx(
        str(src), str(src), str(out), str(tmp_path / "doctrees"), "html",
        status=None, warning=sys.stderr, warningiserror=True,
    )  # fmt: skip
    app.build()
    html = (out / "index.html").read_text()
    scripts = re.findall(r'<script[^>]+src="([^"]*tex-mml-chtml\.js)"', html)
    assert scripts == ["_static/mathjax/es5/tex-mml-chtml.js"], scripts
    assert (out / scripts[0]).stat().st_size > 100_000
    fonts = list((out / "_static/mathjax/es5/output/chtml/fonts/woff-v2").glob("*.woff"))
    assert len(fonts) > 10
