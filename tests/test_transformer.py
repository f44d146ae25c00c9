"""`llmcourse.transformer` against torch.nn.Transformer (copied weights) and by construction."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from llmcourse import transformer as T
from llmcourse.attention import MultiHeadAttention
from llmcourse.transformer.__main__ import main

D, H, FF = 16, 4, 32


def rand(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------------------
# Positions
# ------------------------------------------------------------------------------------------


def test_sinusoidal_encoding_formula_by_hand() -> None:
    table = T.sinusoidal_encoding(50, 8)
    for pos in (0, 1, 7, 49):
        for k in range(4):  # dimension pair (2k, 2k + 1) shares the frequency 10000^(-2k/8)
            angle = pos / 10000 ** (2 * k / 8)
            assert table[pos, 2 * k].item() == pytest.approx(math.sin(angle), abs=1e-6)
            assert table[pos, 2 * k + 1].item() == pytest.approx(math.cos(angle), abs=1e-6)
    # not the garbled variant: position 1 is not all cosines, position 0 is sin 0, cos 0, ...
    assert table[0].tolist() == [0.0, 1.0] * 4


def test_sinusoidal_offsets_are_rotations() -> None:
    table = T.sinusoidal_encoding(64, 32)
    # the dot product of two positions depends only on their distance
    for t in (1, 5, 13):
        dots = (table[:-t] * table[t:]).sum(-1)
        torch.testing.assert_close(dots, torch.full_like(dots, dots[0].item()), atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="even d_model"):
        T.sinusoidal_encoding(10, 7)


def test_position_modules_check_the_length() -> None:
    x = torch.zeros(2, 5, 8)
    torch.testing.assert_close(T.SinusoidalPositions(10, 8)(x)[0], T.sinusoidal_encoding(5, 8))
    learned = T.LearnedPositions(10, 8)
    assert learned(x).requires_grad
    with pytest.raises(ValueError, match="max_len = 4"):
        T.SinusoidalPositions(4, 8)(x)


# ------------------------------------------------------------------------------------------
# Blocks and the whole model against torch.nn.Transformer
# ------------------------------------------------------------------------------------------


def copy_attention(ours: MultiHeadAttention, ref: nn.MultiheadAttention) -> None:
    d = ref.embed_dim
    for i, proj in enumerate((ours.q_proj, ours.k_proj, ours.v_proj)):
        proj.weight.copy_(ref.in_proj_weight[i * d : (i + 1) * d])
        proj.bias.copy_(ref.in_proj_bias[i * d : (i + 1) * d])
    ours.out_proj.load_state_dict(ref.out_proj.state_dict())


@torch.no_grad()
def copy_encoder_layer(ours: T.EncoderBlock, ref: nn.TransformerEncoderLayer) -> None:
    copy_attention(ours.self_attn, ref.self_attn)
    ours.ffn.linear1.load_state_dict(ref.linear1.state_dict())
    ours.ffn.linear2.load_state_dict(ref.linear2.state_dict())
    ours.norm1.load_state_dict(ref.norm1.state_dict())
    ours.norm2.load_state_dict(ref.norm2.state_dict())


@torch.no_grad()
def copy_decoder_layer(ours: T.DecoderBlock, ref: nn.TransformerDecoderLayer) -> None:
    copy_attention(ours.self_attn, ref.self_attn)
    copy_attention(ours.cross_attn, ref.multihead_attn)
    ours.ffn.linear1.load_state_dict(ref.linear1.state_dict())
    ours.ffn.linear2.load_state_dict(ref.linear2.state_dict())
    for i in (1, 2, 3):
        getattr(ours, f"norm{i}").load_state_dict(getattr(ref, f"norm{i}").state_dict())


def randomise_norms(module: nn.Module) -> None:
    """LayerNorms start at weight 1, bias 0: perturb them so that copying them is tested."""
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.LayerNorm):
                m.weight.add_(0.3 * torch.randn_like(m.weight))
                m.bias.add_(0.3 * torch.randn_like(m.bias))


PAD_SRC = torch.tensor([[5, 6, 7, 8, 9, 3], [4, 5, 6, 0, 0, 0]])  # second source padded


@pytest.mark.parametrize("norm_first", [False, True])
def test_blocks_match_torch_layers(norm_first: bool) -> None:
    torch.manual_seed(0)
    kw = {"dropout": 0.0, "batch_first": True, "norm_first": norm_first}
    ref_enc = nn.TransformerEncoderLayer(D, H, FF, **kw)
    ref_dec = nn.TransformerDecoderLayer(D, H, FF, **kw)
    randomise_norms(ref_enc)
    randomise_norms(ref_dec)
    enc, dec = T.EncoderBlock(D, H, FF, 0.0, norm_first), T.DecoderBlock(D, H, FF, 0.0, norm_first)
    copy_encoder_layer(enc, ref_enc)
    copy_decoder_layer(dec, ref_dec)
    src, tgt = rand(2, 6, D, seed=1), rand(2, 5, D, seed=2)
    keep = PAD_SRC != 0
    memory = enc(src, keep[:, None, None, :])
    expected = ref_enc(src, src_key_padding_mask=~keep)
    torch.testing.assert_close(memory, expected, rtol=1e-4, atol=1e-5)
    future = nn.Transformer.generate_square_subsequent_mask(5)
    out = dec(tgt, memory, keep[:, None, None, :])
    expected = ref_dec(tgt, memory, tgt_mask=future, memory_key_padding_mask=~keep)
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.filterwarnings("ignore:enable_nested_tensor is True")  # torch's, for pre-norm
@pytest.mark.parametrize("norm_first", [False, True])
def test_model_matches_torch_transformer(norm_first: bool) -> None:
    torch.manual_seed(1)
    config = T.TransformerConfig(
        13, 11, D, H, 2, 3, FF, dropout=0.0, max_len=8, norm_first=norm_first, final_norm=True
    )
    ours = T.Seq2SeqTransformer(config)
    ref = nn.Transformer(D, H, 2, 3, FF, 0.0, batch_first=True, norm_first=norm_first)
    randomise_norms(ref)
    for a, b in zip(ours.encoder, ref.encoder.layers, strict=True):
        copy_encoder_layer(a, b)
    for a, b in zip(ours.decoder, ref.decoder.layers, strict=True):
        copy_decoder_layer(a, b)
    ours.encoder_norm.load_state_dict(ref.encoder.norm.state_dict())
    ours.decoder_norm.load_state_dict(ref.decoder.norm.state_dict())
    ref.train()  # dropout is 0; train mode keeps torch off its nested-tensor fast path
    tgt_in = torch.tensor([[1, 4, 5, 6, 7], [1, 8, 9, 0, 0]])
    keep = PAD_SRC != 0
    hidden = ref(
        ours.embed(PAD_SRC, "src"),
        ours.embed(tgt_in, "tgt"),
        tgt_mask=nn.Transformer.generate_square_subsequent_mask(5),
        src_key_padding_mask=~keep,
        memory_key_padding_mask=~keep,
    )
    torch.testing.assert_close(ours(PAD_SRC, tgt_in), ours.output(hidden), rtol=1e-4, atol=1e-5)


def tiny_model(**kw) -> T.Seq2SeqTransformer:
    torch.manual_seed(2)
    config = T.TransformerConfig(T.VOCAB_SIZE, T.VOCAB_SIZE, D, H, 2, 2, FF, 0.0, 16, **kw)
    return T.Seq2SeqTransformer(config).eval()


@pytest.mark.parametrize("norm_first", [False, True])
def test_no_leak_from_future_targets(norm_first: bool) -> None:
    model = tiny_model(norm_first=norm_first)
    src = torch.tensor([[3, 4, 5, 6]])
    tgt = torch.tensor([[1, 6, 5, 4, 3, 7, 8]])
    before = model(src, tgt)
    for t in range(1, 7):
        changed = tgt.clone()
        changed[0, t] = 12 if tgt[0, t] != 12 else 11
        after = model(src, changed)
        torch.testing.assert_close(after[:, :t], before[:, :t])  # earlier outputs unchanged
        assert not torch.allclose(after[:, t:], before[:, t:])  # later ones do change


def test_source_padding_is_ignored() -> None:
    model = tiny_model(positions="learned")
    src = torch.tensor([[3, 4, 5]])
    tgt = torch.tensor([[1, 5, 4]])
    padded = torch.tensor([[3, 4, 5, 0, 0, 0]])
    torch.testing.assert_close(model(src, tgt), model(padded, tgt), rtol=1e-5, atol=1e-6)


def test_greedy_decode_matches_step_by_step_argmax() -> None:
    model = tiny_model()
    src = torch.tensor([[3, 4, 5, 6], [7, 8, 0, 0]])
    out = T.greedy_decode(model, src, T.BOS, T.EOS, max_len=6)
    for row in range(2):
        prefix = torch.tensor([[T.BOS]])
        for token in out[row].tolist():
            if prefix[0, -1].item() == T.EOS:
                assert token == T.PAD
                continue
            best = model(src[row : row + 1][:, (src[row] != 0)], prefix)[0, -1].argmax().item()
            assert token == best
            prefix = torch.cat([prefix, torch.tensor([[token]])], dim=1)


def test_bad_configurations_and_inputs() -> None:
    with pytest.raises(ValueError, match="divisible"):
        T.TransformerConfig(13, 13, d_model=30, n_heads=4)
    with pytest.raises(ValueError, match="positions"):
        T.TransformerConfig(13, 13, positions="rotary")
    model = tiny_model()
    with pytest.raises(ValueError, match="outside the vocabulary"):
        model(torch.tensor([[3, 40]]), torch.tensor([[1]]))
    with pytest.raises(ValueError, match="batch, length"):
        model(torch.tensor([3, 4]), torch.tensor([[1]]))
    with pytest.raises(ValueError, match="max_len"):
        model(torch.full((1, 20), 3), torch.tensor([[1]]))


# ------------------------------------------------------------------------------------------
# The digit tasks and training
# ------------------------------------------------------------------------------------------


def test_batches_use_teacher_forcing() -> None:
    batch = T.make_batch(["301", "95"], "reverse")
    assert T.decode(batch.src[0]) == "301" and T.decode(batch.tgt_out[0]) == "103"
    # the decoder input is the target shifted right by one, with <s> in front
    assert batch.tgt_in[0].tolist() == [T.BOS, *T.encode("103")]
    assert batch.tgt_out[0].tolist() == [*T.encode("103"), T.EOS]
    assert batch.tgt_out[1].tolist() == [*T.encode("59"), T.EOS, T.PAD]
    assert T.decode(T.make_batch(["4021"], "sort").tgt_out[0]) == "0124"
    with pytest.raises(ValueError, match="unknown task"):
        T.make_batch(["1"], "add")
    with pytest.raises(ValueError, match="digits"):
        T.encode("12a")


def test_heldout_inputs_never_appear_in_training() -> None:
    task = T.DigitTask("sort", 1, 3, n_heldout=300, seed=0)  # held out from the 1000 of length 3
    heldout = set(task.heldout)
    for step in range(20):
        batch = task.train_batch(step, 64)
        assert not {T.decode(row) for row in batch.src} & heldout
    assert torch.equal(task.train_batch(5, 8).src, task.train_batch(5, 8).src)  # resumable


def test_training_learns_in_seconds() -> None:
    run = T.train_seq2seq("sort", "tiny", steps=80, lr=3e-3, max_len=4)
    losses = run.history["train_loss"]
    assert losses[-1] < 0.5 * losses[0]
    assert 0.0 <= run.exact_match <= 1.0


def test_speed_benchmark_and_command_line(tmp_path, capsys) -> None:
    result = T.rnn_vs_transformer(lengths=(8, 16), d_model=16, n_heads=2, batch=2, repeats=1)
    assert set(result) == {"length", "RNN", "LSTM", "Transformer"}
    assert all(v > 0 for name in ("RNN", "LSTM", "Transformer") for v in result[name])
    assert main(["train", "--steps", "3", "--eval-every", "2", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "model.pt").is_file() and (tmp_path / "loss.png").is_file()
    assert '"exact_match"' in capsys.readouterr().out
    assert main(["speed", "--lengths", "4", "8", "--d-model", "16", "--out", str(tmp_path)]) == 0
    assert main(["positions", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "speed.png").is_file() and (tmp_path / "positions.png").is_file()
    assert main(["train", "--steps", "1", "--preset", "tiny", "--max-len", "0"]) == 2
    with pytest.raises(SystemExit):
        main(["--help"])


def test_cross_attention_weights() -> None:
    model = tiny_model()
    src = torch.tensor([[3, 4, 5, 6], [7, 8, 0, 0]])
    tgt_in = torch.tensor([[1, 6, 5], [1, 8, 7]])
    before = model(src, tgt_in)
    maps = T.cross_attention_weights(model, src, tgt_in)
    assert len(maps) == 2 and maps[0].shape == (2, H, 3, 4)
    torch.testing.assert_close(maps[1].sum(-1), torch.ones(2, H, 3))
    assert (maps[0][1, :, :, 2:] == 0).all()  # the padding of the second source is never read
    assert all(not b.cross_attn._forward_hooks for b in model.decoder)  # hooks removed
    torch.testing.assert_close(model(src, tgt_in), before)
