"""Training throughput of the course's GPT and LLaMA: tokens per second and MFU.

What is timed is one whole optimizer step of ``llmcourse.causal_lm`` run through the shared
loop ``llmcourse.training.train``: the forward pass (bf16 autocast on CUDA), the shifted
cross-entropy, the backward pass, gradient clipping and the AdamW step (fused on CUDA). Batches
are random token ids already in memory, so data loading is left out. The first steps are
warm-up (``torch.compile`` compiles there, caches fill) and are not counted; the timed steps'
wall times, measured by the loop itself, give

    tokens/s = timed steps * batch * seq_len / their total time

**FLOPs per token** (``llmcourse.causal_lm.flops``): 6 N + 12 L d T. A parameter that takes
part in a matrix multiplication costs 2 FLOPs per token forward (a multiply and an add) and
4 backward (gradients of the input and of the weight): 6 N, where N is every parameter but the
embedding tables (a lookup, not a product; a token table tied to the output head counts, since
it does the head's product). Attention's two products, Q K^T and A V, add 2 * 2 * T * d FLOPs
per token and layer forward, 12 L d T with the backward pass (context T, width d, L layers).

**MFU** = tokens/s * FLOPs per token / the device's dense bf16 peak, from
``llmcourse.causal_lm.flops.PEAK_BF16_FLOPS`` (H100/H200 SXM 989e12, H100 PCIe 756e12, A100
312e12, L4 121e12, ...). A CPU or an unknown GPU gets no MFU, never a guessed one.

**Baseline.** With ``transformers`` installed, Hugging Face's ``GPT2LMHeadModel`` (SDPA
attention) of the same shape runs through the very same loop, loss and optimizer, so the only
difference is the model code; our GPT should be at least as fast.

Examples::

    python benchmarks/train_throughput.py                       # this machine, print a table
    python benchmarks/train_throughput.py --record              # ... and add it to results.json
    python benchmarks/train_throughput.py --shapes gpt2-124m --models gpt hf-gpt2 --batch 16
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from llmcourse.causal_lm import PRESETS, causal_lm_loss, make_adamw
from llmcourse.causal_lm.flops import flops_per_token, matmul_params, mfu, peak_flops
from llmcourse.causal_lm.trainer import build_model, model_config
from llmcourse.runtime import autocast, pick_device
from llmcourse.training import train

RESULTS = Path(__file__).with_name("results.json")
MODELS = ("gpt", "llama", "hf-gpt2")
BPE_VOCAB = 4160  # the course BPE's 4097 ids rounded up to a multiple of 64, as training does


@dataclass(frozen=True)
class Plan:
    """Batch size, warm-up and timed steps of one shape on one kind of device."""

    batch: int
    warmup: int
    timed: int


PLANS: dict[tuple[str, str], Plan] = {
    ("cuda", "tiny"): Plan(64, 10, 30),
    ("cuda", "small"): Plan(32, 10, 30),
    ("cuda", "gpt2-124m"): Plan(16, 10, 20),
    ("cpu", "tiny"): Plan(16, 3, 10),
    ("cpu", "small"): Plan(4, 2, 4),
    ("cpu", "gpt2-124m"): Plan(1, 1, 2),
}
"""Per device kind and shape: big enough to keep a GPU busy, short enough for a CPU."""


def make_model(name: str, shape: str) -> nn.Module:
    """Our GPT or LLaMA, or Hugging Face's GPT-2, with the shape of a training preset."""
    cfg = PRESETS[shape]
    vocab = cfg.vocab_size or BPE_VOCAB
    if name in ("gpt", "llama"):
        return build_model(cfg.replace(arch=name), vocab)
    import transformers  # the baseline only: a test/dev dependency

    c = model_config(cfg.replace(arch="gpt"), vocab)
    hf_config = transformers.GPT2Config(
        vocab_size=c.vocab_size, n_positions=c.n_positions, n_embd=c.n_embd, n_layer=c.n_layer,
        n_head=c.n_head, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        bos_token_id=None, eos_token_id=None, attn_implementation="sdpa",
    )  # fmt: skip
    return transformers.GPT2LMHeadModel(hf_config)


def logits_of(output: torch.Tensor | object) -> torch.Tensor:
    """Our models return the logits; Hugging Face's return an object holding them."""
    return output if isinstance(output, torch.Tensor) else output.logits


def measure(
    model: nn.Module, shape: str, plan: Plan, device: torch.device, compile_model: bool
) -> dict:
    """Run ``plan.warmup + plan.timed`` training steps; return the timed steps' figures."""
    cfg = PRESETS[shape]
    model = model.to(device)
    optimizer = make_adamw(model, 3e-4, 0.1, device=device)
    vocab = cfg.vocab_size or BPE_VOCAB
    steps = plan.warmup + plan.timed
    windows = torch.randint(
        0, vocab, (steps, plan.batch, cfg.seq_len + 1), generator=torch.Generator().manual_seed(0)
    )

    def forward_loss(batch: torch.Tensor) -> torch.Tensor:
        with autocast(device):
            logits = logits_of(model(batch[:, :-1]))
        return causal_lm_loss(logits, batch)

    step_loss: Callable = torch.compile(forward_loss) if compile_model else forward_loss

    rates: list[float] = []

    def on_log(step: int, steps_per_second: float) -> dict[str, float]:
        rates.append(steps_per_second)
        return {}

    train(
        model,
        optimizer,
        lambda step: windows[step].to(device, non_blocking=True),
        lambda _, batch: step_loss(batch),
        steps,
        grad_clip=1.0,
        progress=False,
        on_log=on_log,
    )
    seconds = sum(1.0 / r for r in rates[plan.warmup :])
    tokens_per_s = plan.timed * plan.batch * cfg.seq_len / seconds
    n = matmul_params(model)
    flops = flops_per_token(n, cfg.n_layer, cfg.n_embd, cfg.seq_len)
    util = mfu(tokens_per_s, flops, peak_flops(device))
    return {
        "shape": shape,
        "batch": plan.batch,
        "seq_len": cfg.seq_len,
        "params_matmul": n,
        "flops_per_token": flops,
        "timed_steps": plan.timed,
        "seconds_per_step": seconds / plan.timed,
        "tokens_per_s": tokens_per_s,
        "mfu": util,
    }


def machine(device: torch.device) -> dict:
    """Where the figures come from."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu,
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    if hasattr(os, "getloadavg"):
        info["load_average_1min"] = round(os.getloadavg()[0], 2)
    return info


def run(models: list[str], shapes: list[str], device: torch.device, args) -> list[dict]:
    """Measure every model at every shape; each row is printed as it comes."""
    cuda = device.type == "cuda"
    compile_model = cuda if args.compile is None else args.compile
    rows = []
    for shape in shapes:
        base = PLANS[("cuda" if cuda else "cpu", shape)]
        plan = Plan(args.batch or base.batch, args.warmup or base.warmup, args.steps or base.timed)
        for name in models:
            torch.manual_seed(0)
            row = {
                "model": name,
                "dtype": "bf16 autocast" if cuda else "float32",
                "compile": compile_model,
                "fused_adamw": cuda,
                **measure(make_model(name, shape), shape, plan, device, compile_model),
            }
            rows.append(row)
            print(format_row(row), flush=True)
            if cuda:
                torch.cuda.empty_cache()
    return rows


def format_row(row: dict) -> str:
    util = "unknown" if row["mfu"] is None else f"{100 * row['mfu']:.1f} %"
    return (
        f"| {row['model']:8s} | {row['shape']:9s} | {row['batch']:3d} x {row['seq_len']:4d} | "
        f"{row['params_matmul'] / 1e6:7.2f} M | {row['tokens_per_s']:11,.0f} | {util:>8s} |"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Tokens/s and MFU of a training step (GPT, LLaMA, HF GPT-2 baseline).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("Examples::", 1)[1],
    )
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--shapes", nargs="+", choices=list(PRESETS), default=["tiny", "gpt2-124m"])
    parser.add_argument("--device", help="cpu, cuda, ... (default: $LLMCOURSE_DEVICE or best)")
    parser.add_argument("--batch", type=int, help="override the plan's batch size")
    parser.add_argument("--warmup", type=int, help="override the plan's warm-up steps")
    parser.add_argument("--steps", type=int, help="override the plan's timed steps")
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, help="(CUDA: on)")
    parser.add_argument("--record", action="store_true", help=f"append to {RESULTS.name}")
    parser.add_argument("--note", default="", help="a remark stored with the recorded figures")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    models = list(args.models)
    if "hf-gpt2" in models:
        try:
            import transformers  # noqa: F401
        except ImportError:
            print("transformers is not installed: no Hugging Face baseline", file=sys.stderr)
            models.remove("hf-gpt2")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # what is left in float32 uses tensor cores
        torch.backends.cudnn.allow_tf32 = True
    info = machine(device)
    print(json.dumps(info))
    print("| model    | shape     | batch x T  |  N (matmul) |    tokens/s |      MFU |")
    print("|----------|-----------|------------|-------------|-------------|----------|")
    rows = run(models, args.shapes, device, args)
    if args.record:
        sessions = json.loads(RESULTS.read_text()) if RESULTS.is_file() else []
        sessions.append({"machine": info, "note": args.note, "results": rows})
        RESULTS.write_text(json.dumps(sessions, indent=1) + "\n")
        print(f"recorded in {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
