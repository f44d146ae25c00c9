"""``ChatSession``: the history of one conversation and the streaming of each answer."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from llmcourse.generate import GenerationConfig, stream
from llmcourse.sft.template import ChatTemplate, ChatTokenizer, Message


class ChatSession:
    """A conversation with ``model``: ``reply(text)`` yields the answer in pieces of text."""

    def __init__(
        self,
        model: nn.Module,
        tokenizer: ChatTokenizer,
        config: GenerationConfig,
        system: str | None = None,
    ) -> None:
        if config.max_new_tokens >= model.max_seq_len:
            raise ValueError(
                f"max_new_tokens = {config.max_new_tokens} leaves no room for a prompt in the "
                f"context window of {model.max_seq_len} tokens"
            )
        self.model, self.tokenizer, self.template = model, tokenizer, ChatTemplate()
        self.end = tokenizer.token_id(self.template.end)
        self.config = GenerationConfig(**{**vars(config), "stop_ids": (self.end,)})
        self.system = [{"role": "system", "content": system}] if system else []
        self.history: list[Message] = []

    def reset(self) -> None:
        self.history = []

    def prompt_ids(self, text: str) -> list[int]:
        """The ids of the history plus the new user turn, oldest turns dropped to fit."""
        turn = {"role": "user", "content": text}
        room = self.model.max_seq_len - self.config.max_new_tokens
        history = list(self.history)
        while True:
            ids = self.template.prompt_ids(self.tokenizer, [*self.system, *history, turn])
            if len(ids) <= room:
                return ids
            if not history:
                raise ValueError(
                    f"the message is {len(ids)} tokens with the template; the model reads "
                    f"{self.model.max_seq_len} and answers in up to "
                    f"{self.config.max_new_tokens}: write a shorter one"
                )
            history = history[2:]  # one user turn and its answer

    def reply(self, text: str) -> Iterator[str]:
        """Stream the answer to ``text`` as text pieces; the turn joins the history at the end."""
        ids = self.prompt_ids(text)
        new: list[int] = []
        shown = ""
        for token in stream(self.model, torch.tensor(ids), self.config):
            if int(token[0]) == self.end:
                break
            new.append(int(token[0]))
            full = self.tokenizer.decode(new)
            if not full.endswith("\ufffd"):  # wait for the rest of a multi-byte character
                yield full[len(shown) :]
                shown = full
        answer = self.tokenizer.decode(new)
        if len(answer) > len(shown):
            yield answer[len(shown) :]
        self.history += [
            {"role": "user", "content": text},
            {"role": "assistant", "content": answer},
        ]
