"""Log-probabilities of the tokens a model wrote, and the hidden states under its logits.

Every RLHF method scores *responses*: the log-probability the policy gives to the tokens it
sampled. A causal LM's logits at position ``t`` are the distribution of token ``t + 1``, so
for ids ``x_0 .. x_{T-1}``

    log p(x_{t+1} | x_0..x_t) = log_softmax(logits[t])[x_{t+1}],   t = 0 .. T - 2,

and a response's log-probability is the sum of these over its own tokens only,

    log pi(y | x) = sum_{t in response} log p(y_t | x, y_<t),

the prompt conditioning the prediction without being scored. ``response_mask`` marks the
response tokens as they sit in ``ids`` (its ``<|end|>`` included); the log-probability of
``ids[:, t]`` lives at column ``t - 1`` of ``token_logprobs``, so the mask is shifted by one.

The reward model and PPO's value head read the last hidden states, the vectors the LM head
turns into logits. ``logits_and_hidden`` captures them with a forward hook on the final norm
(GPT's ``transformer.ln_f``, LLaMA's ``model.norm``), so neither model class has to change.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def token_logprobs(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """``(B, T - 1)``: ``log p(ids[:, t + 1] | ids[:, :t + 1])`` from ``logits`` ``(B, T, V)``."""
    if logits.dim() != 3 or ids.dim() != 2 or logits.shape[:2] != ids.shape:
        raise ValueError(
            f"logits must be (B, T, V) and ids (B, T) with the same B, T: got logits "
            f"{tuple(logits.shape)} and ids {tuple(ids.shape)}"
        )
    logp = F.log_softmax(logits[:, :-1].float(), dim=-1)
    return logp.gather(-1, ids[:, 1:, None].long()).squeeze(-1)


def check_mask(ids: torch.Tensor, response_mask: torch.Tensor) -> None:
    """``ValueError`` unless ``response_mask`` is a (B, T) bool mask matching ``ids`` that never
    marks position 0 (the first token has no prediction)."""
    if response_mask.shape != ids.shape or response_mask.dtype != torch.bool:
        raise ValueError(
            f"response_mask must be a bool tensor shaped like ids {tuple(ids.shape)}, got "
            f"{response_mask.dtype} {tuple(response_mask.shape)}"
        )
    if response_mask[:, 0].any():
        raise ValueError("response_mask marks position 0: a response needs a prompt before it")


def masked_token_logprobs(
    model: nn.Module, ids: torch.Tensor, response_mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(logp (B, T - 1), mask (B, T - 1))``: every token's log-probability under ``model``
    and the response mask shifted to line up with it (zeros off the response)."""
    check_mask(ids, response_mask)
    mask = response_mask[:, 1:]
    logp = token_logprobs(model(ids), ids)
    return logp.masked_fill(~mask, 0.0), mask


def sequence_logprobs(
    model: nn.Module, ids: torch.Tensor, response_mask: torch.Tensor
) -> torch.Tensor:
    """``(B,)``: ``log pi(response | prompt)``, the sum of the response tokens' log-probs."""
    logp, _ = masked_token_logprobs(model, ids, response_mask)
    return logp.sum(-1)


def final_norm(model: nn.Module) -> nn.Module:
    """The norm whose output the LM head reads: GPT's ``transformer.ln_f``, LLaMA's
    ``model.norm``."""
    transformer = getattr(model, "transformer", None)
    if transformer is not None and hasattr(transformer, "ln_f"):
        return transformer.ln_f
    body = getattr(model, "model", None)
    if body is not None and hasattr(body, "norm"):
        return body.norm
    raise TypeError(
        f"{type(model).__name__} has neither transformer.ln_f (GPT) nor model.norm (LLaMA): "
        "cannot find its final hidden states"
    )


def logits_and_hidden(model: nn.Module, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(logits (B, T, V), hidden (B, T, d))``: one forward pass, the hidden states taken
    after the final norm by a forward hook (removed again before returning)."""
    captured: list[torch.Tensor] = []
    handle = final_norm(model).register_forward_hook(lambda _m, _i, out: captured.append(out))
    try:
        logits = model(ids)
    finally:
        handle.remove()
    return logits, captured[-1]
