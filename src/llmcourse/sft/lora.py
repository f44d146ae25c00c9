"""LoRA: fine-tune a few low-rank matrices beside frozen weights (Hu et al., 2021).

A fine-tuned weight is the pretrained one plus a change, W' = W + dW. LoRA bets that the
change a task needs has a low "intrinsic rank" and writes it as a product of two thin matrices,

    W' = W + (alpha / r) B A,     A: r x in,  B: out x r,  r << min(in, out),

so a layer's forward pass becomes  h = x W^T + b + (alpha / r) dropout(x) A^T B^T.

- ``W`` and ``b`` are frozen; only A and B train: r (in + out) numbers instead of in x out.
- ``B`` starts at zero, so at step 0 the wrapped layer *is* the pretrained one (B A = 0);
  ``A`` starts Kaiming-uniform, as in Microsoft's ``loralib`` and Hugging Face ``peft``, so
  the gradient reaching B (which is A x, times the upstream gradient) is not zero.
- ``alpha / r`` keeps the size of the update roughly independent of r: doubling r doubles the
  number of summed rank-one terms and halves their weight, so one learning rate serves many r.
- ``merge()`` folds (alpha / r) B A into W: a plain ``nn.Linear`` with the same outputs and no
  extra cost at inference.

``apply_lora`` wraps the ``nn.Linear`` modules whose names end with one of ``targets`` (GPT:
``c_attn``, ``c_proj``, ``c_fc``; LLaMA: ``q_proj`` ... ``down_proj``) and freezes everything
else; ``merge_lora`` undoes the wrapping with merged weights; ``save_adapter`` /
``load_adapter`` store only A and B (safetensors), to be put on top of the same base.
``compare_lora_full`` measures LoRA against full fine-tuning on the same budget.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

GPT_TARGETS = ("c_attn", "c_proj", "c_fc")
"""Every matrix of a GPT block: fused QKV, attention output, MLP up and MLP down."""
LLAMA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
"""Every matrix of a LLaMA block: the four attention projections and the three SwiGLU ones."""

ADAMW_STATE_BYTES = 8
"""AdamW keeps two fp32 numbers (first and second moment) per trainable parameter."""


class LoRALinear(nn.Module):
    """A frozen ``nn.Linear`` plus a trainable low-rank update (alpha / r) B A.

    ``forward(x) = linear(x) + dropout(x) A^T B^T * alpha / r``; ``A`` (r x in) starts
    Kaiming-uniform, ``B`` (out x r) at zero, so the layer starts as the original one.
    The wrapped layer stays reachable as ``.base``.
    """

    def __init__(self, linear: nn.Linear, r: int, alpha: float, dropout: float = 0.0) -> None:
        super().__init__()
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"LoRALinear wraps an nn.Linear, got {type(linear).__name__}")
        if isinstance(r, bool) or not isinstance(r, int) or r < 1:
            raise ValueError(f"LoRA rank r must be an integer >= 1, got {r!r}")
        if alpha <= 0:
            raise ValueError(f"LoRA alpha must be positive, got {alpha}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"LoRA dropout must be in [0, 1), got {dropout}")
        self.base = linear
        self.r, self.alpha = r, alpha
        self.scaling = alpha / r
        for p in linear.parameters():
            p.requires_grad_(False)
        weight = linear.weight
        kwargs = {"device": weight.device, "dtype": weight.dtype}
        self.lora_A = nn.Parameter(torch.empty(r, linear.in_features, **kwargs))
        self.lora_B = nn.Parameter(torch.zeros(linear.out_features, r, **kwargs))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # nn.Linear's (and peft's) init
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    def delta_weight(self) -> torch.Tensor:
        """The update (alpha / r) B A, shaped as the base weight (out x in)."""
        return (self.lora_B @ self.lora_A) * self.scaling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        low_rank = F.linear(F.linear(self.dropout(x), self.lora_A), self.lora_B)
        return self.base(x) + low_rank * self.scaling

    @torch.no_grad()
    def merge(self) -> nn.Linear:
        """A new plain ``nn.Linear`` with weight W + (alpha / r) B A and the same bias."""
        base = self.base
        weight = base.weight
        merged = nn.Linear(
            base.in_features, base.out_features, bias=base.bias is not None,
            device=weight.device, dtype=weight.dtype,
        )  # fmt: skip
        merged.weight.copy_(weight + self.delta_weight().to(weight.dtype))
        if base.bias is not None:
            merged.bias.copy_(base.bias)
        merged.requires_grad_(weight.requires_grad)
        return merged

    def extra_repr(self) -> str:
        return f"r={self.r}, alpha={self.alpha}"


def _matches(name: str, targets: Sequence[str]) -> bool:
    return any(name == t or name.endswith("." + t) for t in targets)


def _set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, module)


def apply_lora(
    model: nn.Module,
    targets: Sequence[str] = GPT_TARGETS,
    r: int = 8,
    alpha: float = 16.0,
    dropout: float = 0.0,
) -> nn.Module:
    """Freeze ``model`` and wrap, in place, each ``nn.Linear`` whose module name ends with one
    of ``targets`` (e.g. ``"c_attn"`` matches ``transformer.h.0.attn.c_attn``) in a
    ``LoRALinear``. Returns the model. Raises ``ValueError`` if nothing matches."""
    if isinstance(targets, str):
        targets = (targets,)
    if not targets:
        raise ValueError("apply_lora needs at least one target module name")
    if any(isinstance(m, LoRALinear) for m in model.modules()):
        raise ValueError("the model already has LoRA adapters; merge_lora it first")
    model.requires_grad_(False)
    names = [
        name
        for name, m in model.named_modules()
        if isinstance(m, nn.Linear) and _matches(name, targets)
    ]
    if not names:
        linears = sorted({n.rpartition(".")[2] for n, m in model.named_modules()
                          if isinstance(m, nn.Linear)})  # fmt: skip
        raise ValueError(
            f"no nn.Linear module name ends with {', '.join(targets)}; "
            f"this model's linear layers are named {', '.join(linears) or '(none)'}"
        )
    for name in names:
        _set_module(model, name, LoRALinear(model.get_submodule(name), r, alpha, dropout))
    return model


def lora_layers(model: nn.Module) -> dict[str, LoRALinear]:
    """The ``LoRALinear`` modules of ``model`` by name."""
    return {name: m for name, m in model.named_modules() if isinstance(m, LoRALinear)}


def merge_lora(model: nn.Module) -> nn.Module:
    """Replace, in place, every ``LoRALinear`` by its merged ``nn.Linear``; returns the model,
    whose state dict then has the original parameter names again."""
    for name, layer in lora_layers(model).items():
        _set_module(model, name, layer.merge())
    return model


def trainable_parameters(model: nn.Module) -> int:
    """Number of parameters with ``requires_grad`` (a tied matrix counted once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def optimizer_state_bytes(model: nn.Module) -> int:
    """Bytes of AdamW state for ``model``: two fp32 moments per trainable parameter."""
    return ADAMW_STATE_BYTES * trainable_parameters(model)


def adapter_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Only the LoRA matrices: ``{"<module>.lora_A": A, "<module>.lora_B": B}``."""
    state = {}
    for name, layer in lora_layers(model).items():
        state[f"{name}.lora_A"] = layer.lora_A.detach()
        state[f"{name}.lora_B"] = layer.lora_B.detach()
    return state


def save_adapter(model: nn.Module, path: str | Path) -> Path:
    """Write the adapter (A and B of every LoRA layer, plus r, alpha and the target names) to
    a safetensors file: kilobytes to megabytes, where the base model is the bulk."""
    from safetensors.torch import save_file

    layers = lora_layers(model)
    if not layers:
        raise ValueError("the model has no LoRA layers to save (call apply_lora first)")
    first = next(iter(layers.values()))
    meta = {
        "r": first.r,
        "alpha": first.alpha,
        "dropout": getattr(first.dropout, "p", 0.0),
        "targets": sorted({name.rpartition(".")[2] for name in layers}),
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.contiguous().cpu() for k, v in adapter_state(model).items()}
    save_file(state, str(path), metadata={"lora": json.dumps(meta)})
    return path


def load_adapter(model: nn.Module, path: str | Path) -> nn.Module:
    """Put the adapter saved by ``save_adapter`` on ``model`` (the same base, without LoRA):
    ``apply_lora`` with the saved r, alpha and targets, then the saved A and B. Returns it."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no adapter file at {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta_text = (f.metadata() or {}).get("lora")
            state = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118
    except (SafetensorError, OSError) as err:
        raise ValueError(f"{path} is not a readable safetensors adapter: {err}") from err
    if meta_text is None:
        raise ValueError(f"{path} has no LoRA metadata: not written by save_adapter")
    meta = json.loads(meta_text)
    apply_lora(model, meta["targets"], meta["r"], meta["alpha"], meta["dropout"])
    expected = adapter_state(model)
    missing, unexpected = expected.keys() - state.keys(), state.keys() - expected.keys()
    if missing or unexpected:
        raise ValueError(
            f"adapter {path} does not fit this model: missing {sorted(missing)[:4]}, "
            f"unexpected {sorted(unexpected)[:4]}"
        )
    with torch.no_grad():
        for key, tensor in state.items():
            if tensor.shape != expected[key].shape:
                raise ValueError(
                    f"adapter {path}: {key} has shape {tuple(tensor.shape)}, "
                    f"this model needs {tuple(expected[key].shape)}"
                )
            expected[key].copy_(tensor)
    return model


# --- LoRA against full fine-tuning on the same budget ----------------------------------------


@dataclass
class CompareConfig:
    """The measured comparison: a tiny GPT over bytes that has learned two-digit arithmetic
    in the course's format (``"7-35=-28"``, then ``<|endoftext|>``, id 256) is fine-tuned on
    two-digit *subtraction*, the loss on the answer only, with the same steps, batches and
    data for every method; each method has its own learning rate (LoRA's few parameters take
    a larger one, as in practice). Without a given base, a stand-in is pretrained on the
    additions only, so subtraction is new to it."""

    ranks: tuple[int, ...] = (2, 8)
    alpha: float = 16.0
    targets: tuple[str, ...] = GPT_TARGETS
    steps: int = 150
    batch_size: int = 64
    lr_full: float = 2e-3
    lr_lora: float = 1e-2
    base_steps: int = 400  # pretraining of the stand-in base on additions
    base_lr: float = 3e-3
    n_layer: int = 2
    n_embd: int = 64
    n_heldout: int = 400
    seed: int = 0


EOT = 256  # the byte tokenizer's <|endoftext|>, the end of every arithmetic line
_ANSWER_LEN = 4  # "-98" and the end token


def _problems(op: str) -> list[tuple[str, str]]:
    """Every two-digit problem ``"a<op>b="`` with its answer."""
    result = (lambda a, b: a + b) if op == "+" else (lambda a, b: a - b)
    return [(f"{a}{op}{b}=", str(result(a, b))) for a in range(100) for b in range(100)]


def _encode(pairs: Sequence[tuple[str, str]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Byte ids (N, 10) right-padded with the end token, and labels: the answer and its end
    token, -100 elsewhere."""
    ids = torch.full((len(pairs), 6 + _ANSWER_LEN), EOT, dtype=torch.long)
    labels = torch.full_like(ids, -100)
    for i, (prompt, answer) in enumerate(pairs):
        tokens = [*(prompt + answer).encode(), EOT]
        ids[i, : len(tokens)] = torch.tensor(tokens)
        labels[i, len(prompt) : len(tokens)] = ids[i, len(prompt) : len(tokens)]
    return ids, labels


def _answer_loss(model: nn.Module, ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    logits = model(ids[:, :-1])
    return F.cross_entropy(logits.flatten(0, 1), labels[:, 1:].flatten(), ignore_index=-100)


def _fit(
    model: nn.Module,
    data: tuple[torch.Tensor, torch.Tensor],
    steps: int,
    batch: int,
    lr: float,
    seed: int,
) -> tuple[list[float], float, int]:
    """AdamW on the trainable parameters; returns (losses, seconds per step, state bytes)."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    g = torch.Generator().manual_seed(seed)
    ids, labels = data
    losses = []
    model.train()
    start = time.perf_counter()
    for _ in range(steps):
        rows = torch.randint(0, len(ids), (batch,), generator=g)
        loss = _answer_loss(model, ids[rows], labels[rows])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    seconds = (time.perf_counter() - start) / steps
    state = sum(
        t.numel() * t.element_size()
        for s in optimizer.state.values()
        for k, t in s.items()
        if k in ("exp_avg", "exp_avg_sq")
    )  # fmt: skip
    return losses, seconds, state


@torch.no_grad()
def _evaluate(model: nn.Module, pairs: Sequence[tuple[str, str]]) -> tuple[float, float]:
    """(answer loss, exact match) on held-out problems: greedy answers, one batch per prompt
    length, right when the answer and then the end token come out."""
    model.eval()
    loss = _answer_loss(model, *_encode(pairs)).item()
    right = 0
    for length in {len(p) for p, _ in pairs}:
        group = [(p, a) for p, a in pairs if len(p) == length]
        out = torch.tensor([list(p.encode()) for p, _ in group])
        for _ in range(_ANSWER_LEN):
            out = torch.cat([out, model(out)[:, -1].argmax(-1, keepdim=True)], dim=1)
        for row, (_, answer) in zip(out[:, length:].tolist(), group, strict=True):
            target = [*answer.encode(), EOT]
            right += row[: len(target)] == target
    return loss, right / len(pairs)


def stand_in_base(config: CompareConfig) -> nn.Module:
    """A tiny GPT over bytes + end token, pretrained on every two-digit addition."""
    from llmcourse.gpt import GPT, GPTConfig

    torch.manual_seed(config.seed)
    gpt = GPT(GPTConfig(vocab_size=EOT + 1, n_positions=16, n_layer=config.n_layer, n_head=4,
                        n_embd=config.n_embd))  # fmt: skip
    _fit(gpt, _encode(_problems("+")), config.base_steps, config.batch_size, config.base_lr,
         config.seed)  # fmt: skip
    return gpt.eval()


def compare_lora_full(
    config: CompareConfig | None = None, base: nn.Module | None = None
) -> list[dict[str, float | int | str]]:
    """Fine-tune copies of one base (default: ``stand_in_base``; any GPT over bytes with the
    end token 256, e.g. ``course_models.load("gpt-tiny-tasks")[0]``) on subtraction with
    full fine-tuning and with LoRA at each rank in ``config.ranks``: same steps, batches and
    data. One row per method: final training loss (mean of the last 10 steps), held-out
    answer loss and exact match (before and after), trainable parameters, AdamW state bytes
    (measured) and seconds per step."""
    import copy

    config = config or CompareConfig()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # matrices this small run faster on one thread than on several
    try:
        return _compare(config, base, copy.deepcopy)
    finally:
        torch.set_num_threads(threads)


def _compare(
    config: CompareConfig, base: nn.Module | None, clone: Callable[[nn.Module], nn.Module]
) -> list[dict]:
    base = base if base is not None else stand_in_base(config)
    problems = _problems("-")
    order = torch.randperm(len(problems), generator=torch.Generator().manual_seed(config.seed))
    heldout = [problems[i] for i in order[: config.n_heldout].tolist()]
    train = [problems[i] for i in order[config.n_heldout :].tolist()]
    train_data = _encode(train)
    before_loss, before_match = _evaluate(base, heldout)
    rows = []
    for rank in (None, *config.ranks):
        model = clone(base)
        if rank is None:
            model.requires_grad_(True)
            method, lr = "full", config.lr_full
        else:
            apply_lora(model, config.targets, r=rank, alpha=config.alpha)
            method, lr = f"LoRA r={rank}", config.lr_lora
        torch.manual_seed(config.seed)
        losses, seconds, state = _fit(
            model, train_data, config.steps, config.batch_size, lr, config.seed
        )
        loss, match = _evaluate(model, heldout)
        rows.append({
            "method": method, "lr": lr, "trainable": trainable_parameters(model),
            "optimizer_bytes": state, "seconds_per_step": seconds,
            "train_loss": sum(losses[-10:]) / 10, "heldout_loss_before": before_loss,
            "heldout_loss": loss, "exact_match_before": before_match, "exact_match": match,
            "losses": losses,
        })  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> int:
    """``python -m llmcourse.sft.lora``: run the LoRA vs full fine-tuning comparison."""
    defaults = CompareConfig()
    parser = argparse.ArgumentParser(
        prog="python -m llmcourse.sft.lora",
        description="LoRA vs full fine-tuning on the same budget (tiny GPT, subtraction).",
    )
    parser.add_argument("--ranks", type=int, nargs="+", help=f"default {defaults.ranks}")
    parser.add_argument("--steps", type=int, help=f"default {defaults.steps}")
    parser.add_argument("--base-steps", type=int, help=f"default {defaults.base_steps}")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = parser.parse_args(argv)
    changes = {"ranks": tuple(args.ranks) if args.ranks else None, "steps": args.steps,
               "base_steps": args.base_steps}  # fmt: skip
    config = replace(defaults, **{k: v for k, v in changes.items() if v is not None})
    rows = compare_lora_full(config)
    if args.json:
        print(json.dumps([{k: v for k, v in r.items() if k != "losses"} for r in rows]))
        return 0
    print(f"{'method':<11} {'trainable':>10} {'AdamW MB':>9} {'ms/step':>8} {'loss':>7} "
          f"{'EM before':>9} {'EM after':>8}")  # fmt: skip
    for r in rows:
        print(f"{r['method']:<11} {r['trainable']:>10,} {r['optimizer_bytes'] / 1e6:>9.3f} "
              f"{1e3 * r['seconds_per_step']:>8.2f} {r['train_loss']:>7.3f} "
              f"{r['exact_match_before']:>9.1%} {r['exact_match']:>8.1%}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
