"""The reward model: the SFT language model with a scalar head, trained on preferences.

A reward model reads a prompt and a response and returns one number, the *reward* ``r(x, y)``.
It starts from the SFT model (which already reads the task's language) with its vocabulary
head left aside and a new linear head ``d -> 1`` on the final hidden state of the *last
response token* (the ``<|end|>`` of a finished answer): in a causal model that is the one
position that has seen the whole prompt and response. Padding after it changes nothing.

Training uses the Bradley-Terry model of comparisons: the probability that ``y_c`` is
preferred to ``y_r`` is ``sigma(r(x, y_c) - r(x, y_r))``, so the loss is the negative log-
likelihood of the labels,

    L = -E[ log sigma(r(x, y_c) - r(x, y_r)) ].

Only differences of rewards matter: adding a constant to every reward changes nothing. As in
InstructGPT, the C(K, 2) pairs of one ranking are strongly correlated, so all the pairs of one
prompt go into the same batch and count together as one element (weight 1 / their number):
drawn as separate samples they would be seen several times per epoch and overfit. Held-out
*pair accuracy* (the share of pairs with ``r(x, y_c) > r(x, y_r)``) measures the result.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from llmcourse.causal_lm.optim import lr_scheduler, make_adamw
from llmcourse.runtime import autocast, pick_device, seed_everything
from llmcourse.sft.data import Example
from llmcourse.sft.template import ChatTokenizer
from llmcourse.training import train

from .logprobs import check_mask, final_norm, logits_and_hidden
from .preferences import (
    END,
    PreferencePair,
    by_prompt,
    encode_pairs,
    encode_responses,
    ranking_to_pairs,
)

__all__ = [
    "PRESETS",
    "RMConfig",
    "RewardModel",
    "bradley_terry_loss",
    "pair_accuracy",
    "pair_rewards",
    "ranking_to_pairs",
    "reward_fn",
    "train_reward_model",
]


class RewardModel(nn.Module):
    """``lm`` (a course GPT or LLaMA, copied) plus a scalar head on its final hidden states."""

    def __init__(self, lm: nn.Module) -> None:
        super().__init__()
        self.lm = copy.deepcopy(lm).requires_grad_(True)  # trainable, whatever lm was
        width = final_norm(self.lm).weight.shape[0]
        self.head = nn.Linear(width, 1)
        nn.init.zeros_(self.head.weight)  # every reward 0 at the start
        nn.init.zeros_(self.head.bias)

    @property
    def max_seq_len(self) -> int:
        return self.lm.max_seq_len

    def forward(self, ids: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
        """``(B,)`` rewards: the head on the hidden state of each row's last response token."""
        check_mask(ids, response_mask)
        if not response_mask.any(-1).all():
            raise ValueError("every row needs at least one response token")
        positions = torch.arange(ids.shape[1], device=ids.device)
        last = torch.where(response_mask, positions, -1).amax(-1)
        _, hidden = logits_and_hidden(self.lm, ids)
        picked = hidden[torch.arange(len(ids), device=ids.device), last]
        return self.head(picked.float()).squeeze(-1)


def bradley_terry_loss(
    r_chosen: torch.Tensor, r_rejected: torch.Tensor, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """``-log sigma(r_c - r_r)``, averaged (with ``weights``: their weighted mean)."""
    if r_chosen.shape != r_rejected.shape:
        raise ValueError(f"{tuple(r_chosen.shape)} chosen vs {tuple(r_rejected.shape)} rejected")
    losses = -F.logsigmoid(r_chosen - r_rejected)
    if weights is None:
        return losses.mean()
    return (weights * losses).sum() / weights.sum()


@dataclass
class RMConfig:
    """A reward-model run: ``steps`` steps of ``prompts_per_step`` prompts (all their pairs)."""

    steps: int = 150
    prompts_per_step: int = 16
    lr: float = 3e-4
    min_lr: float = 3e-5
    warmup: int = 10
    weight_decay: float = 0.01
    grad_clip: float | None = 1.0
    device: str | None = None
    bf16: bool = True
    compile: bool = False
    seed: int = 0
    log_every: int = 10

    def replace(self, **changes: Any) -> RMConfig:
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


PRESETS: dict[str, RMConfig] = {
    "tiny": RMConfig(),
    "gpu": RMConfig(
        steps=1000, prompts_per_step=64, lr=1e-4, min_lr=1e-5, compile=True, log_every=50
    ),
}
"""Reward-model presets: ``tiny`` (the course run, CPU) and ``gpu`` (bf16, compiled)."""


def pair_rewards(
    rm: RewardModel, tok: ChatTokenizer, pairs: Sequence[PreferencePair]
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(r_chosen (N,), r_rejected (N,))`` of ``pairs`` in one forward pass."""
    device = next(rm.parameters()).device
    ids, mask = encode_pairs(tok, pairs, rm.max_seq_len)
    rewards = rm(ids.to(device), mask.to(device))
    return rewards[: len(pairs)], rewards[len(pairs) :]


@torch.no_grad()
def pair_accuracy(
    rm: RewardModel, tok: ChatTokenizer, pairs: Sequence[PreferencePair], batch_size: int = 64
) -> float:
    """The share of ``pairs`` whose chosen response gets the higher reward (a tie counts
    half: a model that scores everything alike is at chance, 0.5)."""
    if not pairs:
        raise ValueError("no pairs to measure")
    was_training = rm.training
    rm.eval()
    right = 0.0
    for start in range(0, len(pairs), batch_size):
        r_c, r_r = pair_rewards(rm, tok, pairs[start : start + batch_size])
        right += float((r_c > r_r).sum() + 0.5 * (r_c == r_r).sum())
    rm.train(was_training)
    return right / len(pairs)


def train_reward_model(
    rm: RewardModel,
    tok: ChatTokenizer,
    pairs: Sequence[PreferencePair],
    config: RMConfig,
    heldout: Sequence[PreferencePair] = (),
    eval_every: int = 0,
) -> dict[str, list[float]]:
    """Train ``rm`` with the Bradley-Terry loss; the history has ``step``, ``train_loss``,
    ``accuracy`` (of the step's pairs), ``lr`` and, with ``heldout`` pairs and ``eval_every``,
    ``eval_step`` and ``heldout_accuracy``. Each step takes ``prompts_per_step`` prompts
    (seeded by step) and all their pairs, each prompt weighing 1 in total."""
    if not pairs:
        raise ValueError("no preference pairs to train on")
    seed_everything(config.seed)
    device = pick_device(config.device)
    rm.to(device).train()
    groups = by_prompt(pairs)

    def next_batch(step: int) -> tuple[list[PreferencePair], torch.Tensor]:
        gen = torch.Generator().manual_seed(config.seed * 1_000_003 + step)
        picks = torch.randperm(len(groups), generator=gen)[: config.prompts_per_step].tolist()
        chosen = [i for g in picks for i in groups[g]]
        weights = torch.tensor([1 / len(groups[g]) for g in picks for _ in groups[g]])
        return [pairs[i] for i in chosen], weights.to(device)

    accuracy: list[float] = []

    def loss_fn(_: nn.Module, batch: tuple[list[PreferencePair], torch.Tensor]) -> torch.Tensor:
        with autocast(device, enabled=config.bf16):
            r_c, r_r = pair_rewards(rm, tok, batch[0])
        accuracy.append((r_c > r_r).float().mean().item())
        return bradley_terry_loss(r_c.float(), r_r.float(), batch[1])

    optimizer = make_adamw(rm, config.lr, config.weight_decay, device=device)
    scheduler = lr_scheduler(
        optimizer, "cosine", max_lr=config.lr, min_lr=config.min_lr, warmup=config.warmup,
        total=config.steps,
    )  # fmt: skip

    def on_log(step: int, _: float) -> dict[str, float]:
        recent = accuracy[-config.log_every :]
        return {"lr": scheduler.get_last_lr()[0], "accuracy": sum(recent) / len(recent)}

    eval_steps = [s for s in range(1, config.steps + 1)
                  if eval_every and (s % eval_every == 0 or s == config.steps)]  # fmt: skip

    def evaluate(_: nn.Module) -> dict[str, float]:
        return {"eval_step": eval_steps.pop(0), "heldout_accuracy": pair_accuracy(rm, tok, heldout)}

    step_loss = torch.compile(loss_fn) if config.compile else loss_fn
    history = train(
        rm, optimizer, next_batch, step_loss, config.steps, log_every=config.log_every,
        grad_clip=config.grad_clip, progress=False, scheduler=scheduler, on_log=on_log,
        evaluate=evaluate if heldout and eval_every else None, eval_every=eval_every,
    )  # fmt: skip
    rm.eval()
    return history


def reward_fn(
    rm: RewardModel, tok: ChatTokenizer, batch_size: int = 64
) -> Callable[[Sequence[Example], Sequence[str]], torch.Tensor]:
    """``score(examples, texts) -> (B,)``: the reward model's score of each response text
    (a rollout's text, without ``<|end|>``: scored as a finished answer), for PPO."""

    @torch.no_grad()
    def score(examples: Sequence[Example], texts: Sequence[str]) -> torch.Tensor:
        if len(examples) != len(texts):
            raise ValueError(f"{len(examples)} examples but {len(texts)} texts")
        was_training = rm.training
        rm.eval()
        device = next(rm.parameters()).device
        out = []
        for i in range(0, len(texts), batch_size):
            responses = [t + END for t in texts[i : i + batch_size]]
            ids, mask = encode_responses(
                tok, examples[i : i + batch_size], responses, rm.max_seq_len
            )
            out.append(rm(ids.to(device), mask.to(device)))
        rm.train(was_training)
        return torch.cat(out).float().cpu()

    return score


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m llmcourse.rlhf.reward``: train a reward model on preference pairs."""
    from llmcourse.rlhf import course

    parser = argparse.ArgumentParser(
        prog="python -m llmcourse.rlhf.reward",
        description="Train a reward model (the start model + a scalar head) with the "
        "Bradley-Terry loss on preference pairs; report held-out pair accuracy.",
    )
    course.add_cli_arguments(parser, list(PRESETS))
    parser.add_argument("--heldout", help="held-out pairs as JSON Lines (with --pairs)")
    args = parser.parse_args(argv)
    config = PRESETS[args.preset].replace(steps=args.steps, lr=args.lr, device=args.device)
    start, tok = course.load_start(args.start)
    train_pairs, heldout = course.cli_pairs(start, tok, args.pairs, args.heldout)
    rm = RewardModel(start)
    began = time.perf_counter()
    history = train_reward_model(rm, tok, train_pairs, config, heldout, config.log_every * 3)
    figures = {"train_accuracy": pair_accuracy(rm, tok, train_pairs)}
    if heldout:
        figures["heldout_accuracy"] = pair_accuracy(rm, tok, heldout)
    record = {"name": None, "kind": "rm", "start": args.start, "pairs": args.pairs,
              "config": dataclasses.asdict(config), "figures": figures,
              "seconds": round(time.perf_counter() - began, 1)}  # fmt: skip
    course.save_run(args.out, rm.cpu(), tok, history, record)
    print(f"{len(train_pairs)} training pairs, {record['seconds']} s: {figures} -> {args.out}")


if __name__ == "__main__":
    main()
