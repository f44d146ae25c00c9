"""Pruning: remove the weights, heads and neurons a model needs least.

**Unstructured magnitude pruning** zeroes the weights of smallest absolute value. A *mask*
(True = kept) says which ones survive; a sparsity s removes ``round(s * n)`` of n weights, the
rule of ``torch.nn.utils.prune.l1_unstructured``. Two ways to share the cut between layers:

* *layer-wise*: every Linear loses the same fraction of its own weights;
* *global*: one threshold |w| < tau over all pruned Linears together, so a layer whose weights
  are small loses more (``torch.nn.utils.prune.global_unstructured``).

**2:4 semi-structured** sparsity keeps, in every group of 4 consecutive input weights of a row,
the 2 of largest |w|: exactly 50 %, in a pattern regular enough that Ampere and later GPUs'
sparse tensor cores store 2 values + 2-bit indices per group and skip the zeros (about 2x
for the matrix multiplication). Irregular sparsity saves nothing in a dense kernel.

**Structured pruning** removes whole attention heads and FFN neurons, so the matrices really
shrink and any dense kernel gets faster. Heads and neurons are ranked by an importance score:

* ``"norm"``: the L2 norm of the weights that belong to the head (its rows of Q, K, V in
  ``c_attn``, its columns of ``attn.c_proj``) or neuron (its row of ``c_fc``, its column of
  ``mlp.c_proj``);
* ``"taylor"``: |a * dL/da| summed over the unit's output a (a head's slice of the input of
  ``attn.c_proj``, a neuron's GELU output), averaged over calibration windows: the first-order
  change of the loss if that output were zeroed (Michel et al., 2019; Molchanov et al., 2017).

The pruned model is a ``PrunedGPT``: a ``GPT`` whose layers keep their own numbers of heads and
FFN neurons (``CausalSelfAttention`` reshapes by its ``n_head`` and ``n_embd`` attributes, so a
layer with fewer heads needs only those two and smaller matrices), with a KV cache shaped per
layer. ``recover`` fine-tunes a pruned model briefly on the training tokens, re-applying the
masks after every optimizer step so the zeros stay zeros.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from llmcourse.causal_lm.data import random_windows, step_generator
from llmcourse.causal_lm.loss import causal_lm_loss
from llmcourse.causal_lm.optim import cosine_lr, make_adamw
from llmcourse.gpt import GPT, GPTConfig
from llmcourse.kv_cache import KVCache

PRUNED_LINEARS = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")
"""The Linears of each block that pruning touches (embeddings, LayerNorms and the tied
``lm_head`` stay dense)."""

Masks = dict[str, torch.Tensor]
"""Linear name (``transformer.h.0.mlp.c_fc``) -> bool mask of its weight, True = kept."""


def prunable_linears(model: nn.Module) -> dict[str, nn.Linear]:
    """The block Linears of ``model`` named in ``PRUNED_LINEARS``, by module name."""
    found = {
        name: module
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and name.endswith(PRUNED_LINEARS)
    }
    if not found:
        raise ValueError(f"{type(model).__name__} has no Linear named like {PRUNED_LINEARS}")
    return found


def _check_sparsity(sparsity: float) -> None:
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")


def magnitude_mask(weight: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Keep-mask of ``weight`` without its ``round(sparsity * numel)`` smallest |w|."""
    _check_sparsity(sparsity)
    n_pruned = round(sparsity * weight.numel())
    mask = torch.ones(weight.numel(), dtype=torch.bool, device=weight.device)
    if n_pruned:
        smallest = torch.topk(weight.detach().abs().flatten(), n_pruned, largest=False).indices
        mask[smallest] = False
    return mask.view_as(weight)


def layerwise_masks(model: nn.Module, sparsity: float) -> Masks:
    """Each pruned Linear loses ``sparsity`` of its own weights, by magnitude."""
    return {name: magnitude_mask(m.weight, sparsity) for name, m in prunable_linears(model).items()}


def global_masks(model: nn.Module, sparsity: float) -> Masks:
    """One magnitude ranking over all pruned Linears: ``sparsity`` of all their weights go,
    however they fall between layers."""
    layers = prunable_linears(model)
    flat = torch.cat([m.weight.detach().flatten() for m in layers.values()])
    keep = magnitude_mask(flat, sparsity)
    masks, start = {}, 0
    for name, module in layers.items():
        n = module.weight.numel()
        masks[name] = keep[start : start + n].view_as(module.weight)
        start += n
    return masks


def semi_structured_mask(weight: torch.Tensor, n: int = 2, m: int = 4) -> torch.Tensor:
    """N:M keep-mask: in every group of ``m`` consecutive input weights of each row (the last
    dimension of an ``nn.Linear`` weight), the ``n`` of largest |w| survive."""
    if weight.dim() != 2 or weight.shape[1] % m:
        raise ValueError(f"N:M sparsity needs a 2-D weight whose in-features divide by {m}, "
                         f"got shape {tuple(weight.shape)}")  # fmt: skip
    if not 0 < n <= m:
        raise ValueError(f"need 0 < n <= m, got {n}:{m}")
    groups = weight.detach().abs().reshape(weight.shape[0], -1, m)
    keep = torch.zeros_like(groups, dtype=torch.bool)
    keep.scatter_(-1, groups.topk(n, dim=-1).indices, True)
    return keep.view_as(weight)


def semi_structured_masks(model: nn.Module, n: int = 2, m: int = 4) -> Masks:
    """``semi_structured_mask`` for every pruned Linear."""
    return {
        name: semi_structured_mask(module.weight, n, m)
        for name, module in prunable_linears(model).items()
    }


def masks_for(model: nn.Module, method: str, sparsity: float = 0.5) -> Masks:
    """Masks by ``method``: ``"layerwise"``, ``"global"`` (at ``sparsity``) or ``"2:4"``."""
    if method == "layerwise":
        return layerwise_masks(model, sparsity)
    if method == "global":
        return global_masks(model, sparsity)
    if method == "2:4":
        return semi_structured_masks(model)
    raise ValueError(f"unknown pruning method {method!r}: layerwise, global or 2:4")


@torch.no_grad()
def apply_masks(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> nn.Module:
    """Zero the masked weights of ``model`` in place (and return it)."""
    modules = dict(model.named_modules())
    for name, mask in masks.items():
        if name not in modules:
            raise ValueError(f"the model has no module {name!r} to mask")
        weight = modules[name].weight
        if weight.shape != mask.shape:
            raise ValueError(f"mask of {name} is {tuple(mask.shape)}, weight {tuple(weight.shape)}")
        weight.mul_(mask.to(weight.device, weight.dtype))
    return model


def prune(model: nn.Module, method: str, sparsity: float = 0.5) -> tuple[nn.Module, Masks]:
    """A pruned copy of ``model`` and its masks (see ``masks_for``)."""
    pruned = copy.deepcopy(model)
    masks = masks_for(pruned, method, sparsity)
    return apply_masks(pruned, masks), masks


def sparsity_report(model: nn.Module) -> dict[str, float]:
    """Fraction of exact zeros in each pruned Linear's weight, ``"pruned"`` over all of them and
    ``"model"`` over every parameter (embeddings, norms and biases are never pruned)."""
    report, zeros, total = {}, 0, 0
    for name, module in prunable_linears(model).items():
        z = int((module.weight == 0).sum())
        report[name] = z / module.weight.numel()
        zeros, total = zeros + z, total + module.weight.numel()
    report["pruned"] = zeros / total
    report["model"] = zeros / sum(p.numel() for p in model.parameters())
    return report


def mask_storage_bytes(model: nn.Module, bytes_per_value: int = 4) -> dict[str, int]:
    """What the pruned Linears' weights would take to store, three ways:

    * ``"dense"``: every entry, zeros included (what ``state_dict`` holds);
    * ``"bitmask"``: the nonzero values plus one bit per entry saying where they are;
    * ``"csr"``: nonzero values + a 4-byte column index each + a 4-byte row pointer per row.

    Unstructured sparsity pays for itself in storage only past the point where the index
    costs less than the zeros it drops: about 1/32 of the values for a bitmask in float32,
    half of them for CSR with 32-bit indices.
    """
    dense = bitmask = csr = 0
    for module in prunable_linears(model).values():
        w = module.weight
        nnz = int((w != 0).sum())
        dense += w.numel() * bytes_per_value
        bitmask += nnz * bytes_per_value + (w.numel() + 7) // 8
        csr += nnz * (bytes_per_value + 4) + (w.shape[0] + 1) * 4
    return {"dense": dense, "bitmask": bitmask, "csr": csr}


# --------------------------------------------------------------------------------------------
# Recovery fine-tuning
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RecoverConfig:
    """Short fine-tuning of a pruned model on its training tokens (cosine learning rate)."""

    steps: int = 100
    batch_size: int = 16
    seq_len: int = 128
    lr: float = 3e-4  # the end of the pretraining schedule: more undoes what survived
    min_lr: float = 3e-5
    warmup: int = 10
    weight_decay: float = 0.0
    seed: int = 0


def recover(
    model: nn.Module,
    masks: Mapping[str, torch.Tensor],
    train_ids: torch.Tensor,
    config: RecoverConfig | None = None,
) -> list[float]:
    """Fine-tune ``model`` in place on random windows of ``train_ids`` for ``config.steps``
    AdamW steps, re-applying ``masks`` after every step (the optimizer's momentum would
    otherwise move the pruned weights off zero); return the loss of each step."""
    config = config or RecoverConfig()
    device = next(model.parameters()).device
    optimizer = make_adamw(model, config.lr, config.weight_decay, device=device)
    seq_len = min(config.seq_len, model.max_seq_len)
    apply_masks(model, masks)
    model.train()
    losses = []
    for step in range(config.steps):
        lr = cosine_lr(step, max_lr=config.lr, min_lr=config.min_lr, warmup=config.warmup,
                       total=config.steps)  # fmt: skip
        for group in optimizer.param_groups:
            group["lr"] = lr
        windows = random_windows(
            train_ids, config.batch_size, seq_len + 1, step_generator(config.seed, step)
        ).to(device)
        loss = causal_lm_loss(model(windows[:, :-1]), windows)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        apply_masks(model, masks)
        losses.append(loss.item())
    model.eval()
    return losses


# --------------------------------------------------------------------------------------------
# Structured pruning: heads and neurons really removed
# --------------------------------------------------------------------------------------------


class RaggedKVCache(KVCache):
    """A ``KVCache`` whose layers hold different numbers of heads (after head pruning)."""

    def __init__(
        self,
        heads: Sequence[int],
        batch_size: int,
        max_len: int,
        head_dim: int,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__(len(heads), batch_size, 1, max_len, head_dim, dtype, device)
        shapes = [(batch_size, h, max_len, head_dim) for h in heads]
        self.keys = [torch.zeros(s, dtype=dtype, device=device) for s in shapes]
        self.values = [torch.zeros(s, dtype=dtype, device=device) for s in shapes]


class PrunedGPT(GPT):
    """A GPT whose layer i has ``heads[i]`` attention heads (of the config's head size) and
    ``ffn[i]`` FFN neurons. ``PrunedGPT(config, heads, ffn)`` has fresh weights; ``shrink``
    makes one from a trained GPT."""

    def __init__(self, config: GPTConfig, heads: Sequence[int], ffn: Sequence[int]) -> None:
        super().__init__(config)
        if len(heads) != config.n_layer or len(ffn) != config.n_layer:
            raise ValueError(f"need {config.n_layer} head and FFN counts, got {heads}, {ffn}")
        if min(heads) < 1 or max(heads) > config.n_head or min(ffn) < 1:
            raise ValueError(f"every layer keeps 1..{config.n_head} heads and >= 1 neuron")
        self.heads, self.ffn = list(heads), list(ffn)
        d, hd, bias = config.n_embd, self.head_dim, config.bias
        for block, h, f in zip(self.transformer.h, heads, ffn, strict=True):
            block.attn.n_head, block.attn.n_embd = h, h * hd  # width of the concatenated heads
            block.attn.c_attn = nn.Linear(d, 3 * h * hd, bias=bias)
            block.attn.c_proj = nn.Linear(h * hd, d, bias=bias)
            block.mlp.c_fc = nn.Linear(d, f, bias=bias)
            block.mlp.c_proj = nn.Linear(f, d, bias=bias)

    @property
    def head_dim(self) -> int:
        return self.config.n_embd // self.config.n_head

    def new_cache(self, batch_size: int, max_len: int | None = None) -> KVCache:
        max_len = self.max_seq_len if max_len is None else max_len
        if max_len > self.max_seq_len:
            raise ValueError(f"max_len = {max_len} exceeds the context of {self.max_seq_len}")
        weight = self.transformer.wte.weight
        return RaggedKVCache(
            self.heads, batch_size, max_len, self.head_dim, weight.dtype, weight.device
        )


def _block_sizes(model: GPT) -> tuple[list[int], list[int]]:
    heads = [block.attn.n_head for block in model.transformer.h]
    return heads, [block.mlp.c_fc.out_features for block in model.transformer.h]


def shrink(
    model: GPT, keep_heads: Sequence[Sequence[int]], keep_neurons: Sequence[Sequence[int]]
) -> PrunedGPT:
    """A ``PrunedGPT`` with only the heads ``keep_heads[i]`` and FFN neurons
    ``keep_neurons[i]`` of each layer i of ``model`` (a GPT or PrunedGPT): their rows and
    columns of ``c_attn``, ``attn.c_proj``, ``c_fc``, ``mlp.c_proj`` are copied, the others
    dropped. Everything else is copied as is, so the kept units compute what they did."""
    config = model.config
    hd = config.n_embd // config.n_head
    heads_now, ffn_now = _block_sizes(model)
    keep_heads = [sorted(set(k)) for k in keep_heads]
    keep_neurons = [sorted(set(k)) for k in keep_neurons]
    for i, (kh, kn) in enumerate(zip(keep_heads, keep_neurons, strict=True)):
        if not kh or not kn or max(kh) >= heads_now[i] or max(kn) >= ffn_now[i] or min(kh + kn) < 0:
            raise ValueError(f"layer {i}: keep 1..{heads_now[i]} heads and 1..{ffn_now[i]} "
                             f"neurons by index, got {kh} and {len(kn)} neurons")  # fmt: skip
    pruned = PrunedGPT(config, [len(k) for k in keep_heads], [len(k) for k in keep_neurons])
    state = model.state_dict()
    for i, (kh, kn) in enumerate(zip(keep_heads, keep_neurons, strict=True)):
        p = f"transformer.h.{i}."
        width = heads_now[i] * hd
        cols = torch.cat([torch.arange(h * hd, (h + 1) * hd) for h in kh])
        rows = torch.cat([part * width + cols for part in range(3)])  # q, k, v blocks
        neurons = torch.tensor(kn)
        state[p + "attn.c_attn.weight"] = state[p + "attn.c_attn.weight"][rows]
        state[p + "attn.c_proj.weight"] = state[p + "attn.c_proj.weight"][:, cols]
        state[p + "mlp.c_fc.weight"] = state[p + "mlp.c_fc.weight"][neurons]
        state[p + "mlp.c_proj.weight"] = state[p + "mlp.c_proj.weight"][:, neurons]
        if config.bias:
            state[p + "attn.c_attn.bias"] = state[p + "attn.c_attn.bias"][rows]
            state[p + "mlp.c_fc.bias"] = state[p + "mlp.c_fc.bias"][neurons]
    pruned.load_state_dict(state)
    return pruned.to(next(model.parameters()).device).train(model.training)


def weight_importance(model: GPT) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Per layer, the L2 norm of each head's weights (rows of Q, K, V and columns of
    ``attn.c_proj``) and of each FFN neuron's (row of ``c_fc``, column of ``mlp.c_proj``)."""
    hd = model.config.n_embd // model.config.n_head
    heads, neurons = [], []
    for block in model.transformer.h:
        h = block.attn.n_head
        qkv = block.attn.c_attn.weight.detach().view(3, h, hd, -1).pow(2).sum(dim=(0, 2, 3))
        out = block.attn.c_proj.weight.detach().view(-1, h, hd).pow(2).sum(dim=(0, 2))
        heads.append((qkv + out).sqrt())
        fc, proj = block.mlp.c_fc.weight.detach(), block.mlp.c_proj.weight.detach()
        neurons.append((fc.pow(2).sum(1) + proj.pow(2).sum(0)).sqrt())
    return heads, neurons


def taylor_importance(
    model: GPT, windows: torch.Tensor, batch_size: int = 16
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Per layer, mean over ``windows`` (N, T + 1 token ids) of |sum a * dL/da| for each head
    (a: its slice of ``attn.c_proj``'s input) and each FFN neuron (a: its GELU output)."""
    hd = model.config.n_embd // model.config.n_head
    blocks = list(model.transformer.h)
    captured: dict[tuple[str, int], torch.Tensor] = {}

    def keep(kind: str, i: int):
        def hook(_module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            args[0].retain_grad()
            captured[kind, i] = args[0]

        return hook

    handles = []
    for i, block in enumerate(blocks):
        handles.append(block.attn.c_proj.register_forward_pre_hook(keep("attn", i)))
        handles.append(block.mlp.c_proj.register_forward_pre_hook(keep("mlp", i)))
    heads = [torch.zeros(b.attn.n_head) for b in blocks]
    neurons = [torch.zeros(b.mlp.c_fc.out_features) for b in blocks]
    was_training = model.training
    model.eval()
    try:
        for batch in windows.split(batch_size):
            batch = batch.to(model.transformer.wte.weight.device)
            model.zero_grad(set_to_none=True)
            causal_lm_loss(model(batch[:, :-1]), batch).backward()
            for i, block in enumerate(blocks):
                a = captured["attn", i]
                per_head = (a * a.grad).view(*a.shape[:2], block.attn.n_head, hd).sum(dim=(1, 3))
                # the loss is a mean over the batch: times len(batch) gives each window's own
                heads[i] += per_head.abs().sum(0).cpu() * len(batch)
                a = captured["mlp", i]
                neurons[i] += (a * a.grad).sum(1).abs().sum(0).cpu() * len(batch)
    finally:
        for handle in handles:
            handle.remove()
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    n = len(windows)
    return [h / n for h in heads], [f / n for f in neurons]


def _top(scores: torch.Tensor, fraction: float) -> list[int]:
    keep = max(1, round((1.0 - fraction) * len(scores)))
    return sorted(scores.topk(keep).indices.tolist())


def structured_prune(
    model: GPT,
    head_fraction: float,
    ffn_fraction: float,
    score: str = "taylor",
    windows: torch.Tensor | None = None,
) -> PrunedGPT:
    """Remove ``head_fraction`` of each layer's heads and ``ffn_fraction`` of its FFN neurons
    (at least one of each stays), the least important by ``score`` (``"norm"`` or
    ``"taylor"``, which needs calibration ``windows`` of T + 1 ids)."""
    _check_sparsity(head_fraction)
    _check_sparsity(ffn_fraction)
    if score == "norm":
        heads, neurons = weight_importance(model)
    elif score == "taylor":
        if windows is None:
            raise ValueError("taylor importance needs calibration windows (N, T + 1)")
        heads, neurons = taylor_importance(model, windows)
    else:
        raise ValueError(f"unknown importance score {score!r}: norm or taylor")
    return shrink(
        model,
        [_top(h, head_fraction) for h in heads],
        [_top(f, ffn_fraction) for f in neurons],
    )
