"""The chapter's one table: every compression of ``gpt-tiny-tasks`` measured the same way.

Rows: the float model (fp32, bf16), weight quantization (int8 per channel, int4
round-to-nearest and GPTQ), layer-wise magnitude pruning at 30-90 % with and without a short
recovery fine-tuning, 2:4 semi-structured pruning (with recovery), structured pruning (heads
and FFN neurons removed, with recovery) and the two distilled students. Columns:

* ``stored_mb``: ``compress.model.stored_bytes`` (everything in the state dict) / 10^6. A
  pruned matrix is still stored dense there; ``sparse_mb`` is the bitmask estimate
  (``prune.mask_storage_bytes``: nonzeros + one bit per entry for the pruned Linears);
* ``tokens_per_s``: greedy generation with the KV cache, batch 1, on one CPU thread, the
  median of ``speed_repeats`` runs, all models timed in turns (``tokens_per_second``);
* ``perplexity``: ``evaluate.perplexity`` on the whole held-out token file;
* ``exact_match``: ``sft.exact_match_by_task`` (plain prompts) on ``n_examples`` of the 400
  held-out examples (every k-th, a fixed subset).

Curves: perplexity against sparsity (layer-wise, global, layer-wise + recovery) and against
bits per weight (32, 16, 8, 4, 3; RTN and GPTQ, int3 on the curve only). The whole is one
cached run, ``compression-table``.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from llmcourse import course_runs
from llmcourse.generate import GenerationConfig, generate

from . import distill, prune
from .model import quantize_model, stored_bytes

RUN_NAME = "compression-table"
TABLE_VERSION = 2
"""Bumped when the measuring code changes in a way the recipe's fields do not show."""


@dataclass(frozen=True)
class ReportConfig:
    """What the table measures and how."""

    model: str = "gpt-tiny-tasks"
    quant_methods: tuple[str, ...] = ("fp32", "bf16", "int8", "int4-rtn", "int4-gptq")
    bits_methods: tuple[str, ...] = ("int3-rtn", "int3-gptq")  # the bits curve only
    sparsities: tuple[float, ...] = (0.3, 0.5, 0.7, 0.9)
    table_pruning: str = "layerwise"  # the magnitude rows of the table; the curve has both
    recover_steps: int = 50
    recover_lr: float = 3e-4
    head_fraction: float = 0.25
    ffn_fraction: float = 0.5
    calibration_windows: int = 32
    n_examples: int = 200
    speed_prompt: int = 16
    speed_tokens: int = 64
    speed_repeats: int = 5
    seed: int = 0


def tokens_per_second(models: list[nn.Module], config: ReportConfig) -> list[float]:
    """New tokens per second of each model, greedy with the KV cache, batch 1: the median of
    ``speed_repeats`` runs, taken in turns (one run of every model, then the next round), so
    that a machine whose load drifts slows every model alike rather than the last ones."""
    prompt = torch.randint(
        models[0].config.vocab_size, (1, config.speed_prompt),
        generator=torch.Generator().manual_seed(config.seed),
    )  # fmt: skip
    greedy = GenerationConfig(max_new_tokens=config.speed_tokens, temperature=0.0)
    for model in models:  # warm-up
        generate(model, prompt, dataclasses.replace(greedy, max_new_tokens=4))
    times: list[list[float]] = [[] for _ in models]
    for _ in range(config.speed_repeats):
        for model, seconds in zip(models, times, strict=True):
            began = time.perf_counter()
            generate(model, prompt, greedy)
            seconds.append(time.perf_counter() - began)
    return [config.speed_tokens / statistics.median(seconds) for seconds in times]


class _Measure:
    """Measures a model on the held-out data, each the same way."""

    def __init__(self, config: ReportConfig, tokenizer: Any, val_ids: torch.Tensor) -> None:
        from llmcourse.sft import build_splits
        from llmcourse.sft.template import ChatTokenizer

        heldout = build_splits(6000, 400, 1)[1]
        self.config, self.val_ids = config, val_ids
        self.examples = heldout[:: max(1, len(heldout) // config.n_examples)][: config.n_examples]
        self.tokenizer = ChatTokenizer(tokenizer)
        self.models: list[nn.Module] = []  # a copy of each row's model, timed at the end

    def perplexity(self, model: nn.Module) -> float:
        from llmcourse.evaluate.perplexity import perplexity

        return perplexity(model, self.val_ids, seq_len=model.max_seq_len)

    def row(self, name: str, family: str, model: nn.Module, **extra: Any) -> dict[str, Any]:
        from llmcourse.sft import exact_match_by_task

        model.eval()
        em = exact_match_by_task(model, self.tokenizer, self.examples, style="plain")
        self.models.append(copy.deepcopy(model))
        return {
            "method": name,
            "family": family,
            "stored_mb": stored_bytes(model) / 1e6,
            "params": sum(p.numel() for p in model.parameters()),
            "perplexity": self.perplexity(model),
            "exact_match": em["all"],
            **extra,
        }


def _sparse_mb(model: nn.Module) -> float:
    """Stored MB with the pruned Linears as nonzeros + bitmask instead of dense."""
    sizes = prune.mask_storage_bytes(model)
    return (stored_bytes(model) - sizes["dense"] + sizes["bitmask"]) / 1e6


def build_table(config: ReportConfig) -> dict[str, Any]:
    """Every row and both curves (minutes on one thread: the cached run calls this)."""
    from llmcourse.course_models import load
    from llmcourse.sft import pretraining_tokens

    from .gptq import calibration_windows

    base, tokenizer = load(config.model, device="cpu")
    train_ids, val_ids = pretraining_tokens(config.model)
    measure = _Measure(config, tokenizer, val_ids)
    calibration = calibration_windows(train_ids, config.calibration_windows, seed=config.seed)
    recovery = prune.RecoverConfig(steps=config.recover_steps, lr=config.recover_lr,
                                   min_lr=config.recover_lr / 10, seed=config.seed)  # fmt: skip
    rows: list[dict[str, Any]] = []

    bits = {"fp32": 32, "bf16": 16, "int8": 8, "int4-rtn": 4, "int4-gptq": 4,
            "int3-rtn": 3, "int3-gptq": 3}  # fmt: skip
    bits_curve: dict[str, list[float]] = {"bits": [], "perplexity": [], "rounding": []}
    for method in config.quant_methods + config.bits_methods:
        quantized = quantize_model(base, method, calibration)
        if method in config.quant_methods:
            rows.append(measure.row(method, "quantization", quantized, bits=bits[method]))
            ppl = rows[-1]["perplexity"]
        else:
            ppl = measure.perplexity(quantized)
        bits_curve["bits"].append(bits[method])
        bits_curve["perplexity"].append(ppl)
        bits_curve["rounding"].append("gptq" if "gptq" in method else "rtn")

    other = "global" if config.table_pruning == "layerwise" else "layerwise"
    sparsity_curve: dict[str, list[float]] = {"sparsity": list(config.sparsities), other: []}
    for kind in (config.table_pruning, config.table_pruning + "+recovery"):
        sparsity_curve[kind] = []
    for s in config.sparsities:
        sparsity_curve[other].append(measure.perplexity(prune.prune(base, other, s)[0]))
        pruned, masks = prune.prune(base, config.table_pruning, s)
        name = f"magnitude {s:.0%} ({config.table_pruning})"
        rows.append(measure.row(name, "pruning", pruned, sparsity=s,
                                sparse_mb=_sparse_mb(pruned)))  # fmt: skip
        sparsity_curve[config.table_pruning].append(rows[-1]["perplexity"])
        prune.recover(pruned, masks, train_ids, recovery)
        rows.append(measure.row(name + " + recovery", "pruning", pruned, sparsity=s,
                                sparse_mb=_sparse_mb(pruned)))  # fmt: skip
        sparsity_curve[config.table_pruning + "+recovery"].append(rows[-1]["perplexity"])

    pruned, masks = prune.prune(base, "2:4")
    rows.append(measure.row("2:4", "pruning", pruned, sparsity=0.5, sparse_mb=_sparse_mb(pruned)))
    prune.recover(pruned, masks, train_ids, recovery)
    rows.append(measure.row("2:4 + recovery", "pruning", pruned, sparsity=0.5,
                            sparse_mb=_sparse_mb(pruned)))  # fmt: skip

    windows = torch.cat([calibration, calibration[:, :1]], dim=1)  # T + 1 ids per window
    small = prune.structured_prune(base, config.head_fraction, config.ffn_fraction,
                                   score="taylor", windows=windows)  # fmt: skip
    label = f"structured -{config.head_fraction:.0%} heads -{config.ffn_fraction:.0%} FFN"
    rows.append(measure.row(label, "structured", small, heads=small.heads, ffn=small.ffn))
    prune.recover(small, {}, train_ids, recovery)
    rows.append(measure.row(label + " + recovery", "structured", small, heads=small.heads,
                            ffn=small.ffn))  # fmt: skip

    for name in distill.RECIPES:
        student, _ = distill.load_student(name)
        rows.append(measure.row(name, "distillation", student))
    speeds = tokens_per_second(measure.models, config)
    for r, speed in zip(rows, speeds, strict=True):
        r["tokens_per_s"] = speed
    return {"rows": rows, "sparsity_curve": sparsity_curve, "bits_curve": bits_curve}


def provenance(config: ReportConfig) -> dict[str, Any]:
    """The table's recipe, the model's fingerprint, the students' provenance, torch."""
    from llmcourse.course_models import recipe

    return {
        "version": TABLE_VERSION,
        "recipe": dataclasses.asdict(config),
        "model": recipe(config.model).fingerprint(),
        "students": {name: distill.provenance(c) for name, c in distill.RECIPES.items()},
        "torch": course_runs.torch_version(),
    }


def compression_table(config: ReportConfig | None = None) -> dict[str, Any]:
    """The run record of the cached table (built first if needed): ``rows``,
    ``sparsity_curve``, ``bits_curve``, ``seconds``, ``threads``."""
    config = config or ReportConfig()
    for name in distill.RECIPES:  # the students are runs of their own, cached first
        distill.student_run(name)
    folder = course_runs.cached_run(RUN_NAME, provenance(config), lambda _out: build_table(config))
    return course_runs.run_record(folder)


COURSE_RUNS: dict[str, Callable[..., object]] = {
    RUN_NAME: lambda _name=None: compression_table(),
}
"""The table's run (callable with no argument or with its name, as ``course_models`` calls)."""


def format_table(rows: list[dict[str, Any]]) -> str:
    """The rows as a Markdown table."""
    lines = [
        "| method | stored MB | sparse MB | tokens/s | perplexity | exact match |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        sparse = f"{r['sparse_mb']:.2f}" if "sparse_mb" in r else ""
        lines.append(f"| {r['method']} | {r['stored_mb']:.2f} | {sparse} | "
                     f"{r['tokens_per_s']:.0f} | {r['perplexity']:.3f} | "
                     f"{r['exact_match']:.1%} |")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m llmcourse.compress.report",
        description=f"Build (or read back) the cached run {RUN_NAME} and print the table.",
    )
    parser.parse_args(argv)
    record = compression_table()
    print(format_table(record["rows"]))
    print(f"built in {record['seconds']} s on {record['threads']} thread(s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
