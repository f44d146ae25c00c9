"""Preference data: pairs (prompt, chosen response, rejected response).

RLHF learns from comparisons, not from reference answers: people find it easier and more
consistent to say which of two answers is better than to write the best one. InstructGPT
showed labellers K = 4..9 responses to one prompt and had them *rank* all of them; a ranking
of K gives C(K, 2) = K (K - 1) / 2 pairs (``ranking_to_pairs``).

Here the labeller is a program, so the data is made offline and can be checked. For each
prompt the SFT model samples K responses, and a checkable criterion ranks them (``grade``):

    3  the right answer (equal to the reference)
    2  a well-formed wrong answer of the reference's length
    1  another well-formed wrong answer (one non-empty line, ended with <|end|>)
    0  malformed (several lines, empty, or never ended)

Pairs join responses of different grades, better one chosen; ties give no pair. A response
string is the assistant's text with its final ``<|end|>`` written out when it ended its turn
(``tok.encode`` turns it back into the one token).

Human labels come in as JSON Lines (``load_jsonl``), one pair per line::

    {"prompt": [{"role": "user", "content": "Reverse the word \\"abc\\"."}],
     "chosen": "cba<|end|>", "rejected": "abc<|end|>"}

``prompt``: the conversation before the answer (roles ``system``/``user``/``assistant``);
``chosen`` / ``rejected``: the two responses, ``<|end|>`` at the end of a finished one; an
optional ``"task"`` labels the pair (default ``"human"``) and an optional ``"reference"`` gives
the reference answer where there is one (default: ``chosen`` without its ``<|end|>``).
"""

from __future__ import annotations

import itertools
import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import torch
from torch import nn

from llmcourse.sft.data import Example
from llmcourse.sft.template import ROLES, ChatTemplate, ChatTokenizer

from .rollout import sample_rollouts

END = ChatTemplate().end
T = TypeVar("T")


@dataclass(frozen=True)
class PreferencePair:
    """``chosen`` is preferred to ``rejected`` as the answer to ``example.prompt``."""

    example: Example
    chosen: str
    rejected: str


def ranking_to_pairs(
    ranked: Sequence[T], scores: Sequence[float] | None = None
) -> list[tuple[T, T]]:
    """All ``(better, worse)`` pairs of a ranking, best first: ``K (K - 1) / 2`` of them. With
    ``scores`` (same order, non-increasing), pairs of equal score (ties) are dropped."""
    if scores is not None:
        if len(scores) != len(ranked):
            raise ValueError(f"{len(ranked)} responses but {len(scores)} scores")
        if any(a < b for a, b in itertools.pairwise(scores)):
            raise ValueError(f"scores must be sorted best first, got {list(scores)}")
    return [
        (ranked[i], ranked[j])
        for i in range(len(ranked))
        for j in range(i + 1, len(ranked))
        if scores is None or scores[i] > scores[j]
    ]


def grade(example: Example, response: str) -> int:
    """The checkable grade of ``response`` (see the module docstring): 3, 2, 1 or 0."""
    if not response.endswith(END):
        return 0
    text = response[: -len(END)].strip()
    if not text or "\n" in text or END in text:
        return 0
    if text == example.answer.strip():
        return 3
    return 2 if len(text) == len(example.answer.strip()) else 1


def build_preferences(
    model: nn.Module,
    tok: ChatTokenizer,
    examples: Sequence[Example],
    k: int = 4,
    seed: int = 0,
    max_new_tokens: int = 32,
    temperature: float = 1.0,
) -> list[PreferencePair]:
    """Sample ``k`` responses to each prompt, rank them with ``grade`` and return the pairs
    of different grades (identical responses count once)."""
    if k < 2:
        raise ValueError(f"a ranking needs k >= 2 responses, got {k}")
    rollout = sample_rollouts(model, tok, examples, k, max_new_tokens, temperature, seed)
    pairs = []
    for p, example in enumerate(examples):
        responses = []
        for i in range(p * k, (p + 1) * k):
            text = rollout.texts[i] + (END if rollout.finished[i] else "")
            if text not in responses:
                responses.append(text)
        ranked = sorted(responses, key=lambda r: -grade(example, r))
        scores = [grade(example, r) for r in ranked]
        pairs += [PreferencePair(example, c, r) for c, r in ranking_to_pairs(ranked, scores)]
    return pairs


def by_prompt(pairs: Sequence[PreferencePair]) -> list[list[int]]:
    """The indices of ``pairs`` grouped by prompt, in order of first appearance."""
    groups: dict[str, list[int]] = defaultdict(list)
    for i, pair in enumerate(pairs):
        groups[pair.example.key].append(i)
    return list(groups.values())


def encode_responses(
    tok: ChatTokenizer, examples: Sequence[Example], responses: Sequence[str], max_len: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(ids (N, T), response_mask (N, T))``: each example's chat prompt followed by its
    response, right-padded with ``<|end|>``. A prompt too long for ``max_len`` loses its
    oldest tokens; a response too long (or empty) is an error."""
    template, end = ChatTemplate(), tok.token_id(END)
    rows = []
    for example, text in zip(examples, responses, strict=True):
        response = tok.encode(text)
        room = max_len - len(response)
        if room < 1 or not response:
            raise ValueError(
                f"a response of {len(response)} tokens does not fit in {max_len} with a prompt "
                "(or is empty)"
            )
        rows.append((template.prompt_ids(tok, example.prompt)[-room:], response))
    width = max(len(p) + len(r) for p, r in rows)
    ids = torch.full((len(rows), width), end, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.bool)
    for i, (p, r) in enumerate(rows):
        ids[i, : len(p) + len(r)] = torch.tensor(p + r)
        mask[i, len(p) : len(p) + len(r)] = True
    return ids, mask


def encode_pairs(
    tok: ChatTokenizer, pairs: Sequence[PreferencePair], max_len: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``encode_responses`` of the N chosen responses, then the N rejected ones: (2N, T)."""
    examples = [p.example for p in pairs] * 2
    responses = [p.chosen for p in pairs] + [p.rejected for p in pairs]
    return encode_responses(tok, examples, responses, max_len)


def save_jsonl(pairs: Sequence[PreferencePair], path: str | Path) -> Path:
    """Write ``pairs`` in the JSON Lines format of the module docstring."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for pair in pairs:
            row = {
                "prompt": pair.example.prompt,
                "chosen": pair.chosen,
                "rejected": pair.rejected,
                "task": pair.example.task,
                "reference": pair.example.answer,
            }
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def _pair_from_row(row: object) -> PreferencePair:
    if not isinstance(row, dict):
        raise ValueError("expected a JSON object")
    missing = [k for k in ("prompt", "chosen", "rejected") if k not in row]
    if missing:
        raise ValueError(f"missing field(s) {', '.join(missing)}")
    for key in ("chosen", "rejected"):
        if not isinstance(row[key], str) or not row[key]:
            raise ValueError(f'"{key}" must be a non-empty string')
    prompt = row["prompt"]
    if not isinstance(prompt, list) or not prompt:
        raise ValueError('"prompt" must be a non-empty list of messages')
    messages = []
    for m in prompt:
        if (
            not isinstance(m, dict)
            or m.get("role") not in ROLES
            or not isinstance(m.get("content"), str)
        ):
            raise ValueError(f'each message needs "role" ({", ".join(ROLES)}) and "content"')
        messages.append((m["role"], m["content"]))
    if messages[-1][0] == "assistant":
        raise ValueError("the prompt ends with an assistant message: nothing left to answer")
    task, reference = (
        row.get("task", "human"),
        row.get("reference", row["chosen"].removesuffix(END)),
    )
    if not isinstance(task, str) or not isinstance(reference, str):
        raise ValueError('"task" and "reference" must be strings')
    example = Example((*messages, ("assistant", reference)), task)
    return PreferencePair(example, row["chosen"], row["rejected"])


def load_jsonl(path: str | Path) -> list[PreferencePair]:
    """Read preference pairs from a JSON Lines file (format: the module docstring); blank
    lines are skipped, and a bad line raises ``ValueError`` naming the file and line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no preference file {path}")
    pairs = []
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                pairs.append(_pair_from_row(json.loads(line)))
            except (json.JSONDecodeError, ValueError) as err:
                raise ValueError(f"{path}, line {number}: {err}") from None
    return pairs
