"""A terminal chat with a fine-tuned model: ``python -m llmcourse.chat``.

The conversation so far is written with the chat template (``llmcourse.sft.ChatTemplate``),
followed by ``<|assistant|>``; the model's answer is streamed token by token with chapter 7's
``llmcourse.generate.stream`` and ends at ``<|end|>``. The history is kept between turns; when
it no longer fits the context window with room for an answer, the oldest turns are dropped
(a system message stays).
"""

from .session import ChatSession

__all__ = ["ChatSession"]
