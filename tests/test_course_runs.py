"""``course_runs.cached_run``: built once, reused, rebuilt when its provenance changes or its
folder is damaged, and never left half-written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmcourse import course_runs


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMCOURSE_CACHE_DIR", str(tmp_path))


def _counting_build(calls: list[Path]):
    def build(out: Path) -> dict:
        calls.append(out)
        (out / "weights.txt").write_text(str(len(calls)))
        return {"figures": {"accuracy": 0.5}}

    return build


def test_built_once_then_read_back():
    calls: list[Path] = []
    first = course_runs.cached_run("run-a", {"seed": 1}, _counting_build(calls))
    second = course_runs.cached_run("run-a", {"seed": 1}, _counting_build(calls))
    assert first == second == course_runs.run_folder("run-a")
    assert len(calls) == 1 and calls[0] != first  # built in a temporary folder
    record = course_runs.run_record(first)
    assert record["provenance"] == {"seed": 1}
    assert record["figures"] == {"accuracy": 0.5}
    assert record["name"] == "run-a" and record["seconds"] >= 0
    assert (first / "weights.txt").read_text() == "1"


def test_rebuilt_for_another_provenance_or_a_damaged_record():
    calls: list[Path] = []
    folder = course_runs.cached_run("run-b", {"seed": 1}, _counting_build(calls))
    course_runs.cached_run("run-b", {"seed": 2}, _counting_build(calls))
    assert len(calls) == 2 and (folder / "weights.txt").read_text() == "2"
    (folder / course_runs.RUN_FILE).write_text("{not json")
    course_runs.cached_run("run-b", {"seed": 2}, _counting_build(calls))
    assert len(calls) == 3
    assert json.loads((folder / course_runs.RUN_FILE).read_text())["provenance"] == {"seed": 2}


def test_a_failed_build_leaves_no_folder():
    def broken(out: Path) -> dict:
        (out / "partial.bin").write_bytes(b"half")
        raise RuntimeError("out of memory")

    with pytest.raises(RuntimeError, match="out of memory"):
        course_runs.cached_run("run-c", {"seed": 1}, broken)
    parent = course_runs.run_folder("run-c").parent
    assert [p.name for p in parent.iterdir() if p.name.startswith("run-c") and p.is_dir()] == []


def test_later_chapters_register_distinct_runs():
    """Every module that ``course_models --all`` walks exposes ``COURSE_RUNS``, and no two runs
    (nor a run and a course checkpoint) share a cache folder."""
    import importlib

    from llmcourse import course_models
    from llmcourse.rlhf import RECIPES as RLHF_RECIPES
    from llmcourse.sft import RECIPES as SFT_RECIPES

    names = [*course_models.RECIPES, *SFT_RECIPES, *RLHF_RECIPES]
    for module in course_models.LATER_RUNS:
        runs = importlib.import_module(module).COURSE_RUNS
        assert runs and all(callable(build) for build in runs.values()), module
        names += list(runs)
    assert len(names) == len(set(names)), sorted(names)
