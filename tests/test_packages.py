"""A package's re-exported names never hide one of its modules: ``from llmcourse.compress
import prune`` must give the module ``prune``, not a function of the same name. Two packages
export on purpose functions named like their modules (pages and earlier code import them so);
they are listed here, and nothing else may join them."""

from __future__ import annotations

import importlib
import pkgutil
import types

import pytest

import llmcourse

PACKAGES = sorted(
    info.name
    for info in pkgutil.iter_modules(llmcourse.__path__, prefix="llmcourse.")
    if info.ispkg
)
FUNCTION_NAMED_LIKE_ITS_MODULE = {
    "llmcourse.bert.finetune",
    "llmcourse.bert.pretrain",
    "llmcourse.evaluate.perplexity",
    "llmcourse.evaluate.rouge",
}


@pytest.mark.parametrize("package", PACKAGES)
def test_no_name_shadows_a_module(package: str) -> None:
    pkg = importlib.import_module(package)
    for info in pkgutil.iter_modules(pkg.__path__):
        if info.name == "__main__" or f"{package}.{info.name}" in FUNCTION_NAMED_LIKE_ITS_MODULE:
            continue
        module = importlib.import_module(f"{package}.{info.name}")
        assert isinstance(getattr(pkg, info.name), types.ModuleType), (
            f"{package}.{info.name} is {getattr(pkg, info.name)!r}, not the module {module}"
        )
