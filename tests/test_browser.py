"""The built book as a reader sees it: every page opened in headless Chromium, offline.

The book is served from `_build/html` by a local HTTP server on 127.0.0.1 and every page is
loaded by Playwright driving the system's Chromium. A page passes when it throws no JavaScript
error and logs none, asks for nothing but the local server (every request is recorded; the
others are blocked, so nothing leaves the machine even when the test fails), gets no 404,
MathJax finished and left no raw TeX and no error box, every image decoded, and every link into
the book reaches a page and an anchor that exist. The search page must find a term offline.
Screenshots of a few pages land in `_build/screenshots/` for a person to look at, with
`report.json` beside them: what was found on each page and how long it took.

The book is built after the test suite (`python3 tasks.py book`), so without a build, without
Chromium or without Playwright these tests are skipped with a message saying how to get them;
`python3 tasks.py browser`, the step of `.ci/run` after the build, sets
LLMCOURSE_BROWSER_REQUIRED=1 and makes each of those an error instead. LLMCOURSE_BOOK_HTML
points the test at another build folder.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import re
import threading
import time
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from conftest import ROOT

HTML = Path(os.environ.get("LLMCOURSE_BOOK_HTML", ROOT / "_build" / "html")).resolve()
SCREENSHOTS = HTML.parent / "screenshots"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
REQUIRED = os.environ.get("LLMCOURSE_BROWSER_REQUIRED") == "1"
SEARCHES = {"perceptron": "book/ch01_perceptron/", "backpropagation": "book/ch02_backprop/"}
"""Search terms, and the folder of a page each must find."""
SHOT = {
    "book/intro.html": "intro",
    "book/ch03_deep_networks/layers.html": "ch03_layers_math",
    "book/ch05_attention/multi_head.html": "ch05_attention_cjk_labels",
    "book/appendix/glossary.html": "glossary",
}
"""Pages photographed, and the screenshot's name."""

# JavaScript run in each page -------------------------------------------------------------------

WAIT_FOR_MATHJAX = """async () => {
  if (!document.querySelector('script[src*="mathjax"]')) return "absent";
  for (let i = 0; i < 300 && !(window.MathJax && MathJax.startup && MathJax.startup.promise); i++)
    await new Promise(r => setTimeout(r, 50));
  if (!(window.MathJax && MathJax.startup && MathJax.startup.promise)) return "never started";
  try { await MathJax.startup.promise; return "ok"; } catch (e) { return "failed: " + e; }
}"""

MATH = """() => {
  const nodes = Array.from(document.querySelectorAll("span.math, div.math"));
  return {
    nodes: nodes.length,
    containers: document.querySelectorAll("mjx-container").length,
    unrendered: nodes.filter(e => !e.querySelector("mjx-container"))
                     .map(e => e.textContent.trim().slice(0, 80)),
    errors: Array.from(document.querySelectorAll("mjx-merror, [data-mjx-error]"))
                 .map(e => (e.getAttribute("data-mjx-error") || e.textContent).slice(0, 80)),
  };
}"""

RAW_TEX = """() => {
  const skip = "pre, code, kbd, samp, script, style, textarea, mjx-container, .highlight";
  const tex = /\\$\\$|\\\\\\(|\\\\\\)|\\\\\\[|\\\\\\]|\\\\begin\\{|\\\\[A-Za-z]{2,}/;
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  const hits = [];
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    if (!n.parentElement || n.parentElement.closest(skip)) continue;
    if (tex.test(n.textContent)) hits.push(n.textContent.trim().slice(0, 80));
  }
  return hits;
}"""

RAW_TABLE = """() => {
  const skip = "pre, code, kbd, samp, script, style, textarea, .highlight";
  const row = /\\|\\s*:?-{3,}:?\\s*\\||^\\s*\\|.*\\|\\s*$/m;
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  const hits = [];
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    if (!n.parentElement || n.parentElement.closest(skip)) continue;
    if (row.test(n.textContent)) hits.push(n.textContent.trim().slice(0, 80));
  }
  return hits;
}"""
"""Text that reads like a Markdown table: a table a code cell displayed that was not parsed."""

UNDECODED_IMAGES = """async () => {
  const images = Array.from(document.images);
  for (const image of images) image.loading = "eager";
  await Promise.all(images.map(image => image.decode().catch(() => null)));
  return {
    count: images.length,
    broken: images.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.getAttribute("src")),
  };
}"""

REDIRECT = re.compile(r"<meta[^>]+http-equiv=.refresh", re.IGNORECASE)
"""A page that only sends the reader on (Jupyter Book's top-level index.html)."""

LINKS = "() => Array.from(document.querySelectorAll('a[href]'), a => a.href)"

SEARCH_FINISHED = """() => {
  const summary = document.querySelector("#search-results .search-summary");
  return summary && /Search finished|did not match/.test(summary.textContent);
}"""

# The build and what is in it ---------------------------------------------------------------------


def _pages() -> list[str]:
    """Every HTML page of the build, relative to its root (assets and sources left out)."""
    if not HTML.is_dir():
        return []
    skip = {"_static", "_sources", "_images", "_downloads"}
    return sorted(
        p.relative_to(HTML).as_posix()
        for p in HTML.rglob("*.html")
        if not skip.intersection(p.relative_to(HTML).parts)
    )


class _Ids(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name == "id" or (tag == "a" and name == "name"):
                self.ids.add(value or "")


@functools.cache
def _ids(page: Path) -> frozenset[str]:
    """The anchors (ids) a built page defines."""
    parser = _Ids()
    parser.feed(page.read_text(encoding="utf-8"))
    return frozenset(parser.ids)


def _broken_link(href: str, origin: str) -> str | None:
    """Why a link into the book leads nowhere, or None when it resolves (or leaves the book)."""
    parts = urlsplit(href)
    if parts.scheme not in ("http", "https") or f"{parts.scheme}://{parts.netloc}" != origin:
        return None
    target = HTML / unquote(parts.path).lstrip("/")
    if parts.path.endswith("/"):
        target = target / "index.html"
    if not target.is_file():
        return f"{href}: no such file"
    fragment = unquote(parts.fragment)
    if fragment and target.suffix == ".html" and fragment not in _ids(target):
        return f"{href}: no anchor #{fragment} in {target.relative_to(HTML)}"
    return None


def _prerequisites() -> str | None:
    """What is missing to run the browser checks, and how to get it."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright is not installed: `python3 tasks.py test` installs the dev extra"
    if not CHROMIUM.is_file():
        return f"{CHROMIUM} is missing: `sudo apt-get install -y chromium fonts-noto-cjk`"
    if not (HTML / "index.html").is_file():
        return f"the book is not built in {HTML}: run `python3 tasks.py book` first"
    return None


# Fixtures: a local server, a browser, and the report ---------------------------------------------


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def site() -> Iterator[str]:
    """The build served on 127.0.0.1 (a free port); yields its origin."""
    missing = _prerequisites()
    if missing:
        (pytest.fail if REQUIRED else pytest.skip)(f"browser check: {missing}")
    handler = functools.partial(_QuietHandler, directory=str(HTML))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def report() -> Iterator[dict[str, dict]]:
    """Per-page findings, written to `_build/screenshots/report.json` at the end."""
    found: dict[str, dict] = {}
    yield found
    if found:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        (SCREENSHOTS / "report.json").write_text(json.dumps(found, indent=1, ensure_ascii=False))


@pytest.fixture(scope="module")
def browser_context(site: str):
    """One headless Chromium that may only reach the local server: every other request is
    recorded by the page and aborted here."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        context.set_default_timeout(30_000)

        def local_only(route) -> None:
            if route.request.url.startswith(site + "/"):
                route.continue_()
            else:
                route.abort()

        context.route("**/*", local_only)
        yield context
        context.close()
        browser.close()


def _open(context, site: str, path: str) -> tuple[object, dict[str, list[str]]]:
    """A new tab with listeners for errors and requests, navigated to `path`."""
    seen: dict[str, list[str]] = {"errors": [], "requests": [], "outside": [], "failed": []}
    page = context.new_page()
    page.on("pageerror", lambda err: seen["errors"].append(f"uncaught: {err}"))
    page.on(
        "console",
        lambda msg: msg.type == "error" and seen["errors"].append(f"console: {msg.text}"),
    )

    def on_request(request) -> None:
        seen["requests"].append(request.url)
        if not request.url.startswith((site + "/", "data:", "blob:", "about:")):
            seen["outside"].append(request.url)

    page.on("request", on_request)
    page.on(
        "response",
        lambda r: r.status >= 400 and seen["failed"].append(f"{r.status} {r.url}"),
    )
    page.on(
        "requestfailed",
        lambda r: r.url.startswith(site) and seen["failed"].append(f"{r.failure} {r.url}"),
    )
    page.goto(f"{site}/{path}", wait_until="load")
    if REDIRECT.search((HTML / urlsplit(path).path).read_text(encoding="utf-8")):
        page.wait_for_url(lambda url: urlsplit(url).path != f"/{path}")
        page.wait_for_load_state("load")
    return page, seen


# The checks --------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", _pages() or ["index.html"])
def test_page_reads_offline(path: str, site: str, browser_context, report: dict) -> None:
    start = time.perf_counter()
    page, seen = _open(browser_context, site, path)
    try:
        mathjax = page.evaluate(WAIT_FOR_MATHJAX)
        math = page.evaluate(MATH)
        raw_tex = page.evaluate(RAW_TEX)
        raw_tables = page.evaluate(RAW_TABLE)
        images = page.evaluate(UNDECODED_IMAGES)
        links = page.evaluate(LINKS)
        page.wait_for_load_state("networkidle")
        shown = urlsplit(page.url).path.lstrip("/")
        if path in SHOT:
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOTS / f"{SHOT[path]}.png"), full_page=True)
    finally:
        page.close()

    broken = sorted({why for href in links if (why := _broken_link(href, site))})
    problems = [
        *seen["errors"],
        *(f"request left the server: {url}" for url in seen["outside"]),
        *(f"failed request: {what}" for what in seen["failed"]),
        *(f"MathJax {mathjax}" for _ in [0] if mathjax not in ("ok", "absent")),
        *(f"formula not rendered: {tex}" for tex in math["unrendered"]),
        *(f"MathJax error: {err}" for err in math["errors"]),
        *(f"raw TeX in the text: {text!r}" for text in raw_tex),
        *(f"a Markdown table left as text: {text!r}" for text in raw_tables),
        *(f"image not decoded: {src}" for src in images["broken"]),
        *(f"broken link: {why}" for why in broken),
    ]
    if math["nodes"] and not math["containers"]:
        problems.append(f"{math['nodes']} formulas and no mjx-container")
    report[path] = {
        **({"redirected_to": shown} if shown != path else {}),
        "seconds": round(time.perf_counter() - start, 2),
        "requests": len(seen["requests"]),
        "formulas": math["nodes"],
        "mjx_containers": math["containers"],
        "images": images["count"],
        "links": len(links),
        "problems": problems,
    }
    assert not problems, f"{path}:\n  " + "\n  ".join(problems)


@pytest.mark.parametrize("term", sorted(SEARCHES))
def test_search_finds_a_term_offline(term: str, site: str, browser_context) -> None:
    page, seen = _open(browser_context, site, f"search.html?q={term}")
    try:
        page.wait_for_function(SEARCH_FINISHED)
        hits = page.evaluate(
            "() => Array.from(document.querySelectorAll('#search-results ul.search li a'),"
            " a => a.getAttribute('href'))"
        )
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / f"search_{term}.png"))
    finally:
        page.close()
    assert any(SEARCHES[term] in (href or "") for href in hits), hits
    assert not seen["errors"] and not seen["outside"] and not seen["failed"], seen
