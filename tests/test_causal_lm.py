"""`llmcourse.causal_lm`: the loss shift against a hand loop and Hugging Face, the schedule by
hand, weight-decay groups, a run that learns, exact resume, checkpoints and the command line."""

from __future__ import annotations

import json
import math
import runpy
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from conftest import ROOT
from torch import nn

from llmcourse.causal_lm import (
    TrainConfig,
    causal_lm_loss,
    cosine_lr,
    cosine_scheduler,
    load_trained,
    make_adamw,
    train_causal_lm,
    weight_decay_groups,
)
from llmcourse.causal_lm.cli import main
from llmcourse.causal_lm.data import step_generator
from llmcourse.causal_lm.flops import flops_per_token, gpu_model, matmul_params, mfu, peak_flops
from llmcourse.checkpoint import CheckpointError
from llmcourse.gpt import GPT, GPTConfig
from llmcourse.llama import Llama, LlamaConfig
from llmcourse.metrics import read_metrics
from llmcourse.runtime import torch_threads

# a model and run small enough for a few steps per second on a loaded CPU
QUICK = TrainConfig(
    corpus="pydoc-topics", tokenizer="bytes", n_layer=2, n_head=2, n_embd=32, seq_len=32,
    batch_size=8, steps=8, lr=3e-3, min_lr=3e-4, warmup=2, log_every=1, eval_every=4,
    eval_batches=1, checkpoint_every=4, device="cpu",
)  # fmt: skip


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """These models are far too small to gain from a second thread, and on a busy machine the
    threads' barriers cost ten times the work."""
    with torch_threads(1):
        yield


def rand_logits(b: int, t: int, v: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(b, t, v, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------------------
# The loss
# ------------------------------------------------------------------------------------------


def hand_loss(logits: torch.Tensor, ids: torch.Tensor, ignore: int = -100) -> float:
    """Position by position: -log p(next token), averaged over the counted targets."""
    total, count = 0.0, 0
    for b in range(ids.shape[0]):
        for t in range(ids.shape[1] - 1):
            target = int(ids[b, t + 1])
            if target == ignore:
                continue
            log_probs = logits[b, t].double().log_softmax(-1)
            total -= float(log_probs[target])
            count += 1
    return total / count


def test_loss_is_the_shifted_cross_entropy() -> None:
    logits = rand_logits(2, 6, 11)
    ids = torch.randint(0, 11, (2, 6), generator=torch.Generator().manual_seed(1))
    assert causal_lm_loss(logits, ids).item() == pytest.approx(hand_loss(logits, ids), rel=1e-5)
    # a training window: the model read ids[:, :-1], all its positions have a target
    window = torch.cat([ids, torch.tensor([[3], [7]])], dim=1)
    assert causal_lm_loss(logits, window).item() == pytest.approx(
        hand_loss(torch.cat([logits, logits[:, :1]], 1), window), rel=1e-5
    )
    masked = ids.clone()
    masked[0, 2:4] = -100
    assert causal_lm_loss(logits, masked).item() == pytest.approx(
        hand_loss(logits, masked), rel=1e-5
    )
    # the unshifted loss is a different number: the shift is really there
    unshifted = nn.functional.cross_entropy(logits.reshape(-1, 11), ids.reshape(-1)).item()
    assert abs(unshifted - causal_lm_loss(logits, ids).item()) > 1e-3


def test_loss_rejects_shapes_that_do_not_fit() -> None:
    with pytest.raises(ValueError, match="do not fit"):
        causal_lm_loss(rand_logits(2, 6, 11), torch.zeros(2, 8, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\(B, T, V\)"):
        causal_lm_loss(torch.zeros(6, 11), torch.zeros(2, 6, dtype=torch.long))


def test_loss_equals_hugging_face_gpt2_with_labels() -> None:
    import transformers

    torch.manual_seed(0)
    config = transformers.GPT2Config(
        vocab_size=50, n_positions=16, n_embd=32, n_layer=2, n_head=4, attn_implementation="sdpa"
    )
    hf = transformers.GPT2LMHeadModel(config).eval()
    ids = torch.randint(0, 50, (3, 12), generator=torch.Generator().manual_seed(2))
    labels = ids.clone()
    labels[1, 5:] = -100
    with torch.no_grad():
        out = hf(ids, labels=labels)
    torch.testing.assert_close(causal_lm_loss(out.logits, labels), out.loss)
    # and through our GPT holding the same weights
    ours = GPT.from_hf(hf)
    with torch.no_grad():
        torch.testing.assert_close(causal_lm_loss(ours(ids), labels), out.loss)


# ------------------------------------------------------------------------------------------
# Optimizer and schedule
# ------------------------------------------------------------------------------------------


def test_warmup_then_cosine_by_hand() -> None:
    lr = {s: cosine_lr(s, max_lr=1.0, min_lr=0.1, warmup=4, total=12) for s in range(15)}
    assert [lr[s] for s in range(4)] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert lr[4] == pytest.approx(1.0)  # the cosine starts at its top
    assert lr[6] == pytest.approx(0.1 + 0.9 * (1 + math.cos(math.pi / 4)) / 2)
    assert lr[8] == pytest.approx(0.55)  # half way down
    assert lr[12] == lr[14] == pytest.approx(0.1)
    # the scheduler puts the same values into the optimizer, one per optimizer step
    opt = torch.optim.AdamW([nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = cosine_scheduler(opt, max_lr=1.0, min_lr=0.1, warmup=4, total=12)
    seen = []
    for _ in range(13):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen == pytest.approx([lr[s] for s in range(13)])
    with pytest.raises(ValueError, match="min_lr"):
        cosine_scheduler(opt, max_lr=0.1, min_lr=1.0, warmup=0, total=5)


def test_weight_decay_only_on_matrices_and_embeddings() -> None:
    model = GPT(GPTConfig(vocab_size=40, n_positions=8, n_layer=2, n_head=2, n_embd=16))
    decay, no_decay = weight_decay_groups(model, 0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    names = {id(p): n for n, p in model.named_parameters()}  # the tied head is listed once
    decayed = {names[id(p)] for p in decay["params"]}
    assert decayed == {
        n for n in names.values() if n.endswith("weight") and ".ln_" not in n and "ln_f" not in n
    }
    assert "transformer.wte.weight" in decayed and "transformer.wpe.weight" in decayed
    undecayed = {names[id(p)] for p in no_decay["params"]}
    assert undecayed and all(n.endswith("bias") or "ln_" in n for n in undecayed)
    assert len(decayed) + len(undecayed) == len(list(model.parameters()))
    opt = make_adamw(model, 1e-3, 0.1, device=torch.device("cpu"))
    assert not opt.defaults["fused"]


# ------------------------------------------------------------------------------------------
# FLOPs and MFU
# ------------------------------------------------------------------------------------------


def test_flops_count_the_matrix_parameters() -> None:
    model = GPT(GPTConfig(vocab_size=40, n_positions=8, n_layer=2, n_head=2, n_embd=16))
    # every parameter but the position table (the token table works as the tied head)
    n = sum(p.numel() for p in model.parameters()) - 8 * 16
    assert matmul_params(model) == n
    assert flops_per_token(n, 2, 16, 8) == 6 * n + 12 * 2 * 16 * 8
    untied = nn.Sequential(nn.Embedding(40, 16), nn.Linear(16, 40))
    assert matmul_params(untied) == 16 * 40 + 40


def test_device_peaks_and_unknown_devices() -> None:
    assert gpu_model("NVIDIA H100 80GB HBM3") == "H100 SXM"
    assert gpu_model("NVIDIA H100 PCIe") == "H100 PCIe"
    assert gpu_model("NVIDIA H200") == "H200 SXM"
    assert gpu_model("NVIDIA A100-SXM4-80GB") == gpu_model("NVIDIA A100 80GB PCIe") == "A100"
    assert gpu_model("NVIDIA L4") == "L4"
    for unknown in ("NVIDIA H100 NVL", "NVIDIA A10G", "NVIDIA GeForce RTX 4090", "Tesla T4"):
        assert gpu_model(unknown) is None
    assert peak_flops("cpu") is None and mfu(1e5, 1e9, None) is None
    assert mfu(1000.0, 1e9, 1e13) == pytest.approx(0.1)


# ------------------------------------------------------------------------------------------
# Training runs
# ------------------------------------------------------------------------------------------


def test_batches_depend_on_seed_and_step_only() -> None:
    a = torch.randint(0, 10**6, (4,), generator=step_generator(0, 5))
    torch.manual_seed(123)  # the global generator plays no part
    assert torch.equal(a, torch.randint(0, 10**6, (4,), generator=step_generator(0, 5)))
    assert not torch.equal(a, torch.randint(0, 10**6, (4,), generator=step_generator(0, 6)))
    assert not torch.equal(a, torch.randint(0, 10**6, (4,), generator=step_generator(1, 5)))


def test_a_tiny_run_learns(tmp_path: Path) -> None:
    cfg = QUICK.replace(steps=60, warmup=5, eval_every=60, checkpoint_every=0, out=str(tmp_path))
    history = train_causal_lm(cfg)
    first, last = history["train_loss"][0], sum(history["train_loss"][-5:]) / 5
    assert first == pytest.approx(math.log(256), abs=0.3)  # uniform over the bytes at the start
    assert last < first - 2.0, (first, last)
    assert history["val_loss"][-1] < first - 2.0
    columns = read_metrics(tmp_path / "metrics.csv")
    assert columns["step"] == list(map(float, range(1, 61)))
    assert all(v > 0 for v in columns["tokens_per_s"]) and "mfu" not in columns  # CPU: no peak
    assert (tmp_path / "loss.png").stat().st_size > 0


def test_gradient_accumulation_equals_the_whole_batch() -> None:
    torch.manual_seed(0)
    whole = GPT(GPTConfig(vocab_size=256, n_positions=32, n_layer=2, n_head=2, n_embd=32))
    split = GPT(GPTConfig(vocab_size=256, n_positions=32, n_layer=2, n_head=2, n_embd=32))
    split.load_state_dict(whole.state_dict())
    a = train_causal_lm(QUICK.replace(steps=3, eval_every=0), model=whole)
    b = train_causal_lm(QUICK.replace(steps=3, eval_every=0, batch_size=4, accumulate=2), split)
    assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
    for p, q in zip(whole.parameters(), split.parameters(), strict=True):
        torch.testing.assert_close(p, q, atol=1e-5, rtol=1e-4)


def test_resumed_run_equals_an_uninterrupted_one(tmp_path: Path) -> None:
    cfg = QUICK.replace(dropout=0.1)  # dropout draws from the generator the checkpoint keeps
    straight = train_causal_lm(cfg.replace(out=str(tmp_path / "a")))
    first = train_causal_lm(cfg.replace(out=str(tmp_path / "b"), stop_after=5))
    assert first["step"] == [1, 2, 3, 4, 5]
    rest = train_causal_lm(cfg.replace(out=str(tmp_path / "b"), resume=True))
    assert rest["step"] == [6, 7, 8]
    assert first["train_loss"] + rest["train_loss"] == straight["train_loss"]
    assert rest["val_loss"] == straight["val_loss"][-1:]
    assert read_metrics(tmp_path / "b" / "metrics.csv")["step"] == list(map(float, range(1, 9)))
    a, _ = load_trained(tmp_path / "a")
    b, _ = load_trained(tmp_path / "b")
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(p, q), name


# ------------------------------------------------------------------------------------------
# Saved models
# ------------------------------------------------------------------------------------------


def small_model(arch: str) -> nn.Module:
    torch.manual_seed(0)
    if arch == "gpt":
        return GPT(GPTConfig(vocab_size=256, n_positions=32, n_layer=2, n_head=2, n_embd=32))
    config = LlamaConfig(
        vocab_size=256, dim=32, n_layer=2, n_head=4, n_kv_heads=2, hidden_dim=64, max_seq_len=32
    )
    return Llama(config)


@pytest.fixture(scope="module", params=["gpt", "llama"])
def trained(tmp_path_factory: pytest.TempPathFactory, request) -> tuple[Path, nn.Module]:
    arch = request.param
    out = tmp_path_factory.mktemp(arch)
    model = small_model(arch)
    with torch_threads(1):
        train_causal_lm(QUICK.replace(arch=arch, steps=4, out=str(out)), model=model)
    return out, model


def test_load_trained_gives_the_same_model_and_tokenizer(
    trained: tuple[Path, nn.Module],
) -> None:
    out, model = trained
    arch = "gpt" if isinstance(model, GPT) else "llama"
    config = json.loads((out / "config.json").read_text())
    assert config["architecture"] == arch and config["tokenizer"]["kind"] == "bytes"
    loaded, tokenizer = load_trained(out)
    assert type(loaded) is type(model) and not loaded.training
    ids = torch.tensor([tokenizer.encode("def f(x):\n    return x")])
    with torch.no_grad():
        assert torch.equal(loaded(ids), model(ids))
    assert tokenizer.decode(ids[0].tolist()) == "def f(x):\n    return x"
    if arch == "gpt":
        assert loaded.lm_head.weight is loaded.transformer.wte.weight  # still tied
        from safetensors import safe_open

        with safe_open(out / "model.safetensors", "pt") as f:
            assert "lm_head.weight" not in set(f.keys())  # the tied tensor is stored once


def test_corrupt_or_foreign_files_give_clear_errors(
    trained: tuple[Path, nn.Module], tmp_path: Path
) -> None:
    out, _ = trained
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("config.json", "tokenizer.json"):
        (broken / name).write_bytes((out / name).read_bytes())
    (broken / "model.safetensors").write_bytes((out / "model.safetensors").read_bytes()[:300])
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        load_trained(broken)
    from llmcourse.causal_lm import save_trained

    save_trained(broken, nn.Linear(2, 2))  # weights of some other model
    with pytest.raises(CheckpointError, match=r"does not fit .* unknown \['bias', 'weight'\]"):
        load_trained(broken)
    (broken / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_embd": 32}))
    with pytest.raises(CheckpointError, match="not an llmcourse causal-LM config"):
        load_trained(broken)
    with pytest.raises(CheckpointError, match="no trained-model folder"):
        load_trained(tmp_path / "nowhere")


# ------------------------------------------------------------------------------------------
# Command line
# ------------------------------------------------------------------------------------------


def test_cli_help(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "llmcourse.gpt", "train", "--help"],
        capture_output=True, text=True, cwd=ROOT, check=True,
    )  # fmt: skip
    assert "--resume" in done.stdout and "--preset" in done.stdout
    monkeypatch.setattr(sys, "argv", ["llmcourse.llama", "train", "--help"])
    with pytest.raises(SystemExit) as exit_:
        runpy.run_module("llmcourse.llama", run_name="__main__")
    assert exit_.value.code == 0
    assert "python -m llmcourse.llama" in capsys.readouterr().out


def test_cli_runs_three_steps(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["train", "--preset", "tiny", "--out", str(tmp_path), "--steps", "3", "--warmup", "1"]
    small = ["--n-layer", "1", "--n-embd", "32", "--seq-len", "16", "--batch-size", "2"]
    rest = ["--corpus", "pydoc-topics", "--tokenizer", "bytes", "--device", "cpu", "--no-progress"]
    assert main("gpt", argv + small + rest) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["step"] == 3 and math.isfinite(result["train_loss"])
    assert {"model.safetensors", "config.json", "tokenizer.json", "train_state.pt"} <= {
        p.name for p in tmp_path.iterdir()
    }
    assert main("gpt", [*argv, "--n-head", "3"]) == 2  # 128 is not divisible by 3
    assert "not divisible" in capsys.readouterr().err
