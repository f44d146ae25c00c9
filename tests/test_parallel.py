"""`llmcourse.parallel` in a real 2-process gloo group, against one process on the whole batch.

One group is spawned for the whole module (the ``group`` fixture runs every check in it), so
the processes start once. The oracles are computed here: the unsplit model or layer, seeded
the same way, with torch.autograd and torch.optim in a single process.
"""

from __future__ import annotations

import time

import pytest
import torch
from torch import nn

from llmcourse.parallel import memory, pipeline, tensor_parallel
from llmcourse.parallel.__main__ import main
from llmcourse.parallel.checks import (
    BATCH,
    DTYPE,
    ZERO_METHODS,
    run_checks,
    tp_input,
    tp_layers,
    tp_probe,
)
from llmcourse.parallel.launch import spawn
from llmcourse.parallel.toy import toy_batch, toy_model
from llmcourse.transformer.blocks import FeedForward

SEED = 3
WORLD = 2
TIGHT = {"atol": 1e-12, "rtol": 1e-12}


@pytest.fixture(scope="module")
def group() -> list[dict]:
    checks = ("ddp", "tp", "pipeline", "pipeline_1f1b", "zero")
    return spawn(run_checks, WORLD, args=(SEED, checks), backend="gloo", timeout_s=240)


def full_batch_grads(model: nn.Module) -> tuple[float, dict[str, torch.Tensor]]:
    x, y = toy_batch(SEED, BATCH, dtype=DTYPE)
    loss = nn.functional.mse_loss(model(x), y)
    loss.backward()
    return loss.item(), {n: p.grad for n, p in model.named_parameters()}


def assert_dicts_close(got: dict, want: dict) -> None:
    assert set(got) == set(want)
    for name in want:
        torch.testing.assert_close(got[name], want[name], **TIGHT, msg=name)


# ------------------------------------------------------------------------------------------
# Data parallel
# ------------------------------------------------------------------------------------------


def test_ddp_and_manual_all_reduce_equal_one_process_on_the_whole_batch(group) -> None:
    reference = toy_model(SEED)
    _, grads = full_batch_grads(reference)
    # the ranks started from different weights (seed + rank): only a broadcast makes them agree
    assert not torch.equal(toy_model(SEED + 1)[0][0].weight, reference[0][0].weight)
    optimizer = torch.optim.SGD(reference.parameters(), lr=0.05)
    x, y = toy_batch(SEED, BATCH, dtype=DTYPE)
    losses = []
    reference.zero_grad()
    for _ in range(3):
        optimizer.zero_grad()
        loss = nn.functional.mse_loss(reference(x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    for rank_result in group:
        for sync in ("ddp", "manual"):
            run = rank_result["ddp"][sync]
            assert_dicts_close(run["first_grads"], grads)
            assert_dicts_close(run["final_state"], reference.state_dict())
            assert run["losses"] == pytest.approx(losses, rel=1e-12)
        # the hand-written all-reduce is what DDP does
        assert_dicts_close(
            rank_result["ddp"]["manual"]["first_grads"], rank_result["ddp"]["ddp"]["first_grads"]
        )


def test_ring_all_reduce_sums_and_sends_two_n_minus_one_over_n() -> None:
    from llmcourse.parallel import ring_all_reduce

    generator = torch.Generator().manual_seed(0)
    for n in (1, 2, 3, 4, 6):
        # integer values: every summation order gives the same floats, so equality is exact
        tensors = [torch.randint(-50, 50, (4, 6), generator=generator).double() for _ in range(n)]
        results, sent = ring_all_reduce(tensors)
        for result in results:
            assert torch.equal(result, torch.stack(tensors).sum(0))
        assert sent == [2 * (n - 1) * 24 // n] * n  # 24 elements cut into n equal chunks
    _, sent = ring_all_reduce([torch.zeros(10) for _ in range(4)])  # chunks of 3, 3, 2, 2
    assert sum(sent) == 2 * 3 * 10  # each of the 2 (n - 1) steps sends every chunk once
    with pytest.raises(ValueError, match="same shape"):
        ring_all_reduce([torch.zeros(3), torch.zeros(4)])


def test_shard_checks_the_split() -> None:
    from llmcourse.parallel import shard

    batch = torch.arange(12).view(6, 2)
    assert torch.equal(torch.cat([shard(batch, r, 3) for r in range(3)]), batch)
    with pytest.raises(ValueError, match="does not split evenly"):
        shard(batch, 0, 4)
    with pytest.raises(ValueError, match="outside"):
        shard(batch, 3, 3)


# ------------------------------------------------------------------------------------------
# Tensor parallel
# ------------------------------------------------------------------------------------------

# Which dimension of each full weight a rank's shard is cut from (None: whole on every rank).
COLUMN = {"weight": 0, "bias": 0}
ROW = {"weight": 1, "bias": None}
SPLITS = {
    "column": {"": COLUMN},
    "mlp": {"fc1": COLUMN, "fc2": ROW},
    "attention": {"q_proj": COLUMN, "k_proj": COLUMN, "v_proj": COLUMN, "out_proj": ROW},
}
FULL_NAMES = {"fc1": "linear1", "fc2": "linear2"}


def test_tensor_parallel_layers_equal_the_unsplit_ones(group) -> None:
    layers = tp_layers(SEED)
    for kind, layer in layers.items():
        x = tp_input(SEED).requires_grad_()
        out = layer(x, causal=True)[0] if kind == "attention" else layer(x)
        (out * tp_probe(out.shape, SEED)).sum().backward()
        full_grads = {n: p.grad for n, p in layer.named_parameters()}
        for rank, rank_result in enumerate(group):
            got = rank_result["tp"][kind]
            torch.testing.assert_close(got["output"], out.detach(), **TIGHT)
            torch.testing.assert_close(got["input_grad"], x.grad, **TIGHT)
            assert len(got["grads"]) == len(full_grads)
            for name, grad in got["grads"].items():
                module, _, leaf = name.rpartition(".")
                full_name = ".".join(filter(None, (FULL_NAMES.get(module, module), leaf)))
                dim = SPLITS[kind][module][leaf]
                want = full_grads[full_name]
                want = want if dim is None else want.chunk(WORLD, dim=dim)[rank]
                torch.testing.assert_close(grad, want, **TIGHT, msg=f"{kind} {name}")


def test_simulated_split_matches_the_mlp() -> None:
    torch.manual_seed(0)
    ff = FeedForward(8, 16).double()
    x = torch.randn(3, 4, 8, dtype=torch.float64)
    for world_size in (1, 2, 4, 8):
        got = tensor_parallel.simulate_mlp(x, ff.linear1, ff.linear2, world_size)
        torch.testing.assert_close(got, ff(x), **TIGHT)
    a = torch.randn(8, 6, dtype=torch.float64)
    columns = tensor_parallel.column_parallel_matmul(x, a, 3)
    assert [c.shape[-1] for c in columns] == [2, 2, 2]
    torch.testing.assert_close(torch.cat(columns, dim=-1), x @ a, **TIGHT)
    partial = tensor_parallel.row_parallel_matmul(list(x.chunk(2, dim=-1)), a, 2)
    torch.testing.assert_close(partial[0] + partial[1], x @ a, **TIGHT)
    assert not torch.allclose(partial[0], x @ a)  # one rank alone has only part of the sum
    with pytest.raises(ValueError, match="does not split evenly"):
        tensor_parallel.column_parallel_matmul(x, a, 4)


# ------------------------------------------------------------------------------------------
# Pipeline parallel
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["gpipe", "1f1b"])
def test_bubble_measured_from_the_schedule_matches_the_formula(kind: str) -> None:
    make = pipeline.gpipe_schedule if kind == "gpipe" else pipeline.one_f_one_b_schedule
    for p in (1, 2, 3, 4):
        for m in (1, 2, 3, 4, 8, 16):
            schedule = make(p, m)
            assert schedule.n_steps == 2 * (m + p - 1)
            assert pipeline.bubble_fraction(schedule) == pytest.approx((p - 1) / (m + p - 1))
            peaks = [pipeline.peak_in_flight(schedule, s) for s in range(p)]
            # GPipe holds every micro-batch's activations; 1F1B at most p - s on stage s
            assert peaks == ([m] * p if kind == "gpipe" else [min(p - s, m) for s in range(p)])
    assert str(pipeline.gpipe_schedule(2, 2)).splitlines() == [
        "stage 0 | F0 F1 .  .  B0 B1",
        "stage 1 | .  F0 F1 B0 B1 . ",
    ]


def test_schedule_rejects_impossible_orders() -> None:
    orders = pipeline.gpipe_order(2, 2)
    orders[1] = [orders[1][2], *orders[1][:2], orders[1][3]]  # stage 1 starts with B0
    with pytest.raises(ValueError, match="deadlocks"):
        pipeline.build_schedule(orders)
    with pytest.raises(ValueError, match="once"):
        pipeline.build_schedule([[pipeline.Op("F", 0)]])
    with pytest.raises(ValueError, match="non-empty stages"):
        pipeline.split_stages(toy_model(0), 5)


@pytest.mark.parametrize("kind", ["gpipe", "1f1b"])
@pytest.mark.parametrize("n_stages", [2, 3, 4])
def test_simulated_pipeline_equals_the_unsplit_model(kind: str, n_stages: int) -> None:
    loss, grads = full_batch_grads(toy_model(SEED))
    make = pipeline.gpipe_schedule if kind == "gpipe" else pipeline.one_f_one_b_schedule
    x, y = toy_batch(SEED, BATCH, dtype=DTYPE)
    for m in (1, 2, 4):
        model = toy_model(SEED)
        stages = pipeline.split_stages(model, n_stages)
        got = pipeline.run_simulated(
            stages, pipeline.micro_batches(x, m), pipeline.micro_batches(y, m), make(n_stages, m)
        )
        assert got == pytest.approx(loss, rel=1e-12)
        assert_dicts_close({n: p.grad for n, p in model.named_parameters()}, grads)


@pytest.mark.parametrize("name", ["pipeline", "pipeline_1f1b"])
def test_two_process_pipeline_equals_the_unsplit_model(group, name: str) -> None:
    model = toy_model(SEED)
    loss, grads = full_batch_grads(model)
    stages = pipeline.split_stages(model, WORLD)
    for rank, rank_result in enumerate(group):
        assert rank_result[name]["loss"] == pytest.approx(loss, rel=1e-12)
        want = {
            n: grads_of(stages[rank], model, grads)[n] for n, _ in stages[rank].named_parameters()
        }
        assert_dicts_close(rank_result[name]["grads"], want)


def grads_of(stage: nn.Module, model: nn.Module, grads: dict) -> dict[str, torch.Tensor]:
    """The full model's gradients under the stage's own parameter names."""
    by_id = {id(p): grads[n] for n, p in model.named_parameters()}
    return {n: by_id[id(p)] for n, p in stage.named_parameters()}


# ------------------------------------------------------------------------------------------
# ZeRO and FSDP
# ------------------------------------------------------------------------------------------


def test_sharded_training_equals_adamw_on_one_process(group) -> None:
    model = toy_model(SEED)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.01, weight_decay=0.1)
    x, y = toy_batch(SEED, BATCH, dtype=DTYPE)
    losses = []
    for _ in range(3):
        optimizer.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    final = {n: p.detach() for n, p in model.named_parameters()}
    assert not torch.allclose(final["0.1.weight"], toy_model(SEED)[0][1].weight)  # it moved
    for rank_result in group:
        for method in ZERO_METHODS:
            run = rank_result["zero"][method]
            assert run["losses"] == pytest.approx(losses, rel=1e-12), method
            assert_dicts_close(run["state"], final)


def test_bytes_held_per_rank_match_the_calculator(group) -> None:
    n_params = sum(p.numel() for p in toy_model(SEED).parameters())
    float64_adam = memory.Precision(weight=8, grad=8, optimizer=16)  # fp64 weight, grad, m, v
    stage = {"unsharded": 0, "zero1": 1, "zero2": 2, "fsdp": 3}
    for rank_result in group:
        for method, zero in stage.items():
            want = memory.model_state_bytes(
                n_params, memory.Parallelism(dp=WORLD, zero=zero), float64_adam
            )
            held = rank_result["zero"][method]["bytes"]
            assert (held["weights"], held["gradients"], held["optimizer"]) == (
                want.weights,
                want.gradients,
                want.optimizer,
            ), method
    # PyTorch's ZeroRedundancyOptimizer shards whole parameters, so the split is only roughly even
    torch_zero1 = [r["zero"]["torch_zero1"]["bytes"]["optimizer"] for r in group]
    assert sum(torch_zero1) == 16 * n_params
    assert max(torch_zero1) < 16 * n_params


# ------------------------------------------------------------------------------------------
# The memory calculator
# ------------------------------------------------------------------------------------------


def test_sixteen_bytes_per_parameter_for_adam() -> None:
    for precision in (memory.MIXED_ADAM, memory.FP32_ADAM):
        assert memory.model_state_bytes(1000, precision=precision).total == 16_000
    mixed = memory.model_state_bytes(1e9)
    assert (mixed.weights, mixed.gradients, mixed.optimizer) == (2e9, 2e9, 12e9)


def test_zero_paper_figures() -> None:
    # Rajbhandari et al. 2020, figure 1: 7.5 B parameters, 64 GPUs, K = 12
    gb = [
        memory.model_state_bytes(7.5e9, memory.Parallelism(dp=64, zero=z)).total / memory.GB
        for z in range(4)
    ]
    assert [round(g, 1) for g in gb] == [120.0, 31.4, 16.6, 1.9]


def test_model_parallelism_divides_the_states() -> None:
    base = memory.model_state_bytes(7e9)
    split = memory.model_state_bytes(7e9, memory.Parallelism(tp=8, pp=4, dp=16))
    assert split.total == pytest.approx(base.total / 32)
    both = memory.model_state_bytes(7e9, memory.Parallelism(tp=8, pp=4, dp=16, zero=1))
    assert both.optimizer == pytest.approx(base.optimizer / 32 / 16)
    with pytest.raises(ValueError, match="ZeRO stage"):
        memory.Parallelism(zero=4)


def test_activation_formulas() -> None:
    shape = memory.Activations(seq_len=2048, micro_batch=1, hidden=12288, heads=96, layers=96)
    sbh = 2048 * 12288
    base = memory.activation_bytes_per_layer(shape)
    assert base == sbh * (34 + 5 * 96 * 2048 / 12288)
    # tensor parallel: everything but 10 s b h (LayerNorm inputs, dropout masks...) is split
    assert memory.activation_bytes_per_layer(shape, tp=8) == pytest.approx(
        sbh * (10 + 24 / 8 + 5 * 96 * 2048 / (12288 * 8))
    )
    sp = memory.Activations(**{**shape.__dict__, "sequence_parallel": True})
    assert memory.activation_bytes_per_layer(sp, tp=8) == pytest.approx(base / 8)
    recompute = memory.Activations(**{**shape.__dict__, "recompute": True})
    assert memory.activation_bytes_per_layer(recompute) == 2 * sbh
    flash = memory.Activations(**{**shape.__dict__, "flash_attention": True})
    assert memory.activation_bytes_per_layer(flash) == 34 * sbh
    # 1F1B: p micro-batches of L/p layers on the first stage = L layers' worth, for any p
    full = memory.activation_bytes(shape)
    assert memory.activation_bytes(shape, memory.Parallelism(pp=8)) == pytest.approx(full)
    gpipe = memory.Activations(**{**shape.__dict__, "in_flight": 32})
    assert memory.activation_bytes(gpipe, memory.Parallelism(pp=8)) == pytest.approx(full * 4)


def test_parameter_count_against_transformers_gpt2() -> None:
    transformers = pytest.importorskip("transformers")
    config = transformers.GPT2Config(n_embd=64, n_layer=3, n_head=4, vocab_size=101, n_positions=32)
    model = transformers.GPT2LMHeadModel(config)
    assert memory.transformer_params(64, 3, 101, 32) == sum(p.numel() for p in model.parameters())
    assert memory.transformer_params(768, 12, 50257, 1024) == 124_439_808  # GPT-2 small


# ------------------------------------------------------------------------------------------
# Launching and the command line
# ------------------------------------------------------------------------------------------


def test_a_group_that_does_not_finish_times_out() -> None:
    start = time.monotonic()
    with pytest.raises(TimeoutError, match="did not finish"):
        spawn(time.sleep, 2, args=(600,), timeout_s=3)
    assert time.monotonic() - start < 30
    with pytest.raises(ValueError, match="world_size"):
        spawn(time.sleep, 0)


def test_command_line(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "torchrun" in capsys.readouterr().out
    assert main(["schedule", "--stages", "3", "--micro", "4", "--kind", "1f1b"]) == 0
    out = capsys.readouterr().out
    assert '"bubble_measured": 0.3333333333333333' in out and "stage 2 |" in out
    assert main(["memory", "--preset", "zero-paper", "--zero", "3"]) == 0
    assert '"total": 1.875' in capsys.readouterr().out
    assert main(["memory"]) == 2
    assert "--params" in capsys.readouterr().err
