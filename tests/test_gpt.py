"""`llmcourse.gpt` against Hugging Face's GPT2LMHeadModel (tiny random configs, no download),
the KV cache against the full forward pass, and parameter counts against published sizes."""

from __future__ import annotations

import math

import pytest
import torch

from llmcourse.gpt import GPT, GPTConfig, param_count
from llmcourse.kv_cache import KVCache, causal_attention, kv_cache_bytes

transformers = pytest.importorskip("transformers")

VOCAB, POSITIONS = 61, 24


def hf_gpt2(seed: int = 0, **overrides) -> transformers.GPT2LMHeadModel:
    """A tiny random GPT-2 whose every weight (LayerNorms and biases too) is moved off its init."""
    torch.manual_seed(seed)
    settings = dict(
        vocab_size=VOCAB, n_positions=POSITIONS, n_embd=32, n_layer=2, n_head=4,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0,
    )  # fmt: skip
    config = transformers.GPT2Config(**settings | overrides)
    model = transformers.GPT2LMHeadModel(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


def tokens(batch: int, length: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def pair() -> tuple[transformers.GPT2LMHeadModel, GPT]:
    hf = hf_gpt2()
    return hf, GPT.from_hf(hf)


# ------------------------------------------------------------------------------------------
# Loading Hugging Face weights
# ------------------------------------------------------------------------------------------


def test_logits_match_hugging_face(pair) -> None:
    hf, ours = pair
    ids = tokens(3, POSITIONS)
    with torch.no_grad():
        expected = hf(ids).logits
    got = ours(ids)
    assert got.dtype == torch.float32 and got.shape == (3, POSITIONS, VOCAB)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    # the perturbation matters: a fresh model (or one LayerNorm reset) gives other logits
    assert not torch.allclose(GPT(ours.config).eval()(ids), expected, atol=1e-2)
    broken = GPT.from_hf(hf)
    with torch.no_grad():
        broken.transformer.h[1].ln_2.bias.zero_()
    assert not torch.allclose(broken(ids), expected, atol=1e-3)


def test_loaded_model_is_tied_and_independent(pair) -> None:
    hf, ours = pair
    assert ours.lm_head.weight is ours.transformer.wte.weight
    assert ours.num_params() == sum(p.numel() for p in hf.parameters())
    assert not ours.training
    assert all(p.requires_grad and p.is_contiguous() for p in ours.parameters())  # fine-tunable
    # loading copies: changing our weights leaves the HF model alone
    assert ours.transformer.wte.weight.data_ptr() != hf.transformer.wte.weight.data_ptr()


def test_load_from_safetensors_folder(pair, tmp_path) -> None:
    hf, ours = pair
    hf.save_pretrained(tmp_path, safe_serialization=True)
    loaded = GPT.from_hf(tmp_path)
    ids = tokens(2, 9, seed=3)
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids), hf(ids).logits, atol=1e-5, rtol=1e-5)
    assert loaded.config == ours.config
    assert loaded.lm_head.weight is loaded.transformer.wte.weight


def test_load_hub_style_names(pair) -> None:
    """The hub's gpt2 file comes from GPT2Model: no 'transformer.' prefix, and old files carry
    the attention-mask buffers attn.bias / attn.masked_bias, which are not weights."""
    hf, _ = pair
    base = hf.transformer
    state = dict(base.state_dict())
    state["h.0.attn.bias"] = torch.ones(1, 1, POSITIONS, POSITIONS)
    state["h.0.attn.masked_bias"] = torch.tensor(-1e4)

    class Source:
        config = base.config

        def state_dict(self) -> dict[str, torch.Tensor]:
            return state

    ours = GPT.from_hf(Source())
    ids = tokens(1, 7)
    with torch.no_grad():
        torch.testing.assert_close(ours(ids), hf(ids).logits, atol=1e-5, rtol=1e-5)


def test_missing_unexpected_and_misshaped_weights_are_listed(pair) -> None:
    hf, _ = pair

    class Source:
        def __init__(self, state: dict[str, torch.Tensor]) -> None:
            self.config, self._state = hf.config, state

        def state_dict(self) -> dict[str, torch.Tensor]:
            return self._state

    state = dict(hf.state_dict())
    del state["transformer.h.1.mlp.c_fc.bias"]
    state["transformer.h.0.attn.rotary"] = torch.zeros(3)
    with pytest.raises(ValueError, match=r"missing \(1\): transformer.h.1.mlp.c_fc.bias") as err:
        GPT.from_hf(Source(state))
    assert "unexpected (1): transformer.h.0.attn.rotary" in str(err.value)
    state = dict(hf.state_dict())
    state["transformer.ln_f.weight"] = torch.ones(5)
    with pytest.raises(ValueError, match=r"wrong shape.*ln_f.weight: \(5,\) instead of \(32,\)"):
        GPT.from_hf(Source(state))


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("activation_function", "relu", "tanh GELU"),
        ("scale_attn_by_inverse_layer_idx", True, "scale_attn_by_inverse_layer_idx"),
        ("n_inner", 40, "n_inner"),
        ("tie_word_embeddings", False, "untied"),
        ("add_cross_attention", True, "add_cross_attention"),
    ],
)
def test_unsupported_configs_are_refused(option, value, message) -> None:
    hf = hf_gpt2(**{option: value})
    with pytest.raises(ValueError, match=f"unsupported gpt2 configuration: .*{message}"):
        GPT.from_hf(hf)


def test_bad_sources(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="no such checkpoint folder"):
        GPT.from_hf(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match=r"no config\.json"):
        GPT.from_hf(tmp_path)
    hf_gpt2().config.save_pretrained(tmp_path)
    (tmp_path / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(FileNotFoundError, match="pickled weights are not loaded"):
        GPT.from_hf(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{broken")
    with pytest.raises(ValueError, match="cannot read"):
        GPT.from_hf(tmp_path)
    with pytest.raises(TypeError, match="Hugging Face model instance"):
        GPT.from_hf(42)
    llama = transformers.LlamaConfig(vocab_size=10, hidden_size=8, num_hidden_layers=1,
                                     num_attention_heads=2, intermediate_size=16)  # fmt: skip
    with pytest.raises(ValueError, match="expected a 'gpt2' checkpoint, got model_type 'llama'"):
        GPT.from_hf(transformers.LlamaForCausalLM(llama))


# ------------------------------------------------------------------------------------------
# KV cache
# ------------------------------------------------------------------------------------------


def test_cached_decoding_equals_full_forward(pair) -> None:
    _, model = pair
    ids = tokens(2, 12, seed=4)
    full = model(ids)
    cache = model.new_cache(batch_size=2, max_len=12)
    steps = torch.cat([model(ids[:, t : t + 1], cache) for t in range(12)], dim=1)
    assert cache.length == 12
    torch.testing.assert_close(steps, full, atol=1e-5, rtol=1e-5)
    # a prompt of 5, one step, then a chunk of 4 after cached tokens (bottom-right mask), a step
    cache.reset()
    pieces = [model(ids[:, a:b], cache) for a, b in ((0, 5), (5, 6), (6, 10), (10, 11))]
    torch.testing.assert_close(torch.cat(pieces, dim=1), full[:, :11], atol=1e-5, rtol=1e-5)
    assert cache.length == 11


def test_causal_attention_chunk_after_cache_is_bottom_right() -> None:
    torch.manual_seed(0)
    q, k, v = torch.randn(1, 2, 3, 8), torch.randn(1, 2, 7, 8), torch.randn(1, 2, 7, 8)
    got = causal_attention(q, k, v)
    # by hand: query t sits at position 4 + t and sees keys 0 .. 4 + t
    scores = q @ k.transpose(-1, -2) / math.sqrt(8)
    allowed = torch.arange(7)[None, :] <= torch.arange(4, 7)[:, None]
    expected = scores.masked_fill(~allowed, float("-inf")).softmax(-1) @ v
    torch.testing.assert_close(got, expected)


def test_kv_cache_bookkeeping_and_errors() -> None:
    cache = KVCache(n_layers=2, batch_size=1, n_kv_heads=2, max_len=4, head_dim=3)
    k = torch.randn(1, 2, 3, 3)
    k_all, v_all = cache.update(0, k, 2 * k)
    assert k_all.shape == (1, 2, 3, 3) and torch.equal(v_all, 2 * k)
    cache.advance(3)
    assert (cache.length, cache.free) == (3, 1)
    k_all, _ = cache.update(1, torch.ones(1, 2, 1, 3), torch.ones(1, 2, 1, 3))
    assert k_all.shape[2] == 4  # layer 1 sees its own (zero) slots 0..2 plus the new one
    with pytest.raises(ValueError, match="KV cache overflow"):
        cache.update(0, torch.ones(1, 2, 2, 3), torch.ones(1, 2, 2, 3))
    with pytest.raises(ValueError, match="new keys must have shape"):
        cache.update(0, torch.ones(1, 3, 1, 3), torch.ones(1, 3, 1, 3))
    with pytest.raises(ValueError, match=r"layer must be in 0\.\.1"):
        cache.update(2, k, k)
    with pytest.raises(ValueError, match="cannot advance"):
        cache.advance(2)
    cache.reset()
    assert cache.length == 0 and cache.nbytes() == 2 * 2 * (2 * 4 * 3) * 4
    assert kv_cache_bytes(2, 2, 3, tokens=4, bytes_per_value=4) == cache.nbytes()
    with pytest.raises(ValueError, match="must be positive"):
        KVCache(0, 1, 1, 1, 1)


# ------------------------------------------------------------------------------------------
# Bad input
# ------------------------------------------------------------------------------------------


def test_bad_input_gives_clear_errors(pair) -> None:
    _, model = pair
    with pytest.raises(ValueError, match=r"\(batch, length\)"):
        model(torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match="integer token ids"):
        model(torch.zeros(1, 5))
    with pytest.raises(ValueError, match="at least one token"):
        model(torch.zeros(1, 0, dtype=torch.long))
    with pytest.raises(ValueError, match=f"in 0..{VOCAB - 1}"):
        model(torch.full((1, 3), VOCAB))
    with pytest.raises(ValueError, match=f"sequence too long: {POSITIONS + 1} positions"):
        model(tokens(1, POSITIONS + 1))
    cache = model.new_cache(1, max_len=4)
    model(tokens(1, 3), cache)
    with pytest.raises(ValueError, match="KV cache overflow: 3 cached \\+ 2 new"):
        model(tokens(1, 2), cache)
    with pytest.raises(ValueError, match="the cache holds 1 sequences"):
        model(tokens(2, 1), cache)
    with pytest.raises(ValueError, match="exceeds the context"):
        model.new_cache(1, max_len=POSITIONS + 1)


# ------------------------------------------------------------------------------------------
# Construction: init, dropout, training
# ------------------------------------------------------------------------------------------


def test_gpt2_initialisation() -> None:
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=500, n_positions=64, n_layer=8, n_head=4, n_embd=128)
    model = GPT(config)
    assert model.transformer.wte.weight.std().item() == pytest.approx(0.02, rel=0.05)
    fc = model.transformer.h[0].mlp.c_fc.weight
    assert fc.std().item() == pytest.approx(0.02, rel=0.05)
    proj = torch.cat([b.mlp.c_proj.weight.flatten() for b in model.transformer.h])
    assert proj.std().item() == pytest.approx(0.02 / math.sqrt(16), rel=0.05)
    assert torch.all(model.transformer.h[0].attn.c_attn.bias == 0)
    assert model.lm_head.weight is model.transformer.wte.weight
    no_bias = GPT(GPTConfig.preset("tiny", bias=False, vocab_size=100))
    assert not any(name.endswith("bias") for name, _ in no_bias.named_parameters())


def test_dropout_only_in_training_mode() -> None:
    torch.manual_seed(0)
    model = GPT(GPTConfig.preset("tiny", vocab_size=100, dropout=0.2))
    ids = torch.randint(0, 100, (2, 16))
    model.train()
    assert not torch.allclose(model(ids), model(ids))
    model.eval()
    assert torch.equal(model(ids), model(ids))


def test_a_few_steps_fit_one_batch() -> None:
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=50, n_positions=16, n_layer=2, n_head=2, n_embd=32))
    ids = torch.randint(0, 50, (2, 16))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(20):
        logits = model(ids)
        loss = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[0] == pytest.approx(math.log(50), rel=0.1)  # starts near uniform
    assert losses[-1] < 0.5 * losses[0]


def test_presets_and_config_checks() -> None:
    assert GPTConfig.preset("tiny", vocab_size=4096).vocab_size == 4096
    assert GPTConfig.preset("gpt2").n_embd == 768
    with pytest.raises(ValueError, match="unknown GPT preset 'gpt5'"):
        GPTConfig.preset("gpt5")
    with pytest.raises(ValueError, match="divisible by n_head"):
        GPTConfig(vocab_size=10, n_positions=8, n_layer=1, n_head=3, n_embd=8)


# ------------------------------------------------------------------------------------------
# Parameter counts
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "config",
    [
        GPTConfig.preset("tiny"),
        GPTConfig.preset("small", vocab_size=300),
        GPTConfig(vocab_size=37, n_positions=11, n_layer=3, n_head=2, n_embd=24, bias=False),
    ],
)
def test_param_count_formula_equals_the_built_model(config) -> None:
    model = GPT(config)
    assert param_count(config) == model.num_params() == sum(p.numel() for p in model.parameters())
    assert param_count(config, non_embedding=True) == model.num_params(non_embedding=True)
    assert model.num_params() - model.num_params(True) == config.n_positions * config.n_embd


def test_param_counts_of_the_released_gpt2_models() -> None:
    # the sizes of the released checkpoints (the GPT-2 paper rounded them to 117M, 345M,
    # 762M and 1542M with a miscount; the files hold these)
    assert param_count(GPTConfig.preset("gpt2")) == 124_439_808
    assert param_count(GPTConfig.preset("gpt2-medium")) == 354_823_168
    assert param_count(GPTConfig.preset("gpt2-large")) == 774_030_080
    assert param_count(GPTConfig.preset("gpt2-xl")) == 1_557_611_200
    # and the HF model built at the 124M size (meta device: no memory) agrees
    with torch.device("meta"):
        hf = transformers.GPT2LMHeadModel(transformers.GPT2Config())
    assert sum(p.numel() for p in hf.parameters()) == 124_439_808


def test_gpt1_and_gpt3_counts_from_their_papers() -> None:
    # GPT-3 175B: 96 layers, d = 12288, 96 heads, 2048 positions, GPT-2's vocabulary
    gpt3 = GPTConfig(vocab_size=50257, n_positions=2048, n_layer=96, n_head=96, n_embd=12288)
    assert param_count(gpt3) == pytest.approx(175e9, rel=0.01)
    # GPT-1 "117M": 12 layers, d = 768, 512 positions, 40478 BPE tokens, post-norm without a
    # final LayerNorm; our pre-norm config has the same weights plus ln_f's 2 * 768
    gpt1 = GPTConfig(vocab_size=40478, n_positions=512, n_layer=12, n_head=12, n_embd=768)
    gpt1_count = param_count(gpt1) - 2 * 768
    assert gpt1_count == 116_534_784
    assert gpt1_count == pytest.approx(117e6, rel=0.01)
    with torch.device("meta"):
        hf = transformers.OpenAIGPTLMHeadModel(transformers.OpenAIGPTConfig())
    assert sum(p.numel() for p in hf.parameters()) == gpt1_count
