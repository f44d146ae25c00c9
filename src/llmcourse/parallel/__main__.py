"""Command line: pipeline schedules, the memory calculator, and multi-process checks.

Examples::

    python -m llmcourse.parallel schedule --stages 4 --micro 8 --kind 1f1b
    python -m llmcourse.parallel memory --preset zero-paper          # 7.5 B params, 64 GPUs
    python -m llmcourse.parallel memory --params 7e9 --tp 8 --pp 4 --dp 16 --zero 1
    python -m llmcourse.parallel check --world-size 2                # spawns 2 gloo processes
    torchrun --standalone --nproc_per_node=2 -m llmcourse.parallel check --checks ddp tp

``check`` runs data, tensor and pipeline parallelism and ZeRO/FSDP on tiny float64 models in a
real process group and prints, for each, the largest difference from one process on the whole
batch (about 1e-16 when all is well). Under torchrun it joins the launched group instead of
spawning one; multi-node: ``torchrun --nnodes=2 --nproc_per_node=8 --rdzv_backend=c10d
--rdzv_endpoint=HOST:29500 --rdzv_id=JOB -m llmcourse.parallel check``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

import torch
from torch import nn

from . import checks, memory, pipeline
from .launch import init_from_env, spawn
from .toy import toy_batch, toy_model

CHECKS = ("ddp", "tp", "pipeline", "pipeline_1f1b", "zero")
MEMORY_PRESETS = {
    # Rajbhandari et al. 2020, figure 1: 7.5 B parameters, 64-way data parallelism
    "zero-paper": {"params": 7.5e9, "dp": 64},
    "gpt2-124m": {"params": float(memory.transformer_params(768, 12, 50257, 1024)), "dp": 1},
    "llama2-70b": {"params": 70e9, "dp": 8, "tp": 8, "pp": 4},
}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed so that ``--help`` can be tested)."""
    parser = argparse.ArgumentParser(
        prog="python -m llmcourse.parallel",
        description="Parallel training on torch.distributed: pipeline schedules and their "
        "bubble, bytes per rank, and data/tensor/pipeline/ZeRO checks in a real process group.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("Examples::", 1)[1],
    )
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("schedule", help="draw a pipeline schedule and measure its bubble")
    s.add_argument("--stages", type=int, default=4, help="pipeline stages p (4)")
    s.add_argument("--micro", type=int, default=8, help="micro-batches m (8)")
    s.add_argument("--kind", choices=("gpipe", "1f1b"), default="gpipe")
    m = sub.add_parser("memory", help="bytes per rank for a model and a parallel layout")
    m.add_argument("--preset", choices=sorted(MEMORY_PRESETS), help="a model and layout")
    m.add_argument("--params", type=float, help="parameters (overrides the preset's)")
    for name in ("dp", "tp", "pp"):
        m.add_argument(f"--{name}", type=int, help=f"{name} degree (preset's, or 1)")
    m.add_argument("--zero", type=int, choices=(0, 1, 2, 3), help="one ZeRO stage (default: all)")
    m.add_argument("--fp32", action="store_true", help="fp32 Adam instead of mixed precision")
    c = sub.add_parser("check", help="parallel results against one process (tiny models)")
    c.add_argument("--world-size", type=int, default=2, help="processes to spawn (2)")
    c.add_argument("--checks", nargs="+", choices=CHECKS, default=list(CHECKS))
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--timeout", type=float, default=300.0, help="seconds before giving up")
    return parser


def _schedule(args: argparse.Namespace) -> dict[str, Any]:
    make = pipeline.gpipe_schedule if args.kind == "gpipe" else pipeline.one_f_one_b_schedule
    schedule = make(args.stages, args.micro)
    print(schedule)
    return {
        "kind": args.kind,
        "time_steps": schedule.n_steps,
        "bubble_measured": pipeline.bubble_fraction(schedule),
        "bubble_formula": pipeline.theoretical_bubble(args.stages, args.micro),
        "peak_in_flight_per_stage": [
            pipeline.peak_in_flight(schedule, s) for s in range(args.stages)
        ],
    }


def _memory(args: argparse.Namespace) -> dict[str, Any]:
    preset = dict(MEMORY_PRESETS.get(args.preset, {}))
    params = args.params if args.params is not None else preset.get("params")
    if params is None:
        raise ValueError("give --params or a --preset")
    degrees = {k: getattr(args, k) or preset.get(k, 1) for k in ("dp", "tp", "pp")}
    precision = memory.FP32_ADAM if args.fp32 else memory.MIXED_ADAM
    stages = (args.zero,) if args.zero is not None else (0, 1, 2, 3)
    table = {
        f"zero{z}": memory.model_state_bytes(
            params, memory.Parallelism(zero=z, **degrees), precision
        ).in_gb()
        for z in stages
    }
    return {"params": params, **degrees, "GB_per_rank": table}


def _max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return max((a[k] - b[k]).abs().max().item() for k in b)


def _reference_grads(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict:
    model.zero_grad()
    loss = nn.functional.mse_loss(model(x), y)
    loss.backward()
    return {"loss": loss.item(), "grads": {n: p.grad for n, p in model.named_parameters()}}


def _compare(results: list[dict[str, Any]], seed: int) -> dict[str, float]:
    """Largest absolute difference of each check from the single-process computation."""
    world_size = len(results)
    x, y = toy_batch(seed, checks.BATCH, dtype=checks.DTYPE)
    ref = _reference_grads(toy_model(seed), x, y)
    report: dict[str, float] = {}
    for name in results[0]:
        if name == "ddp":
            for sync in ("ddp", "manual"):
                report[f"ddp/{sync} gradients"] = max(
                    _max_diff(r["ddp"][sync]["first_grads"], ref["grads"]) for r in results
                )
        elif name == "tp":
            layers = checks.tp_layers(seed)
            for kind, layer in layers.items():
                inp = checks.tp_input(seed)
                out = layer(inp, causal=True)[0] if kind == "attention" else layer(inp)
                report[f"tp/{kind} output"] = max(
                    (r["tp"][kind]["output"] - out).abs().max().item() for r in results
                )
        elif name.startswith("pipeline"):
            report[f"{name} loss"] = max(abs(r[name]["loss"] - ref["loss"]) for r in results)
        elif name == "zero":
            model = toy_model(seed)
            opt = torch.optim.AdamW(model.parameters(), lr=0.01, weight_decay=0.1)
            for _ in range(3):
                opt.zero_grad()
                nn.functional.mse_loss(model(x), y).backward()
                opt.step()
            final = dict(model.named_parameters())
            for method in checks.ZERO_METHODS:
                report[f"zero/{method} weights after 3 AdamW steps"] = max(
                    _max_diff(r["zero"][method]["state"], final) for r in results
                )
                report[f"zero/{method} bytes on rank 0"] = sum(
                    results[0]["zero"][method]["bytes"].values()
                )
    report["world_size"] = world_size
    return report


def _check(args: argparse.Namespace) -> dict[str, Any] | None:
    names = tuple(args.checks)
    if "RANK" in os.environ:  # launched by torchrun: this process is one rank of the group
        env = init_from_env(backend="gloo", timeout_s=args.timeout)
        gathered: list[Any] = [None] * env.world_size
        torch.distributed.all_gather_object(gathered, checks.run_checks(args.seed, names))
        torch.distributed.destroy_process_group()
        return _compare(gathered, args.seed) if env.is_main else None
    results = spawn(
        checks.run_checks,
        args.world_size,
        args=(args.seed, names),
        backend="gloo",
        timeout_s=args.timeout,
    )
    return _compare(results, args.seed)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "schedule":
            result = _schedule(args)
        elif args.command == "memory":
            result = _memory(args)
        else:
            result = _check(args)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if result is not None:
        print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
