"""Serve MathJax 3 from the built site itself, so the book's math renders offline.

Sphinx loads MathJax from a public CDN by default. The `django-static-mathjax` package (a plain
copy of MathJax 3 on PyPI, installed by the `book` extra) carries the same files; this extension
copies them into the HTML output and points `mathjax_path` at the copy. Without the package the
build fails with a message saying what to install.

The bundle `tex-mml-chtml.js` is not all MathJax needs: it loads the rest lazily from folders
beside it, by URL, when a page asks for it. A formula with ``\boldsymbol`` fetches
``input/tex/extensions/boldsymbol.js`` (autoload); the CommonHTML output fetches its fonts from
``output/chtml/fonts/``; the accessibility menu fetches ``a11y/`` and the speech rules in
``sre/``; ``ui/`` holds the optional menu parts. A file missing there stops MathJax on that page
and no formula renders, so every folder the bundle may ask for is copied whole (about 7 MB).

The copy goes to the output's ``_static/mathjax`` when the build has finished. Jupyter Book 1
adds a ``<script>`` to every page for each .js file in the *source* folder ``_static/`` (beside
``_config.yml``); the output folder is not scanned, so none of these files is loaded by a page
unless MathJax asks for it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from sphinx.application import Sphinx
from sphinx.config import Config
from sphinx.errors import ExtensionError

BUNDLE = Path("es5") / "tex-mml-chtml.js"
LAZY = tuple(Path("es5") / part for part in ("input", "output/chtml", "a11y", "sre", "ui"))
"""The folders beside the bundle that it loads components, fonts and data from on demand."""
TARGET = "mathjax"  # under the output's _static/, where Sphinx resolves mathjax_path


def _mathjax_root() -> Path:
    try:
        import mathjax  # the django-static-mathjax distribution
    except ImportError as err:
        raise ExtensionError(
            "offline_mathjax: MathJax is not installed; run "
            "`pip install django-static-mathjax` (part of `pip install -e .[book]`)."
        ) from err
    root = Path(mathjax.__file__).parent / "static" / "mathjax"
    if not (root / BUNDLE).is_file():
        raise ExtensionError(f"offline_mathjax: {root / BUNDLE} is missing; reinstall the package.")
    return root


def _copy_mathjax(app: Sphinx, exception: Exception | None) -> None:
    if exception is not None or app.builder.format != "html":
        return
    root = _mathjax_root()
    out = Path(app.outdir) / "_static" / TARGET
    (out / BUNDLE).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(root / BUNDLE, out / BUNDLE)
    for folder in LAZY:
        shutil.copytree(root / folder, out / folder, dirs_exist_ok=True)


def _point_at_local_copy(app: Sphinx, config: Config) -> None:
    _mathjax_root()  # fail early, before any page is executed
    config.mathjax_path = f"{TARGET}/{BUNDLE.as_posix()}"


def setup(app: Sphinx) -> dict[str, object]:
    app.connect("config-inited", _point_at_local_copy)
    app.connect("build-finished", _copy_mathjax)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
