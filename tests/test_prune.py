"""Pruning: masks against ``torch.nn.utils.prune``, the 2:4 pattern, structured removal against
the same model with those heads and neurons zeroed, Taylor importance against autograd through
a gate, and recovery that keeps the zeros."""

from __future__ import annotations

import pytest
import torch
import torch.nn.utils.prune as tprune

from llmcourse.causal_lm.loss import causal_lm_loss
from llmcourse.compress.prune import (
    PrunedGPT,
    RecoverConfig,
    apply_masks,
    global_masks,
    layerwise_masks,
    magnitude_mask,
    mask_storage_bytes,
    prunable_linears,
    prune,
    recover,
    semi_structured_mask,
    shrink,
    sparsity_report,
    structured_prune,
    taylor_importance,
    weight_importance,
)
from llmcourse.generate import GenerationConfig, generate
from llmcourse.gpt import GPT, GPTConfig

pytestmark = pytest.mark.usefixtures("one_thread")


def _gpt(seed: int = 0, n_layer: int = 2, n_head: int = 4, d: int = 32) -> GPT:
    """A small GPT with every weight moved off its initialisation (LayerNorms included)."""
    torch.manual_seed(seed)
    config = GPTConfig(vocab_size=50, n_positions=32, n_layer=n_layer, n_head=n_head, n_embd=d)
    model = GPT(config)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model.eval()


@pytest.mark.parametrize("sparsity", [0.3, 0.5, 0.7, 0.9])
def test_layerwise_masks_equal_torch_l1_unstructured(sparsity):
    model = _gpt()
    masks = layerwise_masks(model, sparsity)
    for name, module in prunable_linears(model).items():
        reference = tprune.L1Unstructured(amount=sparsity).compute_mask(
            module.weight.detach(), torch.ones_like(module.weight)
        )
        assert torch.equal(masks[name], reference.bool()), name
        assert (~masks[name]).sum() == round(sparsity * module.weight.numel())


@pytest.mark.parametrize("sparsity", [0.3, 0.9])
def test_global_masks_equal_torch_global_unstructured(sparsity):
    model, twin = _gpt(), _gpt()
    for m in (model, twin):  # a layer of smaller weights: the global cut takes more of it
        m.transformer.h[0].mlp.c_fc.weight.data *= 0.5
    masks = global_masks(model, sparsity)
    layers = prunable_linears(twin)
    tprune.global_unstructured(
        [(m, "weight") for m in layers.values()], tprune.L1Unstructured, amount=sparsity
    )
    for name, module in layers.items():
        assert torch.equal(masks[name], module.weight_mask.bool()), name
    assert (~masks["transformer.h.0.mlp.c_fc"]).float().mean() > sparsity + (1 - sparsity) / 4


def test_semi_structured_two_of_four():
    torch.manual_seed(0)
    weight = torch.randn(6, 16)
    mask = semi_structured_mask(weight)
    groups = mask.view(6, 4, 4)
    assert (groups.sum(-1) == 2).all()
    magnitude = weight.abs().view(6, 4, 4)
    kept_min = torch.where(groups, magnitude, torch.inf).amin(-1)
    dropped_max = torch.where(groups, -torch.inf, magnitude).amax(-1)
    assert (kept_min > dropped_max).all()  # the two kept are the two largest
    with pytest.raises(ValueError, match="divide by 4"):
        semi_structured_mask(torch.randn(3, 6))


def test_prune_copies_and_reports():
    model = _gpt()
    pruned, masks = prune(model, "global", 0.7)
    report = sparsity_report(pruned)
    assert report["pruned"] == pytest.approx(0.7, abs=1e-3)
    assert sparsity_report(model)["pruned"] == 0.0  # the original is untouched
    total = sum(p.numel() for p in model.parameters())
    assert report["model"] == pytest.approx(sum(int((~m).sum()) for m in masks.values()) / total)
    sizes = mask_storage_bytes(pruned)
    n = sum(m.numel() for m in masks.values())
    nnz = sum(int(m.sum()) for m in masks.values())
    assert sizes["dense"] == 4 * n
    assert sizes["bitmask"] == 4 * nnz + sum((m.numel() + 7) // 8 for m in masks.values())
    with pytest.raises(ValueError, match="sparsity"):
        magnitude_mask(torch.randn(4), 1.0)
    with pytest.raises(ValueError, match="unknown pruning method"):
        prune(model, "random")


def _zeroed(model: GPT, keep_heads, keep_neurons) -> GPT:
    """The dense model with the other heads' and neurons' output columns set to zero."""
    twin = GPT(model.config)
    twin.load_state_dict(model.state_dict())
    hd = model.config.n_embd // model.config.n_head
    with torch.no_grad():
        for block, kh, kn in zip(twin.transformer.h, keep_heads, keep_neurons, strict=True):
            for h in range(block.attn.n_head):
                if h not in kh:
                    block.attn.c_proj.weight[:, h * hd : (h + 1) * hd] = 0
            dropped = [j for j in range(block.mlp.c_fc.out_features) if j not in kn]
            block.mlp.c_proj.weight[:, dropped] = 0
    return twin.eval()


def test_shrink_equals_the_model_with_those_units_zeroed():
    model = _gpt()
    keep_heads, keep_neurons = [[0, 2], [3]], [list(range(0, 128, 3)), list(range(64))]
    small = shrink(model, keep_heads, keep_neurons)
    assert isinstance(small, PrunedGPT) and small.heads == [2, 1] and small.ffn == [43, 64]
    assert small.transformer.h[0].attn.c_attn.weight.shape == (3 * 2 * 8, 32)
    assert small.transformer.h[1].mlp.c_proj.weight.shape == (32, 64)
    assert small.num_params() < model.num_params()
    ids = torch.randint(0, 50, (3, 20))
    # zero-output units removed: the same logits
    torch.testing.assert_close(small(ids), _zeroed(model, keep_heads, keep_neurons)(ids))
    # the KV cache of per-layer head counts: cached generation = generation without cache
    cached = GenerationConfig(max_new_tokens=8, temperature=0.0)
    uncached = GenerationConfig(max_new_tokens=8, temperature=0.0, use_cache=False)
    assert torch.equal(generate(small, ids[:, :5], cached), generate(small, ids[:, :5], uncached))
    with pytest.raises(ValueError, match="layer 0"):
        shrink(model, [[], [0]], keep_neurons)


def test_structured_prune_drops_the_zero_importance_units():
    model = _gpt(seed=1)
    dead_heads, dead_neurons = [1, 3], list(range(0, 128, 2))
    with torch.no_grad():  # heads 1 and 3, even neurons: all their weights are zero
        for block in model.transformer.h:
            for h in dead_heads:
                block.attn.c_proj.weight[:, h * 8 : (h + 1) * 8] = 0
                block.attn.c_attn.weight.view(3, 4, 8, 32)[:, h] = 0
            block.mlp.c_proj.weight[:, dead_neurons] = 0
            block.mlp.c_fc.weight[dead_neurons] = 0
    windows = torch.randint(0, 50, (4, 17))
    heads, _ = taylor_importance(model, windows)
    assert all((h[dead_heads] == 0).all() and (h[[0, 2]] > 0).all() for h in heads)
    small = structured_prune(model, 0.5, 0.5, score="taylor", windows=windows)
    assert small.heads == [2, 2] and small.ffn == [64, 64]
    ids = torch.randint(0, 50, (2, 16))
    torch.testing.assert_close(small(ids), model(ids))
    by_norm = structured_prune(model, 0.5, 0.5, score="norm")
    torch.testing.assert_close(by_norm(ids), model(ids))  # the norm score sees them too
    assert weight_importance(model)[0][0].shape == (4,)


def test_taylor_importance_matches_autograd_through_a_gate():
    """|dL/dg| for a gate g = 1 multiplying one head's output, one window at a time."""
    model = _gpt(seed=2)
    windows = torch.randint(0, 50, (3, 13))
    heads, neurons = taylor_importance(model, windows, batch_size=2)
    layer, head, neuron = 1, 2, 5
    block = model.transformer.h[layer]
    expected_head, expected_neuron = 0.0, 0.0
    gate = torch.ones(4, requires_grad=True)
    gate_ffn = torch.ones(128, requires_grad=True)
    h1 = block.attn.c_proj.register_forward_pre_hook(
        lambda _m, a: (a[0] * gate.repeat_interleave(8),)
    )
    h2 = block.mlp.c_proj.register_forward_pre_hook(lambda _m, a: (a[0] * gate_ffn,))
    for w in windows:
        loss = causal_lm_loss(model(w[None, :-1]), w[None])
        g_head, g_ffn = torch.autograd.grad(loss, (gate, gate_ffn))
        expected_head += g_head[head].abs().item() / len(windows)
        expected_neuron += g_ffn[neuron].abs().item() / len(windows)
    h1.remove(), h2.remove()
    assert heads[layer][head].item() == pytest.approx(expected_head, rel=1e-4)
    assert neurons[layer][neuron].item() == pytest.approx(expected_neuron, rel=1e-4)


def test_recover_keeps_the_zeros_and_lowers_the_loss():
    model = _gpt(seed=3)
    pruned, masks = prune(model, "layerwise", 0.5)
    ids = torch.randint(0, 10, (2000,))  # a 10-token stream: easy to learn
    losses = recover(pruned, masks, ids, RecoverConfig(steps=30, batch_size=4, seq_len=16,
                                                         lr=3e-3, warmup=2))  # fmt: skip
    assert losses[-1] < losses[0] - 0.5
    for name, module in prunable_linears(pruned).items():
        assert (module.weight[~masks[name]] == 0).all(), name
        assert (module.weight[masks[name]] != 0).all(), name
    with pytest.raises(ValueError, match="no module"):
        apply_masks(pruned, {"transformer.h.9.mlp.c_fc": masks["transformer.h.0.mlp.c_fc"]})
