"""Putting scrambled characters back in order: a small model whose attention we can read.

The sentence 汉字的序顺并不定一影阅响读 is 汉字的顺序并不一定影响阅读 ("the order of Chinese
characters does not necessarily affect reading") with three neighbouring pairs swapped; people
read it without trouble. To fix a swapped pair, a reader of position i must look at its
neighbour: attention is the mechanism that lets a position fetch information from another.

The model's "language" is simple enough to learn in seconds: a sentence is a strictly
increasing sequence of symbols from a vocabulary of ``vocab`` symbols (its correct order is
sorted order). A scrambled sentence has some disjoint neighbouring pairs swapped, and the model
must output the original symbol at every position. It is one block of multi-head
self-attention (learned position embeddings, a residual connection, LayerNorm and a
feed-forward layer), trained with cross-entropy. A real sentence is mapped to symbols by the
order of its characters in the unscrambled sentence, which makes it a valid input.
"""

from __future__ import annotations

from dataclasses import dataclass

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from torch import nn

from llmcourse.fonts import cjk_font, has_cjk
from llmcourse.training import train

from .multihead import MultiHeadAttention

SENTENCE = "汉字的顺序并不一定影响阅读"
"""The seed's sentence in the right order."""
SCRAMBLED = "汉字的序顺并不定一影阅响读"
"""The same characters with the pairs 顺序, 一定 and 响阅 swapped, as the seed shows it."""
_SYLLABLES = "hàn zì de shùn xù bìng bù yī dìng yǐng xiǎng yuè dú"
PINYIN = dict(zip(SENTENCE, _SYLLABLES.split(" "), strict=True))
"""The pinyin of each character, for figures drawn without a Chinese font."""


def scrambled_batch(
    batch: int, length: int, vocab: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """(scrambled, original) token batches of shape (batch, length).

    Each original row is a random increasing sequence of ``length`` distinct symbols from
    ``range(vocab)``; each neighbouring pair is then swapped with probability 1/3 unless it
    overlaps a pair already swapped.
    """
    if not 2 <= length <= vocab:
        raise ValueError(f"need 2 <= length <= vocab, got length {length}, vocab {vocab}")
    original = torch.rand(batch, vocab, generator=generator).argsort(dim=1)[:, :length]
    original = original.sort(dim=1).values
    scrambled = original.clone()
    coins = torch.rand(batch, length - 1, generator=generator) < 1 / 3
    for row in range(batch):
        i = 0
        while i < length - 1:
            if coins[row, i]:
                scrambled[row, i], scrambled[row, i + 1] = original[row, i + 1], original[row, i]
                i += 2
            else:
                i += 1
    return scrambled, original


class Unscrambler(nn.Module):
    """Token and position embeddings, one multi-head self-attention block, a linear readout."""

    def __init__(self, vocab: int, length: int, d_model: int = 64, n_heads: int = 2) -> None:
        super().__init__()
        self.vocab, self.length = vocab, length
        self.tokens = nn.Embedding(vocab, d_model)
        self.positions = nn.Embedding(length, d_model)
        self.attention = MultiHeadAttention(d_model, n_heads)
        self.norm1 = nn.LayerNorm(d_model)
        self.ffn = nn.Sequential(
            nn.Linear(d_model, 4 * d_model), nn.ReLU(), nn.Linear(4 * d_model, d_model)
        )
        self.norm2 = nn.LayerNorm(d_model)
        self.readout = nn.Linear(d_model, vocab)

    def forward(
        self, tokens: torch.Tensor, need_weights: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits (B, L, vocab) for the original symbol at each position, and the weights."""
        if tokens.dim() != 2 or tokens.shape[1] != self.length:
            raise ValueError(f"tokens must be (batch, {self.length}), got {tuple(tokens.shape)}")
        x = self.tokens(tokens) + self.positions.weight
        a, weights = self.attention(x, need_weights=need_weights)
        x = self.norm1(x + a)
        x = self.norm2(x + self.ffn(x))
        return self.readout(x), weights


@dataclass
class UnscrambleRun:
    """A trained model, its training losses and its accuracy on fresh scrambled sentences."""

    model: Unscrambler
    history: dict[str, list[float]]
    sentence_accuracy: float
    symbol_accuracy: float


def evaluate(model: Unscrambler, n: int = 1000, seed: int = 1) -> tuple[float, float]:
    """Fraction of fresh scrambled sentences restored exactly, and of symbols restored."""
    g = torch.Generator().manual_seed(seed)
    scrambled, original = scrambled_batch(n, model.length, model.vocab, g)
    with torch.no_grad():
        guess = model(scrambled)[0].argmax(-1)
    right = guess == original
    return right.all(dim=1).float().mean().item(), right.float().mean().item()


def train_unscrambler(
    steps: int = 600,
    vocab: int = 32,
    length: int = len(SENTENCE),
    d_model: int = 64,
    n_heads: int = 2,
    batch: int = 128,
    lr: float = 3e-3,
    seed: int = 0,
    device: torch.device | str = "cpu",
    progress: bool = False,
) -> UnscrambleRun:
    """Train an ``Unscrambler`` with Adam on freshly drawn batches; return the run (the model
    is moved back to the CPU)."""
    torch.manual_seed(seed)
    model = Unscrambler(vocab, length, d_model, n_heads).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed + 1000)

    def loss_fn(m: nn.Module, b: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        logits = m(b[0])[0]
        return F.cross_entropy(logits.reshape(-1, vocab), b[1].reshape(-1))

    history = train(
        model,
        optimizer,
        lambda step: tuple(t.to(device) for t in scrambled_batch(batch, length, vocab, g)),
        loss_fn,
        steps,
        log_every=10,
        progress=progress,
    )
    model = model.cpu().eval()
    return UnscrambleRun(model, history, *evaluate(model))


def encode_sentence(text: str, reference: str, vocab: int) -> torch.Tensor:
    """Map each character of ``text`` to a symbol by its rank in ``reference``, spread evenly
    over ``range(vocab)``, so that ``reference`` itself becomes an increasing sequence."""
    if sorted(text) != sorted(reference) or len(set(reference)) != len(reference):
        raise ValueError("text must be a rearrangement of reference, whose characters differ")
    step = (vocab - 1) / max(len(reference) - 1, 1)
    rank = {ch: round(i * step) for i, ch in enumerate(reference)}
    return torch.tensor([[rank[ch] for ch in text]])


def decode_sentence(tokens: torch.Tensor, reference: str, vocab: int) -> str:
    """The inverse of ``encode_sentence`` (symbols that map to no character print as '?')."""
    step = (vocab - 1) / max(len(reference) - 1, 1)
    char = {round(i * step): ch for i, ch in enumerate(reference)}
    return "".join(char.get(int(t), "?") for t in tokens.reshape(-1))


def sentence_attention(
    model: Unscrambler, text: str = SCRAMBLED, reference: str = SENTENCE
) -> tuple[str, torch.Tensor]:
    """The model's reading of ``text`` and its attention weights (h, L, L) on it."""
    tokens = encode_sentence(text, reference, model.vocab)
    with torch.no_grad():
        logits, weights = model(tokens, need_weights=True)
    return decode_sentence(logits.argmax(-1), reference, model.vocab), weights[0]


def plot_attention(
    weights: torch.Tensor, labels: str | list[str], titles: list[str] | None = None
) -> Figure:
    """Heat maps of attention weights (h, L, L): row = query (reading), column = key (read)."""
    if weights.dim() == 2:
        weights = weights.unsqueeze(0)
    n = weights.shape[0]
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 4.2), layout="constrained", squeeze=False)
    font = cjk_font() if has_cjk("".join(labels)) else None
    for i, ax in enumerate(axes[0]):
        image = ax.imshow(weights[i].detach().cpu().numpy(), cmap="Blues", vmin=0, vmax=1)
        ticks = range(len(labels))
        ax.set_xticks(ticks, list(labels), fontproperties=font, rotation=90)
        ax.set_yticks(ticks, list(labels), fontproperties=font)
        ax.set_xlabel("key (attended to)")
        ax.set_ylabel("query (attending)")
        ax.set_title(titles[i] if titles else f"head {i + 1}")
    fig.colorbar(image, ax=axes[0].tolist(), shrink=0.8)
    return fig


def axis_labels(text: str) -> list[str]:
    """Labels for the characters of ``text``: the characters themselves where a Chinese font
    is installed, else their pinyin (matplotlib would draw empty boxes)."""
    if cjk_font() is not None:
        return list(text)
    return [PINYIN.get(ch, ch) for ch in text]
