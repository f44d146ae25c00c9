"""Quantization from scratch (llmcourse.compress): round-trip bounds, int4 packing, the
quantized Linear against PyTorch's own dynamic quantization, outlier columns, whole models,
stored bytes, and compressed checkpoints saved, loaded, generated from and damaged."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from tiny_models import tiny_gpt
from torch import nn

from llmcourse.causal_lm import load_trained
from llmcourse.causal_lm.data import ByteTokenizer
from llmcourse.checkpoint import CheckpointError
from llmcourse.compress import __main__ as cli
from llmcourse.compress.model import (
    METHODS,
    load_compressed,
    quantize_model,
    quantized_layers,
    save_compressed,
    stored_bytes,
)
from llmcourse.compress.qlinear import QuantLinear, QuantSpec
from llmcourse.compress.quantize import (
    absmax_quantize,
    dequantize,
    groupwise_dequantize,
    groupwise_quantize,
    pack_int4,
    unpack_int4,
    zeropoint_quantize,
)
from llmcourse.generate.loop import GenerationConfig, generate

pytestmark = pytest.mark.usefixtures("one_thread")


def _weight(rows: int = 48, cols: int = 64, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(rows, cols, generator=gen) * torch.rand(rows, 1, generator=gen) * 0.2
    return w + 0.01 * torch.rand(rows, 1, generator=gen)  # rows not centred on zero


# ------------------------------------------------------------------ tensors: round trips


def test_absmax_worked_example_and_bound() -> None:
    q, scale = absmax_quantize(torch.tensor([0.5, -1.27, 0.02]))
    assert torch.equal(q, torch.tensor([50, -127, 2], dtype=torch.int8))
    assert scale.item() == pytest.approx(0.01)
    for dim in (None, 1):
        w = _weight()
        q, scale = absmax_quantize(w, dim=dim)
        assert q.dtype == torch.int8 and int(q.abs().max()) == 127
        assert ((w - dequantize(q, scale)).abs() <= scale / 2 + 1e-7).all()


@pytest.mark.parametrize("bits", [8, 4, 3])
def test_zeropoint_round_trip_bound(bits: int) -> None:
    w = _weight()
    for dim in (None, 1):
        q, scale, zero = zeropoint_quantize(w, bits, dim)
        assert q.dtype == torch.uint8 and int(q.max()) <= 2**bits - 1
        assert ((w - dequantize(q, scale, zero)).abs() <= scale / 2 + 1e-7).all()
        # zero is a level: 0.0 comes back exactly
        assert dequantize(zero.to(torch.uint8), scale, zero).abs().max() == 0
    # worked example: [-1, 1, 2] at 8 bits: scale = 3/255, z = round(85) = 85
    q, scale, zero = zeropoint_quantize(torch.tensor([-1.0, 1.0, 2.0]), 8)
    assert scale.item() == pytest.approx(3 / 255) and zero.item() == 85
    assert q.tolist() == [0, 170, 255]


def test_per_channel_error_at_most_per_tensor() -> None:
    w = _weight()
    w[3] *= 20.0  # one loud row: per tensor, it coarsens every other row
    q_t, s_t = absmax_quantize(w)
    q_c, s_c = absmax_quantize(w, dim=1)
    err_t = (w - dequantize(q_t, s_t)).abs()
    err_c = (w - dequantize(q_c, s_c)).abs()
    assert (err_c.square().sum(1) <= err_t.square().sum(1) + 1e-9).all()
    assert err_c.square().sum() < 0.1 * err_t.square().sum()


def test_groupwise_bound_and_finer_groups_help() -> None:
    w = _weight(32, 128)
    errors = []
    for group in (128, 64, 32):
        q, scale, zero = groupwise_quantize(w, 4, group)
        assert scale.shape == (32, 128 // group) and q.shape == w.shape
        back = groupwise_dequantize(q, scale, zero)
        assert ((w - back).abs() <= scale.repeat_interleave(group, 1) / 2 + 1e-7).all()
        errors.append((w - back).square().sum())
    assert errors[0] > errors[1] > errors[2]
    with pytest.raises(ValueError, match="group_size=48 must divide the 128"):
        groupwise_quantize(w, 4, 48)


def test_pack_unpack_int4_exact_on_all_bytes() -> None:
    every_byte = torch.arange(256, dtype=torch.uint8)
    nibbles = unpack_int4(every_byte)
    assert nibbles.shape == (512,) and int(nibbles.max()) == 15
    assert nibbles[2 * 0xA7].item() == 0x7 and nibbles[2 * 0xA7 + 1].item() == 0xA
    assert torch.equal(pack_int4(nibbles), every_byte)
    q = torch.randint(0, 16, (5, 6, 8), dtype=torch.uint8)
    assert pack_int4(q).shape == (5, 6, 4) and torch.equal(unpack_int4(pack_int4(q)), q)
    with pytest.raises(ValueError, match="even"):
        pack_int4(torch.zeros(3, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"0\.\.15"):
        pack_int4(torch.tensor([3, 16]))


# ------------------------------------------------------------------ the quantized Linear


def _oracle_dynamic(linear: nn.Linear) -> nn.Module:
    """PyTorch's dynamic int8 Linear, per-channel symmetric weights in [-127, 127] (the same
    scale max|w| / 127 as ours; torch's default range [-128, 127] divides by 127.5)."""
    import torch.ao.quantization as aq

    weight = aq.PerChannelMinMaxObserver.with_args(
        dtype=torch.qint8, qscheme=torch.per_channel_symmetric, quant_min=-127, quant_max=127
    )
    activation = aq.PlaceholderObserver.with_args(dtype=torch.quint8, is_dynamic=True)
    config = aq.QConfig(activation=activation, weight=weight)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization is deprecated in favour of torchao
        return aq.quantize_dynamic(nn.Sequential(linear), {nn.Linear: config}, torch.qint8)


def test_int8_linear_matches_torch_dynamic_quantization() -> None:
    torch.manual_seed(0)
    linear = nn.Linear(64, 48)
    ours = QuantLinear.from_linear(linear, QuantSpec(bits=8))
    theirs = _oracle_dynamic(linear)
    stored = theirs[0].weight()
    # the same integers and the same per-channel scales
    assert torch.equal(ours.weight_q, stored.int_repr())
    assert torch.allclose(ours.scale.squeeze(1).double(), stored.q_per_channel_scales(), rtol=1e-6)
    # outputs: torch also rounds the input x to uint8 with one scale (max - min) / 255 (127 with
    # x86's reduce_range), moving each x_j by at most half of it, so y_i moves by at most
    # scale_x / 2 * sum_j |W'_ij|; ours keeps x exact
    x = 2.0 * torch.randn(6, 64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        y_theirs = theirs(x)
    y_ours = ours(x)
    scale_x = (x.max().clamp(min=0) - x.min().clamp(max=0)) / 127
    bound = scale_x / 2 * ours.dequantized_weight().abs().sum(1) + 1e-4
    assert ((y_ours - y_theirs).abs() <= bound).all()
    assert torch.allclose(y_ours, F.linear(x, ours.dequantized_weight(), linear.bias), atol=1e-6)


def test_int8_per_tensor_matches_torch_quantize_per_tensor() -> None:
    torch.manual_seed(1)
    linear = nn.Linear(32, 16)
    ours = QuantLinear.from_linear(linear, QuantSpec(bits=8, per_tensor=True))
    scale = linear.weight.detach().abs().max().item() / 127
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = torch.quantize_per_tensor(linear.weight.detach(), scale, 0, torch.qint8)
    assert torch.equal(ours.weight_q, theirs.int_repr())
    assert ours.scale.shape == (1, 1)


@pytest.mark.parametrize(
    "spec",
    [QuantSpec(bits=8), QuantSpec(bits=8, symmetric=False, group_size=16),
     QuantSpec(bits=4, symmetric=False, group_size=32), QuantSpec(bits=3, symmetric=False)],
)  # fmt: skip
def test_quant_linear_stores_integers_and_dequantizes(spec: QuantSpec) -> None:
    torch.manual_seed(2)
    linear = nn.Linear(64, 24)
    layer = QuantLinear.from_linear(linear, spec)
    assert layer.weight_q.dtype in (torch.int8, torch.uint8)
    assert layer.weight_q.shape == (24, 32 if spec.packed else 64)
    assert not list(layer.parameters())  # nothing float but scales, zeros and the bias
    w = linear.weight.detach()
    step = layer.scale.repeat_interleave(64 // layer.scale.shape[1], 1)
    assert ((w - layer.dequantized_weight()).abs() <= step / 2 + 1e-7).all()
    assert torch.equal(layer.bias, linear.bias.detach())
    x = torch.randn(3, 5, 64)
    expected = F.linear(x, layer.dequantized_weight(), linear.bias)
    assert torch.allclose(layer(x), expected, atol=1e-6)


def test_outlier_columns_kept_exact_and_help() -> None:
    torch.manual_seed(3)
    linear = nn.Linear(64, 32)
    with torch.no_grad():
        linear.weight[:, [5, 40]] *= 30.0  # two loud input features
    cols = torch.tensor([5, 40])
    plain = QuantLinear.from_linear(linear, QuantSpec(bits=8))
    split = QuantLinear.from_linear(linear, QuantSpec(bits=8), outlier_cols=cols)
    w = linear.weight.detach()
    assert torch.equal(split.dequantized_weight()[:, cols], w[:, cols])
    assert (split.integers()[:, cols] == 0).all()
    rest = torch.ones(64, dtype=torch.bool)
    rest[cols] = False
    err_plain = (plain.dequantized_weight() - w)[:, rest].abs().max()
    err_split = (split.dequantized_weight() - w)[:, rest].abs().max()
    assert err_split < err_plain / 10  # the other columns get a 30x finer scale


# ------------------------------------------------------------------ whole models


@pytest.fixture
def gpt() -> nn.Module:
    return tiny_gpt(vocab=40, seed=0)


def _calibration(seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 40, (8, 32), generator=torch.Generator().manual_seed(seed))


def test_quantize_model_every_method(gpt: nn.Module) -> None:
    ids = _calibration(1)[:2]
    reference = gpt(ids)
    fp32 = stored_bytes(gpt)
    n_linear = sum(m.weight.numel() for n, m in gpt.named_modules()
                   if isinstance(m, nn.Linear) and n != "lm_head")  # fmt: skip
    for method in METHODS:
        model = quantize_model(gpt, method, _calibration())
        out = model(ids)
        assert out.shape == reference.shape and torch.isfinite(out).all()
        tol = {"fp32": 0, "bf16": 0.1, "int8": 0.02, "int8-tensor": 0.05}.get(method, 0.5)
        if method.startswith("int2"):  # four levels per group: a coarse copy, but a copy
            tol = 1.0
        assert (out - reference).abs().max() <= tol, method
        layers = dict(quantized_layers(model))
        if method in ("fp32", "bf16"):
            assert not layers
            assert stored_bytes(model) == fp32 // (1 if method == "fp32" else 2)
        else:
            assert len(layers) == 4 and "lm_head" not in layers  # tied to wte: stays float
            assert model.lm_head.weight is model.transformer.wte.weight
    # bytes: int8 saves 3 of 4 bytes per Linear weight, less its per-row scales
    int8 = quantize_model(gpt, "int8")
    scales = sum(m.scale.numel() * 4 for _, m in quantized_layers(int8))
    assert stored_bytes(int8) == fp32 - 3 * n_linear + scales
    int4 = quantize_model(gpt, "int4-rtn")
    extra = sum(m.scale.numel() * 4 + m.zero.numel() for _, m in quantized_layers(int4))
    assert stored_bytes(int4) == fp32 - 4 * n_linear + n_linear // 2 + extra
    assert gpt.transformer.h[0].attn.c_attn.__class__ is nn.Linear  # the original untouched


def test_quantize_model_errors(gpt: nn.Module) -> None:
    with pytest.raises(ValueError, match="unknown compression method 'int5'"):
        quantize_model(gpt, "int5")
    with pytest.raises(ValueError, match="needs calibration"):
        quantize_model(gpt, "int4-gptq")
    with pytest.raises(ValueError, match="shape"):
        quantize_model(gpt, "int8-outlier", torch.zeros(32, dtype=torch.long))


def test_outlier_method_finds_loud_features(gpt: nn.Module) -> None:
    with torch.no_grad():
        gpt.transformer.h[0].ln_2.weight[7] = 40.0  # feature 7 of the MLP's input is loud
    model = quantize_model(gpt, "int8-outlier", _calibration())
    c_fc = model.transformer.h[0].mlp.c_fc
    assert 7 in c_fc.outlier_cols.tolist()
    assert torch.equal(c_fc.outlier_weight[:, c_fc.outlier_cols.tolist().index(7)],
                       gpt.transformer.h[0].mlp.c_fc.weight[:, 7])  # fmt: skip


# ------------------------------------------------------------------ checkpoints


@pytest.mark.parametrize("method", ["int4-gptq", "int8-outlier", "bf16"])
def test_save_load_generate(gpt: nn.Module, tmp_path, method: str) -> None:
    if method == "int8-outlier":
        with torch.no_grad():
            gpt.transformer.h[0].ln_2.weight[7] = 40.0
    model = quantize_model(gpt, method, _calibration())
    save_compressed(model, ByteTokenizer(), tmp_path)
    header = load_file(tmp_path / "model.safetensors")
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["compression"]["method"] == method
    if method == "int4-gptq":
        assert header["transformer.h.0.mlp.c_fc.weight_q"].dtype == torch.uint8
        assert header["transformer.h.0.mlp.c_fc.weight_q"].shape == (128, 16)
    loaded, tok = load_trained(tmp_path)  # chapter 7's loader recognises the folder
    again, _ = load_compressed(tmp_path)
    ids = _calibration(2)
    assert torch.equal(loaded(ids), model(ids)) and torch.equal(again(ids), model(ids))
    assert isinstance(tok, ByteTokenizer) and stored_bytes(loaded) == stored_bytes(model)
    cached = generate(loaded, ids[:1, :4], GenerationConfig(max_new_tokens=6, temperature=0))
    plain = generate(loaded, ids[:1, :4], GenerationConfig(max_new_tokens=6, temperature=0,
                                                           use_cache=False))  # fmt: skip
    assert torch.equal(cached, plain) and cached.shape == (1, 10)


def test_damaged_folders_raise_checkpoint_error(gpt: nn.Module, tmp_path) -> None:
    save_compressed(quantize_model(gpt, "int4-rtn"), ByteTokenizer(), tmp_path)
    weights = tmp_path / "model.safetensors"
    good = weights.read_bytes()
    state = load_file(weights)
    state["transformer.h.0.mlp.c_fc.weight_q"] = state["transformer.h.0.mlp.c_fc.weight_q"].float()
    save_file(state, weights)
    with pytest.raises(CheckpointError, match=r"weight_q .*float32"):
        load_compressed(tmp_path)
    weights.write_bytes(good[: len(good) // 2])
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        load_trained(tmp_path)
    weights.write_bytes(good)
    config = json.loads((tmp_path / "config.json").read_text())
    config["compression"]["layers"]["transformer.h.0.mlp.c_fc"]["spec"]["bits"] = 9
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="bad model or compression config"):
        load_compressed(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not readable JSON"):
        load_compressed(tmp_path)
    with pytest.raises(CheckpointError, match="no compressed checkpoint folder"):
        load_compressed(tmp_path / "missing")


def test_cli_help_and_errors(tmp_path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--help"])
    assert exit_info.value.code == 0 and "int4-gptq" in capsys.readouterr().out
    assert cli.main(["--checkpoint", str(tmp_path / "none"), "--method", "int8",
                     "--out", str(tmp_path / "o")]) == 2  # fmt: skip
    assert "neither a course model" in capsys.readouterr().err


def test_cli_compresses_a_folder(gpt: nn.Module, tmp_path, capsys) -> None:
    from llmcourse.causal_lm.saving import save_trained, write_run_files

    source = tmp_path / "source"
    write_run_files(source, "gpt", gpt, ByteTokenizer(), {})
    save_trained(source, gpt)
    out = tmp_path / "q"
    assert cli.main(["--checkpoint", str(source), "--method", "int4-rtn", "--out", str(out)]) == 0
    assert "smaller" in capsys.readouterr().out
    model, _ = load_trained(out)
    assert model.compression_method == "int4-rtn"
    ids = _calibration(3)
    assert torch.equal(model(ids), quantize_model(gpt, "int4-rtn")(ids))
    # GPTQ needs calibration tokens: this folder records none, so the error says so
    assert cli.main(["--checkpoint", str(source), "--method", "int4-gptq",
                     "--out", str(tmp_path / "g")]) == 2  # fmt: skip
    assert "error:" in capsys.readouterr().err
