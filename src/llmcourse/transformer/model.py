"""The encoder-decoder Transformer of "Attention Is All You Need" (2017).

    source tokens -> embedding * sqrt(d_model) + positions -> N encoder blocks -> memory
    target tokens -> embedding * sqrt(d_model) + positions -> N decoder blocks (each reading
                     the memory by cross-attention) -> linear layer -> logits over the vocabulary

Training uses *teacher forcing*: the decoder's input is the correct target shifted right by one
(a start token first), and position t is trained to predict target token t. Thanks to the
causal mask, all positions of all sequences are trained in one parallel pass, although at
inference the model must generate one token at a time (``greedy_decode``), feeding each
prediction back as the next input.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

from llmcourse.attention import padding_mask

from .blocks import DecoderBlock, EncoderBlock
from .positional import LearnedPositions, SinusoidalPositions


@dataclass
class TransformerConfig:
    """Sizes of a ``Seq2SeqTransformer``; ``final_norm`` defaults to ``norm_first``."""

    src_vocab: int
    tgt_vocab: int
    d_model: int = 128
    n_heads: int = 4
    n_encoder_layers: int = 2
    n_decoder_layers: int = 2
    d_ff: int = 512
    dropout: float = 0.1
    max_len: int = 64
    positions: str = "sinusoidal"
    norm_first: bool = True
    final_norm: bool | None = None
    pad_id: int = 0

    def __post_init__(self) -> None:
        if self.d_model % self.n_heads:
            raise ValueError(
                f"d_model = {self.d_model} must be divisible by n_heads = {self.n_heads}"
            )
        if self.positions not in ("sinusoidal", "learned"):
            raise ValueError(f"positions must be 'sinusoidal' or 'learned', got {self.positions!r}")
        if min(self.src_vocab, self.tgt_vocab, self.d_model, self.d_ff, self.max_len) < 1:
            raise ValueError("vocabulary sizes, d_model, d_ff and max_len must be positive")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.final_norm is None:
            self.final_norm = self.norm_first

    def to_dict(self) -> dict:
        """The configuration as a plain dict (saved in checkpoints)."""
        return asdict(self)


class Seq2SeqTransformer(nn.Module):
    """Encoder-decoder Transformer: ``forward(src, tgt_in)`` returns (B, T, tgt_vocab) logits."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        c = self.config = config
        self.src_embed = nn.Embedding(c.src_vocab, c.d_model, padding_idx=c.pad_id)
        self.tgt_embed = nn.Embedding(c.tgt_vocab, c.d_model, padding_idx=c.pad_id)
        for embedding in (self.src_embed, self.tgt_embed):
            # std 1/sqrt(d) so that embedding * sqrt(d) has unit scale, like the positions
            nn.init.normal_(embedding.weight, std=c.d_model**-0.5)
            embedding.weight.data[c.pad_id].zero_()
        positions = SinusoidalPositions if c.positions == "sinusoidal" else LearnedPositions
        self.src_positions = positions(c.max_len, c.d_model)
        self.tgt_positions = positions(c.max_len, c.d_model)
        self.dropout = nn.Dropout(c.dropout)
        args = (c.d_model, c.n_heads, c.d_ff, c.dropout, c.norm_first)
        self.encoder = nn.ModuleList(EncoderBlock(*args) for _ in range(c.n_encoder_layers))
        self.decoder = nn.ModuleList(DecoderBlock(*args) for _ in range(c.n_decoder_layers))
        norm = nn.LayerNorm if c.final_norm else nn.Identity
        self.encoder_norm, self.decoder_norm = norm(c.d_model), norm(c.d_model)
        self.output = nn.Linear(c.d_model, c.tgt_vocab)

    def _check(self, tokens: torch.Tensor, vocab: int, name: str) -> None:
        if tokens.dim() != 2 or tokens.dtype not in (torch.int64, torch.int32):
            raise ValueError(
                f"{name} must be (batch, length) integer token ids, got "
                f"{tuple(tokens.shape)} {tokens.dtype}"
            )
        if tokens.numel() and (tokens.min() < 0 or tokens.max() >= vocab):
            raise ValueError(f"{name} has ids outside the vocabulary 0..{vocab - 1}")

    def embed(self, tokens: torch.Tensor, side: str) -> torch.Tensor:
        """Token embedding times sqrt(d_model) plus positions (``side`` 'src' or 'tgt').

        The embeddings are initialised with standard deviation 1/sqrt(d_model), so after the
        scaling a token's vector and its positional encoding have comparable sizes (with
        PyTorch's default N(0, 1) the tokens would drown the positions).
        """
        embed, positions = (
            (self.src_embed, self.src_positions)
            if side == "src"
            else (self.tgt_embed, self.tgt_positions)
        )
        x = embed(tokens) * math.sqrt(self.config.d_model)
        return self.dropout(positions(x))

    def encode(self, src: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The memory (B, S, d_model) and the source padding mask (B, 1, 1, S)."""
        self._check(src, self.config.src_vocab, "src")
        mask = padding_mask(src, self.config.pad_id)
        x = self.embed(src, "src")
        for block in self.encoder:
            x = block(x, mask)
        return self.encoder_norm(x), mask

    def decode(
        self, tgt_in: torch.Tensor, memory: torch.Tensor, memory_mask: torch.Tensor | None
    ) -> torch.Tensor:
        """Logits (B, T, tgt_vocab) for each position of the decoder input ``tgt_in``."""
        self._check(tgt_in, self.config.tgt_vocab, "tgt_in")
        x = self.embed(tgt_in, "tgt")
        for block in self.decoder:
            x = block(x, memory, memory_mask)
        return self.output(self.decoder_norm(x))

    def forward(self, src: torch.Tensor, tgt_in: torch.Tensor) -> torch.Tensor:
        memory, mask = self.encode(src)
        return self.decode(tgt_in, memory, mask)


@torch.no_grad()
def greedy_decode(
    model: Seq2SeqTransformer, src: torch.Tensor, bos_id: int, eos_id: int, max_len: int
) -> torch.Tensor:
    """Generate up to ``max_len`` tokens per source, always taking the most likely next token.

    The source is encoded once; the decoder then runs on the tokens generated so far (the
    start token first) and its last position's most likely token is appended, until every
    sequence has produced ``eos_id``. Returns (B, n) ids without the start token, padded
    after the end token. (Recomputing the whole prefix each step costs O(n^2); chapter 7 adds
    a cache of keys and values.)
    """
    was_training = model.training
    model.eval()
    memory, mask = model.encode(src)
    out = torch.full((src.shape[0], 1), bos_id, dtype=torch.long, device=src.device)
    done = torch.zeros(src.shape[0], dtype=torch.bool, device=src.device)
    for _ in range(max_len):
        next_token = model.decode(out, memory, mask)[:, -1].argmax(-1)
        next_token = next_token.masked_fill(done, model.config.pad_id)
        out = torch.cat([out, next_token[:, None]], dim=1)
        done |= next_token == eos_id
        if done.all():
            break
    model.train(was_training)
    return out[:, 1:]


@torch.no_grad()
def cross_attention_weights(
    model: Seq2SeqTransformer, src: torch.Tensor, tgt_in: torch.Tensor
) -> list[torch.Tensor]:
    """The cross-attention weights of every decoder block, each (B, h, T, S).

    Row t of a map says which source positions the decoder read while predicting target
    token t. The weights are recorded by hooks that re-run each cross-attention with
    ``need_weights=True`` on the same inputs, so the model itself is unchanged.
    """
    maps: list[torch.Tensor] = []

    def record(module: nn.Module, args: tuple, kwargs: dict, _: object) -> None:
        maps.append(module.forward(*args, **{**kwargs, "need_weights": True})[1])

    hooks = [b.cross_attn.register_forward_hook(record, with_kwargs=True) for b in model.decoder]
    was_training = model.training
    try:
        model.eval()
        model(src, tgt_in)
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    return maps
