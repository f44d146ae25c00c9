"""`llmcourse.llama` against Hugging Face's LlamaForCausalLM (tiny random configs, no download),
its building blocks against hand formulas and torch's layers, and its parameter counts."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from llmcourse.llama import (
    Llama,
    LlamaConfig,
    RMSNorm,
    SwiGLU,
    apply_rope,
    apply_rope_interleaved,
    config_from_hf,
    param_count,
    permute_meta_to_hf,
    rope_cos_sin,
    rotate_half,
)

transformers = pytest.importorskip("transformers")
llama_hf = pytest.importorskip("transformers.models.llama.modeling_llama")

VOCAB, POSITIONS = 53, 20


def hf_llama(seed: int = 0, **overrides) -> transformers.LlamaForCausalLM:
    """A tiny random LLaMA whose every weight (RMSNorm gains too) is moved off its init."""
    torch.manual_seed(seed)
    settings = dict(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=POSITIONS,
        rms_norm_eps=1e-6, bos_token_id=0, eos_token_id=1,
    )  # fmt: skip
    config = transformers.LlamaConfig(**settings | overrides)
    model = transformers.LlamaForCausalLM(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


def tokens(batch: int, length: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


def rand(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


CONFIGS = {
    "mha": {},
    "gqa": {"num_key_value_heads": 2},
    "mqa-tied-theta": {"num_key_value_heads": 1, "tie_word_embeddings": True,
                       "rope_parameters": {"rope_type": "default", "rope_theta": 500000.0}},
}  # fmt: skip


@pytest.fixture(scope="module", params=list(CONFIGS))
def pair(request) -> tuple[transformers.LlamaForCausalLM, Llama]:
    hf = hf_llama(**CONFIGS[request.param])
    return hf, Llama.from_hf(hf)


# ------------------------------------------------------------------------------------------
# Loading Hugging Face weights
# ------------------------------------------------------------------------------------------


def test_logits_match_hugging_face(pair) -> None:
    hf, ours = pair
    ids = tokens(2, POSITIONS)
    with torch.no_grad():
        expected = hf(ids).logits
    got = ours(ids)
    assert got.dtype == torch.float32 and got.shape == (2, POSITIONS, VOCAB)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert ours.num_params() == sum(p.numel() for p in hf.parameters())
    # every weight matters: resetting one RMSNorm gain changes the logits
    broken = Llama.from_hf(hf)
    with torch.no_grad():
        broken.model.layers[1].post_attention_layernorm.weight.fill_(1.0)
    assert not torch.allclose(broken(ids), expected, atol=1e-3)


def test_config_is_read(pair) -> None:
    hf, ours = pair
    c = ours.config
    assert (c.n_kv_heads, c.tie_embeddings) == (
        hf.config.num_key_value_heads,
        hf.config.tie_word_embeddings,
    )
    assert c.rope_theta == hf.config.rope_parameters["rope_theta"]
    assert c.rope_theta == (500000.0 if c.tie_embeddings else 10000.0)
    assert (ours.lm_head.weight is ours.model.embed_tokens.weight) == c.tie_embeddings


def test_load_from_safetensors_folder(pair, tmp_path) -> None:
    hf, ours = pair
    hf.save_pretrained(tmp_path, safe_serialization=True)
    loaded = Llama.from_hf(tmp_path)
    assert loaded.config == ours.config
    ids = tokens(1, 11, seed=5)
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids), hf(ids).logits, atol=1e-5, rtol=1e-5)


def test_load_in_bfloat16() -> None:
    hf = hf_llama(num_key_value_heads=2)
    ours = Llama.from_hf(hf, dtype=torch.bfloat16)
    assert {p.dtype for p in ours.parameters()} == {torch.bfloat16}
    ids = tokens(1, 8)
    got = ours(ids)
    assert got.dtype == torch.float32
    with torch.no_grad():
        torch.testing.assert_close(got, hf(ids).logits, atol=0.15, rtol=0.05)


def test_4x_style_config_dicts() -> None:
    """Configs written by transformers 4.x keep rope_theta and rope_scaling at the top."""
    old = dict(
        model_type="llama", vocab_size=100, hidden_size=64, intermediate_size=128,
        num_hidden_layers=2, num_attention_heads=8, num_key_value_heads=None,
        max_position_embeddings=4096, rms_norm_eps=1e-5, rope_theta=500000.0, rope_scaling=None,
    )  # fmt: skip
    config = config_from_hf(old)
    assert (config.rope_theta, config.n_kv_heads, config.norm_eps) == (500000.0, 8, 1e-5)
    with pytest.raises(ValueError, match="RoPE variant"):
        config_from_hf(old | {"rope_scaling": {"rope_type": "llama3", "factor": 8.0}})
    with pytest.raises(ValueError, match="lacks intermediate_size"):
        config_from_hf({k: v for k, v in old.items() if k != "intermediate_size"})


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"rope_parameters": {"rope_type": "linear", "factor": 2.0, "rope_theta": 1e4}}, "RoPE"),
        ({"attention_bias": True}, "attention_bias"),
        ({"mlp_bias": True}, "mlp_bias"),
        ({"hidden_act": "gelu"}, "hidden_act 'gelu'"),
        ({"head_dim": 16}, "head_dim 16"),
    ],
)
def test_unsupported_configs_are_refused(overrides, message) -> None:
    with pytest.raises(ValueError, match=f"unsupported llama configuration: .*{message}"):
        Llama.from_hf(hf_llama(**overrides))


def test_missing_lm_head_is_reported() -> None:
    hf = hf_llama()

    class BareModel:  # a LlamaModel's weights: no lm_head, names without 'model.'
        config = hf.config

        def state_dict(self) -> dict[str, torch.Tensor]:
            return hf.model.state_dict()

    with pytest.raises(ValueError, match=r"missing \(1\): lm_head.weight"):
        Llama.from_hf(BareModel())


# ------------------------------------------------------------------------------------------
# KV cache, grouped-query attention
# ------------------------------------------------------------------------------------------


def test_cached_decoding_equals_full_forward(pair) -> None:
    _, model = pair
    ids = tokens(2, 10, seed=7)
    full = model(ids)
    cache = model.new_cache(batch_size=2)
    assert cache.keys[0].shape == (2, model.config.n_kv_heads, POSITIONS, model.config.head_dim)
    steps = torch.cat([model(ids[:, t : t + 1], cache) for t in range(10)], dim=1)
    torch.testing.assert_close(steps, full, atol=1e-5, rtol=1e-5)
    cache.reset()
    pieces = [model(ids[:, a:b], cache) for a, b in ((0, 4), (4, 5), (5, 9), (9, 10))]
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=1e-5, rtol=1e-5)
    assert cache.length == 10


def test_grouped_query_attention_equals_repeated_heads() -> None:
    """A GQA model equals the full multi-head model whose k/v heads are copied per group."""
    torch.manual_seed(0)
    gqa = Llama(LlamaConfig(VOCAB, 32, 1, n_head=4, n_kv_heads=2, hidden_dim=40, max_seq_len=16))
    mha = Llama(LlamaConfig(VOCAB, 32, 1, n_head=4, n_kv_heads=4, hidden_dim=40, max_seq_len=16))
    state = gqa.state_dict()
    for name in ("k_proj", "v_proj"):
        w = state[f"model.layers.0.self_attn.{name}.weight"].view(2, 8, 32)
        state[f"model.layers.0.self_attn.{name}.weight"] = w.repeat_interleave(2, 0).reshape(32, 32)
    mha.load_state_dict(state)
    ids = tokens(2, 16)
    torch.testing.assert_close(gqa(ids), mha(ids))


def test_bad_input_and_configs() -> None:
    model = Llama(LlamaConfig.preset("tiny", vocab_size=VOCAB, max_seq_len=8))
    with pytest.raises(ValueError, match="sequence too long: 9 positions > the model's"):
        model(tokens(1, 9))
    with pytest.raises(ValueError, match="integer token ids"):
        model(torch.zeros(1, 3, dtype=torch.float16))
    cache = model.new_cache(1, max_len=5)
    model(tokens(1, 5), cache)
    with pytest.raises(ValueError, match="KV cache overflow"):
        model(tokens(1, 1), cache)
    with pytest.raises(ValueError, match="multiple of n_kv_heads"):
        LlamaConfig(10, dim=32, n_layer=1, n_head=4, n_kv_heads=3, hidden_dim=8, max_seq_len=4)
    with pytest.raises(ValueError, match="heads of even size"):
        LlamaConfig(10, dim=12, n_layer=1, n_head=4, n_kv_heads=4, hidden_dim=8, max_seq_len=4)
    with pytest.raises(ValueError, match="unknown LLaMA preset"):
        LlamaConfig.preset("llama5")


# ------------------------------------------------------------------------------------------
# Building blocks
# ------------------------------------------------------------------------------------------


def test_rmsnorm_formula_and_torch() -> None:
    x = rand(3, 5, 16) * 3 + 1
    norm = RMSNorm(16, eps=1e-5)
    with torch.no_grad():
        norm.weight.copy_(rand(16, seed=1))
    by_hand = x / torch.sqrt((x**2).mean(-1, keepdim=True) + 1e-5) * norm.weight
    torch.testing.assert_close(norm(x), by_hand)
    reference = torch.nn.RMSNorm(16, eps=1e-5)
    with torch.no_grad():
        reference.weight.copy_(norm.weight)
    torch.testing.assert_close(norm(x), reference(x))


def test_swiglu_by_hand() -> None:
    ffn = SwiGLU(8, 12)
    x = rand(2, 3, 8)
    gate, up, down = ffn.gate_proj.weight, ffn.up_proj.weight, ffn.down_proj.weight
    hidden = x @ gate.T * torch.sigmoid(x @ gate.T) * (x @ up.T)
    torch.testing.assert_close(ffn(x), hidden @ down.T)


def test_rope_tables_and_hugging_face() -> None:
    head_dim, theta = 16, 10000.0
    positions = torch.arange(12)
    cos, sin = rope_cos_sin(head_dim, positions, theta)
    assert cos.shape == sin.shape == (12, head_dim)
    # pair i turns at theta^(-2i/d): by hand at position 5, dimension 3 (and 3 + 8)
    angle = 5 * theta ** (-2 * 3 / head_dim)
    assert cos[5, 3].item() == pytest.approx(math.cos(angle), abs=1e-6)
    assert sin[5, 11].item() == pytest.approx(math.sin(angle), abs=1e-6)
    config = transformers.LlamaConfig(hidden_size=64, num_attention_heads=4)
    rotary = llama_hf.LlamaRotaryEmbedding(config)
    q, k = rand(2, 4, 12, head_dim), rand(2, 4, 12, head_dim, seed=1)
    hf_cos, hf_sin = rotary(q, positions[None])
    torch.testing.assert_close(cos, hf_cos[0])
    torch.testing.assert_close(sin, hf_sin[0])
    hf_q, hf_k = llama_hf.apply_rotary_pos_emb(q, k, hf_cos, hf_sin)
    torch.testing.assert_close(apply_rope(q, cos, sin), hf_q)
    torch.testing.assert_close(apply_rope(k, cos, sin), hf_k)
    torch.testing.assert_close(rotate_half(torch.arange(4.0)), torch.tensor([-2.0, -3, 0, 1]))
    with pytest.raises(ValueError, match="head_dim must be even"):
        rope_cos_sin(7, positions)
    with pytest.raises(ValueError, match=r"apply_rope needs x \(B, h, T, head_dim\)"):
        apply_rope(q[0], cos, sin)


def test_rope_is_a_rotation_with_relative_positions() -> None:
    head_dim = 32
    cos, sin = rope_cos_sin(head_dim, torch.arange(200))
    x = rand(1, 1, 200, head_dim)
    # norms are kept (pair by pair, hence in total)
    torch.testing.assert_close(apply_rope(x, cos, sin).norm(dim=-1), x.norm(dim=-1))
    # the same q and k placed at (m, n): q_m . k_n depends only on m - n
    q, k = rand(head_dim, seed=1), rand(head_dim, seed=2)
    rq = apply_rope(q.expand(1, 1, 200, head_dim), cos, sin)[0, 0]
    rk = apply_rope(k.expand(1, 1, 200, head_dim), cos, sin)[0, 0]
    scores = rq @ rk.T  # scores[m, n]
    for offset in (0, 3, -7, 50):
        diagonal = torch.diagonal(scores, offset=-offset)  # the entries with m - n = offset
        torch.testing.assert_close(diagonal, diagonal[:1].expand_as(diagonal), atol=1e-4, rtol=0)
    # and m - n is not n - m: the score distinguishes before from after
    assert abs(scores[10, 7] - scores[7, 10]) > 1e-3


def meta_rope(x: torch.Tensor, positions: torch.Tensor, theta: float = 10000.0) -> torch.Tensor:
    """Meta's reference formulation: adjacent pairs as complex numbers times e^(i m w_j)."""
    d = x.shape[-1]
    freqs = 1.0 / theta ** (torch.arange(0, d, 2).float() / d)
    rotation = torch.polar(torch.ones(len(positions), d // 2), positions.float()[:, None] * freqs)
    pairs = torch.view_as_complex(x.float().reshape(*x.shape[:-1], d // 2, 2))
    return torch.view_as_real(pairs * rotation).flatten(-2)


def test_meta_layout_permutation() -> None:
    n_heads, head_dim, dim, length = 3, 8, 20, 6
    positions = torch.arange(length)
    cos, sin = rope_cos_sin(head_dim, positions)
    x = rand(1, length, dim)
    w_meta = rand(n_heads * head_dim, dim, seed=1)
    q_meta = (x @ w_meta.T).view(1, length, n_heads, head_dim).transpose(1, 2)
    # our interleaved RoPE is Meta's complex-number one
    torch.testing.assert_close(
        apply_rope_interleaved(q_meta, cos, sin), meta_rope(q_meta, positions)
    )
    # rotate-half RoPE with the permuted weights = interleaved RoPE with the original weights,
    # with each head's dimensions in the order (0, 2, 4, ..., 1, 3, 5, ...)
    w_hf = permute_meta_to_hf(w_meta, n_heads)
    q_hf = (x @ w_hf.T).view(1, length, n_heads, head_dim).transpose(1, 2)
    order = torch.cat((torch.arange(0, head_dim, 2), torch.arange(1, head_dim, 2)))
    expected = apply_rope_interleaved(q_meta, cos, sin)[..., order]
    torch.testing.assert_close(apply_rope(q_hf, cos, sin), expected)
    # so attention scores, a sum over dimensions, are the same in both layouts
    k_meta_w = rand(n_heads * head_dim, dim, seed=2)
    k_meta = (x @ k_meta_w.T).view(1, length, n_heads, head_dim).transpose(1, 2)
    k_hf = (x @ permute_meta_to_hf(k_meta_w, n_heads).T).view(1, length, n_heads, head_dim)
    scores_meta = meta_rope(q_meta, positions) @ meta_rope(k_meta, positions).transpose(-1, -2)
    scores_hf = apply_rope(q_hf, cos, sin) @ apply_rope(k_hf.transpose(1, 2), cos, sin).transpose(
        -1, -2
    )
    torch.testing.assert_close(scores_hf, scores_meta, atol=1e-4, rtol=1e-5)
    # without the permutation the two disagree
    q_wrong = apply_rope(q_meta, cos, sin)
    assert not torch.allclose(q_wrong, apply_rope_interleaved(q_meta, cos, sin), atol=1e-3)
    with pytest.raises(ValueError, match="do not split"):
        permute_meta_to_hf(rand(10, 4), 4)


def test_sdpa_gqa_matches_explicit_repeat() -> None:
    q, k, v = rand(1, 6, 5, 8), rand(1, 2, 5, 8, seed=1), rand(1, 2, 5, 8, seed=2)
    expected = F.scaled_dot_product_attention(
        q, k.repeat_interleave(3, 1), v.repeat_interleave(3, 1), is_causal=True
    )
    from llmcourse.kv_cache import causal_attention

    torch.testing.assert_close(causal_attention(q, k, v), expected)


# ------------------------------------------------------------------------------------------
# Parameter counts
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "config",
    [
        LlamaConfig.preset("tiny"),
        LlamaConfig.preset("small", vocab_size=300, tie_embeddings=True),
        LlamaConfig(37, dim=24, n_layer=3, n_head=6, n_kv_heads=1, hidden_dim=50, max_seq_len=8),
    ],
)
def test_param_count_formula_equals_the_built_model(config) -> None:
    model = Llama(config)
    assert param_count(config) == model.num_params() == sum(p.numel() for p in model.parameters())
    assert param_count(config, non_embedding=True) == model.num_params(non_embedding=True)


def test_param_counts_of_llama2() -> None:
    assert param_count(LlamaConfig.preset("llama2-7b")) == 6_738_415_616
    assert param_count(LlamaConfig.preset("llama2-13b")) == 13_015_864_320
    assert param_count(LlamaConfig.preset("llama2-70b")) == 68_976_648_192
    # the 70B with full multi-head attention would have about 1.6B more
    full = LlamaConfig.preset("llama2-70b", n_kv_heads=64)
    assert param_count(full) - param_count(LlamaConfig.preset("llama2-70b")) == 80 * 2 * 8192 * (
        8192 - 1024
    )
    # Hugging Face's model at the 7B size, built on the meta device (no memory)
    config = transformers.LlamaConfig(
        vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
        num_attention_heads=32, num_key_value_heads=32,
    )  # fmt: skip
    with torch.device("meta"):
        hf = transformers.LlamaForCausalLM(config)
    assert sum(p.numel() for p in hf.parameters()) == 6_738_415_616
