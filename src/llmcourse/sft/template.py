"""The chat template: special tokens around each turn, and a loss on the answer only.

A conversation is a list of messages ``{"role": ..., "content": ...}`` with roles ``system``,
``user`` and ``assistant``. The template writes each one as

    <|role|>content<|end|>\\n

so that

    <|system|>You are helpful.<|end|>
    <|user|>Reverse the word "abc".<|end|>
    <|assistant|>cba<|end|>

and a prompt for the model ends with ``<|assistant|>``: what it writes next is its answer, and
``<|end|>`` is how it says the answer is over (generation stops there). The four markers are
*special tokens*: one id each, never produced from ordinary text, so a user typing
``<|end|>`` cannot forge a turn boundary in ``encode`` of the content.

Supervised fine-tuning (SFT) trains on the answer only. With ``x`` the prompt and ``y`` the
response, the loss is ``L_FT = -sum_t log P(y_t | x, y_<t)``: the prompt conditions the
prediction but is not itself a target. In practice every token gets a label, the token itself
for the assistant's content and its ``<|end|>``, and ``-100`` (PyTorch's ``ignore_index``) for
everything else; ``sft_loss`` is then the shifted cross-entropy over the labelled positions.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import regex
import torch
import torch.nn.functional as F
from torch import nn

from llmcourse.causal_lm.data import Tokenizer, load_tokenizer, save_tokenizer
from llmcourse.tokenizers import BPETokenizer

IGNORE = -100
"""The label of a position the loss skips (``torch.nn.functional.cross_entropy``'s default)."""
ROLES = ("system", "user", "assistant")
SPECIAL_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>", "<|end|>")
Message = dict[str, str]


class ChatTokenizer:
    """A base tokenizer (course BPE or bytes) plus the chat's special tokens.

    The base keeps its ids ``0 .. n - 1``; special token ``i`` gets id ``n + i``. ``encode``
    splits the text at the special-token strings, encodes the pieces with the base tokenizer
    and puts the special ids in between; ``encode_ordinary`` treats everything as plain text.
    """

    FORMAT = "llmcourse-chat-tokenizer"

    def __init__(self, base: Tokenizer, special_tokens: Sequence[str] = SPECIAL_TOKENS) -> None:
        if isinstance(base, ChatTokenizer):
            raise TypeError("the base tokenizer already has the chat tokens")
        if len(set(special_tokens)) != len(special_tokens) or not all(special_tokens):
            raise ValueError(f"special tokens must be distinct and non-empty: {special_tokens}")
        self.base = base
        self.special_tokens = {s: base.n_vocab + i for i, s in enumerate(special_tokens)}
        self._special_ids = {i: s for s, i in self.special_tokens.items()}
        pattern = "|".join(regex.escape(s) for s in sorted(special_tokens, key=len, reverse=True))
        self._splitter = regex.compile(f"({pattern})")

    @property
    def n_vocab(self) -> int:
        return self.base.n_vocab + len(self.special_tokens)

    def token_id(self, token: str) -> int:
        """The id of a special token, e.g. ``token_id("<|end|>")``."""
        if token not in self.special_tokens:
            raise KeyError(f"{token!r} is not a special token: {list(self.special_tokens)}")
        return self.special_tokens[token]

    def encode_ordinary(self, text: str) -> list[int]:
        """The base tokenizer's ids of ``text`` (special-token strings stay plain text)."""
        if isinstance(self.base, BPETokenizer):
            return self.base.encode_ordinary(text)
        return list(self.base.encode(text))

    def encode(self, text: str) -> list[int]:
        """Ids of ``text`` with every special-token string turned into its one id."""
        ids: list[int] = []
        for i, part in enumerate(self._splitter.split(text)):
            if i % 2:
                ids.append(self.special_tokens[part])
            elif part:
                ids.extend(self.encode_ordinary(part))
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        """The text of ``ids``, special tokens written out."""
        parts, run = [], []
        for i in (int(i) for i in ids):
            if i in self._special_ids:
                parts.append(self.base.decode(run) + self._special_ids[i])
                run = []
            elif 0 <= i < self.base.n_vocab:
                run.append(i)
            else:
                raise ValueError(f"token id {i} is not in the vocabulary (size {self.n_vocab})")
        return "".join(parts) + self.base.decode(run)

    def save(self, folder: str | Path) -> None:
        """Write ``chat_tokenizer.json`` and the base's ``tokenizer.json`` into ``folder``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_tokenizer(self.base, folder / "tokenizer.json")
        data = {"format": self.FORMAT, "version": 1, "special_tokens": list(self.special_tokens)}
        (folder / "chat_tokenizer.json").write_text(json.dumps(data) + "\n")

    @classmethod
    def load(cls, folder: str | Path) -> ChatTokenizer:
        """Read what ``save`` wrote; ``ValueError`` / ``FileNotFoundError`` otherwise."""
        path = Path(folder) / "chat_tokenizer.json"
        if not path.is_file():
            raise FileNotFoundError(f"no chat_tokenizer.json in {folder}: not a chat checkpoint")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"{path} is not valid JSON: {err}") from None
        if not isinstance(data, dict) or data.get("format") != cls.FORMAT:
            raise ValueError(f'{path} is not a chat tokenizer (no "format": "{cls.FORMAT}")')
        return cls(load_tokenizer(Path(folder) / "tokenizer.json"), data["special_tokens"])

    def __repr__(self) -> str:
        return f"ChatTokenizer({self.base!r} + {list(self.special_tokens)})"


@dataclass(frozen=True)
class ChatTemplate:
    """``<|role|>content<|end|>`` + ``separator`` per message (see the module docstring)."""

    separator: str = "\n"
    end: str = "<|end|>"

    @staticmethod
    def role_token(role: str) -> str:
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}: use one of {', '.join(ROLES)}")
        return f"<|{role}|>"

    def check(self, messages: Sequence[Message]) -> None:
        """``ValueError`` for anything that is not a list of role/content messages."""
        if not messages:
            raise ValueError("a conversation needs at least one message")
        for i, m in enumerate(messages):
            if not isinstance(m, dict) or set(m) != {"role", "content"}:
                raise ValueError(f"message {i} must be a dict with 'role' and 'content': {m!r}")
            self.role_token(m["role"])
            if not isinstance(m["content"], str):
                raise ValueError(f"message {i}'s content is not a string: {m['content']!r}")

    def render(self, messages: Sequence[Message], add_generation_prompt: bool = False) -> str:
        """The conversation as text; ``add_generation_prompt`` appends ``<|assistant|>`` so
        that the model's continuation is the next answer."""
        self.check(messages)
        text = "".join(
            f"{self.role_token(m['role'])}{m['content']}{self.end}{self.separator}"
            for m in messages
        )
        return text + (self.role_token("assistant") if add_generation_prompt else "")

    def encode(
        self, tokenizer: ChatTokenizer, messages: Sequence[Message]
    ) -> tuple[list[int], list[int]]:
        """``(ids, labels)``: ``ids == tokenizer.encode(render(messages))``, and labels equal
        to the ids on every assistant's content and its ``<|end|>``, ``IGNORE`` elsewhere."""
        self.check(messages)
        ids: list[int] = []
        labels: list[int] = []
        for m in messages:
            learn = m["role"] == "assistant"
            head = [tokenizer.token_id(self.role_token(m["role"]))]
            body = [*tokenizer.encode_ordinary(m["content"]), tokenizer.token_id(self.end)]
            tail = tokenizer.encode_ordinary(self.separator) if self.separator else []
            ids += head + body + tail
            labels += [IGNORE] * len(head) + (body if learn else [IGNORE] * len(body))
            labels += [IGNORE] * len(tail)
        return ids, labels

    def prompt_ids(self, tokenizer: ChatTokenizer, messages: Sequence[Message]) -> list[int]:
        """Ids of the conversation followed by ``<|assistant|>``: what generation starts from."""
        return tokenizer.encode(self.render(messages, add_generation_prompt=True))


def sft_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of position ``t``'s logits against ``labels[t + 1]``, over the
    labels that are not ``IGNORE``: ``L_FT = -1/|R| sum_{t+1 in R} log p(y_{t+1} | x_<=t)``,
    with ``R`` the response positions. ``logits`` (B, T, V), ``labels`` (B, T)."""
    if logits.dim() != 3 or labels.shape != logits.shape[:2]:
        raise ValueError(
            f"expected logits (B, T, V) and labels (B, T), got {tuple(logits.shape)} and "
            f"{tuple(labels.shape)}"
        )
    targets = labels[:, 1:]
    if not (targets != IGNORE).any():
        raise ValueError("no position has a label: nothing to learn (is there an answer?)")
    vocab = logits.shape[-1]
    return F.cross_entropy(
        logits[:, :-1].float().reshape(-1, vocab), targets.reshape(-1), ignore_index=IGNORE
    )


def _input_embedding(model: nn.Module) -> nn.Embedding:
    if hasattr(model, "transformer"):  # llmcourse.gpt.GPT
        return model.transformer.wte
    if hasattr(model, "model") and hasattr(model.model, "embed_tokens"):  # llmcourse.llama
        return model.model.embed_tokens
    raise TypeError(f"{type(model).__name__} is neither llmcourse's GPT nor its Llama")


def _grown(weight: torch.Tensor, rows: int, fill: torch.Tensor) -> nn.Parameter:
    new = fill.expand(rows - weight.shape[0], -1)
    return nn.Parameter(torch.cat([weight.detach(), new.to(weight)], dim=0))


@torch.no_grad()
def add_special_tokens(
    model: nn.Module, tokenizer: Tokenizer, special_tokens: Sequence[str] = SPECIAL_TOKENS
) -> ChatTokenizer:
    """Give ``tokenizer`` the chat's special tokens and ``model`` a row for each; return the
    ``ChatTokenizer`` (the model is changed in place).

    How: the new ids are ``n .. n + k - 1`` after the base's ``n`` ids. Where the model's table
    is too short (``vocab_size < n + k``) the input embedding and the output head grow to
    ``n + k`` rows (``config.vocab_size`` follows, so the model saves and reloads); a tied head
    (GPT, a tied LLaMA) is tied again to the grown table, an untied one grows on its own. Each
    new row, in the embedding and in an untied head, starts at the *mean* of the base's ``n``
    rows: an untrained new token then looks like an average token instead of a random vector
    whose logit could dwarf the others. Rows that already exist past ``n`` (a vocabulary rounded
    up to a multiple of 64) are reset to that mean the same way; they were never trained on.
    """
    chat = ChatTokenizer(tokenizer, special_tokens)
    n, total = tokenizer.n_vocab, chat.n_vocab
    embedding = _input_embedding(model)
    head = model.lm_head
    tied = head.weight is embedding.weight
    if embedding.weight.shape[0] < n:
        raise ValueError(
            f"the model has {embedding.weight.shape[0]} embeddings, fewer than the tokenizer's "
            f"{n} ids: they do not belong together"
        )
    mean_in = embedding.weight[:n].mean(dim=0, keepdim=True)
    mean_out = head.weight[:n].mean(dim=0, keepdim=True)
    if embedding.weight.shape[0] < total:
        embedding.weight = _grown(embedding.weight, total, mean_in)
        embedding.num_embeddings = total
        if tied:
            head.weight = embedding.weight
        else:
            head.weight = _grown(head.weight, total, mean_out)
        head.out_features = total
        model.config.vocab_size = total
    embedding.weight[n:total] = mean_in
    if not tied:
        head.weight[n:total] = mean_out
    return chat
