"""Tiny models and a five-character tokenizer for the RL tests: small enough that a random
policy samples every token often and says ``<|end|>`` soon enough for short rollouts."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from llmcourse.gpt import GPT, GPTConfig


class Chars:
    """A five-character tokenizer (with the four chat tokens, nine ids in all)."""

    alphabet = "ab\ncd"

    @property
    def n_vocab(self) -> int:
        return len(self.alphabet)

    def encode(self, text: str) -> list[int]:
        return [self.alphabet.index(c) for c in text]

    def decode(self, ids: Iterable[int]) -> str:
        return "".join(self.alphabet[i] for i in ids)


def tiny_gpt(vocab: int, seed: int = 0) -> GPT:
    """A 1-layer GPT (d = 32) in eval mode, its weights moved off their initialisation so that
    a skipped parameter would show."""
    torch.manual_seed(seed)
    model = GPT(GPTConfig(vocab_size=vocab, n_positions=64, n_layer=1, n_head=2, n_embd=32))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.eval()
