"""Cached course runs: results that take minutes to make, made once and then read back.

Chapters 12 and 13 train small models of their own (an in-context learner, scratchpad
arithmetic, soft prompts, an agent, a distilled student, ...). Like the course checkpoints
(``course_models``), each such *run* has a name and a *provenance*: a JSON-able dict of
everything its result depends on (recipe fields, the checkpoints it starts from, torch's
version). ``cached_run`` returns the run's folder under ``cache_dir()/course_models/NAME``,
building it first when it is missing, damaged or made by another provenance::

    def build(out: Path) -> dict:
        ...                      # train, write model.safetensors etc. into ``out``
        return {"figures": {...}}

    folder = cached_run("gpt-tiny-icl", {"recipe": asdict(cfg)}, build)
    record = run_record(folder)   # provenance + what build returned + seconds, threads, date

``build`` writes into a temporary folder that is renamed into place only when complete
(``run.json`` is written last), under the same per-name lock as the course checkpoints, so two
processes asking at once build once and both read the same complete folder.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from llmcourse.data import cache_dir

RUN_FILE = "run.json"


def run_folder(name: str) -> Path:
    """Where the run ``name`` is cached (it may not exist yet)."""
    return cache_dir() / "course_models" / name


def torch_version() -> str:
    """torch's version without the local build tag (``2.13.0``, not ``2.13.0+cpu``): part of
    every provenance, since kernels and defaults change between releases."""
    return torch.__version__.split("+")[0]


def _matches(folder: Path, provenance: dict[str, Any]) -> bool:
    try:
        record = json.loads((folder / RUN_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    stored = record.get("provenance")
    return stored == json.loads(json.dumps(provenance))  # compare as JSON would store it


def cached_run(
    name: str, provenance: dict[str, Any], build: Callable[[Path], dict[str, Any]]
) -> Path:
    """The folder of run ``name`` made by ``provenance`` (JSON-able), calling ``build(tmp)``
    first when the cache lacks it; ``build`` writes its files into ``tmp`` and returns a dict
    of results (figures, curves) that ``run_record`` gives back later."""
    from llmcourse.course_models import cache_lock

    folder = run_folder(name)
    if _matches(folder, provenance):
        return folder
    with cache_lock(name):
        if _matches(folder, provenance):  # built meanwhile by another process
            return folder
        tmp = folder.with_name(f"{name}.tmp-{uuid.uuid4().hex[:8]}")
        tmp.mkdir(parents=True)
        try:
            began = time.perf_counter()
            results = build(tmp)
            record = {
                "name": name,
                "provenance": provenance,
                **results,
                "seconds": round(time.perf_counter() - began, 1),
                "threads": torch.get_num_threads(),
                "trained_on": time.strftime("%Y-%m-%d %H:%M:%S"),
            }
            (tmp / RUN_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
            shutil.rmtree(folder, ignore_errors=True)
            os.rename(tmp, folder)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return folder


def run_record(folder: str | Path) -> dict[str, Any]:
    """What ``cached_run`` stored in ``folder/run.json``: ``name``, ``provenance``, the
    results ``build`` returned, ``seconds``, ``threads`` and ``trained_on``."""
    return json.loads((Path(folder) / RUN_FILE).read_text(encoding="utf-8"))
