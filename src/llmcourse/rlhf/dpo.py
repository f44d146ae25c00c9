"""Direct Preference Optimization (DPO): RLHF's objective without a reward model or sampling.

RLHF maximises the reward while staying near the reference policy (the SFT model):

    max_pi  E_{x, y ~ pi}[ r(x, y) ] - beta * KL(pi(.|x) || pi_ref(.|x)).

This has a closed-form optimum, ``pi*(y|x) = pi_ref(y|x) exp(r(x, y) / beta) / Z(x)``. Solved
for the reward, ``r(x, y) = beta log(pi*(y|x) / pi_ref(y|x)) + beta log Z(x)``: any policy
defines an *implicit reward* ``beta log(pi / pi_ref)``, up to a term that depends on the
prompt only. Put into the Bradley-Terry likelihood of a preference, ``Z(x)`` cancels in the
difference, and the reward-model loss becomes a loss on the policy itself:

    L_DPO = -E[ log sigma( beta log(pi(y_c|x) / pi_ref(y_c|x))
                         - beta log(pi(y_r|x) / pi_ref(y_r|x)) ) ].

``log pi(y|x)`` is a sequence log-probability, summed over the response tokens only
(``sequence_logprobs``). Its gradient raises the chosen response's likelihood and lowers
the rejected one's, weighted by ``sigma(r_r - r_c)``: most where the implicit reward ranks the
pair wrongly. ``beta`` plays the KL coefficient's role: small beta lets the policy move far
from the reference. The reference log-probabilities never change, so they are computed once.

The loss only sees *differences*: it is as happy to push both responses down, the rejected one
faster, as to raise the chosen one, and on a small model that pulls probability away from
every answer it knew (the chosen log-probabilities fall during training, a known failure).
``nll_weight`` adds the chosen responses' negative log-likelihood per token, as in Llama 3's
and RPO's recipes: ``L = L_DPO + w * E[-log pi(y_c|x) / |y_c|]``; 0 gives plain DPO.
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
from llmcourse.sft.template import ChatTokenizer
from llmcourse.training import train

from .logprobs import sequence_logprobs
from .preferences import PreferencePair, encode_pairs


def dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: float = 0.1,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(loss, chosen_rewards, rejected_rewards)``: the mean DPO loss over the pairs and the
    implicit rewards ``beta * (log pi - log pi_ref)`` of each response (detached)."""
    shapes = {tuple(t.shape) for t in (policy_chosen_logps, policy_rejected_logps,
                                       ref_chosen_logps, ref_rejected_logps)}  # fmt: skip
    if len(shapes) != 1:
        raise ValueError(f"the four log-probability tensors must share one shape, got {shapes}")
    if not beta > 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    chosen = beta * (policy_chosen_logps - ref_chosen_logps)
    rejected = beta * (policy_rejected_logps - ref_rejected_logps)
    loss = -F.logsigmoid(chosen - rejected).mean()
    return loss, chosen.detach(), rejected.detach()


@dataclass
class DPOConfig:
    """A DPO run: ``steps`` steps of ``batch_size`` pairs drawn (seeded) from the data."""

    beta: float = 0.1
    steps: int = 120
    batch_size: int = 32
    lr: float = 5e-5
    min_lr: float = 5e-6
    warmup: int = 10
    weight_decay: float = 0.0
    grad_clip: float | None = 1.0
    device: str | None = None
    bf16: bool = True
    compile: bool = False
    seed: int = 0
    log_every: int = 10
    nll_weight: float = 0.0  # w of the chosen responses' NLL term (0: plain DPO)
    eval_every: int = 0  # steps between calls of train_dpo's ``evaluate`` (0: never)

    def replace(self, **changes: Any) -> DPOConfig:
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


PRESETS: dict[str, DPOConfig] = {
    # the course run (gpt-tiny-dpo): about two minutes on one CPU thread
    "tiny": DPOConfig(lr=5e-5, min_lr=5e-6, nll_weight=1.0, eval_every=20),
    "gpu": DPOConfig(steps=1000, batch_size=64, lr=2e-5, min_lr=2e-6, nll_weight=1.0,
                     compile=True, log_every=50, eval_every=200),
}  # fmt: skip
"""DPO presets: ``tiny`` (the course run, CPU) and ``gpu`` (bf16, compiled)."""


@torch.no_grad()
def pair_logprobs(
    model: nn.Module, tok: ChatTokenizer, pairs: Sequence[PreferencePair], batch_size: int = 64
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(log pi(y_c|x) (N,), log pi(y_r|x) (N,))`` of every pair, without gradients."""
    device = next(model.parameters()).device
    chosen, rejected = [], []
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        ids, mask = encode_pairs(tok, chunk, model.max_seq_len)
        logps = sequence_logprobs(model, ids.to(device), mask.to(device)).float()
        chosen.append(logps[: len(chunk)])
        rejected.append(logps[len(chunk) :])
    return torch.cat(chosen), torch.cat(rejected)


def train_dpo(
    policy: nn.Module,
    reference: nn.Module,
    tok: ChatTokenizer,
    pairs: Sequence[PreferencePair],
    config: DPOConfig,
    evaluate: Callable[[nn.Module], dict[str, float]] | None = None,
) -> dict[str, list[float]]:
    """Train ``policy`` on ``pairs`` with ``dpo_loss`` against the frozen ``reference``.

    The history has ``step``, ``train_loss``, ``lr`` and the step's implicit rewards:
    ``chosen_reward``, ``rejected_reward``, ``margin`` (their mean difference) and
    ``accuracy`` (the share of pairs with the chosen reward higher), plus ``eval_step`` and
    whatever ``evaluate(policy)`` returns every ``eval_every`` steps and at the end
    (held-out exact match, say)."""
    if not pairs:
        raise ValueError("no preference pairs to train on")
    seed_everything(config.seed)
    device = pick_device(config.device)
    reference.to(device).eval()
    ref_chosen, ref_rejected = pair_logprobs(reference, tok, pairs)
    policy.to(device).train()

    def next_batch(step: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(config.seed * 1_000_003 + step)
        return torch.randperm(len(pairs), generator=gen)[: config.batch_size]

    logged: dict[str, list[float]] = {"chosen_reward": [], "rejected_reward": []}

    def loss_fn(_: nn.Module, picks: torch.Tensor) -> torch.Tensor:
        chunk = [pairs[i] for i in picks.tolist()]
        ids, mask = encode_pairs(tok, chunk, policy.max_seq_len)
        with autocast(device, enabled=config.bf16):
            logps = sequence_logprobs(policy, ids.to(device), mask.to(device)).float()
        loss, chosen, rejected = dpo_loss(
            logps[: len(chunk)], logps[len(chunk) :], ref_chosen[picks], ref_rejected[picks],
            config.beta,
        )  # fmt: skip
        if config.nll_weight:
            lengths = mask[: len(chunk)].sum(-1).to(device)
            loss = loss - config.nll_weight * (logps[: len(chunk)] / lengths).mean()
        logged["chosen_reward"].append(chosen.mean().item())
        logged["rejected_reward"].append(rejected.mean().item())
        logged.setdefault("accuracy", []).append((chosen > rejected).float().mean().item())
        return loss

    optimizer = make_adamw(policy, config.lr, config.weight_decay, device=device)
    scheduler = lr_scheduler(
        optimizer, "cosine", max_lr=config.lr, min_lr=config.min_lr, warmup=config.warmup,
        total=config.steps,
    )  # fmt: skip

    def on_log(step: int, _: float) -> dict[str, float]:
        row = {"lr": scheduler.get_last_lr()[0]}
        for key, values in logged.items():
            recent = values[-config.log_every :]
            row[key] = sum(recent) / len(recent)
        row["margin"] = row["chosen_reward"] - row["rejected_reward"]
        return row

    every = config.eval_every if evaluate is not None else 0
    eval_steps = [s for s in range(1, config.steps + 1)
                  if every and (s % every == 0 or s == config.steps)]  # fmt: skip

    def evaluate_step(model: nn.Module) -> dict[str, float]:
        return {"eval_step": eval_steps.pop(0), **evaluate(model)}  # type: ignore[misc]

    step_loss = torch.compile(loss_fn) if config.compile else loss_fn
    history = train(
        policy, optimizer, next_batch, step_loss, config.steps, log_every=config.log_every,
        grad_clip=config.grad_clip, progress=False, scheduler=scheduler, on_log=on_log,
        evaluate=evaluate_step if every else None, eval_every=every,
    )  # fmt: skip
    policy.eval()
    return history


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m llmcourse.rlhf.dpo``: tune a chat model by DPO on preference pairs."""
    from llmcourse.rlhf import course

    parser = argparse.ArgumentParser(
        prog="python -m llmcourse.rlhf.dpo",
        description="Tune a chat model by DPO on preference pairs (the start model is the "
        "frozen reference); report held-out exact match against it.",
    )
    course.add_cli_arguments(parser, list(PRESETS))
    parser.add_argument("--beta", type=float, help="override the preset's beta")
    parser.add_argument("--nll-weight", type=float, help="override the NLL term's weight")
    args = parser.parse_args(argv)
    config = PRESETS[args.preset].replace(
        steps=args.steps, lr=args.lr, device=args.device, beta=args.beta,
        nll_weight=args.nll_weight,
    )  # fmt: skip
    reference, tok = course.load_start(args.start)
    train_pairs, _ = course.cli_pairs(reference, tok, args.pairs, None)
    policy = copy.deepcopy(reference).requires_grad_(True)
    reference.requires_grad_(False)
    began = time.perf_counter()
    history = train_dpo(policy, reference, tok, train_pairs, config, course.exact_match_probe(tok))
    seconds = round(time.perf_counter() - began, 1)
    figures = course.policy_figures(policy.eval(), reference, tok)
    record = {"name": None, "kind": "dpo", "start": args.start, "pairs": args.pairs,
              "config": dataclasses.asdict(config), "figures": figures,
              "seconds": seconds}  # fmt: skip
    course.save_run(args.out, policy.cpu(), tok, history, record)
    print(
        f"{len(train_pairs)} pairs, {seconds} s: exact match {figures['exact_match']['all']:.1%}"
        f", KL to the start model {figures['kl']:.2f} nats -> {args.out}"
    )


if __name__ == "__main__":
    main()
