"""OpenAI's published encodings (``gpt2``, ``cl100k_base``, ``o200k_base``), offline-first.

``tiktoken.get_encoding(name)`` downloads an encoding's files the first time and keeps them in
a cache directory: ``$TIKTOKEN_CACHE_DIR``, else ``$DATA_GYM_CACHE_DIR``, else
``<temp dir>/data-gym-cache``. A cached file is named by the SHA-1 of its URL. Offline and
without the files, tiktoken fails with a network error deep inside ``requests``.

``cached_encoding(name)`` looks in that cache first: when every file the encoding needs is
there (with the right SHA-256), it returns the encoding without touching the network; when a
file is missing it raises ``EncodingUnavailable`` with a message that says how to get it,
unless ``allow_download=True``.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

_BASE = "https://openaipublic.blob.core.windows.net"
ENCODING_FILES: dict[str, dict[str, str]] = {
    "gpt2": {
        f"{_BASE}/gpt-2/encodings/main/vocab.bpe": (
            "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"
        ),
        f"{_BASE}/gpt-2/encodings/main/encoder.json": (
            "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"
        ),
    },
    "cl100k_base": {
        f"{_BASE}/encodings/cl100k_base.tiktoken": (
            "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7"
        ),
    },
    "o200k_base": {
        f"{_BASE}/encodings/o200k_base.tiktoken": (
            "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d"
        ),
    },
}
"""The files behind each encoding and their SHA-256, as tiktoken 0.14 fetches them."""


class EncodingUnavailable(RuntimeError):
    """A tiktoken encoding whose files are not in the local cache."""


def tiktoken_cache_dir() -> Path | None:
    """The directory tiktoken caches downloads in, or None when caching is switched off."""
    for var in ("TIKTOKEN_CACHE_DIR", "DATA_GYM_CACHE_DIR"):
        if var in os.environ:
            return Path(os.environ[var]) if os.environ[var] else None
    return Path(tempfile.gettempdir()) / "data-gym-cache"


def cache_path(url: str) -> Path | None:
    """Where tiktoken keeps the download of ``url``: the SHA-1 of the URL, in the cache dir."""
    folder = tiktoken_cache_dir()
    return None if folder is None else folder / hashlib.sha1(url.encode()).hexdigest()


def missing_files(name: str) -> list[str]:
    """The URLs of ``name``'s files that are not (correctly) in the cache."""
    if name not in ENCODING_FILES:
        raise ValueError(f"unknown encoding {name!r}: known are {', '.join(ENCODING_FILES)}")
    missing = []
    for url, sha256 in ENCODING_FILES[name].items():
        path = cache_path(url)
        if (
            path is None
            or not path.is_file()
            or hashlib.sha256(path.read_bytes()).hexdigest() != sha256
        ):
            missing.append(url)
    return missing


def is_cached(name: str) -> bool:
    """True when ``cached_encoding(name)`` can load the encoding without a network."""
    return not missing_files(name)


def cached_encoding(name: str, allow_download: bool = False):
    """``tiktoken.get_encoding(name)``, but only from the local cache unless ``allow_download``.

    Raises ``EncodingUnavailable`` naming the missing files and how to fetch them.
    """
    import tiktoken

    missing = missing_files(name)
    if missing and not allow_download:
        folder = tiktoken_cache_dir()
        where = (
            "caching is switched off (TIKTOKEN_CACHE_DIR is empty)"
            if folder is None
            else (f"its files are not in tiktoken's cache {folder}")
        )
        raise EncodingUnavailable(
            f"the tiktoken encoding {name!r} is not available offline: {where}. "
            f"Missing: {', '.join(missing)}. On a machine with internet, run "
            f"`python -c \"import tiktoken; tiktoken.get_encoding('{name}')\"` once (or call "
            f"cached_encoding({name!r}, allow_download=True)); set TIKTOKEN_CACHE_DIR to keep "
            "the files somewhere permanent, and copy that folder to offline machines."
        )
    return tiktoken.get_encoding(name)
