"""Training throughput: FLOPs per token, and the model FLOPs utilisation (MFU).

**FLOPs per token.** A matrix multiplication of a token's d-vector by a d x k weight costs
2 d k floating-point operations (one multiply and one add per weight). A parameter that sits in
a matrix multiplication therefore costs 2 FLOPs per token in the forward pass, and about twice
that in the backward pass (one product for the gradient of the input, one for the gradient of
the weight): 6 FLOPs per parameter per token. Attention adds work that no parameter accounts
for: each layer multiplies the queries by the keys and the weights by the values, 2 * 2 * T * d
FLOPs per token in the forward pass for a context of T tokens, 12 * T * d with the backward
pass. Per token of training,

    FLOPs = 6 N + 12 L d T

(PaLM, appendix B; the causal mask would allow half of the attention term, but the usual
convention counts it whole). N counts the parameters that take part in a matrix multiplication:
every parameter except the embedding tables, whose "product" is a lookup. A token table that is
tied to the output head is counted, since there it does the head's (large) product. Biases and
norm gains are counted too; they are a rounding error.

**MFU** is the fraction of the accelerator's peak that this rate represents,

    MFU = tokens_per_second * FLOPs_per_token / peak_FLOP/s

It counts only the work the model needs, not recomputation or padding, so it compares
implementations fairly. The peak is the dense bf16 tensor-core figure from the vendor's data
sheet; a device not in ``PEAK_BF16_FLOPS`` gets no MFU (``None``) rather than a wrong one.
"""

from __future__ import annotations

import torch
from torch import nn

PEAK_BF16_FLOPS: dict[str, float] = {
    "H200 SXM": 989e12,
    "H100 SXM": 989e12,
    "H100 PCIe": 756e12,
    "A100": 312e12,
    "L40S": 362e12,
    "L4": 121e12,
    "A10": 125e12,
}
"""Dense bf16 peak FLOP/s of data-center GPUs (no sparsity), from the vendors' data sheets."""


def gpu_model(device_name: str) -> str | None:
    """The ``PEAK_BF16_FLOPS`` key for a CUDA device name, or ``None`` when it is not known.

    ``"NVIDIA H100 80GB HBM3"`` is the SXM part and ``"NVIDIA H100 PCIe"`` the PCIe one; the
    NVL boards and every name not recognised exactly give ``None``.
    """
    name = device_name.upper().replace("NVIDIA", "").strip()
    words = name.replace("-", " ").split()
    if not words or "NVL" in words:
        return None
    first = words[0]
    if first == "H200":
        return "H200 SXM"
    if first == "H100":
        return "H100 PCIe" if "PCIE" in words else "H100 SXM" if "HBM3" in words else None
    return {"A100": "A100", "L40S": "L40S", "L4": "L4", "A10": "A10"}.get(first)


def peak_flops(device: torch.device | str) -> float | None:
    """Dense bf16 peak FLOP/s of ``device``; ``None`` for a CPU or an unknown GPU."""
    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available():
        return None
    key = gpu_model(torch.cuda.get_device_name(device))
    return None if key is None else PEAK_BF16_FLOPS[key]


def matmul_params(model: nn.Module) -> int:
    """N of the FLOPs formula: parameters except embedding tables, a table tied to the output
    head (``model.lm_head``) counted once."""
    params = {id(p): p.numel() for p in model.parameters()}
    tables = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    head = getattr(model, "lm_head", None)
    if isinstance(head, nn.Linear):
        tables.discard(id(head.weight))
    return sum(n for key, n in params.items() if key not in tables)


def flops_per_token(n_params: int, n_layer: int, d_model: int, seq_len: int) -> int:
    """Training FLOPs per token, ``6 N + 12 L d T`` (forward and backward)."""
    return 6 * n_params + 12 * n_layer * d_model * seq_len


def mfu(tokens_per_second: float, flops_token: float, peak: float | None) -> float | None:
    """Model FLOPs utilisation in [0, 1]; ``None`` when the peak is unknown."""
    if peak is None:
        return None
    return tokens_per_second * flops_token / peak
