"""`llmcourse.course_models`: a shortened recipe trained into a temporary cache, then loaded in
well under a second; a changed recipe retrains, a damaged file is named and retrained, two
callers at once train once, and the command line lists the models."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from llmcourse import course_models as cm
from llmcourse.runtime import torch_threads

NAME = "gpt-tiny-tasks"  # its byte token files build in about a second


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    with torch_threads(1):
        yield


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LLMCOURSE_CACHE_DIR", str(tmp_path))
    return tmp_path


def test_trained_once_then_loaded_fast(cache: Path) -> None:
    model, tok = cm.load(NAME, steps=3, device="cpu")
    folder = cm.path(NAME)
    assert folder == cache / "course_models" / NAME
    assert {"model.safetensors", "config.json", "tokenizer.json", "metrics.csv", "loss.png",
            "recipe.json"} <= {p.name for p in folder.iterdir()}  # fmt: skip
    assert not list(folder.glob("train_state*"))  # the optimizer's state is not kept
    saved = cm.info(NAME)
    assert saved["fingerprint"] == cm.recipe(NAME, 3).fingerprint() != cm.recipe(NAME).fingerprint()
    assert saved["train"]["steps"] == 3 and saved["seconds"] > 0
    assert cm.metrics(NAME)["step"][-1] == 3
    began = time.perf_counter()
    again, tok2 = cm.load(NAME, steps=3, device="cpu")
    assert time.perf_counter() - began < 1.0  # the cache, not a second training
    ids = torch.tensor([tok.encode("### Instruction:\nWhat is 2 plus 3?\n### Response:\n")])
    with torch.no_grad():
        assert torch.equal(model(ids), again(ids))
    assert tok2.n_vocab == 257 and tok2.decode([*tok2.encode("7+5=12"), 256]) == (
        "7+5=12<|endoftext|>"
    )


def test_a_changed_recipe_retrains(cache: Path) -> None:
    first, _ = cm.load(NAME, steps=2, device="cpu")
    stamp = cm.info(NAME)["fingerprint"]
    second, _ = cm.load(NAME, steps=3, device="cpu")  # another recipe: not the stale weights
    assert cm.info(NAME)["fingerprint"] != stamp
    assert not torch.equal(first.lm_head.weight, second.lm_head.weight)


def test_a_damaged_file_is_named_and_retrained(cache: Path) -> None:
    cm.load(NAME, steps=2, device="cpu")
    weights = cm.path(NAME) / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:500])
    with pytest.warns(UserWarning, match=r"gpt-tiny-tasks is damaged.*model\.safetensors"):
        model, _ = cm.load(NAME, steps=2, device="cpu")
    assert weights.stat().st_size > 100_000 and not model.training


def test_two_callers_at_once_train_once(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runs = []
    real = cm._train_into

    def counted(recipe: cm.Recipe, folder: Path) -> None:
        runs.append(recipe.name)
        time.sleep(0.5)  # let the other caller arrive while this one holds the lock
        real(recipe, folder)

    monkeypatch.setattr(cm, "_train_into", counted)
    errors = []

    def call() -> None:
        try:
            cm.train(NAME, steps=2)
        except Exception as err:
            errors.append(err)

    threads = [threading.Thread(target=call) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors and runs == [NAME]
    assert [p.name for p in (cache / "course_models").iterdir() if ".tmp" in p.name] == []
    cm.load(NAME, steps=2, device="cpu")


def test_names_errors_and_command_line(cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert set(cm.list_models()) == {"gpt-tiny-text", "gpt-tiny-tasks"}
    assert cm.recipe("gpt-tiny-text").data == "text-mix"
    assert cm.recipe("gpt-tiny-tasks").train.tokenizer == "bytes-eot"
    with pytest.raises(KeyError, match="no course model 'gpt-huge'"):
        cm.load("gpt-huge")
    with pytest.raises(FileNotFoundError, match="not trained yet"):
        cm.info(NAME)
    assert cm.main(["--list"]) == 0
    out = capsys.readouterr().out
    assert "gpt-tiny-text" in out and "not trained yet" in out


def test_all_trains_the_bases_before_their_fine_tunes(monkeypatch: pytest.MonkeyPatch) -> None:
    import llmcourse.rlhf as rlhf
    import llmcourse.sft as sft

    order: list[str] = []
    monkeypatch.setattr(cm, "train", lambda name: order.append(name))
    monkeypatch.setattr(sft, "load_sft", lambda name: order.append(name))
    monkeypatch.setattr(rlhf, "load_rlhf", lambda name: order.append(name))
    assert cm.main(["--all", "--threads", str(torch.get_num_threads())]) == 0
    assert order == [*cm.RECIPES, *sft.RECIPES, *rlhf.RECIPES]
    assert all(sft.RECIPES[name].base in cm.RECIPES for name in sft.RECIPES)
