"""A scaling-law sweep on the CPU: train GPTs of several sizes on several token budgets, fit
``L(N, D) = E + A / N^alpha + B / D^beta`` to them, predict a larger run, then train it.

    python scripts/scaling_sweep.py            # the whole sweep (4.4e13 FLOPs; about an hour
                                               # of single-thread time on a busy 2-core VM)
    python scripts/scaling_sweep.py --plan     # what it would run, and nothing else
    nohup python scripts/scaling_sweep.py --workers 2 > sweep.log 2>&1 &

Every run trains a GPT on UTF-8 bytes of the standard library's source code (``stdlib-code``:
about 11 M training bytes, so no run sees a byte twice on average) with the same recipe:
8 windows of 128 tokens per step, AdamW, warm-up for 5 % of the steps then cosine decay to
10 % of the peak learning rate, ``lr = 0.2 / n_embd`` (wider models want smaller steps). The
validation loss of every run is measured on the same 256 windows of the held-out split.

``N`` is the non-embedding parameter count (Kaplan et al.'s convention: the token and position
tables are lookups; with tied weights that also leaves out the output head), ``D`` the tokens
trained on, ``C = 6 N D``.

The results file is the checkpoint: each finished run is appended to it at once, and a run
already there is skipped, so an interrupted sweep continues where it stopped. After the grid
the script fits the law to the grid runs of at least ``FIT_MIN_STEPS`` steps, records the
prediction for the larger run *before* training it, then trains it and records the error.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "scaling_results.json"

SIZES = ((2, 32), (2, 48), (2, 64), (3, 80), (3, 96))
"""(n_layer, n_embd) of the grid's models; heads of 16 dimensions."""
STEPS = (128, 256, 512, 768, 1024, 1536, 2048)
"""The grid's token budgets, in optimizer steps of BATCH x SEQ_LEN tokens."""
FIT_MIN_STEPS = 512
"""Runs shorter than this are trained and kept ("early") but not fitted: a first sweep of
128 to 2048 steps, fitted whole, left residuals of the same shape at every size (too low a
loss predicted at 256 steps, too high at 2048; 2.4 % rms), the mark of a warm-up transient
the law does not describe. Fitted from 512 steps on, the residuals are about 1 %."""
LARGE = ((4, 128), 3072)
"""The run to predict: a larger model than any in the grid, trained on more tokens."""
BATCH, SEQ_LEN, VAL_WINDOWS = 8, 128, 256
CORPUS, TOKENIZER = "stdlib-code", "bytes"


@dataclass(frozen=True)
class RunSpec:
    n_layer: int
    n_embd: int
    steps: int
    role: str  # "fit" or "predict"

    @property
    def name(self) -> str:
        return f"L{self.n_layer}-d{self.n_embd}-s{self.steps}"

    @property
    def lr(self) -> float:
        return 0.2 / self.n_embd

    @property
    def tokens(self) -> int:
        return self.steps * BATCH * SEQ_LEN


def train_config(spec: RunSpec):
    from llmcourse.causal_lm import TrainConfig

    return TrainConfig(
        corpus=CORPUS, tokenizer=TOKENIZER, n_layer=spec.n_layer, n_head=spec.n_embd // 16,
        n_embd=spec.n_embd, seq_len=SEQ_LEN, batch_size=BATCH, steps=spec.steps, lr=spec.lr,
        min_lr=spec.lr / 10, warmup=max(10, spec.steps // 20), eval_every=spec.steps,
        eval_batches=VAL_WINDOWS // BATCH, log_every=max(1, spec.steps // 16), device="cpu",
        seed=0,
    )  # fmt: skip


def non_embedding_params(n_layer: int, n_embd: int) -> int:
    """``N`` of a run: every parameter except the token and position tables."""
    from llmcourse.gpt import GPTConfig, param_count

    config = GPTConfig(
        vocab_size=256, n_positions=SEQ_LEN, n_layer=n_layer, n_head=n_embd // 16, n_embd=n_embd
    )
    return param_count(config, non_embedding=True) - config.vocab_size * n_embd


def run_one(spec: RunSpec, threads: int) -> dict:
    """Train one run in this (worker) process and return its record."""
    import math

    import torch

    from llmcourse.causal_lm import build_model, train_causal_lm

    torch.set_num_threads(threads)
    cfg = train_config(spec)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg, 256)
    tables = model.transformer.wte.weight.numel() + model.transformer.wpe.weight.numel()
    n = sum(p.numel() for p in model.parameters()) - tables
    if n != non_embedding_params(spec.n_layer, spec.n_embd):
        raise RuntimeError(f"{spec.name}: the model has N = {n}, the formula disagrees")
    began = time.perf_counter()
    history = train_causal_lm(cfg, model)
    wall = time.perf_counter() - began
    val = [v for v in history["val_loss"] if not math.isnan(v)]
    return {
        "name": spec.name,
        "role": spec.role,
        **asdict(spec),
        "n_head": spec.n_embd // 16,
        "lr": spec.lr,
        "n_params": n,
        "tokens": spec.tokens,
        "flops": 6 * n * spec.tokens,
        "val_loss": val[-1],
        "train_loss": history["train_loss"][-1],
        "wall_s": round(wall, 2),
        "threads": threads,
        "finished": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


def machine() -> dict:
    import torch

    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }


def load(path: Path) -> dict:
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise SystemExit(f"{path} is not valid JSON ({err}); move it away to start over") from None


def save(path: Path, results: dict) -> None:
    """Write atomically (a temporary file renamed over the old one)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=1) + "\n")
    tmp.replace(path)


def header() -> dict:
    return {
        "description": "final validation loss of GPTs trained on stdlib-code bytes, for a "
        "scaling-law fit; written by scripts/scaling_sweep.py",
        "settings": {
            "corpus": CORPUS, "tokenizer": TOKENIZER, "seq_len": SEQ_LEN, "batch_size": BATCH,
            "val_windows": VAL_WINDOWS, "lr": "0.2 / n_embd", "min_lr": "lr / 10",
            "warmup": "max(10, steps // 20)", "weight_decay": 0.1, "grad_clip": 1.0,
            "n_params": "non-embedding parameters", "flops": "6 * n_params * tokens",
        },
        "machine": machine(),
        "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "runs": [],
    }  # fmt: skip


def run_all(specs: list[RunSpec], results: dict, path: Path, workers: int, threads: int) -> None:
    done = {run["name"] for run in results["runs"]}
    todo = sorted((s for s in specs if s.name not in done), key=lambda s: -s.steps * s.n_embd**2)
    if not todo:
        return
    print(f"{len(todo)} runs to do ({len(done)} already done)", flush=True)
    context = get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        futures = {pool.submit(run_one, spec, threads): spec for spec in todo}
        for future in as_completed(futures):
            record = future.result()
            results["runs"].append(record)
            save(path, results)
            print(
                f"{record['name']:>16}  N={record['n_params']:>8,}  D={record['tokens']:>9,}  "
                f"val={record['val_loss']:.4f}  {record['wall_s']:.0f} s",
                flush=True,
            )


def fit_and_predict(results: dict, large: RunSpec) -> dict:
    """Fit the law to the grid runs and record the large run's predicted loss."""
    from llmcourse.pretrain.scaling import fit_scaling_law

    runs = [r for r in results["runs"] if r["role"] == "fit"]
    if len(runs) != len(SIZES) * sum(steps >= FIT_MIN_STEPS for steps in STEPS):
        raise RuntimeError(f"the grid is incomplete ({len(runs)} runs to fit): run it again")
    fit = fit_scaling_law(
        [r["n_params"] for r in runs], [r["tokens"] for r in runs], [r["val_loss"] for r in runs]
    )
    n = non_embedding_params(large.n_layer, large.n_embd)
    return {
        "fit": fit.to_dict(),
        "fit_runs": sorted(r["name"] for r in runs),
        "run": large.name,
        "n_params": n,
        "tokens": large.tokens,
        "predicted_val_loss": float(fit.law.loss(n, large.tokens)),
        "predicted_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=RESULTS, help="the results JSON")
    parser.add_argument("--workers", type=int, default=2, help="runs trained at the same time")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--plan", action="store_true", help="list the runs and stop")
    args = parser.parse_args(argv)

    grid = [
        RunSpec(layers, width, steps, "fit" if steps >= FIT_MIN_STEPS else "early")
        for layers, width in SIZES
        for steps in STEPS
    ]
    (layers, width), steps = LARGE
    large = RunSpec(layers, width, steps, "predict")
    if args.plan:
        for spec in [*grid, large]:
            n = non_embedding_params(spec.n_layer, spec.n_embd)
            print(
                f"{spec.name:>16} {spec.role:>8}  N={n:>9,}  D={spec.tokens:>10,}  lr={spec.lr:.2e}"
            )
        return 0

    results = load(args.out) or header()
    for run in results["runs"]:  # the fitting rule applies to runs of an earlier version too
        if run["role"] != "predict":
            run["role"] = "fit" if run["steps"] >= FIT_MIN_STEPS else "early"
    results["settings"]["fit"] = f"runs of at least {FIT_MIN_STEPS} steps"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    run_all(grid, results, args.out, args.workers, args.threads)
    if "prediction" not in results:
        results["prediction"] = fit_and_predict(results, large)
        save(args.out, results)
    prediction = results["prediction"]
    print(f"fit: {prediction['fit']}", flush=True)
    print(f"predicted val loss of {large.name}: {prediction['predicted_val_loss']:.4f}", flush=True)
    run_all([large], results, args.out, 1, args.threads)
    measured = next(r for r in results["runs"] if r["name"] == large.name)["val_loss"]
    prediction["measured_val_loss"] = measured
    prediction["error"] = prediction["predicted_val_loss"] - measured
    prediction["relative_error"] = prediction["error"] / measured
    results["finished"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    save(args.out, results)
    print(f"measured {measured:.4f}: error {prediction['error']:+.4f} "
          f"({100 * prediction['relative_error']:+.2f} %)")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
