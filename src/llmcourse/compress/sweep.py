"""The quantization sweep on the course checkpoint: every method's stored size and held-out
perplexity, a cached run (``course_runs``) that chapter 13's quantization page reads.

``quantization_sweep()`` quantizes ``gpt-tiny-tasks`` by each method of ``SWEEP_METHODS``
(GPTQ calibrated on windows of its training token file), and measures

* ``stored_bytes``: the whole state (embeddings and LayerNorms included);
* ``linear_bits``: stored bits per weight of the quantized Linear layers, scales, zero points
  and outlier columns included (32 for fp32);
* ``perplexity`` on the validation token file (``evaluate.perplexity``, windows of 128);
* ``seconds``: the time to quantize (GPTQ's calibration passes and column loops).

It also saves the ``int4-gptq`` model (``save_compressed``) under ``int4-gptq/`` in the run's
folder, for a page to load and generate from. About a minute on one thread.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from .gptq import CalibrationConfig, calibration_windows
from .model import quantize_model, quantized_layers, save_compressed, stored_bytes

BASE = "gpt-tiny-tasks"
SWEEP_METHODS = (
    "fp32", "bf16", "int8-tensor", "int8", "int8-outlier", "int4-rtn", "int4-gptq",
    "int4-rtn-row", "int4-gptq-row", "int3-rtn", "int3-gptq", "int2-rtn", "int2-gptq",
)  # fmt: skip
SWEEP_VERSION = 1  # bump when the measurement changes


def linear_bits(model: torch.nn.Module) -> float:
    """Stored bits per weight of the quantized Linear layers, scales, zero points and outlier
    columns included, the float bias not; a model without any: bits of its float weights."""
    layers = list(quantized_layers(model))
    if not layers:
        return 8.0 * next(model.parameters()).element_size()
    weights = sum(layer.in_features * layer.out_features for _, layer in layers)
    stored = sum(
        sum(t.numel() * t.element_size() for t in layer.state_dict().values() if t is not None)
        - (0 if layer.bias is None else layer.bias.numel() * 4)
        for _, layer in layers
    )
    return 8.0 * stored / weights


def _measure(out: Path, calibration: CalibrationConfig) -> dict[str, Any]:
    from llmcourse import course_models
    from llmcourse.evaluate.perplexity import perplexity
    from llmcourse.sft import pretraining_tokens

    model, tokenizer = course_models.load(BASE, device="cpu")
    train_ids, val_ids = pretraining_tokens(BASE)
    windows = calibration_windows(train_ids, calibration.windows, calibration.seq_len,
                                  calibration.seed)  # fmt: skip
    rows = []
    for method in SWEEP_METHODS:
        began = time.perf_counter()
        compressed = quantize_model(model, method, windows)
        seconds = time.perf_counter() - began
        rows.append({
            "method": method,
            "stored_bytes": stored_bytes(compressed),
            "linear_bits": linear_bits(compressed),
            "perplexity": perplexity(compressed, val_ids, seq_len=128),
            "seconds": round(seconds, 2),
        })  # fmt: skip
        if method == "int4-gptq":
            save_compressed(compressed, tokenizer, out / "int4-gptq", {"compressed_from": BASE})
    return {"rows": rows, "val_tokens": int(val_ids.numel())}


def quantization_sweep() -> Path:
    """The folder of the cached sweep (built first when missing or out of date)."""
    from llmcourse import course_models, course_runs

    calibration = CalibrationConfig()
    provenance = {
        "base": BASE,
        "base_fingerprint": course_models.recipe(BASE).fingerprint(),
        "methods": list(SWEEP_METHODS),
        "calibration": dataclasses.asdict(calibration),
        "version": SWEEP_VERSION,
        "torch": course_runs.torch_version(),
    }
    return course_runs.cached_run(
        "quantization-sweep", provenance, lambda out: _measure(out, calibration)
    )


COURSE_RUNS: dict[str, Callable[[], object]] = {"quantization-sweep": quantization_sweep}
