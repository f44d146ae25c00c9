"""Shared test helpers: the repository's root, and a fixture that runs torch on one thread."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from llmcourse.runtime import torch_threads

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Torch on one CPU thread for the test (``pytestmark = pytest.mark.usefixtures(...)``)."""
    with torch_threads(1):
        yield
