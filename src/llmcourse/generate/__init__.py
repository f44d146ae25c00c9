"""Generating text with a decoder, one token at a time.

* ``sampling``: logit processors, the rules that reshape the next-token distribution:
  temperature softmax(z / t), top-k, top-p (nucleus) and the repetition penalty.
* ``loop``: ``GenerationConfig`` and the loop itself, ``stream`` (one token per step) and
  ``generate`` (the whole sequence): greedy or sampled, seeded, stop tokens, with a KV cache
  (prefill the prompt once, then one token per forward pass) or without one.
* ``distribution``: ``next_token_distribution``, the most likely next tokens and their
  probabilities at one step, and a bar chart of them.
* ``speed``: generation time with and without the KV cache at growing lengths, and its plot.

Run ``python -m llmcourse.generate --help`` for the command line that streams text from a
trained checkpoint.
"""

from .distribution import next_token_distribution, plot_distribution
from .loop import GenerationConfig, check_prompt, generate, process_logits, stream
from .sampling import apply_temperature, repetition_penalty, top_k_filter, top_p_filter
from .speed import plot_speedup, time_generation

__all__ = [
    "GenerationConfig",
    "apply_temperature",
    "check_prompt",
    "generate",
    "next_token_distribution",
    "plot_distribution",
    "plot_speedup",
    "process_logits",
    "repetition_penalty",
    "stream",
    "time_generation",
    "top_k_filter",
    "top_p_filter",
]
