"""PPO for a language model: a value head, GAE, the clipped objective and a KL penalty.

**Generation as RL.** The state is the prompt and the tokens written so far, an action is the
next token, the policy ``pi_theta`` is the LM itself and an episode ends at ``<|end|>``. The
reward model scores only the whole answer, so the reward arrives at the last token; every
token also pays a penalty for leaving the frozen SFT reference, which keeps the policy from
drifting into text the reward model never saw (and can be fooled by):

    r_t = -beta * (log pi(y_t | s_t) - log ref(y_t | s_t))  +  [t = last] * score(x, y).

**Value head and GAE.** A linear head on the LM's last hidden states estimates ``V(s_t)``,
the return still to come. With the TD error ``delta_t = r_t + gamma V(s_{t+1}) - V(s_t)``
the generalized advantage estimate is

    A_t = sum_{l >= 0} (gamma lambda)^l delta_{t+l},   computed backwards as
    A_t = delta_t + gamma lambda A_{t+1},

``lambda = 0`` gives the one-step TD error (low variance, biased by V) and ``lambda = 1`` the
Monte-Carlo return minus ``V(s_t)``. The value head regresses on the returns
``R_t = A_t + V(s_t)``; the advantages are whitened (zero mean, unit variance over the batch's
response tokens) before they scale the policy gradient.

**Clipped objective.** The rollout was sampled by the policy as it was (``old_logp``); a few
epochs of minibatch steps then reuse it. With the ratio ``rho_t = pi_theta / pi_old``

    L_clip = -E_t[ min(rho_t A_t, clip(rho_t, 1 - eps, 1 + eps) A_t) ],

so once a token's probability has moved ``eps`` in the direction its advantage favours, its
gradient is zero: the update stays in a trust region around the policy that collected the
data. The value loss is clipped the same way around the old values.

``train_ppo`` puts it together: rollouts (``sample_rollouts``), scores from any
``reward_fn(examples, texts) -> (B,)`` (the learned reward model, or a checker), the per-token
KL penalty (k1) against the reference, GAE, and ``epochs`` passes over minibatches; it logs the
score, the KL, the clip fraction, the losses and, every few iterations, held-out exact match.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import random
import time
from collections.abc import Callable, Sequence
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
from .logprobs import logits_and_hidden, token_logprobs
from .rollout import Rollout, rl_prompts, sample_rollouts

RewardFn = Callable[[Sequence[Example], Sequence[str]], torch.Tensor]
"""``reward_fn(examples, texts) -> (B,)``: one score per response."""


# --------------------------------------------------------------------------------------------
# The math: masked means, whitening, GAE, the clipped losses
# --------------------------------------------------------------------------------------------


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The mean of ``x`` over the positions where ``mask`` is True."""
    mask = mask.to(x.dtype)
    return (x * mask).sum() / mask.sum().clamp(min=1.0)


def whiten(x: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """``(x - mean) / sqrt(var + eps)`` over the masked positions; zero off the mask."""
    if x.shape != mask.shape:
        raise ValueError(f"x {tuple(x.shape)} and mask {tuple(mask.shape)} differ in shape")
    if not mask.any():
        raise ValueError("whiten: the mask selects nothing")
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    return ((x - mean) * torch.rsqrt(var + eps)).masked_fill(~mask, 0.0)


def policy_logprobs(
    logits: torch.Tensor, ids: torch.Tensor, n_vocab: int, temperature: float = 1.0
) -> torch.Tensor:
    """(B, T - 1) log-probabilities of ``ids`` under the policy that sampled them: the softmax
    of ``logits / temperature`` over the tokenizer's ``n_vocab`` ids (the model's spare rows
    beyond them are never sampled, see ``rollout.VocabLimited``)."""
    return token_logprobs(logits[..., :n_vocab] / temperature, ids)


def _check_same(**tensors: torch.Tensor) -> torch.Size:
    shapes = {name: tuple(t.shape) for name, t in tensors.items()}
    if len(set(shapes.values())) != 1:
        raise ValueError(f"shapes differ: {shapes}")
    return next(iter(tensors.values())).shape


@torch.no_grad()
def gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor,
    gamma: float = 1.0,
    lam: float = 0.95,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(advantages, returns)``, both (B, T), by the backward recursion of the module
    docstring over the masked positions of each row (the episode's steps, in order; the step
    after the last one has value 0). Off the mask both are 0."""
    _check_same(rewards=rewards, values=values, mask=mask)
    if rewards.dim() != 2:
        raise ValueError(f"rewards must be (B, T), got {tuple(rewards.shape)}")
    mask = mask.bool()
    advantages = torch.zeros_like(rewards)
    next_value = torch.zeros_like(rewards[:, 0])
    next_adv = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.shape[1])):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        adv = delta + gamma * lam * next_adv
        step = mask[:, t]
        advantages[:, t] = torch.where(step, adv, 0.0)
        next_value = torch.where(step, values[:, t], next_value)
        next_adv = torch.where(step, adv, next_adv)
    returns = (advantages + values).masked_fill(~mask, 0.0)
    return advantages, returns


def ppo_clip_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip: float = 0.2,
) -> torch.Tensor:
    """``-mean_t min(rho_t A_t, clip(rho_t, 1 - clip, 1 + clip) A_t)`` over the masked tokens,
    ``rho_t = exp(logp - old_logp)`` (written as the max of the two negated terms)."""
    _check_same(logp=logp, old_logp=old_logp, advantages=advantages, mask=mask)
    ratio = torch.exp(logp - old_logp)
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1.0 - clip, 1.0 + clip)
    return masked_mean(torch.maximum(unclipped, clipped), mask)


@torch.no_grad()
def clip_fraction(
    logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
    clip: float = 0.2,
) -> float:  # fmt: skip
    """The share of masked tokens whose clipped term is the active one (zero gradient)."""
    ratio = torch.exp(logp - old_logp)
    active = ((ratio > 1 + clip) & (advantages > 0)) | ((ratio < 1 - clip) & (advantages < 0))
    return masked_mean(active.float(), mask).item()


def value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    clip: float = 0.2,
) -> torch.Tensor:
    """``mean_t max((V - R)^2, (V_clip - R)^2) / 2`` with ``V_clip = V_old + clip(V - V_old,
    -clip, clip)``: the value moves at most ``clip`` from the rollout's estimate per pass."""
    _check_same(values=values, old_values=old_values, returns=returns, mask=mask)
    clipped = old_values + (values - old_values).clamp(-clip, clip)
    loss = torch.maximum((values - returns) ** 2, (clipped - returns) ** 2)
    return 0.5 * masked_mean(loss, mask)


# --------------------------------------------------------------------------------------------
# The policy with its value head
# --------------------------------------------------------------------------------------------


def hidden_size(lm: nn.Module) -> int:
    """The width of the LM's hidden states (GPT ``n_embd``, LLaMA ``dim``)."""
    config = getattr(lm, "config", None)
    for name in ("n_embd", "dim"):
        if hasattr(config, name):
            return int(getattr(config, name))
    raise TypeError(f"{type(lm).__name__} has no config.n_embd or config.dim")


class PolicyWithValue(nn.Module):
    """The LM (the policy) and a linear value head on its final hidden states, one body.

    ``forward(ids) -> (logits (B, T, V), values (B, T))``; ``values[:, t]`` estimates the
    return from the state ``ids[:, :t + 1]``, the one in which ``ids[:, t + 1]`` is chosen.
    The head starts at zero: the first advantages are then the plain returns.
    """

    def __init__(self, lm: nn.Module) -> None:
        super().__init__()
        self.lm = lm
        self.value_head = nn.Linear(hidden_size(lm), 1)
        nn.init.zeros_(self.value_head.weight)
        nn.init.zeros_(self.value_head.bias)

    @property
    def max_seq_len(self) -> int:
        return self.lm.max_seq_len

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, hidden = logits_and_hidden(self.lm, ids)
        return logits, self.value_head(hidden.float()).squeeze(-1)


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------


@dataclass
class PPOConfig:
    """A PPO run: ``iterations`` x (roll out ``prompts_per_iter * n_per_prompt`` answers,
    then ``epochs`` passes of minibatch steps over them)."""

    # the RL prompts (``rl_prompts``) when train_ppo is given none
    tasks: tuple[str, ...] = ("repeat", "sort", "dialogue", "add")
    n_prompts: int = 1000
    prompt_seed: int = 2
    iterations: int = 20
    prompts_per_iter: int = 64
    n_per_prompt: int = 2
    max_new_tokens: int = 40
    temperature: float = 0.7  # the policy is softmax(logits / temperature), sampled and scored
    # optimisation
    epochs: int = 2
    minibatch_size: int = 64
    lr: float = 5e-5
    weight_decay: float = 0.0
    grad_clip: float | None = 1.0
    # PPO
    clip: float = 0.2
    value_clip: float = 0.2
    vf_coef: float = 0.1
    kl_coef: float = 0.2  # beta of the per-token penalty (0: no KL penalty)
    gamma: float = 1.0
    lam: float = 0.95
    # evaluation and bookkeeping
    eval_every: int = 5
    eval_size: int = 100
    device: str | None = None
    bf16: bool = True
    compile: bool = False
    seed: int = 0

    def check(self) -> None:
        positive = ("iterations", "prompts_per_iter", "n_per_prompt", "max_new_tokens",
                    "epochs", "minibatch_size")  # fmt: skip
        bad = [k for k in positive if getattr(self, k) < 1]
        if bad:
            raise ValueError(f"these settings must be >= 1: {', '.join(bad)}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0 (RL samples), got {self.temperature}")
        if not self.lr > 0 or self.kl_coef < 0 or not 0 < self.clip < 1:
            raise ValueError("need lr > 0, kl_coef >= 0 and 0 < clip < 1")
        if not (0 <= self.gamma <= 1 and 0 <= self.lam <= 1):
            raise ValueError(f"gamma and lam must be in [0, 1], got {self.gamma}, {self.lam}")

    def replace(self, **changes: Any) -> PPOConfig:
        """A copy with some fields changed (``None`` values ignored, as from a CLI)."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


PRESETS: dict[str, PPOConfig] = {
    "tiny": PPOConfig(),
    "gpu": PPOConfig(
        iterations=200, prompts_per_iter=128, n_per_prompt=4, minibatch_size=128, lr=5e-6,
        epochs=4, eval_every=20, eval_size=400, compile=True,
    ),
}  # fmt: skip
"""PPO presets: ``tiny`` (the course run, on a CPU) and ``gpu`` (bigger batches, longer)."""


def last_token_index(mask: torch.Tensor) -> torch.Tensor:
    """(B,) the column of each row's last True (the episode's final step)."""
    columns = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
    return torch.where(mask, columns, -1).max(dim=1).values


def per_token_rewards(
    scores: torch.Tensor, logp: torch.Tensor, ref_logp: torch.Tensor, mask: torch.Tensor,
    kl_coef: float,
) -> torch.Tensor:  # fmt: skip
    """``r_t = -kl_coef * (logp_t - ref_logp_t)`` on the response tokens, plus each row's
    score at its last response token (the module docstring's reward)."""
    rewards = (-kl_coef * kl_estimate(logp, ref_logp, "k1")).masked_fill(~mask, 0.0)
    last = last_token_index(mask)
    if (last < 0).any():
        raise ValueError("a row has no response token")
    rows = torch.arange(len(scores), device=scores.device)
    rewards[rows, last] += scores.to(rewards.dtype)
    return rewards


def heldout_examples(tasks: set[str] | None, size: int) -> list[Example]:
    """A fixed slice of chapter 9's held-out set (``build_splits(6000, 400, 1)[1]``): its
    first ``size`` examples of the given tasks (all tasks for ``None``)."""
    from llmcourse.sft import build_splits

    heldout = build_splits(6000, 400, 1)[1]
    return [e for e in heldout if tasks is None or e.task in tasks][:size]


def exact_match(model: nn.Module, tok: ChatTokenizer, examples: Sequence[Example]) -> float:
    """The share of greedy answers equal to the references (``sft.exact_match_by_task``)."""
    from llmcourse.sft import exact_match_by_task

    return exact_match_by_task(model, tok, examples)["all"]


def train_ppo(
    policy: nn.Module,
    reference: nn.Module,
    tok: ChatTokenizer,
    reward_fn: RewardFn,
    prompts: Sequence[Example] | None,
    config: PPOConfig,
    heldout: Sequence[Example] | None = None,
) -> dict[str, list[float]]:
    """Train every parameter of ``policy`` (an LM, or a ``PolicyWithValue`` around one) by
    PPO, in place; ``reference`` (a frozen copy of the starting LM) is not changed.

    ``prompts`` of ``None`` are ``rl_prompts(n_prompts, tasks, prompt_seed)``. Each
    iteration samples ``prompts_per_iter`` prompts (seeded by the iteration) and
    ``n_per_prompt`` answers to each, scores them with ``reward_fn``, and takes ``epochs``
    passes of minibatch steps. ``heldout`` (default: ``heldout_examples`` of the prompts'
    tasks) is answered greedily before the first and after every ``eval_every`` iterations.

    History columns, one entry per iteration: ``iteration``, ``score`` (mean reward_fn
    score), ``kl`` (mean over answers of the summed k1 estimate), ``clip_frac``,
    ``policy_loss``, ``value_loss``, ``response_len``, ``seconds``; and, at the evaluations,
    ``eval_iteration`` and ``exact_match``.
    """
    config.check()
    if prompts is None:
        prompts = rl_prompts(config.n_prompts, config.tasks, config.prompt_seed)
    if not prompts:
        raise ValueError("no prompts to train on")
    seed_everything(config.seed)
    device = pick_device(config.device)
    model = policy if isinstance(policy, PolicyWithValue) else PolicyWithValue(policy)
    if model.lm is reference:
        raise ValueError("the reference must be a frozen copy of the policy, not the policy")
    reference.to(device).eval().requires_grad_(False)
    model.to(device).requires_grad_(True)
    if heldout is None:
        heldout = heldout_examples({e.task for e in prompts}, config.eval_size)
    optimizer = make_adamw(model, config.lr, config.weight_decay, device=device)
    forward = torch.compile(model) if config.compile else model
    history: dict[str, list[float]] = {}

    def log(**row: float) -> None:
        for key, value in row.items():
            history.setdefault(key, []).append(float(value))

    def evaluate(iteration: int) -> None:
        if heldout:
            log(eval_iteration=iteration, exact_match=exact_match(model.lm, tok, heldout))

    rng = random.Random(config.seed)
    evaluate(0)
    began = time.perf_counter()
    for it in range(1, config.iterations + 1):
        batch = rng.sample(list(prompts), min(config.prompts_per_iter, len(prompts)))
        rollout = sample_rollouts(
            model.lm, tok, batch, config.n_per_prompt, config.max_new_tokens,
            config.temperature, seed=config.seed * 10_000 + it,
        )  # fmt: skip
        data = score_rollout(model, reference, rollout, reward_fn, config, tok.n_vocab)
        stats = ppo_epochs(model, forward, optimizer, data, config, tok.n_vocab)
        log(
            iteration=it, score=data["scores"].mean().item(), kl=data["kl"].mean().item(),
            response_len=rollout.response_lens.float().mean().item(),
            seconds=time.perf_counter() - began, **stats,
        )  # fmt: skip
        if it % config.eval_every == 0 or it == config.iterations:
            evaluate(it)
    model.eval()
    return history


@torch.no_grad()
def score_rollout(
    model: PolicyWithValue, reference: nn.Module, rollout: Rollout, reward_fn: RewardFn,
    config: PPOConfig, n_vocab: int,
) -> dict[str, torch.Tensor]:  # fmt: skip
    """Everything the PPO epochs need from one rollout, computed once with no gradient: the
    old log-probs and values, the per-token rewards, whitened advantages and returns."""
    device = model_device(model)
    model.eval()
    ids, mask = rollout.ids, rollout.response_mask[:, 1:]
    with autocast(device, enabled=config.bf16):
        logits, values = model(ids)
        ref_logits = reference(ids)
    old_logp = policy_logprobs(logits, ids, n_vocab, config.temperature)
    ref_logp = policy_logprobs(ref_logits, ids, n_vocab, config.temperature)
    values = values[:, :-1].float().masked_fill(~mask, 0.0)
    scores = torch.as_tensor(reward_fn(rollout.examples, rollout.texts), dtype=torch.float32)
    if scores.shape != (len(rollout),):
        raise ValueError(f"reward_fn must return ({len(rollout)},) scores, got {scores.shape}")
    scores = scores.to(device)
    rewards = per_token_rewards(scores, old_logp, ref_logp, mask, config.kl_coef)
    advantages, returns = gae(rewards, values, mask, config.gamma, config.lam)
    kl = (kl_estimate(old_logp, ref_logp, "k1") * mask).sum(-1)
    return {
        "ids": ids, "mask": mask, "old_logp": old_logp, "old_values": values,
        "advantages": whiten(advantages, mask), "returns": returns, "scores": scores, "kl": kl,
    }  # fmt: skip


def ppo_epochs(
    model: PolicyWithValue, forward: Callable, optimizer: torch.optim.Optimizer,
    data: dict[str, torch.Tensor], config: PPOConfig, n_vocab: int,
) -> dict[str, float]:  # fmt: skip
    """``epochs`` shuffled passes of minibatch steps on the clipped policy loss plus
    ``vf_coef`` times the value loss; the mean clip fraction and losses over the steps."""
    device = model_device(model)
    model.train()
    n = len(data["ids"])
    generator = torch.Generator().manual_seed(config.seed)
    totals = {"clip_frac": 0.0, "policy_loss": 0.0, "value_loss": 0.0}
    steps = 0
    for _ in range(config.epochs):
        for rows in torch.randperm(n, generator=generator).split(config.minibatch_size):
            rows = rows.to(device)
            part = {k: data[k][rows] for k in ("ids", "mask", "old_logp", "old_values",
                                                "advantages", "returns")}  # fmt: skip
            # cut the right padding that no row of the minibatch needs
            width = int(part["mask"].any(0).nonzero().max()) + 2
            part = {k: v[:, :width] if k == "ids" else v[:, : width - 1] for k, v in part.items()}
            with autocast(device, enabled=config.bf16):
                logits, values = forward(part["ids"])
            logp = policy_logprobs(logits, part["ids"], n_vocab, config.temperature)
            values = values[:, :-1].float()
            pg = ppo_clip_loss(logp, part["old_logp"], part["advantages"], part["mask"],
                               config.clip)  # fmt: skip
            vf = value_loss(values, part["old_values"], part["returns"], part["mask"],
                            config.value_clip)  # fmt: skip
            optimizer.zero_grad(set_to_none=True)
            (pg + config.vf_coef * vf).backward()
            if config.grad_clip is not None:
                nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            totals["clip_frac"] += clip_fraction(
                logp.detach(), part["old_logp"], part["advantages"], part["mask"], config.clip
            )
            totals["policy_loss"] += pg.item()
            totals["value_loss"] += vf.item()
            steps += 1
    return {k: v / steps for k, v in totals.items()}


# --------------------------------------------------------------------------------------------
# Command line (shared with ``grpo``)
# --------------------------------------------------------------------------------------------


def rl_cli_parser(prog: str, description: str, presets: Sequence[str]) -> argparse.ArgumentParser:
    """The options ``python -m llmcourse.rlhf.ppo`` and ``.grpo`` share (each adds its own)."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--preset", choices=presets, default="tiny",
                        help="tiny: the course run on a CPU; gpu: bigger batches, longer, "
                        "compiled")  # fmt: skip
    parser.add_argument("--start", default="gpt-tiny-sft",
                        help="the chat model to start from, also the frozen reference: an "
                        "llmcourse.sft checkpoint name or a chat-model folder "
                        "(default: %(default)s)")  # fmt: skip
    parser.add_argument("--iterations", type=int, help="override the preset's iterations")
    parser.add_argument("--lr", type=float, help="override the preset's learning rate")
    parser.add_argument("--device", help="cpu, cuda, mps (default: the best available)")
    parser.add_argument("--out", required=True, help="folder to write the trained policy to")
    return parser


def run_cli(
    kind: str, args: argparse.Namespace, config: Any, reward: RewardFn | None = None
) -> None:
    """Train a copy of ``--start`` by ``kind`` (``ppo`` or ``grpo``, its reference the start
    model itself), measure it on chapter 9's held-out set and save it with its curves."""
    from . import course
    from .grpo import exact_reward, train_grpo

    reference, tok = course.load_start(args.start)
    policy = copy.deepcopy(reference)
    began = time.perf_counter()
    if kind == "ppo":
        history = train_ppo(policy, reference, tok, reward, None, config)
    else:
        history = train_grpo(policy, reference, tok, exact_reward, None, config)
    seconds = round(time.perf_counter() - began, 1)
    figures = course.policy_figures(policy.eval(), reference, tok)
    record = {"name": None, "kind": kind, "start": args.start,
              "config": dataclasses.asdict(config), "figures": figures,
              "seconds": seconds}  # fmt: skip
    course.save_run(args.out, policy.cpu(), tok, history, record)
    print(
        f"{seconds} s: held-out exact match {figures['exact_match']['all']:.1%}, KL to the "
        f"start model {figures['kl']:.2f} nats -> {args.out}"
    )


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m llmcourse.rlhf.ppo``: tune a chat model by PPO against a reward model."""
    from . import course
    from .reward import reward_fn

    parser = rl_cli_parser(
        "python -m llmcourse.rlhf.ppo",
        "Tune a chat model by PPO against a reward model, with a per-token KL penalty to the "
        "start model; report held-out exact match.",
        list(PRESETS),
    )
    parser.add_argument("--reward-model", default="gpt-tiny-rm",
                        help="the course reward model's name, or a folder written by "
                        "python -m llmcourse.rlhf.reward (default: %(default)s)")  # fmt: skip
    parser.add_argument("--kl-coef", type=float, help="override the KL coefficient (0: none)")
    args = parser.parse_args(argv)
    config = PRESETS[args.preset].replace(
        iterations=args.iterations, lr=args.lr, device=args.device, kl_coef=args.kl_coef
    )
    if args.reward_model in course.RECIPES:
        rm, tok = course.load_rlhf(args.reward_model)
    else:
        rm, tok = course.load_run(args.reward_model)
    if not hasattr(rm, "head"):
        raise SystemExit(f"{args.reward_model} holds a policy, not a reward model")
    run_cli("ppo", args, config, reward_fn(rm, tok))


if __name__ == "__main__":
    main()
