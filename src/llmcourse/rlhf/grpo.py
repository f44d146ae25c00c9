"""GRPO: PPO's clipped objective without a value model, the baseline taken from a group.

PPO needs a value head to tell a good token from a lucky one; training it costs a second
loss and, in large setups, a second model as big as the policy. Group Relative Policy
Optimization (DeepSeekMath) drops it: sample a *group* of ``G`` answers to the same prompt,
score each, and use the group as the baseline,

    A_i = (r_i - mean(r_1..r_G)) / (std(r_1..r_G) + eps),

the same advantage for every token of answer ``i``. An answer better than its siblings is
pushed up, a worse one down; a group whose answers all score the same (all right or all wrong)
teaches nothing. The advantages of a group sum to zero.

The reward here is *verifiable*: ``exact_reward`` is 1 when the answer equals the reference,
else 0, a checker no policy can flatter (unlike a learned reward model). The KL to the
reference is not folded into the reward, as PPO does, but added to the loss with the k3
estimator (unbiased and >= 0):

    L = -1/G sum_i 1/|o_i| sum_t [ min(rho_it A_i, clip(rho_it, 1 - eps, 1 + eps) A_i)
                                   - beta * k3_it ],   rho_it = pi_theta / pi_old.
"""

from __future__ import annotations

import dataclasses
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from llmcourse.causal_lm.optim import make_adamw
from llmcourse.generate.loop import model_device
from llmcourse.runtime import autocast, pick_device, seed_everything
from llmcourse.sft.data import Example
from llmcourse.sft.template import ChatTokenizer

from .kl import kl_estimate
from .ppo import (
    RewardFn,
    clip_fraction,
    exact_match,
    heldout_examples,
    policy_logprobs,
    rl_cli_parser,
    run_cli,
)
from .rollout import rl_prompts, sample_rollouts


def group_advantages(rewards: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """``(r - mean) / (std + eps)`` within each row of ``rewards`` (P prompts, G answers);
    ``std`` is the sample standard deviation. A constant group gets advantages 0."""
    if rewards.dim() != 2 or rewards.shape[1] < 2:
        raise ValueError(
            f"rewards must be (prompts, group) with a group of >= 2, got {tuple(rewards.shape)}"
        )
    rewards = rewards.float()
    mean = rewards.mean(dim=1, keepdim=True)
    std = rewards.std(dim=1, keepdim=True)
    return (rewards - mean) / (std + eps)


def grpo_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    ref_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip: float = 0.2,
    beta: float = 0.04,
) -> torch.Tensor:
    """The module docstring's ``L``: per-token log-probs (B, T) under the policy, the policy
    that sampled and the reference; ``advantages`` (B,), one per answer; ``mask`` (B, T) the
    answers' tokens. Each answer's tokens are averaged, then the answers."""
    shapes = {tuple(t.shape) for t in (logp, old_logp, ref_logp, mask)}
    if len(shapes) != 1 or advantages.shape != logp.shape[:1]:
        raise ValueError(
            f"logp, old_logp, ref_logp, mask must share a (B, T) shape and advantages be (B,): "
            f"got {[tuple(t.shape) for t in (logp, old_logp, ref_logp, mask, advantages)]}"
        )
    adv = advantages[:, None].to(logp.dtype)
    ratio = torch.exp(logp - old_logp)
    surrogate = torch.minimum(ratio * adv, ratio.clamp(1.0 - clip, 1.0 + clip) * adv)
    per_token = -(surrogate - beta * kl_estimate(logp, ref_logp, "k3"))
    mask = mask.to(logp.dtype)
    per_answer = (per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)
    return per_answer.mean()


def exact_reward(examples: Sequence[Example], texts: Sequence[str]) -> torch.Tensor:
    """1.0 where the answer equals the example's reference (surrounding spaces ignored, as in
    ``sft.exact_match_by_task``), else 0.0; shape (B,)."""
    if len(examples) != len(texts):
        raise ValueError(f"{len(examples)} examples but {len(texts)} answers")
    return torch.tensor(
        [float(t.strip() == e.answer.strip()) for e, t in zip(examples, texts, strict=True)]
    )


@dataclass
class GRPOConfig:
    """A GRPO run: ``iterations`` x (``prompts_per_iter`` prompts, a group of ``group_size``
    answers each, then ``epochs`` passes of minibatch steps)."""

    # the RL prompts (``rl_prompts``) when train_grpo is given none
    tasks: tuple[str, ...] = ("repeat",)
    n_prompts: int = 1000
    prompt_seed: int = 2
    iterations: int = 20
    prompts_per_iter: int = 32
    group_size: int = 8
    max_new_tokens: int = 40
    temperature: float = 0.7  # the policy is softmax(logits / temperature), sampled and scored
    # optimisation
    epochs: int = 2
    minibatch_size: int = 64
    lr: float = 5e-5
    weight_decay: float = 0.0
    grad_clip: float | None = 1.0
    # GRPO
    clip: float = 0.2
    beta: float = 0.04  # weight of the k3 KL term (0: none)
    # evaluation and bookkeeping
    eval_every: int = 5
    eval_size: int = 100
    device: str | None = None
    bf16: bool = True
    compile: bool = False
    seed: int = 0

    def check(self) -> None:
        positive = ("iterations", "prompts_per_iter", "max_new_tokens", "epochs",
                    "minibatch_size")  # fmt: skip
        bad = [k for k in positive if getattr(self, k) < 1]
        if bad:
            raise ValueError(f"these settings must be >= 1: {', '.join(bad)}")
        if self.group_size < 2:
            raise ValueError(f"group_size must be >= 2 (a group is the baseline), got "
                             f"{self.group_size}")  # fmt: skip
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0 (RL samples), got {self.temperature}")
        if not self.lr > 0 or self.beta < 0 or not 0 < self.clip < 1:
            raise ValueError("need lr > 0, beta >= 0 and 0 < clip < 1")

    def replace(self, **changes: Any) -> GRPOConfig:
        """A copy with some fields changed (``None`` values ignored, as from a CLI)."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


PRESETS: dict[str, GRPOConfig] = {
    "tiny": GRPOConfig(),
    "gpu": GRPOConfig(
        iterations=200, prompts_per_iter=64, group_size=16, minibatch_size=256, lr=5e-6,
        epochs=2, eval_every=20, eval_size=400, compile=True,
    ),
}  # fmt: skip
"""GRPO presets: ``tiny`` (the course run, on a CPU) and ``gpu`` (bigger groups, longer)."""


def train_grpo(
    policy: nn.Module,
    reference: nn.Module,
    tok: ChatTokenizer,
    reward_fn: RewardFn,
    prompts: Sequence[Example] | None,
    config: GRPOConfig,
    heldout: Sequence[Example] | None = None,
) -> dict[str, list[float]]:
    """Train every parameter of the LM ``policy`` by GRPO, in place (``reference``, a frozen
    copy of the starting LM, is not changed); ``reward_fn`` is usually ``exact_reward``.
    ``prompts`` of ``None`` are ``rl_prompts(n_prompts, tasks, prompt_seed)``.

    ``heldout`` (default: ``heldout_examples`` of the prompts' tasks) is answered greedily
    before the first and after every ``eval_every`` iterations. History columns, one entry
    per iteration: ``iteration``, ``score`` (mean reward), ``kl`` (mean over answers of the
    summed k1 estimate, as in PPO's log), ``clip_frac``, ``loss``, ``zero_std_frac`` (share
    of groups whose answers all scored the same: no signal), ``response_len``, ``seconds``;
    at the evaluations, ``eval_iteration`` and ``exact_match``.
    """
    config.check()
    if prompts is None:
        prompts = rl_prompts(config.n_prompts, config.tasks, config.prompt_seed)
    if not prompts:
        raise ValueError("no prompts to train on")
    seed_everything(config.seed)
    device = pick_device(config.device)
    if policy is reference:
        raise ValueError("the reference must be a frozen copy of the policy, not the policy")
    reference.to(device).eval().requires_grad_(False)
    policy.to(device).requires_grad_(True)
    if heldout is None:
        heldout = heldout_examples({e.task for e in prompts}, config.eval_size)
    optimizer = make_adamw(policy, config.lr, config.weight_decay, device=device)
    forward = torch.compile(policy) if config.compile else policy
    history: dict[str, list[float]] = {}

    def log(**row: float) -> None:
        for key, value in row.items():
            history.setdefault(key, []).append(float(value))

    def evaluate(iteration: int) -> None:
        if heldout:
            log(eval_iteration=iteration, exact_match=exact_match(policy, tok, heldout))

    rng = random.Random(config.seed)
    evaluate(0)
    began = time.perf_counter()
    g = config.group_size
    for it in range(1, config.iterations + 1):
        batch = rng.sample(list(prompts), min(config.prompts_per_iter, len(prompts)))
        rollout = sample_rollouts(
            policy, tok, batch, g, config.max_new_tokens, config.temperature,
            seed=config.seed * 10_000 + it,
        )  # fmt: skip
        ids, mask = rollout.ids, rollout.response_mask[:, 1:]
        scores = torch.as_tensor(reward_fn(rollout.examples, rollout.texts), dtype=torch.float32)
        if scores.shape != (len(rollout),):
            raise ValueError(f"reward_fn must return ({len(rollout)},) scores, got {scores.shape}")
        grouped = scores.view(len(batch), g)
        advantages = group_advantages(grouped).flatten().to(device)
        with torch.no_grad(), autocast(device, enabled=config.bf16):
            policy.eval()
            old_logp = policy_logprobs(policy(ids), ids, tok.n_vocab, config.temperature)
            ref_logp = policy_logprobs(reference(ids), ids, tok.n_vocab, config.temperature)
        data = {"ids": ids, "mask": mask, "old_logp": old_logp, "ref_logp": ref_logp,
                "advantages": advantages}  # fmt: skip
        stats = grpo_epochs(policy, forward, optimizer, data, config, tok.n_vocab)
        kl = (kl_estimate(old_logp, ref_logp, "k1") * mask).sum(-1)
        log(
            iteration=it, score=scores.mean().item(), kl=kl.mean().item(),
            zero_std_frac=(grouped.std(dim=1) == 0).float().mean().item(),
            response_len=rollout.response_lens.float().mean().item(),
            seconds=time.perf_counter() - began, **stats,
        )  # fmt: skip
        if it % config.eval_every == 0 or it == config.iterations:
            evaluate(it)
    policy.eval()
    return history


def grpo_epochs(
    policy: nn.Module, forward: nn.Module, optimizer: torch.optim.Optimizer,
    data: dict[str, torch.Tensor], config: GRPOConfig, n_vocab: int,
) -> dict[str, float]:  # fmt: skip
    """``epochs`` shuffled passes of minibatch steps on ``grpo_loss``; the mean loss and
    clip fraction over the steps."""
    device = model_device(policy)
    policy.train()
    n = len(data["ids"])
    generator = torch.Generator().manual_seed(config.seed)
    loss_sum, clip_sum, steps = 0.0, 0.0, 0
    for _ in range(config.epochs):
        for rows in torch.randperm(n, generator=generator).split(config.minibatch_size):
            rows = rows.to(device)
            part = {k: v[rows] for k, v in data.items()}
            width = int(part["mask"].any(0).nonzero().max()) + 2  # drop unused right padding
            ids = part["ids"][:, :width]
            mask, old, ref = (part[k][:, : width - 1] for k in ("mask", "old_logp", "ref_logp"))
            with autocast(device, enabled=config.bf16):
                logits = forward(ids)
            logp = policy_logprobs(logits, ids, n_vocab, config.temperature)
            loss = grpo_loss(logp, old, ref, part["advantages"], mask, config.clip, config.beta)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip is not None:
                nn.utils.clip_grad_norm_(policy.parameters(), config.grad_clip)
            optimizer.step()
            token_adv = part["advantages"][:, None].expand_as(mask)
            clip_sum += clip_fraction(logp.detach(), old, token_adv, mask, config.clip)
            loss_sum += loss.item()
            steps += 1
    return {"loss": loss_sum / steps, "clip_frac": clip_sum / steps}


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m llmcourse.rlhf.grpo``: tune a chat model by GRPO on the exact-answer reward."""
    parser = rl_cli_parser(
        "python -m llmcourse.rlhf.grpo",
        "Tune a chat model by GRPO with the verifiable exact-answer reward and a k3 KL term to "
        "the start model; report held-out exact match.",
        list(PRESETS),
    )
    parser.add_argument("--beta", type=float, help="override the KL term's weight (0: none)")
    args = parser.parse_args(argv)
    config = PRESETS[args.preset].replace(
        iterations=args.iterations, lr=args.lr, device=args.device, beta=args.beta
    )
    run_cli("grpo", args, config)


if __name__ == "__main__":
    main()
