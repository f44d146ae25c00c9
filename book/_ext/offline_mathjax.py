"""Serve MathJax 3 from the built site itself, so the book's math renders offline.

Sphinx loads MathJax from a public CDN by default. The `django-static-mathjax` package (a plain
copy of MathJax 3 on PyPI, installed by the `book` extra) carries the same files; this extension
copies the CommonHTML bundle and its fonts into the HTML output and points `mathjax_path` at it.
Without the package the build fails with a message saying what to install.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from sphinx.application import Sphinx
from sphinx.config import Config
from sphinx.errors import ExtensionError

BUNDLE = Path("es5") / "tex-mml-chtml.js"
FONTS = Path("es5") / "output" / "chtml" / "fonts" / "woff-v2"
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
    shutil.copytree(root / FONTS, out / FONTS, dirs_exist_ok=True)


def _point_at_local_copy(app: Sphinx, config: Config) -> None:
    _mathjax_root()  # fail early, before any page is executed
    config.mathjax_path = f"{TARGET}/{BUNDLE.as_posix()}"


def setup(app: Sphinx) -> dict[str, object]:
    app.connect("config-inited", _point_at_local_copy)
    app.connect("build-finished", _copy_mathjax)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
