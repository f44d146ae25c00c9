"""Chapter 13: model compression: quantization, pruning and distillation.

* ``quantize``: absmax (symmetric) and zero-point (asymmetric) integer quantization per tensor,
  per channel and per group, ``s = max|w| / (2^(b-1) - 1)``, ``q = round(w / s)``; two int4
  values packed per byte (``pack_int4`` / ``unpack_int4``);
* ``qlinear``: ``QuantLinear``, a Linear that stores integers and scales (and LLM.int8()-style
  outlier columns in float) and dequantizes in its forward;
* ``gptq``: GPTQ, rounding one column at a time and spreading each rounding error over the
  columns not yet rounded with the inverse Hessian of calibration inputs;
* ``model``: ``quantize_model(model, method, calibration)`` for every method of the chapter,
  ``stored_bytes``, and ``save_compressed`` / ``load_compressed`` (safetensors; chapter 7's
  ``causal_lm.load_trained`` and ``llmcourse.generate`` read the folder);
* ``sweep``: the quantization methods' perplexity against bits (run ``quantization-sweep``);
* ``prune``: magnitude masks layer by layer and global, 2:4, heads and FFN neurons removed
  (``PrunedGPT``), and ``recover`` by fine-tuning with the masks kept;
* ``distill``: ``distillation_loss`` (alpha T^2 KL(teacher || student) at temperature T plus
  (1 - alpha) cross-entropy) and the students trained with and without it (runs
  ``gpt-tiny-student-kd``, ``gpt-tiny-student-hard``);
* ``report``: every method on ``gpt-tiny-tasks`` in one table (run ``compression-table``).

``python -m llmcourse.compress --checkpoint gpt-tiny-tasks --method int4-gptq --out DIR``
writes a compressed checkpoint.
"""

from .distill import distillation_loss
from .model import METHODS, load_compressed, quantize_model, save_compressed, stored_bytes
from .prune import masks_for, recover

__all__ = [
    "METHODS",
    "distillation_loss",
    "load_compressed",
    "masks_for",
    "quantize_model",
    "recover",
    "save_compressed",
    "stored_bytes",
]
