"""The generation loop: one forward pass per new token, with or without a KV cache.

A decoder-only model gives, at every position, a distribution over the *next* token. To write
text it is run in a loop: feed the sequence, take the distribution at the last position, pick a
token (``argmax`` for greedy decoding, or a draw after the logit processors of ``sampling``),
append it, and go again. This is why a chat model's answer appears one token at a time: token
n + 1 cannot be computed before token n has been chosen.

Without a cache, step n runs the model on the whole sequence so far (cropped to the model's
context window), recomputing the keys and values of every earlier token: n tokens of work for
one new token, O(n^2) over a whole answer. With a cache, the prompt is run once (the
*prefill*), its keys and values are kept, and every later step feeds only the one new token,
whose query attends to the cached keys and values. Both compute the same logits, so they pick
the same tokens. Once the text outgrows the context window the positions shift at every step
and the cache no longer applies; the loop then recomputes the last window, as without a cache.

Any model works that follows the course's decoder interface (``llmcourse.gpt.GPT``,
``llmcourse.llama.Llama``): ``forward(input_ids, cache=None) -> logits (B, T, V)``,
``new_cache(batch_size, max_len)`` and ``max_seq_len``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import torch

from .sampling import apply_temperature, repetition_penalty, top_k_filter, top_p_filter


class Cache(Protocol):
    """What the loop needs of a KV cache (``llmcourse.kv_cache.KVCache``)."""

    length: int

    def reset(self) -> None: ...


class CausalLM(Protocol):
    """What the loop needs of a model."""

    max_seq_len: int

    def __call__(self, input_ids: torch.Tensor, cache: Cache | None = None) -> torch.Tensor: ...

    def new_cache(self, batch_size: int, max_len: int | None = None) -> Cache: ...


@dataclass
class GenerationConfig:
    """How to pick each next token, and when to stop.

    ``temperature`` 0 means greedy decoding (always the most likely token; ``top_k`` and
    ``top_p`` then change nothing). ``top_k`` / ``top_p`` of ``None`` switch those filters off;
    ``repetition_penalty`` 1.0 switches the penalty off. A sequence that emits one of
    ``stop_ids`` is finished: its later positions are filled with ``pad_id`` (the first stop
    id when ``None``), and generation ends when every sequence of the batch has finished or
    after ``max_new_tokens``. The same ``seed`` gives the same tokens; ``None`` draws from
    PyTorch's global generator.
    """

    max_new_tokens: int = 50
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    repetition_penalty: float = 1.0
    stop_ids: tuple[int, ...] = ()
    seed: int | None = None
    use_cache: bool = True
    pad_id: int | None = None

    def __post_init__(self) -> None:
        self.stop_ids = tuple(int(i) for i in self.stop_ids)
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` on settings that cannot work."""
        if self.max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be >= 0, got {self.max_new_tokens}")
        if not self.temperature >= 0 or self.temperature == float("inf"):
            raise ValueError(f"temperature must be a finite number >= 0, got {self.temperature}")
        if self.top_k is not None and (isinstance(self.top_k, bool) or self.top_k < 1):
            raise ValueError(f"top_k must be an integer >= 1 (or None), got {self.top_k}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1] (or None), got {self.top_p}")
        if not self.repetition_penalty > 0 or self.repetition_penalty == float("inf"):
            raise ValueError(
                f"repetition_penalty must be a finite number > 0, got {self.repetition_penalty}"
            )

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def fill_id(self) -> int:
        """The id written after a sequence has stopped."""
        if self.pad_id is not None:
            return self.pad_id
        return self.stop_ids[0] if self.stop_ids else 0


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of the model's first parameter (CPU for a model without parameters)."""
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def check_prompt(model: CausalLM, input_ids: torch.Tensor) -> torch.Tensor:
    """Return ``input_ids`` as a (B, T) long tensor, or raise a ``ValueError`` saying what is
    wrong with it (not integers, empty, longer than the model's context window)."""
    if not isinstance(input_ids, torch.Tensor):
        input_ids = torch.as_tensor(input_ids)
    if input_ids.dim() == 1:
        input_ids = input_ids[None]
    if input_ids.dim() != 2:
        raise ValueError(
            f"input_ids must be (T,) or (B, T) token ids, got shape {tuple(input_ids.shape)}"
        )
    if input_ids.dtype.is_floating_point or input_ids.dtype == torch.bool:
        raise ValueError(f"input_ids must be integer token ids, got {input_ids.dtype}")
    if input_ids.shape[0] == 0 or input_ids.shape[1] == 0:
        raise ValueError(
            "the prompt is empty: a decoder needs at least one token to predict the next "
            "(start with a beginning-of-text or end-of-text token)"
        )
    if input_ids.shape[1] > model.max_seq_len:
        raise ValueError(
            f"the prompt has {input_ids.shape[1]} tokens but the model's context window "
            f"(max_seq_len) is {model.max_seq_len}: shorten the prompt"
        )
    return input_ids.long()


def process_logits(
    logits: torch.Tensor, sequence: torch.Tensor, config: GenerationConfig
) -> torch.Tensor:
    """Apply the config's processors to the last-position logits (B, V): repetition penalty
    (on ``sequence``, the prompt and the tokens so far), temperature, top-k, top-p."""
    logits = logits.float()
    if config.repetition_penalty != 1.0:
        logits = repetition_penalty(logits, sequence, config.repetition_penalty)
    if config.greedy:
        return logits
    if config.temperature != 1.0:
        logits = apply_temperature(logits, config.temperature)
    if config.top_k is not None:
        logits = top_k_filter(logits, config.top_k)
    if config.top_p is not None:
        logits = top_p_filter(logits, config.top_p)
    return logits


def pick_token(
    logits: torch.Tensor, config: GenerationConfig, generator: torch.Generator | None
) -> torch.Tensor:
    """The next token of each row of processed logits (B, V): argmax or a draw, (B,)."""
    if config.greedy:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits, dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


@torch.no_grad()
def stream(
    model: CausalLM, input_ids: torch.Tensor, config: GenerationConfig | None = None
) -> Iterator[torch.Tensor]:
    """Yield the next token of every sequence, (B,) long, one step at a time.

    ``input_ids`` is a prompt (T,) or a batch of prompts of equal length (B, T). Stops after
    ``config.max_new_tokens`` steps or once every sequence has emitted a stop id; a sequence
    that stopped earlier gets ``config.fill_id()`` from then on. The model is put in eval mode
    for the loop and restored afterwards.
    """
    config = config or GenerationConfig()
    config.validate()
    device = model_device(model)
    sequence = check_prompt(model, input_ids).to(device)
    batch, window = sequence.shape[0], model.max_seq_len
    generator = None
    if config.seed is not None:
        generator = torch.Generator(device=device).manual_seed(config.seed)
    stop = torch.tensor(config.stop_ids, dtype=torch.long, device=device)
    done = torch.zeros(batch, dtype=torch.bool, device=device)
    cache = None
    if config.use_cache and config.max_new_tokens > 0:
        cache = model.new_cache(batch, min(window, sequence.shape[1] + config.max_new_tokens))
    was_training = model.training
    model.eval()
    try:
        new_ids = sequence
        for _ in range(config.max_new_tokens):
            if cache is None:
                logits = model(sequence[:, -window:])
            elif cache.length + new_ids.shape[1] > window:
                # past the window the positions shift every step: recompute the last window
                cache.reset()
                logits = model(sequence[:, -window:], cache=cache)
            else:
                logits = model(new_ids, cache=cache)
            logits = process_logits(logits[:, -1], sequence, config)
            token = pick_token(logits, config, generator)
            token = token.masked_fill(done, config.fill_id())
            if stop.numel():
                done |= torch.isin(token, stop)
            sequence = torch.cat([sequence, token[:, None]], dim=1)
            new_ids = token[:, None]
            yield token
            if done.all():
                break
    finally:
        model.train(was_training)


def generate(
    model: CausalLM, input_ids: torch.Tensor, config: GenerationConfig | None = None
) -> torch.Tensor:
    """The prompt followed by the generated tokens: (B, T + n), n <= ``max_new_tokens``.

    A (T,) prompt gives a (1, T + n) result. See ``stream`` for the rules.
    """
    prompt = check_prompt(model, input_ids).to(model_device(model))
    tokens = list(stream(model, prompt, config))
    if not tokens:
        return prompt
    return torch.cat([prompt, torch.stack(tokens, dim=1)], dim=1)
