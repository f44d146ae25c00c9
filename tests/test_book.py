"""The book's structure, its configuration, its glossary and its offline MathJax extension.

The full build runs in `.ci/run` (`python3 tasks.py book`, warnings as errors, then every page in
headless Chromium: tests/test_browser.py); these tests catch the cheap mistakes early: a page
missing from the table of contents (it would silently not be built), a table-of-contents entry
without a page, a page with code that would not be executed, MathJax pointing at a CDN the
reader may not reach or missing the files it loads on demand, buttons that lead off the
machine, and a glossary entry that points nowhere.
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


CODE_SPAN = re.compile(r"`[^`]*`")
BARE_PIPE = re.compile(r"(?<!\\)\|")
"""A ``|`` not escaped: inside a code span of a table row it still ends the cell (write
``\\|``)."""


def test_table_cells_escape_the_pipes_of_their_code():
    bad = []
    for page in _pages():
        fenced = False
        for number, line in enumerate(page.read_text().splitlines(), 1):
            if line.startswith(("```", "~~~")):
                fenced = not fenced
            elif (
                line.startswith("|")
                and not fenced
                and any(BARE_PIPE.search(span) for span in CODE_SPAN.findall(line))
            ):
                bad.append(f"{page.relative_to(ROOT)}:{number}: {line[:80]}")
    assert not bad, "a | inside `code` splits the table cell:\n" + "\n".join(bad)


def test_config_executes_and_fails_on_errors():
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert config["execute"]["execute_notebooks"] in ("cache", "force")
    assert config["execute"]["allow_errors"] is False
    assert config["sphinx"]["local_extensions"] == {"offline_mathjax": "book/_ext"}


def test_extensions_are_jupyter_books_without_thebe():
    """The extension list replaces Jupyter Book's defaults: it must stay equal to them, less
    sphinx_thebe (which loads thebe from a CDN), plus ours."""
    from jupyter_book.config import get_default_sphinx_config

    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    defaults = get_default_sphinx_config()["extensions"]
    assert "sphinx_thebe" in defaults
    expected = [e for e in defaults if e != "sphinx_thebe"] + ["offline_mathjax"]
    assert config["sphinx"]["config"]["extensions"] == expected


def test_nothing_on_the_page_leads_off_the_machine():
    """No launch buttons (Binder, Colab, thebe): they load code from the web. No repository
    buttons without a real repository URL (the theme would link a placeholder)."""
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    launch = config.get("launch_buttons", {})
    assert launch.get("thebe") is False
    assert not any(launch.get(key) for key in ("binderhub_url", "jupyterhub_url", "colab_url"))
    html = config.get("html", {})
    buttons = ("use_repository_button", "use_issues_button", "use_edit_page_button")
    url = config.get("repository", {}).get("url")
    assert url is not None, "an unset repository.url makes Jupyter Book use its own repository's"
    if any(html.get(b) for b in buttons):
        assert re.fullmatch(r"https://(github|gitlab)\.com/[\w.-]+/[\w.-]+", url), url
    else:
        assert url == "", "repository.url is set but no button shows it: set a button or clear it"


def test_offline_mathjax_is_served_from_the_site(tmp_path: Path):
    """A one-page Sphinx build with the extension: the page loads MathJax from _static/, and
    every folder MathJax loads from on demand (TeX extensions, fonts, menu, accessibility) is
    copied beside it, file for file, without a script tag of its own."""
    from sphinx.application import Sphinx

    sys.path.insert(0, str(BOOK / "_ext"))
    import offline_mathjax

    src = tmp_path / "src"
    src.mkdir()
    (src / "conf.py").write_text(
        f"import sys\nsys.path.insert(0, {str(BOOK / '_ext')!r})\n"
        "extensions = ['sphinx.ext.mathjax', 'offline_mathjax']\n"
    )
    (src / "index.rst").write_text(
        "Math\n====\n\n.. math:: E = \\frac{1}{2}\\lVert \\boldsymbol{t - o} \\rVert^2\n"
    )
    out = tmp_path / "html"
    app = Sphinx(
        str(src), str(src), str(out), str(tmp_path / "doctrees"), "html",
        status=None, warning=sys.stderr, warningiserror=True,
    )  # fmt: skip
    app.build()
    html = (out / "index.html").read_text()
    scripts = re.findall(r'<script[^>]+src="([^"]*mathjax[^"]*)"', html)
    assert scripts == ["_static/mathjax/es5/tex-mml-chtml.js"], scripts
    copy = out / "_static" / "mathjax"
    assert (copy / offline_mathjax.BUNDLE).stat().st_size > 100_000
    root = offline_mathjax._mathjax_root()
    for folder in offline_mathjax.LAZY:
        files = {p.relative_to(root) for p in (root / folder).rglob("*") if p.is_file()}
        copied = {p.relative_to(copy) for p in (copy / folder).rglob("*") if p.is_file()}
        assert files and copied == files, f"{folder}: {sorted(map(str, files - copied))[:5]}"
    assert (copy / "es5/input/tex/extensions/boldsymbol.js").is_file()
    assert len(list((copy / "es5/output/chtml/fonts/woff-v2").glob("*.woff"))) > 10


GLOSSARY_ROW = re.compile(
    r"^\| (?P<zh>[^|]+) \| (?P<en>[^|]+) \| (?P<what>[^|]+) \| (?P<where>[^|]+) \|$"
)
LINK = re.compile(r"\[[^\]]*\]\(([^)]+)\)")


def test_glossary_pairs_terms_and_points_to_pages():
    """Each row: Chinese term(s), English term, a one-line meaning, and a link to a page in the
    table of contents or the chapter that will teach it."""
    page = BOOK / "appendix" / "glossary.md"
    rows = [m for line in page.read_text().splitlines() if (m := GLOSSARY_ROW.match(line))]
    rows = [m for m in rows if m["zh"].strip() not in ("中文", "---")]
    assert len(rows) >= 30, len(rows)
    toc = {
        ROOT / f"{entry}.md"
        for entry in _toc_files(yaml.safe_load((ROOT / "_toc.yml").read_text()))
    }
    assert page in toc
    seen: set[str] = set()
    for row in rows:
        zh, where = row["zh"].strip(), row["where"]
        assert re.search(r"[\u4e00-\u9fff]", zh), f"no Chinese term in {row[0]!r}"
        assert re.search(r"[A-Za-z]", row["en"]), f"no English term in {row[0]!r}"
        assert zh not in seen, f"{zh} twice"
        seen.add(zh)
        links = LINK.findall(where)
        assert links or re.search(r"chapter \d+ \(planned\)", where), where
        for link in links:
            assert (page.parent / link).resolve() in toc, f"{zh}: {link} is not a page of the book"
    for term in ("感知机", "反向传播", "激活函数", "注意力机制", "词元", "预训练", "指令微调",
                 "奖励模型", "强化学习", "量化", "剪枝", "知识蒸馏"):  # fmt: skip
        assert any(term in row["zh"] for row in rows), term
