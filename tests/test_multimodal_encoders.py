"""Image and text encoders: shapes, patchify against unfold, ViT's patch embedding as a conv."""

import pytest
import torch
import torch.nn.functional as F

from llmcourse.multimodal import data as D
from llmcourse.multimodal.encoders import (
    ConvEncoder,
    PatchEncoder,
    TextEncoder,
    coordinate_channels,
    patchify,
)


def _perturb(module: torch.nn.Module) -> None:
    """Move LayerNorm weights/biases and the [CLS] vector off their init."""
    g = torch.Generator().manual_seed(1)
    for name, p in module.named_parameters():
        if "norm" in name or name == "cls":
            p.data += 0.3 * torch.randn(p.shape, generator=g)


@pytest.mark.parametrize("patch", [4, 8])
def test_patchify_matches_unfold(patch):
    x = torch.randn(2, 3, 16, 32)
    expected = F.unfold(x, kernel_size=patch, stride=patch).transpose(1, 2)
    assert torch.equal(patchify(x, patch), expected)
    # patch 0 is the top-left corner, channel-major
    assert torch.equal(patchify(x, patch)[0, 0], x[0, :, :patch, :patch].reshape(-1))
    with pytest.raises(ValueError, match="multiple"):
        patchify(torch.randn(1, 3, 10, 10), 4)


def test_patch_embedding_is_a_strided_conv():
    torch.manual_seed(0)
    enc = PatchEncoder(image_size=32, patch=8, dim=16, depth=0, heads=4)
    _perturb(enc)
    x = torch.rand(3, 3, 32, 32)
    conv = F.conv2d(x, enc.proj.weight.reshape(16, 3, 8, 8), enc.proj.bias, stride=8)
    tokens = torch.cat([enc.cls.expand(3, -1, -1), conv.flatten(2).transpose(1, 2)], 1) + enc.pos
    expected = F.layer_norm(tokens, (16,), enc.norm.weight, enc.norm.bias)
    torch.testing.assert_close(enc(x), expected)


def test_patch_encoder_shapes_and_positions():
    torch.manual_seed(0)
    enc = PatchEncoder(image_size=32, patch=8, dim=32, depth=2, heads=4)
    _perturb(enc)
    x = torch.rand(2, 3, 32, 32)
    out = enc(x)
    assert out.shape == (2, 1 + 16, 32) and enc.n_patches == 16
    swapped = x.clone()  # swap the top-left and bottom-right patches: the [CLS] output changes
    swapped[:, :, :8, :8], swapped[:, :, 24:, 24:] = x[:, :, 24:, 24:], x[:, :, :8, :8]
    assert not torch.allclose(enc(swapped)[:, 0], out[:, 0], atol=1e-4)
    out.sum().backward()
    assert all(p.grad is not None for p in enc.parameters())
    with pytest.raises(ValueError, match="32x32"):
        enc(torch.rand(1, 3, 16, 16))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        enc(torch.rand(3, 32, 32))


def test_conv_encoder():
    torch.manual_seed(0)
    enc = ConvEncoder(dim=24)
    x = torch.rand(2, 3, 32, 32)
    cells = enc.features(x)
    assert cells.shape == (2, 64, 24)
    torch.testing.assert_close(enc(x), cells.mean(1))
    # the cells are row by row: cell (i, j) equals the conv stack's output at (i, j)
    grid = enc.convs(coordinate_channels(x))
    torch.testing.assert_close(cells[:, 8 * 2 + 5], grid[:, :, 2, 5])
    # coordinate channels: a scene and its mirror image give different pooled vectors
    assert not torch.allclose(enc(x.flip(-1)), enc(x), atol=1e-5)
    coords = coordinate_channels(torch.zeros(1, 3, 4, 5))
    assert coords[0, 3, 0].tolist() == [-1, -0.5, 0, 0.5, 1]
    torch.testing.assert_close(coords[0, 4, :, 0], torch.tensor([-1, -1 / 3, 1 / 3, 1]))


def test_text_encoder_ignores_padding():
    torch.manual_seed(0)
    enc = TextEncoder(len(D.VOCAB), dim=32, depth=2, heads=4, max_len=16).eval()
    _perturb(enc)
    short = D.encode_text("what color is the circle ?", 8)[None]
    long = D.encode_text("what color is the circle ?", 16)[None]
    assert enc(long).shape == (1, 16, 32)
    torch.testing.assert_close(enc(short)[:, :6], enc(long)[:, :6])
    torch.testing.assert_close(enc.pooled(short), enc.pooled(long))
    torch.testing.assert_close(enc.pooled(long), enc(long)[:, :6].mean(1))
    # order matters (positions), a different word matters
    other = D.encode_text("what color is the square ?", 16)[None]
    assert not torch.allclose(enc.pooled(other), enc.pooled(long))
    empty = torch.zeros(2, 12, dtype=torch.long)  # a missing question: finite, zero pooled
    assert torch.isfinite(enc(empty)).all() and torch.equal(enc.pooled(empty), torch.zeros(2, 32))


def test_text_encoder_bad_input():
    enc = TextEncoder(10, dim=16, depth=1, heads=2, max_len=4)
    with pytest.raises(ValueError, match="max_len"):
        enc(torch.ones(1, 5, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\[0, 10\)"):
        enc(torch.full((1, 3), 10))
    with pytest.raises(ValueError, match="LongTensor"):
        enc(torch.ones(3))
