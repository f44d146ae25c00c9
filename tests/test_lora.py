"""LoRA from scratch against its definition, against Hugging Face ``peft`` (with the same A and
B copied in) on tiny random GPT-2 and LLaMA configs, and through merge, save and load."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from llmcourse.gpt import GPT
from llmcourse.llama import Llama
from llmcourse.sft.lora import (
    GPT_TARGETS,
    LLAMA_TARGETS,
    LoRALinear,
    apply_lora,
    load_adapter,
    lora_layers,
    merge_lora,
    optimizer_state_bytes,
    save_adapter,
    trainable_parameters,
)


def _perturb_lora(model: nn.Module, seed: int = 0) -> None:
    """B away from zero (else B A = 0 hides any mistake in A, B or the scaling)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in lora_layers(model).values():
            layer.lora_B.copy_(torch.randn(layer.lora_B.shape, generator=g) * 0.1)


def test_lora_linear_formula_init_and_freezing():
    torch.manual_seed(0)
    linear = nn.Linear(6, 5)
    lora = LoRALinear(linear, r=3, alpha=6.0)
    x = torch.randn(2, 4, 6)
    assert torch.equal(lora(x), linear(x))  # B = 0: the original layer
    assert lora.lora_A.shape == (3, 6) and lora.lora_B.shape == (5, 3)
    assert not lora.base.weight.requires_grad and not lora.base.bias.requires_grad
    assert {n for n, p in lora.named_parameters() if p.requires_grad} == {"lora_A", "lora_B"}
    nn.init.normal_(lora.lora_B)
    expected = x @ (linear.weight + 2.0 * lora.lora_B @ lora.lora_A).T + linear.bias
    torch.testing.assert_close(lora(x), expected)
    lora(x).square().sum().backward()
    assert linear.weight.grad is None and lora.lora_A.grad.abs().sum() > 0


def test_merge_gives_the_same_outputs():
    torch.manual_seed(1)
    lora = LoRALinear(nn.Linear(8, 4), r=2, alpha=5.0, dropout=0.3)
    nn.init.normal_(lora.lora_B)
    lora.eval()  # dropout off: merge is for inference
    merged = lora.merge()
    assert type(merged) is nn.Linear
    x = torch.randn(3, 8)
    torch.testing.assert_close(merged(x), lora(x))
    assert not torch.allclose(merged.weight, lora.base.weight)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="rank r"):
        LoRALinear(nn.Linear(4, 4), r=0, alpha=1.0)
    with pytest.raises(TypeError, match=r"nn\.Linear"):
        LoRALinear(nn.Conv1d(4, 4, 1), r=2, alpha=1.0)
    with pytest.raises(ValueError, match=r"no nn\.Linear module name ends with"):
        apply_lora(nn.Sequential(nn.Linear(2, 2)), targets=("q_proj",))


def _hf_gpt2():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.GPT2Config(
        vocab_size=61, n_positions=16, n_embd=32, n_layer=2, n_head=4,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
    )  # fmt: skip
    hf = transformers.GPT2LMHeadModel(config).eval()
    with torch.no_grad():  # LayerNorm weights away from 1 so a skipped one would show
        for name, p in hf.named_parameters():
            if "ln_" in name:
                p.add_(torch.randn_like(p) * 0.1)
    return hf, GPT.from_hf(hf)


def _hf_llama():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=61, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=16,
    )  # fmt: skip
    hf = transformers.LlamaForCausalLM(config).eval()
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if "norm" in name:
                p.add_(torch.randn_like(p) * 0.1)
    return hf, Llama.from_hf(hf)


@pytest.mark.parametrize(
    ("build", "targets"), [(_hf_gpt2, GPT_TARGETS), (_hf_llama, LLAMA_TARGETS[1:6])]
)
def test_against_peft_with_copied_adapters(build, targets):
    peft = pytest.importorskip("peft")
    hf, ours = build()
    r, alpha = 4, 8.0
    apply_lora(ours, targets, r=r, alpha=alpha)
    _perturb_lora(ours)
    conv1d = build is _hf_gpt2  # GPT-2's Conv1D stores (in, out): peft's fan_in_fan_out
    config = peft.LoraConfig(
        r=r, lora_alpha=alpha, target_modules=list(targets), lora_dropout=0.0,
        fan_in_fan_out=conv1d,
    )  # fmt: skip
    hf = peft.get_peft_model(hf, config)
    hf_state = dict(hf.named_parameters())
    layers = lora_layers(ours)
    assert len(layers) == sum(1 for n in hf_state if n.endswith("lora_A.default.weight"))
    with torch.no_grad():
        for name, layer in layers.items():
            for part, ours_p in (("A", layer.lora_A), ("B", layer.lora_B)):
                hf_state[f"base_model.model.{name}.lora_{part}.default.weight"].copy_(ours_p)
    ids = torch.randint(0, 61, (2, 12), generator=torch.Generator().manual_seed(1))
    hf_logits, logits = hf(ids).logits, ours(ids)
    torch.testing.assert_close(logits, hf_logits, atol=1e-5, rtol=1e-4)
    hf_logits.square().mean().backward()
    logits.square().mean().backward()
    for name, layer in layers.items():
        for part, ours_p in (("A", layer.lora_A), ("B", layer.lora_B)):
            hf_grad = hf_state[f"base_model.model.{name}.lora_{part}.default.weight"].grad
            torch.testing.assert_close(ours_p.grad, hf_grad, atol=1e-6, rtol=1e-4)
    assert trainable_parameters(ours) == hf.get_nb_trainable_parameters()[0]
    assert optimizer_state_bytes(ours) == 8 * trainable_parameters(ours)
    with torch.no_grad():
        before = ours(ids)
        merge_lora(ours)
        assert not lora_layers(ours)
        torch.testing.assert_close(ours(ids), before, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(ours(ids), hf.merge_and_unload()(ids).logits, atol=1e-5,
                                   rtol=1e-4)  # fmt: skip


def test_counts_by_formula_and_frozen_rest():
    _, ours = _hf_llama()
    apply_lora(ours, ("q_proj", "v_proj"), r=2, alpha=4.0)
    c = ours.config
    per_layer = 2 * (c.dim + c.n_head * c.head_dim) + 2 * (c.dim + c.n_kv_heads * c.head_dim)
    assert trainable_parameters(ours) == c.n_layer * per_layer
    trainable = {n for n, p in ours.named_parameters() if p.requires_grad}
    assert all(n.endswith(("lora_A", "lora_B")) for n in trainable)


def test_save_and_load_adapter_on_a_fresh_base(tmp_path):
    _, ours = _hf_gpt2()
    _, fresh = _hf_gpt2()
    apply_lora(ours, ("c_attn", "c_fc"), r=2, alpha=3.0)
    _perturb_lora(ours, seed=3)
    path = save_adapter(ours, tmp_path / "adapter.safetensors")
    assert path.stat().st_size < 20_000  # only A and B, not the base
    load_adapter(fresh, path)
    ids = torch.randint(0, 61, (1, 10))
    torch.testing.assert_close(fresh(ids), ours(ids))
    with pytest.raises(FileNotFoundError):
        load_adapter(fresh, tmp_path / "missing.safetensors")
    (tmp_path / "bad.safetensors").write_bytes(b"not a safetensors file")
    _, other = _hf_gpt2()
    with pytest.raises(ValueError, match="not a readable"):
        load_adapter(other, tmp_path / "bad.safetensors")


def test_compare_lora_full_rows_are_consistent():
    from llmcourse.sft.lora import CompareConfig, compare_lora_full

    config = CompareConfig(ranks=(2,), steps=10, base_steps=2, n_heldout=20, n_embd=32)
    full, lora = compare_lora_full(config)
    assert (full["method"], lora["method"]) == ("full", "LoRA r=2")
    # measured AdamW state = 2 fp32 moments per trainable parameter
    assert full["optimizer_bytes"] == 8 * full["trainable"]
    assert (
        lora["optimizer_bytes"]
        == 8 * lora["trainable"]
        == 8 * 2 * 2 * (32 + 96 + 32 + 32 + 32 + 128 + 128 + 32)
    )
    assert full["heldout_loss_before"] == lora["heldout_loss_before"]  # the same base
    assert full["losses"][-1] < full["losses"][0] and lora["losses"][-1] < lora["losses"][0]
