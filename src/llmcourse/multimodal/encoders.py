"""Feature extractors: a small CNN and a ViT-style patch encoder for images, a text encoder.

Each turns its input into vectors of one width ``dim`` so that later modules can compare or
combine them.

* ``ConvEncoder``: three 3x3 convolutions with ReLU, the first two followed by 2x2 max
  pooling, so a 32x32 image becomes an 8x8 grid of *cells*, each a ``dim``-vector that sees a
  neighbourhood of the image (its receptive field). Two coordinate channels (x and y, from -1
  to 1) are appended to the RGB input ("CoordConv"): convolutions are translation-equivariant
  and would otherwise not know *where* a cell is once the grid is averaged.
  ``features(x)`` is the grid as (B, cells, dim); ``forward(x)`` averages it to (B, dim).
* ``PatchEncoder`` (ViT, Dosovitskiy et al. 2020): cut the image into non-overlapping p x p
  patches, flatten each to 3 p^2 numbers (``patchify``), project them linearly to ``dim``,
  put a learned [CLS] vector first, add learned position embeddings (a patch's vector says
  nothing of where it was) and run pre-norm Transformer encoder blocks:

      z_0 = [cls; x_1 E; ...; x_N E] + E_pos,   z_l = Block(z_{l-1}),   out = LayerNorm(z_L).

  The linear projection of flattened patches is exactly a convolution with kernel = stride =
  p, which is how ViT implementations usually write it.
* ``TextEncoder``: word embeddings plus learned positions through the same blocks, with the
  padding hidden from attention; ``pooled(ids)`` averages the non-padding positions.
"""

from __future__ import annotations

import torch
from torch import nn

from llmcourse.transformer.blocks import EncoderBlock


def _check_images(x: torch.Tensor, image_size: int | None = None) -> None:
    if x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"images must be (B, 3, H, W), got {tuple(x.shape)}")
    if image_size is not None and x.shape[-2:] != (image_size, image_size):
        raise ValueError(f"images must be {image_size}x{image_size}, got {tuple(x.shape[-2:])}")


def coordinate_channels(x: torch.Tensor) -> torch.Tensor:
    """``x`` (B, C, H, W) with two channels more: the column and the row, each in [-1, 1]."""
    b, _, h, w = x.shape
    ys = torch.linspace(-1, 1, h, device=x.device, dtype=x.dtype)
    xs = torch.linspace(-1, 1, w, device=x.device, dtype=x.dtype)
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    coords = torch.stack([grid_x, grid_y]).expand(b, 2, h, w)
    return torch.cat([x, coords], dim=1)


class ConvEncoder(nn.Module):
    """A small CNN: (B, 3, H, W) -> (B, dim) pooled, or (B, H/4 * W/4, dim) cells."""

    def __init__(self, dim: int = 64, width: int = 32) -> None:
        super().__init__()
        self.dim = dim
        self.convs = nn.Sequential(
            nn.Conv2d(3 + 2, width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(2 * width, dim, 3, padding=1),
            nn.ReLU(),
        )

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The feature map as a sequence of cells, row by row: (B, H/4 * W/4, dim)."""
        _check_images(x)
        return self.convs(coordinate_channels(x)).flatten(2).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).mean(dim=1)


def patchify(images: torch.Tensor, patch: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, (H/p) (W/p), C p p): patches row by row, each flattened (C, p, p)."""
    b, c, h, w = images.shape
    if h % patch or w % patch:
        raise ValueError(f"image size {h}x{w} is not a multiple of the patch size {patch}")
    x = images.reshape(b, c, h // patch, patch, w // patch, patch)
    return x.permute(0, 2, 4, 1, 3, 5).reshape(b, (h // patch) * (w // patch), c * patch * patch)


class PatchEncoder(nn.Module):
    """ViT-style: (B, 3, H, W) -> (B, 1 + n_patches, dim), the [CLS] vector first."""

    def __init__(
        self, image_size: int = 32, patch: int = 8, dim: int = 64, depth: int = 2, heads: int = 4
    ) -> None:
        super().__init__()
        if image_size % patch:
            raise ValueError(f"image_size {image_size} must be a multiple of patch {patch}")
        self.image_size, self.patch, self.dim = image_size, patch, dim
        self.n_patches = (image_size // patch) ** 2
        self.proj = nn.Linear(3 * patch * patch, dim)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(torch.randn(1, 1 + self.n_patches, dim) * 0.02)
        self.blocks = nn.ModuleList(
            EncoderBlock(dim, heads, 4 * dim, norm_first=True) for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_images(x, self.image_size)
        tokens = self.proj(patchify(x, self.patch))
        z = torch.cat([self.cls.expand(len(x), -1, -1), tokens], dim=1) + self.pos
        for block in self.blocks:
            z = block(z)
        return self.norm(z)


class TextEncoder(nn.Module):
    """Word ids (B, L) -> (B, L, dim) contextual vectors; id 0 is padding, never attended."""

    def __init__(
        self, vocab_size: int, dim: int = 64, depth: int = 2, heads: int = 4, max_len: int = 16
    ) -> None:
        super().__init__()
        self.vocab_size, self.max_len, self.dim = vocab_size, max_len, dim
        self.embed = nn.Embedding(vocab_size, dim, padding_idx=0)
        self.pos = nn.Parameter(torch.randn(1, max_len, dim) * 0.02)
        self.blocks = nn.ModuleList(
            EncoderBlock(dim, heads, 4 * dim, norm_first=True) for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim)

    def _check(self, ids: torch.Tensor) -> None:
        if ids.dim() != 2 or ids.dtype != torch.long:
            raise ValueError(f"ids must be a (B, L) LongTensor, got {ids.dtype} {tuple(ids.shape)}")
        if ids.shape[1] > self.max_len:
            raise ValueError(f"text of {ids.shape[1]} ids is longer than max_len={self.max_len}")
        if len(ids) and (ids.min() < 0 or ids.max() >= self.vocab_size):
            raise ValueError(
                f"ids must lie in [0, {self.vocab_size}), got {ids.min()}..{ids.max()}"
            )

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        self._check(ids)
        keep = ids != 0
        # an all-padding text (a missing question) attends to its padding rather than to nothing
        keep = keep | ~keep.any(dim=1, keepdim=True)
        z = self.embed(ids) + self.pos[:, : ids.shape[1]]
        mask = keep[:, None, None, :]
        for block in self.blocks:
            z = block(z, src_mask=mask)
        return self.norm(z)

    def pooled(self, ids: torch.Tensor) -> torch.Tensor:
        """Mean of the vectors at non-padding positions, (B, dim); zeros for an empty text."""
        z = self.forward(ids)
        keep = (ids != 0).unsqueeze(-1).to(z.dtype)
        return (z * keep).sum(dim=1) / keep.sum(dim=1).clamp(min=1)
