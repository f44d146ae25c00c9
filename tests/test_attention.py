"""`llmcourse.attention` against PyTorch's own attention (SDPA, nn.MultiheadAttention)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from llmcourse import attention as A
from llmcourse.attention import unscramble as U
from llmcourse.attention.__main__ import main
from llmcourse.plots import close


def rand(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------------------
# Kernel regression
# ------------------------------------------------------------------------------------------


def test_nadaraya_watson_by_hand() -> None:
    keys, values = torch.tensor([0.0, 1.0, 3.0]), torch.tensor([1.0, 2.0, -1.0])
    query = 0.5
    raw = [math.exp(-((query - k) ** 2) / 2) for k in keys.tolist()]
    expected = sum(r * v for r, v in zip(raw, values.tolist(), strict=True)) / sum(raw)
    pred, weights = A.nadaraya_watson(torch.tensor([query]), keys, values)
    assert pred.item() == pytest.approx(expected, rel=1e-6)
    assert weights.sum().item() == pytest.approx(1.0)
    assert weights[0, 0] == pytest.approx(weights[0, 1].item())  # 0 and 1 are equally far


def test_kernel_width_limits() -> None:
    keys, values = torch.tensor([0.0, 1.0, 2.0]), torch.tensor([5.0, 7.0, 9.0])
    narrow, _ = A.nadaraya_watson(torch.tensor([0.9]), keys, values, width=0.01)
    wide, _ = A.nadaraya_watson(torch.tensor([0.9]), keys, values, width=1e4)
    assert narrow.item() == pytest.approx(7.0)  # nearest neighbour
    assert wide.item() == pytest.approx(7.0, abs=1e-3)  # the mean of the values
    with pytest.raises(ValueError, match="positive"):
        A.nadaraya_watson(keys, keys, values, width=0.0)
    with pytest.raises(ValueError, match="pair up"):
        A.nadaraya_watson(keys, keys, values[:2])


def test_learned_width_beats_width_one() -> None:
    x, y, x_test, y_true = A.toy_regression(seed=0)
    model, losses = A.fit_width(x, y, steps=150)
    assert losses[-1] < losses[0]
    assert 0.05 < model.width < 1.0
    fixed, _ = A.nadaraya_watson(x_test, x, y)
    with torch.no_grad():
        learned, _ = model(x_test, x, y)
    assert ((learned - y_true) ** 2).mean() < 0.5 * ((fixed - y_true) ** 2).mean()


# ------------------------------------------------------------------------------------------
# Scaled dot-product attention and masks
# ------------------------------------------------------------------------------------------


def test_sdpa_matches_torch_without_and_with_masks() -> None:
    q, k, v = rand(2, 3, 5, 8, seed=1), rand(2, 3, 7, 8, seed=2), rand(2, 3, 7, 4, seed=3)
    out, weights = A.scaled_dot_product_attention(q, k, v)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v))
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 3, 5))
    mask = rand(2, 1, 5, 7, seed=4) > 0
    mask[..., 0] = True  # every query sees at least one key
    out, weights = A.scaled_dot_product_attention(q, k, v, mask=mask)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, attn_mask=mask))
    assert (weights.masked_select(~mask.expand_as(weights)) == 0).all()


def test_causal_matches_torch_is_causal() -> None:
    q, k, v = rand(2, 6, 8, seed=5), rand(2, 6, 8, seed=6), rand(2, 6, 3, seed=7)
    out, weights = A.scaled_dot_product_attention(q, k, v, causal=True)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, is_causal=True))
    assert torch.equal(weights[0] > 0, torch.ones(6, 6).tril() > 0)


def test_causal_mask_with_cached_keys_is_bottom_right() -> None:
    mask = A.causal_mask(2, 5)
    assert mask.tolist() == [[True, True, True, True, False], [True] * 5]
    with pytest.raises(ValueError, match="L_q <= L_k"):
        A.causal_mask(5, 2)


def test_scaling_by_sqrt_dk_matches_autograd_and_keeps_variance() -> None:
    q = rand(4, 256, 512, seed=8).requires_grad_()
    k, v = rand(4, 256, 512, seed=9), rand(4, 256, 512, seed=10)
    scores = q @ k.transpose(-2, -1) / math.sqrt(512)
    assert scores.var().item() == pytest.approx(1.0, rel=0.1)
    out, _ = A.scaled_dot_product_attention(q, k, v)
    (g,) = torch.autograd.grad(out.sum(), q)
    (g_ref,) = torch.autograd.grad(F.scaled_dot_product_attention(q, k, v).sum(), q)
    torch.testing.assert_close(g, g_ref, rtol=1e-4, atol=1e-5)


def test_fully_masked_rows_give_zero_not_nan() -> None:
    scores = rand(2, 3, seed=11)
    mask = torch.tensor([[True, False, True], [False, False, False]])
    weights = A.masked_softmax(scores, mask)
    assert torch.isfinite(weights).all()
    assert weights[1].tolist() == [0.0, 0.0, 0.0]
    torch.testing.assert_close(weights[0, [0, 2]], torch.softmax(scores[0, [0, 2]], -1))


def test_padding_mask() -> None:
    tokens = torch.tensor([[5, 6, 0, 0], [7, 8, 9, 1]])
    mask = A.padding_mask(tokens, pad_id=0)
    assert mask.shape == (2, 1, 1, 4)
    assert mask[0, 0, 0].tolist() == [True, True, False, False]
    with pytest.raises(ValueError, match="batch, length"):
        A.padding_mask(tokens[0], 0)


def test_bad_inputs_have_clear_errors() -> None:
    q = rand(2, 5, 8)
    with pytest.raises(ValueError, match="same size d_k"):
        A.scaled_dot_product_attention(q, rand(2, 5, 4), rand(2, 5, 4))
    with pytest.raises(ValueError, match="every key needs a value"):
        A.scaled_dot_product_attention(q, q, rand(2, 4, 8))
    with pytest.raises(ValueError, match="does not broadcast"):
        A.scaled_dot_product_attention(q, q, q, mask=torch.ones(3, 5, dtype=torch.bool))
    with pytest.raises(TypeError, match="boolean"):
        A.scaled_dot_product_attention(q, q, q, mask=torch.ones(5, 5))
    with pytest.raises(ValueError, match="divisible"):
        A.MultiHeadAttention(10, 3)
    with pytest.raises(ValueError, match="d_model=16"):
        A.MultiHeadAttention(16, 4)(rand(2, 5, 8))
    with pytest.raises(ValueError, match="divisible"):
        A.split_heads(rand(2, 5, 10), 3)


# ------------------------------------------------------------------------------------------
# Self-attention and multi-head attention
# ------------------------------------------------------------------------------------------


def test_self_attention_head_matches_sdpa() -> None:
    torch.manual_seed(0)
    head = A.SelfAttention(d_model=12, d_head=4)
    x = rand(3, 7, 12, seed=12)
    out, _ = head(x, causal=True)
    q, k, v = x @ head.W_Q.weight.T, x @ head.W_K.weight.T, x @ head.W_V.weight.T
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, is_causal=True))


def test_split_and_merge_heads() -> None:
    x = rand(2, 5, 12, seed=13)
    heads = A.split_heads(x, 3)
    assert heads.shape == (2, 3, 5, 4)
    torch.testing.assert_close(heads[1, 2, 4], x[1, 4, 8:12])
    torch.testing.assert_close(A.merge_heads(heads), x)


def copied(torch_mha: nn.MultiheadAttention, bias: bool = True) -> A.MultiHeadAttention:
    """Our module with the weights of ``torch_mha`` (whose in_proj packs W_Q, W_K, W_V)."""
    d = torch_mha.embed_dim
    ours = A.MultiHeadAttention(d, torch_mha.num_heads, bias=bias)
    with torch.no_grad():
        for i, proj in enumerate((ours.q_proj, ours.k_proj, ours.v_proj)):
            proj.weight.copy_(torch_mha.in_proj_weight[i * d : (i + 1) * d])
            if bias:
                proj.bias.copy_(torch_mha.in_proj_bias[i * d : (i + 1) * d])
        ours.out_proj.weight.copy_(torch_mha.out_proj.weight)
        if bias:
            ours.out_proj.bias.copy_(torch_mha.out_proj.bias)
    return ours


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("need_weights", [True, False])
def test_multihead_matches_torch_multiheadattention(bias: bool, need_weights: bool) -> None:
    torch.manual_seed(1)
    ref = nn.MultiheadAttention(16, 4, bias=bias, batch_first=True).eval()
    ours = copied(ref, bias).eval()
    x, memory = rand(3, 6, 16, seed=14), rand(3, 9, 16, seed=15)
    # self-attention, no mask
    expected, expected_w = ref(x, x, x, average_attn_weights=False)
    got, got_w = ours(x, need_weights=need_weights)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    if need_weights:
        torch.testing.assert_close(got_w, expected_w, rtol=1e-4, atol=1e-5)
    # causal self-attention (torch's attn_mask: True = *not* allowed)
    future = torch.ones(6, 6, dtype=torch.bool).triu(1)
    expected, _ = ref(x, x, x, attn_mask=future)
    got, _ = ours(x, causal=True, need_weights=need_weights)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    # cross-attention with padded keys (torch's key_padding_mask: True = padding)
    tokens = torch.tensor([[1] * 9, [1] * 5 + [0] * 4, [1] * 2 + [0] * 7])
    expected, _ = ref(x, memory, memory, key_padding_mask=tokens == 0)
    got, _ = ours(x, memory, memory, mask=A.padding_mask(tokens, 0), need_weights=need_weights)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_fast_and_scratch_paths_agree_with_masks_and_gradients() -> None:
    torch.manual_seed(2)
    mha = A.MultiHeadAttention(32, 4)
    x = rand(2, 8, 32, seed=16).requires_grad_()
    tokens = torch.tensor([[1] * 8, [1] * 6 + [0] * 2])
    mask = A.padding_mask(tokens, 0)
    fast, none = mha(x, mask=mask, causal=True)
    slow, weights = mha(x, mask=mask, causal=True, need_weights=True)
    assert none is None and weights.shape == (2, 4, 8, 8)
    torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-6)
    (g_fast,) = torch.autograd.grad(fast.square().sum(), x)
    (g_slow,) = torch.autograd.grad(slow.square().sum(), x)
    torch.testing.assert_close(g_fast, g_slow, rtol=1e-4, atol=1e-5)


def test_causal_attention_does_not_leak_the_future() -> None:
    torch.manual_seed(3)
    mha = A.MultiHeadAttention(16, 2)
    x = rand(1, 7, 16, seed=17)
    changed = x.clone()
    changed[0, 5:] = rand(2, 16, seed=18)
    before, after = mha(x, causal=True)[0], mha(changed, causal=True)[0]
    torch.testing.assert_close(before[0, :5], after[0, :5])
    assert not torch.allclose(before[0, 5:], after[0, 5:])


# ------------------------------------------------------------------------------------------
# The unscrambler
# ------------------------------------------------------------------------------------------


def test_scrambled_batches_swap_disjoint_neighbours() -> None:
    scrambled, original = U.scrambled_batch(64, 10, 32, torch.Generator().manual_seed(0))
    assert (original.diff(dim=1) > 0).all()
    assert torch.equal(scrambled.sort(dim=1).values, original)
    moved = scrambled != original
    assert moved.any() and not moved.all()
    for row_s, row_o in zip(scrambled.tolist(), original.tolist(), strict=True):
        i = 0
        while i < 10:
            if row_s[i] != row_o[i]:
                assert (row_s[i], row_s[i + 1]) == (row_o[i + 1], row_o[i])
                i += 2
            else:
                i += 1


def test_sentence_encoding_round_trip() -> None:
    tokens = U.encode_sentence(U.SCRAMBLED, U.SENTENCE, 32)
    assert tokens.shape == (1, 13) and tokens.max() == 31
    assert U.decode_sentence(tokens.sort().values, U.SENTENCE, 32) == U.SENTENCE
    with pytest.raises(ValueError, match="rearrangement"):
        U.encode_sentence("汉字", U.SENTENCE, 32)


def test_unscrambler_learns_in_seconds() -> None:
    run = U.train_unscrambler(steps=250, d_model=32, batch=64)
    assert run.history["train_loss"][-1] < 0.5 * run.history["train_loss"][0]
    assert run.symbol_accuracy > 0.9  # a copy of the input would score about 0.7
    reading, weights = U.sentence_attention(run.model)
    assert len(reading) == 13
    assert weights.shape == (2, 13, 13)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 13))
    close(U.plot_attention(weights, U.axis_labels(U.SCRAMBLED)))


def test_command_line(tmp_path, capsys) -> None:
    assert main(["kernel", "--steps", "20", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "kernel_width.png").is_file()
    ckpt = tmp_path / "u.pt"
    args = ["unscramble", "--steps", "5", "--out", str(tmp_path), "--device", "cpu"]
    assert main([*args, "--checkpoint", str(ckpt)]) == 0
    assert main(["unscramble", "--load", str(ckpt), "--out", str(tmp_path)]) == 0
    assert (tmp_path / "unscramble_attention.png").is_file()
    assert "sentence_accuracy" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["--help"])
