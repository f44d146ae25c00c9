"""`llmcourse.pretrain` trainer: WSD by hand, token-file batches against the file, a resumed run
bit-identical to an uninterrupted one (dropout on), damaged and foreign checkpoints, the command
line, and a 2-process DDP run under torchrun equal to one process on the combined batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT
from torch import nn

from llmcourse.causal_lm import TrainConfig, load_trained
from llmcourse.causal_lm.data import ByteTokenizer, get_tokenizer, load_tokenizer, save_tokenizer
from llmcourse.causal_lm.optim import cosine_lr, lr_scheduler, wsd_lr
from llmcourse.checkpoint import CheckpointError, previous_path
from llmcourse.metrics import read_metrics
from llmcourse.pretrain.__main__ import main
from llmcourse.pretrain.data import corpus_documents
from llmcourse.pretrain.tokenfile import write_token_file
from llmcourse.pretrain.trainer import TokenFileBatches, pretrain
from llmcourse.runtime import torch_threads

QUICK = TrainConfig(
    tokenizer="bytes-eot", n_layer=2, n_head=2, n_embd=32, seq_len=32, batch_size=4, steps=15,
    lr=3e-3, min_lr=3e-4, warmup=3, log_every=1, eval_every=5, eval_batches=1,
    checkpoint_every=3, device="cpu", bf16=False,
)  # fmt: skip


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Byte token files of Python's help topics: 70 documents to train on, 9 held out."""
    folder = tmp_path_factory.mktemp("tokens")
    docs = corpus_documents("pydoc-topics")
    tok = ByteTokenizer(eot=True)
    write_token_file(folder / "train.bin", docs[:70], tok, name="bytes-eot")
    write_token_file(folder / "val.bin", docs[70:], tok, name="bytes-eot")
    return folder


# ------------------------------------------------------------------------------------------
# Schedules and data
# ------------------------------------------------------------------------------------------


def test_wsd_by_hand_and_in_the_scheduler() -> None:
    lr = [wsd_lr(s, max_lr=1.0, min_lr=0.1, warmup=2, total=10, decay_fraction=0.3) for s in
          range(12)]  # fmt: skip
    # warm-up 0.5, 1; stable until step 7 = 10 - 3; then a straight line to 0.1 at step 10
    assert lr == pytest.approx([0.5, 1, 1, 1, 1, 1, 1, 1, 0.7, 0.4, 0.1, 0.1])
    assert lr[:2] == pytest.approx([cosine_lr(s, max_lr=1, min_lr=0.1, warmup=2, total=10)
                                    for s in range(2)])  # fmt: skip
    opt = torch.optim.AdamW([nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = lr_scheduler(opt, "wsd", max_lr=1.0, min_lr=0.1, warmup=2, total=10,
                         decay_fraction=0.3)  # fmt: skip
    seen = []
    for _ in range(11):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen == pytest.approx(lr[:11])
    with pytest.raises(ValueError, match="unknown schedule"):
        lr_scheduler(opt, "linear", max_lr=1.0, min_lr=0.1, warmup=2, total=10)
    with pytest.raises(ValueError, match="schedule"):
        TrainConfig(schedule="step").check()


def test_token_file_windows_are_slices_of_the_file(data: Path) -> None:
    batches = TokenFileBatches.open(data, ByteTokenizer(eot=True))
    assert batches.vocab_size == 257
    windows = batches.train_windows(step=4, count=6, length=33, seed=1)
    starts = batches.train.window_starts(4, 6, 32, seed=1)
    tokens = np.fromfile(data / "train.bin", dtype=np.uint16).astype(np.int64)
    for row, start in zip(windows, starts.tolist(), strict=True):
        assert row.tolist() == tokens[start : start + 33].tolist()
    assert torch.equal(windows, batches.train_windows(4, 6, 33, seed=1))  # keyed on the step
    assert not torch.equal(windows, batches.train_windows(5, 6, 33, seed=1))
    val = batches.val_windows(3, 33)
    assert val.shape == (3, 33) and val.max() < 257
    with pytest.raises(ValueError, match="no end-of-text token"):
        TokenFileBatches.open(data, get_tokenizer("bytes"))


def test_bytes_with_end_of_text_round_trips(tmp_path: Path) -> None:
    tok = ByteTokenizer(eot=True)
    text = "12+30=42 é"
    assert tok.encode(text) == list(text.encode()) and tok.n_vocab == 257
    assert tok.decode([*tok.encode(text), 256, *tok.encode("x")]) == text + "<|endoftext|>x"
    save_tokenizer(tok, tmp_path / "t.json")
    assert load_tokenizer(tmp_path / "t.json").eot_token == 256
    assert ByteTokenizer().eot_token is None and ByteTokenizer().n_vocab == 256


# ------------------------------------------------------------------------------------------
# Training, resuming, damaged checkpoints
# ------------------------------------------------------------------------------------------


def run(data: Path, out: Path, **changes) -> dict[str, list[float]]:
    return pretrain(QUICK.replace(data=str(data), out=str(out), **changes))


@pytest.fixture(scope="module")
def straight(data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """15 uninterrupted steps with dropout (which draws from the generator the checkpoint
    keeps) and the WSD schedule."""
    out = tmp_path_factory.mktemp("straight")
    with torch_threads(1):
        history = run(data, out, dropout=0.1, schedule="wsd")
    return out, history


def test_the_run_learns_and_logs(straight: tuple[Path, dict]) -> None:
    out, history = straight
    assert history["train_loss"][0] == pytest.approx(np.log(257), abs=0.3)
    assert history["train_loss"][-1] < history["train_loss"][0] - 1.0
    columns = read_metrics(out / "metrics.csv")
    assert columns["step"] == list(map(float, range(1, 16)))
    assert {"train_loss", "val_loss", "lr", "tokens", "tokens_per_s"} <= set(columns)
    expected = [wsd_lr(s, max_lr=3e-3, min_lr=3e-4, warmup=3, total=15) for s in range(15)]
    assert columns["lr"] == pytest.approx(expected)
    assert columns["tokens"][-1] == 15 * 4 * 32
    assert [s for s, v in zip(columns["step"], columns["val_loss"], strict=True) if v == v] == [
        5.0, 10.0, 15.0,
    ]  # fmt: skip
    assert (out / "loss.png").stat().st_size > 0 and (out / "train_state.pt").is_file()
    assert json.loads((out / "config.json").read_text())["train"]["schedule"] == "wsd"


def test_resumed_run_is_bit_identical(data: Path, straight: tuple[Path, dict], tmp_path) -> None:
    _, full = straight
    first = run(data, tmp_path, dropout=0.1, schedule="wsd", stop_after=7)
    assert first["step"] == list(range(1, 8))
    rest = run(data, tmp_path, dropout=0.1, schedule="wsd", resume=True)
    assert rest["step"] == list(range(8, 16))
    assert first["train_loss"] + rest["train_loss"] == full["train_loss"]  # exactly
    # validation at 5, 10, 15 (and at 7, where the first part stopped)
    logged = read_metrics(tmp_path / "metrics.csv")
    val = {s: v for s, v in zip(logged["step"], logged["val_loss"], strict=True) if v == v}
    assert [val[5], val[10], val[15]] == full["val_loss"] and 7 in val
    a, _ = load_trained(straight[0])
    b, _ = load_trained(tmp_path)
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(p, q), name


def test_damaged_newest_checkpoint_falls_back_to_the_previous(
    data: Path, straight: tuple[Path, dict], tmp_path: Path
) -> None:
    _, full = straight
    run(data, tmp_path, dropout=0.1, schedule="wsd", stop_after=7)  # saves at 3, 6 and 7
    state = tmp_path / "train_state.pt"
    assert torch.load(previous_path(state), weights_only=True)["step"] == 6
    state.write_bytes(state.read_bytes()[:1000])  # a crash of the disk, not of the save
    with pytest.warns(UserWarning, match=r"newest checkpoint is damaged.*step 6.*train_state\.pt"):
        rest = run(data, tmp_path, dropout=0.1, schedule="wsd", resume=True)
    assert rest["step"] == list(range(7, 16))
    assert rest["train_loss"] == full["train_loss"][6:]
    assert read_metrics(tmp_path / "metrics.csv")["step"] == list(map(float, range(1, 16)))


def test_unusable_checkpoints_give_clear_errors(data: Path, tmp_path: Path) -> None:
    run(data, tmp_path, stop_after=4)
    state = tmp_path / "train_state.pt"
    # another model's checkpoint in the folder: neither file fits, both are named
    with pytest.raises(CheckpointError, match=r"train_state\.pt does not fit.*train_state\.prev"):
        run(data, tmp_path, n_embd=48, resume=True)
    state.write_bytes(b"garbage" * 100)
    previous_path(state).write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"no good checkpoint.*train_state\.pt is not a"):
        run(data, tmp_path, resume=True)
    argv = ["--data", str(data), "--out", str(tmp_path), "--resume", "--tokenizer", "bytes-eot",
            "--device", "cpu", "--no-progress"]  # fmt: skip
    assert main(argv) == 2  # the command line says so and exits, no traceback


# ------------------------------------------------------------------------------------------
# Command line and torchrun
# ------------------------------------------------------------------------------------------


def test_help_and_the_data_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    for option in ("--max-steps", "--resume", "--schedule", "--data", "gpt2-124m", "torchrun"):
        assert option in text
    with pytest.raises(SystemExit):
        main(["data", "--help"])
    assert "--val-fraction" in capsys.readouterr().out


def cli_args(data: Path, out: Path, batch: int) -> list[str]:
    return [
        "--data", str(data), "--out", str(out), "--tokenizer", "bytes-eot", "--device", "cpu",
        "--no-progress", "--n-layer", "2", "--n-head", "2", "--n-embd", "32", "--seq-len", "32",
        "--batch-size", str(batch), "--steps", "4", "--warmup", "1", "--eval-every", "2",
        "--eval-batches", "2", "--log-every", "1",
    ]  # fmt: skip


def test_torchrun_two_processes_equal_one_on_the_combined_batch(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "LLMCOURSE_DEVICE": "cpu"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node=2", "-m", "llmcourse.pretrain",
               *cli_args(data, tmp_path / "ddp", 2)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count('"train_loss"') == 1  # only rank 0 reports
    assert main(cli_args(data, tmp_path / "one", 4)) == 0
    ddp = read_metrics(tmp_path / "ddp" / "metrics.csv")
    one = read_metrics(tmp_path / "one" / "metrics.csv")
    assert ddp["step"] == one["step"] == [1.0, 2.0, 3.0, 4.0]
    assert ddp["train_loss"] == pytest.approx(one["train_loss"], rel=1e-5)
    assert ddp["val_loss"][1::2] == pytest.approx(one["val_loss"][1::2], rel=1e-5)
    assert ddp["tokens"] == one["tokens"]  # 2 ranks x 2 windows = 4 windows per step
    a, _ = load_trained(tmp_path / "ddp")
    b, _ = load_trained(tmp_path / "one")
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        torch.testing.assert_close(p, q, atol=1e-5, rtol=1e-4, msg=name)
