"""Rollouts: the policy answers a batch of prompts, and we keep what it wrote.

RL on a language model treats each response as an episode: the state is the prompt plus the
tokens so far, an action is the next token, and the episode ends at ``<|end|>`` (or when the
token budget runs out). ``sample_rollouts`` writes each prompt with the chat template (ending
in ``<|assistant|>``), repeats it ``n_per_prompt`` times (rows ``p * n .. p * n + n - 1`` are
prompt ``p``'s group, as GRPO needs) and samples the answers with chapter 7's ``generate``.
Prompts of one length share a batch; the rows are then right-padded into one tensor. Each
response is cut just after its first ``<|end|>``, which stays part of the response (the policy
chose to stop, and that choice is scored too); a response that ran out of tokens first is
kept, with ``finished`` False.

A course model has more embedding rows than its tokenizer has ids (the vocabulary is rounded
up to a multiple of 64); sampling at temperature 1 would now and then draw one of those unused
ids (probability about 1e-5 per token), which no tokenizer can decode. Rollouts therefore
sample from the model's distribution restricted to the tokenizer's ids (``VocabLimited``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from llmcourse.generate import GenerationConfig, generate
from llmcourse.sft.data import Example, build_splits
from llmcourse.sft.template import ChatTemplate, ChatTokenizer


@dataclass
class Rollout:
    """A batch of sampled responses, ``B = len(prompts) * n_per_prompt`` rows.

    ``ids`` (B, T): prompt + response, right-padded with ``<|end|>``; ``response_mask``
    (B, T) bool: True on the response's tokens (its ``<|end|>`` included), False on the prompt
    and the padding; ``prompt_lens`` (B,); ``finished`` (B,) bool: the response ended with
    ``<|end|>``; ``texts``: each response's text before ``<|end|>``; ``examples``: the example
    each row answers.
    """

    ids: torch.Tensor
    response_mask: torch.Tensor
    prompt_lens: torch.Tensor
    finished: torch.Tensor
    texts: list[str]
    examples: list[Example]

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def response_lens(self) -> torch.Tensor:
        """(B,) the number of response tokens of each row."""
        return self.response_mask.sum(-1)


def rl_prompts(n: int, tasks: Sequence[str] | None = None, seed: int = 2) -> list[Example]:
    """Up to ``n`` prompts for RL training of the given tasks (all for ``None``), from
    ``build_splits(.., seed)`` with a seed other than chapter 9's 1, leaving out every prompt
    whose ``key`` is in chapter 9's training or held-out set (``build_splits(6000, 400, 1)``):
    chapter 10's figures are measured on that held-out set, so RL must never train on it."""
    if seed == 1:
        raise ValueError("seed 1 made chapter 9's sets: RL prompts need another seed")
    sft_train, sft_heldout = build_splits(6000, 400, 1)
    seen = {e.key for e in sft_train} | {e.key for e in sft_heldout}
    out = []
    for e in build_splits(max(4 * n, 2000), 1, seed)[0]:
        if e.key not in seen and (tasks is None or e.task in tasks):
            seen.add(e.key)
            out.append(e)
    return out[:n]


class VocabLimited(nn.Module):
    """``model`` with the logits of ids ``>= n_vocab`` set to ``-inf`` (never sampled)."""

    def __init__(self, model: nn.Module, n_vocab: int) -> None:
        super().__init__()
        self.model, self.n_vocab = model, n_vocab

    @property
    def max_seq_len(self) -> int:
        return self.model.max_seq_len

    def new_cache(self, batch_size: int, max_len: int | None = None) -> Any:
        return self.model.new_cache(batch_size, max_len)

    def forward(self, ids: torch.Tensor, cache: Any = None) -> torch.Tensor:
        logits = self.model(ids, cache=cache)
        logits[..., self.n_vocab :] = float("-inf")
        return logits


def prompt_ids(tok: ChatTokenizer, example: Example, room: int) -> list[int]:
    """The chat-template prompt of ``example`` keeping its last ``room`` tokens."""
    return ChatTemplate().prompt_ids(tok, example.prompt)[-room:]


@torch.no_grad()
def sample_rollouts(
    model: nn.Module,
    tok: ChatTokenizer,
    examples: Sequence[Example],
    n_per_prompt: int = 1,
    max_new_tokens: int = 32,
    temperature: float = 1.0,
    seed: int = 0,
    batch_size: int = 64,
) -> Rollout:
    """Sample ``n_per_prompt`` responses to each example's prompt (see the module docstring).

    The same ``seed`` gives the same rollout; ``temperature`` 0 is greedy decoding."""
    if not examples:
        raise ValueError("no examples to roll out")
    if n_per_prompt < 1 or max_new_tokens < 1:
        raise ValueError(
            f"n_per_prompt and max_new_tokens must be >= 1, got {n_per_prompt}, {max_new_tokens}"
        )
    room = model.max_seq_len - max_new_tokens
    if room < 1:
        raise ValueError(f"max_new_tokens = {max_new_tokens} fills the whole context window")
    end = tok.token_id(ChatTemplate().end)
    rows_examples = [e for e in examples for _ in range(n_per_prompt)]
    prompts = [prompt_ids(tok, e, room) for e in rows_examples]
    by_length: dict[int, list[int]] = defaultdict(list)
    for i, p in enumerate(prompts):
        by_length[len(p)].append(i)
    responses: list[list[int]] = [[] for _ in prompts]
    batch_index, sampler = 0, VocabLimited(model, tok.n_vocab)
    for length in sorted(by_length):
        indices = by_length[length]
        for start in range(0, len(indices), batch_size):
            chunk = indices[start : start + batch_size]
            config = GenerationConfig(
                max_new_tokens=max_new_tokens, temperature=temperature, stop_ids=(end,),
                seed=seed * 100_003 + batch_index, pad_id=end,
            )  # fmt: skip
            batch_index += 1
            new = generate(sampler, torch.tensor([prompts[i] for i in chunk]), config)
            for i, row in zip(chunk, new[:, length:].tolist(), strict=True):
                responses[i] = row[: row.index(end) + 1] if end in row else row
    total = max(len(p) + len(r) for p, r in zip(prompts, responses, strict=True))
    device = next(model.parameters()).device
    ids = torch.full((len(prompts), total), end, dtype=torch.long)
    mask = torch.zeros((len(prompts), total), dtype=torch.bool)
    for i, (p, r) in enumerate(zip(prompts, responses, strict=True)):
        ids[i, : len(p) + len(r)] = torch.tensor(p + r)
        mask[i, len(p) : len(p) + len(r)] = True
    finished = torch.tensor([bool(r) and r[-1] == end for r in responses])
    texts = [tok.decode(r[:-1] if r and r[-1] == end else r) for r in responses]
    return Rollout(
        ids=ids.to(device),
        response_mask=mask.to(device),
        prompt_lens=torch.tensor([len(p) for p in prompts], device=device),
        finished=finished.to(device),
        texts=texts,
        examples=rows_examples,
    )
