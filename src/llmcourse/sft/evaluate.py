"""Exact match per task type: does the model's greedy answer equal the reference?

For each held-out example the prompt (everything before the final answer) is written either
with the chat template, ending in ``<|assistant|>`` (generation stops at ``<|end|>``), or, for
a base model that never saw the template, in the plain ``### Instruction: / ### Response:``
format of its pretraining corpus (the answer then ends at the first line break or at the
base's ``<|endoftext|>``, which ended each pretraining document). The answer is
decoded greedily with ``llmcourse.generate.generate`` and compared, stripped of surrounding
spaces, with the reference. Prompts of equal length are generated as one batch; a prompt
too long for the context window with the answer keeps its last tokens.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import torch
from torch import nn

from llmcourse.data import format_instruction
from llmcourse.generate import GenerationConfig, generate

from .data import Example
from .template import ChatTemplate, ChatTokenizer

STYLES = ("template", "plain")
PLAIN_END = "<|endoftext|>"


def plain_prompt(example: Example) -> str:
    """The conversation before the final answer in the pretraining corpus's format."""
    parts, messages = [], list(example.messages[:-1])
    for i, (role, content) in enumerate(messages):
        if role == "user":
            answer = messages[i + 1][1] if i + 1 < len(messages) else ""
            parts.append(format_instruction(content, answer))
    return "\n\n".join(parts)


def answers(
    model: nn.Module,
    tokenizer: ChatTokenizer,
    examples: Sequence[Example],
    style: str = "template",
    max_new_tokens: int = 40,
    batch_size: int = 64,
) -> list[str]:
    """The model's greedy answer to each example's prompt (see the module docstring)."""
    if style not in STYLES:
        raise ValueError(f"unknown prompt style {style!r}: {', '.join(STYLES)}")
    template = ChatTemplate()
    end = tokenizer.token_id(template.end)
    if style == "template":
        prompts = [template.prompt_ids(tokenizer, e.prompt) for e in examples]
    else:
        prompts = [tokenizer.encode_ordinary(plain_prompt(e)) for e in examples]
    room = model.max_seq_len - max_new_tokens
    config = GenerationConfig(max_new_tokens=max_new_tokens, temperature=0.0, stop_ids=(end,))
    if room < 1:
        raise ValueError(f"max_new_tokens = {max_new_tokens} fills the whole context window")
    prompts = [p[-room:] for p in prompts]  # a long history loses its oldest tokens
    by_length: dict[int, list[int]] = defaultdict(list)
    for i, p in enumerate(prompts):
        by_length[len(p)].append(i)
    out = [""] * len(prompts)
    for length, indices in by_length.items():
        for start in range(0, len(indices), batch_size):
            chunk = indices[start : start + batch_size]
            batch = torch.tensor([prompts[i] for i in chunk])
            new = generate(model, batch, config)[:, length:].tolist()
            for i, ids in zip(chunk, new, strict=True):
                if end in ids:
                    ids = ids[: ids.index(end)]
                text = tokenizer.decode(ids)
                if style == "plain":
                    text = text.split(PLAIN_END)[0].split("\n")[0]
                out[i] = text
    return out


def exact_match_by_task(
    model: nn.Module,
    tokenizer: ChatTokenizer,
    examples: Sequence[Example],
    style: str = "template",
    max_new_tokens: int = 40,
) -> dict[str, float]:
    """Share of exact answers per task type, plus ``"all"`` over every example."""
    if not examples:
        raise ValueError("no examples to evaluate")
    got = answers(model, tokenizer, examples, style, max_new_tokens)
    hits: dict[str, list[bool]] = defaultdict(list)
    for e, a in zip(examples, got, strict=True):
        ok = a.strip() == e.answer.strip()
        hits[e.task].append(ok)
        hits["all"].append(ok)
    return {task: sum(v) / len(v) for task, v in sorted(hits.items())}
