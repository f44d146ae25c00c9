"""Checkpoints round-trip exactly, are written atomically, and refuse bad or unsafe files."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch
from torch import nn

from llmcourse.checkpoint import CheckpointError, load_checkpoint, save_checkpoint


def trained_pair() -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(3):
        opt.zero_grad()
        model(torch.randn(8, 3)).pow(2).mean().backward()
        opt.step()
    return model, opt


def test_round_trip_restores_model_optimizer_step_and_rng(tmp_path: Path) -> None:
    model, opt = trained_pair()
    path = save_checkpoint(tmp_path / "run" / "ckpt.pt", model, opt, step=3, extra={"lr": 0.01})
    assert not list(path.parent.glob("*.tmp"))
    expected_next = torch.rand(2)  # what the generator draws right after the save

    fresh = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1))
    fresh_opt = torch.optim.AdamW(fresh.parameters(), lr=1e-2)
    info = load_checkpoint(path, fresh, fresh_opt)
    assert info == {"step": 3, "extra": {"lr": 0.01}}
    assert torch.equal(torch.rand(2), expected_next)
    for a, b in zip(model.state_dict().values(), fresh.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert fresh_opt.state_dict()["state"][0]["step"] == opt.state_dict()["state"][0]["step"]
    assert torch.equal(
        fresh_opt.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"]
    )


def test_missing_truncated_and_foreign_files(tmp_path: Path) -> None:
    model, opt = trained_pair()
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path / "absent.pt", model)
    good = save_checkpoint(tmp_path / "good.pt", model, opt)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="not a readable"):
        load_checkpoint(truncated, model)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    with pytest.raises(CheckpointError, match="not an llmcourse checkpoint"):
        load_checkpoint(foreign, model)


class Payload:
    """An object whose unpickling would run code: weights_only loading must refuse it."""

    def __reduce__(self):
        return (print, ("pwned",))


def test_unsafe_pickle_is_refused(tmp_path: Path, capsys) -> None:
    path = tmp_path / "evil.pt"
    with path.open("wb") as f:
        pickle.dump({"format": "llmcourse-checkpoint-v1", "model": Payload()}, f, protocol=2)
    with pytest.raises(CheckpointError, match="unsafe"):
        load_checkpoint(path, nn.Linear(1, 1))
    assert "pwned" not in capsys.readouterr().out


def test_shape_mismatch_and_missing_optimizer_state(tmp_path: Path) -> None:
    model, _ = trained_pair()
    path = save_checkpoint(tmp_path / "c.pt", model)
    with pytest.raises(CheckpointError, match="does not fit"):
        load_checkpoint(path, nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 1)))
    with pytest.raises(CheckpointError, match="no optimizer state"):
        load_checkpoint(path, model, torch.optim.SGD(model.parameters(), lr=0.1))
