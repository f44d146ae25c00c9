"""Chinese text in figures: a CJK font where the system has one, pinyin labels where it has none.

Both branches run on every machine: the lookup is fed font lists with and without a CJK font,
and the real system is checked against what its font folders hold.
"""

from __future__ import annotations

import warnings

import matplotlib.pyplot as plt
import pytest
import torch
from matplotlib import font_manager
from matplotlib.font_manager import FontEntry

from llmcourse import fonts
from llmcourse.attention import unscramble as U

DEJAVU = FontEntry(fname="/f/DejaVuSans.ttf", name="DejaVu Sans", weight=400)
NOTO_FACES = [
    FontEntry(fname="/f/NotoSansCJK-Bold.ttc", index=0, name="Noto Sans CJK JP", weight=700),
    FontEntry(fname="/f/NotoSansCJK-Bold.ttc", index=2, name="Noto Sans CJK SC", weight=700),
    FontEntry(fname="/f/NotoSansCJK-Regular.ttc", index=0, name="Noto Sans CJK JP", weight=400),
    FontEntry(fname="/f/NotoSansCJK-Regular.ttc", index=2, name="Noto Sans CJK SC", weight=400),
    FontEntry(fname="/f/NotoSansCJK.ttc", index=7, name="Noto Sans Mono CJK SC", weight=400),
    FontEntry(fname="/f/NotoSerifCJK-Regular.ttc", index=2, name="Noto Serif CJK SC", weight=400),
]


@pytest.fixture
def fresh_lookup():
    """`cjk_font` caches its answer per process: forget it before and after the test."""
    fonts.cjk_font.cache_clear()
    yield
    fonts.cjk_font.cache_clear()


def _draw_without_missing_glyphs(labels: list[str]) -> None:
    """Draw the attention figure with these labels; a glyph the font lacks is an error."""
    fig = U.plot_attention(torch.full((2, len(labels), len(labels)), 0.5), labels)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("error", message=".*[Gg]lyph.*missing")
            fig.canvas.draw()
    finally:
        plt.close(fig)


def test_has_cjk():
    assert fonts.has_cjk(U.SCRAMBLED)
    assert fonts.has_cjk("token 词元")
    assert fonts.has_cjk("，")  # a full-width comma
    assert not fonts.has_cjk("hàn zì de shùn xù")
    assert not fonts.has_cjk("attention, Aufmerksamkeit, внимание")


def test_the_regular_simplified_sans_face_is_preferred():
    best = fonts.find_cjk_font([DEJAVU, *NOTO_FACES])
    assert (best.name, best.weight) == ("Noto Sans CJK SC", 400)
    # without Noto Sans, the next family on the list; without any, nothing
    wqy = FontEntry(fname="/f/wqy-zenhei.ttc", name="WenQuanYi Zen Hei", weight=500)
    assert fonts.find_cjk_font([DEJAVU, NOTO_FACES[-1], wqy]) is wqy
    assert fonts.find_cjk_font([DEJAVU]) is None
    assert fonts.find_cjk_font([]) is None


def test_without_a_cjk_font_the_labels_are_pinyin(monkeypatch, fresh_lookup):
    monkeypatch.setattr(font_manager.fontManager, "ttflist", [DEJAVU])
    monkeypatch.setattr(fonts, "_system_cjk_files", lambda: [])
    assert fonts.cjk_font() is None
    labels = U.axis_labels(U.SCRAMBLED)
    assert labels[:5] == ["hàn", "zì", "de", "xù", "shùn"]  # 序顺 is the swapped pair
    assert not fonts.has_cjk("".join(labels))
    _draw_without_missing_glyphs(labels)


def test_the_system_font_is_used_where_there_is_one(fresh_lookup):
    """With fonts-noto-cjk (or another CJK font) installed, the labels are the characters and
    they render without missing glyphs; on a system without one, the lookup says so."""
    installed = fonts._system_cjk_files()
    font = fonts.cjk_font()
    if not installed:
        assert font is None
        return
    assert font is not None
    path = font_manager.findfont(font, fallback_to_default=False)
    assert path in installed, f"{font.get_family()} resolved to {path}, not a CJK font file"
    labels = U.axis_labels(U.SCRAMBLED)
    assert labels == list(U.SCRAMBLED)
    _draw_without_missing_glyphs(labels)


def test_a_font_installed_after_matplotlib_listed_the_fonts_is_found(monkeypatch, fresh_lookup):
    """matplotlib's cached font list may predate `apt-get install fonts-noto-cjk`: the lookup
    then reads the system's font folders and adds what it finds."""
    installed = fonts._system_cjk_files()
    monkeypatch.setattr(font_manager.fontManager, "ttflist", [DEJAVU])
    font = fonts.cjk_font()
    assert (font is not None) == bool(installed)
    if installed:
        entry = fonts.find_cjk_font(font_manager.fontManager.ttflist)
        assert entry.fname in installed
        assert font.get_family() == [entry.name]
