"""Fonts for figures with Chinese text.

matplotlib's default font, DejaVu Sans, has no Chinese characters: it draws an empty box for
each and warns. `cjk_font` finds a font that has them where the system has one (Noto Sans CJK
from Debian's ``fonts-noto-cjk``, Source Han Sans, WenQuanYi, SimHei, ...); where it returns
``None`` the figure labels the characters another way (the attention chapter uses pinyin).

The preferred face is a sans-serif one for Simplified Chinese (``SC``) at regular weight:
Noto's collections hold Japanese, Korean and Traditional faces too, whose glyphs for the same
code point differ slightly from the mainland forms.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import cache
from pathlib import Path

from matplotlib import font_manager

CJK_FAMILIES = (
    "Noto Sans CJK",
    "Source Han Sans",
    "WenQuanYi",
    "SimHei",
    "Microsoft YaHei",
    "PingFang",
    "Heiti",
    "Noto Serif CJK",
    "AR PL",
)
"""Name prefixes of fonts with Chinese characters, most preferred first."""

_CJK_FILE_HINTS = ("cjk", "wqy", "wenquanyi", "simhei", "msyh", "pingfang", "sourcehan", "uming")


def has_cjk(text: str) -> bool:
    """Whether ``text`` holds a character of the CJK blocks, which DejaVu Sans cannot draw:
    U+2E80 up to the private-use area (ideographs, kana, hangul), the compatibility
    ideographs and the full-width forms."""
    return any(
        0x2E80 <= ord(ch) < 0xE000 or 0xF900 <= ord(ch) < 0xFB00 or 0xFF00 <= ord(ch) < 0xFFF0
        for ch in text
    )


def find_cjk_font(entries: Iterable[font_manager.FontEntry]) -> font_manager.FontEntry | None:
    """The best entry for Simplified Chinese text among matplotlib font entries, or ``None``.

    Ranked by the family's place in `CJK_FAMILIES`, then a Simplified Chinese face (``SC``)
    before other regions, proportional before monospaced, upright before italic, and the
    weight nearest to regular (400).
    """

    def rank(entry: font_manager.FontEntry) -> tuple[int, bool, bool, bool, float]:
        family = next(i for i, name in enumerate(CJK_FAMILIES) if entry.name.startswith(name))
        weight = entry.weight if isinstance(entry.weight, int) else 400
        return (
            family,
            not entry.name.endswith(" SC"),
            "Mono" in entry.name,
            entry.style != "normal",
            abs(weight - 400),
        )

    found = [e for e in entries if any(e.name.startswith(name) for name in CJK_FAMILIES)]
    return min(found, key=rank) if found else None


def _system_cjk_files() -> list[str]:
    """Font files on the system whose names suggest Chinese glyphs."""
    return [
        path
        for path in font_manager.findSystemFonts()
        if any(hint in Path(path).name.lower() for hint in _CJK_FILE_HINTS)
    ]


@cache
def cjk_font() -> font_manager.FontProperties | None:
    """Font properties that draw Chinese characters, or ``None`` where the system has no such
    font (looked up once per process).

    matplotlib lists the system's fonts once and caches the list on disk, so a font installed
    after that (``apt-get install fonts-noto-cjk`` on a machine that already drew a figure) is
    not in it: the system's font folders are searched too, and what they hold is added.
    """
    manager = font_manager.fontManager
    entry = find_cjk_font(manager.ttflist)
    if entry is None:
        for path in _system_cjk_files():
            manager.addfont(path)
        entry = find_cjk_font(manager.ttflist)
    if entry is None:
        return None
    return font_manager.FontProperties(family=entry.name, style=entry.style, weight=entry.weight)
