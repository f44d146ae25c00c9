"""The course's RLHF runs: a reward model and three policies tuned from ``gpt-tiny-sft``.

Like the course checkpoints (``llmcourse.course_models``, ``llmcourse.sft.load_sft``), each
run is a fixed, seeded *recipe* trained on first use (a minute or two on one CPU thread),
cached under ``cache_dir()/course_models/<name>`` and loaded from there afterwards::

    model, tok = load_rlhf("gpt-tiny-dpo")     # trains once, then < 1 s
    history("gpt-tiny-dpo")["margin"]         # the run's logged curves
    info("gpt-tiny-dpo")["exact_match"]        # final figures, seconds, date

* ``gpt-tiny-rm``: the reward model (``reward.RewardModel``) trained on preference pairs the
  SFT model's own samples give (``preferences.build_preferences``) for RL prompts of the tasks
  where it has room to improve;
* ``gpt-tiny-dpo``: DPO on the same training pairs, with an NLL term on the chosen answers;
* ``gpt-tiny-dpo-plain``: the DPO paper's loss alone (its chosen likelihoods fall: the page
  shows the difference);
* ``gpt-tiny-ppo``: PPO against ``gpt-tiny-rm``'s reward, with the per-token KL penalty;
* ``gpt-tiny-ppo-nokl``: the same with the KL coefficient 0 (reward hacking);
* ``gpt-tiny-grpo``: GRPO with the verifiable exact-answer reward.

Every policy is measured at the end on chapter 9's held-out set (``build_splits(6000, 400,
1)[1]``, never trained on): exact match per task, for it and for the SFT model it started
from, and the KL to that reference. A cached run records its provenance (the recipe, the SFT
checkpoint's own provenance, torch's version); one made by another recipe, or damaged, is
trained again, never loaded stale.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import shutil
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from llmcourse.checkpoint import CheckpointError
from llmcourse.data import cache_dir
from llmcourse.metrics import MetricsLogger
from llmcourse.sft.data import Example, build_splits
from llmcourse.sft.evaluate import exact_match_by_task
from llmcourse.sft.template import ChatTokenizer

from .dpo import PRESETS as DPO_PRESETS
from .dpo import train_dpo
from .kl import kl_estimate
from .logprobs import masked_token_logprobs
from .preferences import PreferencePair, build_preferences, load_jsonl, save_jsonl
from .reward import RewardModel, RMConfig, pair_accuracy, reward_fn, train_reward_model
from .rollout import rl_prompts, sample_rollouts

VERSION = 2
"""Bumped when code that a run's result depends on changes in a way its recipe does not show."""
SFT = "gpt-tiny-sft"
RL_TASKS = ("repeat", "sort", "dialogue", "add")
"""The tasks the RL prompts come from: where the SFT model has room to improve."""
RLHF_FILE = "rlhf.json"


@dataclass(frozen=True)
class PreferenceData:
    """How the preference pairs are made: ``k`` samples for each of ``n_prompts`` RL prompts
    (``rollout.rl_prompts``: never in chapter 9's sets), graded; the last ``heldout_share`` of
    the prompts' pairs are kept apart to measure pair accuracy."""

    n_prompts: int = 800
    tasks: tuple[str, ...] = RL_TASKS
    prompt_seed: int = 2
    k: int = 4
    max_new_tokens: int = 32
    temperature: float = 1.0
    seed: int = 0
    heldout_share: float = 0.15


@dataclass(frozen=True)
class Recipe:
    """A course run: ``kind`` (``rm``, ``dpo``, ``ppo``, ``grpo``) and its configs."""

    name: str
    kind: str
    description: str
    config: Any
    data: PreferenceData | None = None


def _ppo_config(**changes: Any) -> Any:
    from .ppo import PRESETS

    return PRESETS["tiny"].replace(**changes)


def _grpo_config(**changes: Any) -> Any:
    from .grpo import PRESETS

    return PRESETS["tiny"].replace(**changes)


_DATA = PreferenceData()
_MAKERS: dict[str, Any] = {
    "gpt-tiny-rm": lambda: Recipe(
        "gpt-tiny-rm", "rm", "reward model: gpt-tiny-sft + a scalar head, Bradley-Terry",
        RMConfig(), _DATA,
    ),
    "gpt-tiny-dpo": lambda: Recipe(
        "gpt-tiny-dpo", "dpo",
        "DPO + the chosen answers' NLL from gpt-tiny-sft on the reward model's training pairs",
        DPO_PRESETS["tiny"], _DATA,
    ),
    "gpt-tiny-dpo-plain": lambda: Recipe(
        "gpt-tiny-dpo-plain", "dpo", "plain DPO (no NLL term), otherwise as gpt-tiny-dpo",
        DPO_PRESETS["tiny"].replace(nll_weight=0.0), _DATA,
    ),
    "gpt-tiny-ppo": lambda: Recipe(
        "gpt-tiny-ppo", "ppo", "PPO from gpt-tiny-sft against gpt-tiny-rm, KL penalty",
        _ppo_config(),
    ),
    "gpt-tiny-ppo-nokl": lambda: Recipe(
        "gpt-tiny-ppo-nokl", "ppo", "PPO as gpt-tiny-ppo without the KL penalty",
        _ppo_config(kl_coef=0.0),
    ),
    "gpt-tiny-grpo": lambda: Recipe(
        "gpt-tiny-grpo", "grpo", "GRPO from gpt-tiny-sft with the exact-answer reward",
        _grpo_config(),
    ),
}  # fmt: skip

RECIPES = tuple(_MAKERS)
"""The names of the course's RLHF runs (``recipe(name)`` gives one's recipe)."""


def recipe(name: str) -> Recipe:
    """The recipe of run ``name`` (PPO's and GRPO's configs come from their ``tiny`` presets,
    imported only when asked for)."""
    if name not in _MAKERS:
        raise ValueError(f"unknown RLHF run {name!r}: choose from {', '.join(RECIPES)}")
    return _MAKERS[name]()


def folder(name: str) -> Path:
    """The cache folder of a run."""
    return cache_dir() / "course_models" / name


def heldout_set() -> list[Example]:
    """Chapter 9's held-out examples, on which every chapter-10 figure is measured."""
    return build_splits(6000, 400, 1)[1]


def provenance(name: str) -> dict[str, Any]:
    """What decides a run's weights: its recipe, the SFT checkpoint's provenance (and, for
    PPO, the reward model's), torch's version. JSON-normalised, to compare with a file."""
    from llmcourse.sft.train import RECIPES as SFT_RECIPES
    from llmcourse.sft.train import provenance as sft_provenance

    r = recipe(name)
    wanted = {
        "version": VERSION,
        "name": name,
        "kind": r.kind,
        "config": dataclasses.asdict(r.config),
        "data": dataclasses.asdict(r.data) if r.data else None,
        "sft": sft_provenance(SFT_RECIPES[SFT]),
        "reward_model": provenance("gpt-tiny-rm") if r.kind == "ppo" else None,
        "torch": torch.__version__.split("+")[0],
    }
    return json.loads(json.dumps(wanted))


# --------------------------------------------------------------------------------------------
# Data and evaluation
# --------------------------------------------------------------------------------------------


def preference_pairs(
    model: nn.Module, tok: ChatTokenizer, data: PreferenceData
) -> tuple[list[PreferencePair], list[PreferencePair]]:
    """(training pairs, held-out pairs) sampled from ``model`` as ``data`` says."""
    prompts = rl_prompts(data.n_prompts, data.tasks, data.prompt_seed)
    pairs = build_preferences(
        model, tok, prompts, data.k, data.seed, data.max_new_tokens, data.temperature
    )
    cut = round(len(prompts) * (1 - data.heldout_share))
    train_keys = {e.key for e in prompts[:cut]}
    return (
        [p for p in pairs if p.example.key in train_keys],
        [p for p in pairs if p.example.key not in train_keys],
    )


@torch.no_grad()
def kl_to_reference(
    model: nn.Module, reference: nn.Module, tok: ChatTokenizer, examples: Sequence[Example],
    max_new_tokens: int = 32, seed: int = 0,
) -> float:  # fmt: skip
    """Mean over ``examples`` of ``KL(pi || ref)`` of one sampled response (summed k1), in
    nats: how far the tuned policy has moved from the SFT model on these prompts."""
    rollout = sample_rollouts(model, tok, examples, 1, max_new_tokens, 1.0, seed)
    logp, mask = masked_token_logprobs(model, rollout.ids, rollout.response_mask)
    ref, _ = masked_token_logprobs(reference, rollout.ids, rollout.response_mask)
    return float((kl_estimate(logp, ref, "k1") * mask).sum(-1).mean())


def policy_figures(model: nn.Module, reference: nn.Module, tok: ChatTokenizer) -> dict[str, Any]:
    """Exact match per task on the held-out set, and the KL to the reference there."""
    heldout = heldout_set()
    return {
        "exact_match": exact_match_by_task(model, tok, heldout),
        "kl": kl_to_reference(model, reference, tok, heldout),
    }


def exact_match_probe(tok: ChatTokenizer) -> Callable[[nn.Module], dict[str, float]]:
    """``probe(model)``: held-out exact match during a run, over all tasks
    (``exact_match``) and over the RL tasks' prompts only (``exact_match_rl``)."""
    heldout = heldout_set()
    counts = {t: sum(e.task == t for e in heldout) for t in RL_TASKS}

    def probe(model: nn.Module) -> dict[str, float]:
        scores = exact_match_by_task(model, tok, heldout)
        rl = sum(scores.get(t, 0.0) * n for t, n in counts.items()) / sum(counts.values())
        return {"exact_match": scores["all"], "exact_match_rl": rl}

    return probe


# --------------------------------------------------------------------------------------------
# Training each kind of run
# --------------------------------------------------------------------------------------------


def _train(
    r: Recipe, sft: nn.Module, tok: ChatTokenizer, out: Path
) -> tuple[nn.Module, dict[str, list[float]], dict[str, Any]]:
    """Train run ``r`` from the SFT model; ``(model, history, final figures)``."""
    if r.kind == "rm":
        train_pairs, heldout_pairs = preference_pairs(sft, tok, r.data)
        save_jsonl(train_pairs, out / "pairs_train.jsonl")
        save_jsonl(heldout_pairs, out / "pairs_heldout.jsonl")
        rm = RewardModel(sft)
        before = pair_accuracy(rm, tok, heldout_pairs)
        history = train_reward_model(
            rm, tok, train_pairs, r.config, heldout_pairs, eval_every=r.config.log_every * 3
        )
        figures = {
            "pairs_train": len(train_pairs),
            "pairs_heldout": len(heldout_pairs),
            "heldout_accuracy_before": before,
            "heldout_accuracy": pair_accuracy(rm, tok, heldout_pairs),
            "train_accuracy": pair_accuracy(rm, tok, train_pairs),
        }
        return rm, history, figures
    policy = copy.deepcopy(sft).requires_grad_(True)  # the frozen SFT model stays the reference
    if r.kind == "dpo":
        train_pairs, _ = preference_pairs(sft, tok, r.data)
        history = train_dpo(
            policy, sft, tok, train_pairs, r.config, evaluate=exact_match_probe(tok)
        )
    elif r.kind == "ppo":
        from .ppo import train_ppo

        rm, _ = load_rlhf("gpt-tiny-rm")
        history = train_ppo(policy, sft, tok, reward_fn(rm, tok), None, r.config)
    else:
        from .grpo import exact_reward, train_grpo

        history = train_grpo(policy, sft, tok, exact_reward, None, r.config)
    return policy, history, policy_figures(policy.eval(), sft, tok)


def load_rlhf(name: str, device: torch.device | str = "cpu") -> tuple[nn.Module, ChatTokenizer]:
    """A course RLHF run's model (a ``RewardModel`` for ``gpt-tiny-rm``, else the policy LM)
    and chat tokenizer: trained on first use, then loaded from the cache (see the module
    docstring)."""
    from llmcourse import course_models
    from llmcourse.sft.train import load_sft

    r, where = recipe(name), folder(name)
    wanted = provenance(name)
    cached = _load_cached(where, wanted, device)
    if cached is not None:
        return cached
    with course_models.cache_lock(name):
        cached = _load_cached(where, wanted, device)  # trained meanwhile elsewhere
        if cached is not None:
            return cached
        sft, tok = load_sft(SFT)
        sft.requires_grad_(False)
        tmp = where.with_name(f"{name}.tmp-{uuid.uuid4().hex[:8]}")
        tmp.mkdir(parents=True)
        try:
            began = time.perf_counter()
            torch.manual_seed(0)
            model, logged, figures = _train(r, sft, tok, tmp)
            seconds = time.perf_counter() - began
            if r.kind != "rm":
                figures["sft_exact_match"] = exact_match_by_task(sft, tok, heldout_set())
            record = {
                **wanted,
                "seconds": round(seconds, 1),
                "threads": torch.get_num_threads(),
                "trained_on": time.strftime("%Y-%m-%d %H:%M:%S"),
                "figures": figures,
            }
            save_run(tmp, model, tok, logged, record)
            shutil.rmtree(where, ignore_errors=True)
            os.rename(tmp, where)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return model.to(device).eval(), tok


HEAD_FILE = "reward_head.safetensors"


def save_run(
    out: str | Path, model: nn.Module, tok: ChatTokenizer, logged: dict[str, list[float]],
    record: dict[str, Any],
) -> Path:  # fmt: skip
    """Write a trained policy or ``RewardModel`` into ``out``: the LM as a chat checkpoint
    (``sft.save_chat_model``), a reward model's head in ``reward_head.safetensors``, the
    logged curves (``metrics.json``, and ``metrics.csv`` for the per-step columns) and
    ``record`` in ``rlhf.json``, written last (its presence marks a complete run)."""
    from safetensors.torch import save_file

    from llmcourse.sft.train import save_chat_model

    out = Path(out)
    is_rm = isinstance(model, RewardModel)
    save_chat_model(out, model.lm if is_rm else model, tok, {"rlhf": record.get("name")})
    if is_rm:
        head = {k: v.detach().cpu().contiguous() for k, v in model.head.state_dict().items()}
        save_file(head, out / HEAD_FILE)
    (out / "metrics.json").write_text(json.dumps(logged) + "\n")
    _write_csv(out / "metrics.csv", logged)
    (out / RLHF_FILE).write_text(json.dumps(record, indent=2) + "\n")
    return out


def load_run(
    where: str | Path, device: torch.device | str = "cpu"
) -> tuple[nn.Module, ChatTokenizer]:
    """What ``save_run`` wrote: ``(RewardModel or policy LM, tokenizer)``, in eval mode;
    ``CheckpointError`` for an incomplete or damaged folder."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from llmcourse.sft.train import load_chat_model

    where = Path(where)
    if not (where / RLHF_FILE).is_file():
        raise CheckpointError(f"no {RLHF_FILE} in {where}: not a complete RLHF run")
    lm, tok = load_chat_model(where, device)
    if not (where / HEAD_FILE).is_file():
        return lm, tok
    rm = RewardModel(lm)
    try:
        rm.head.load_state_dict(load_file(where / HEAD_FILE))
    except (SafetensorError, RuntimeError, OSError) as err:
        raise CheckpointError(f"cannot read the reward head of {where}: {err}") from None
    return rm.to(device).eval(), tok


def _write_csv(path: Path, logged: dict[str, list[float]]) -> None:
    """The columns of equal length (the per-step or per-iteration ones) as a CSV file."""
    longest = max((len(v) for v in logged.values()), default=0)
    columns = {k: v for k, v in logged.items() if len(v) == longest}
    logger = MetricsLogger(path)
    for i in range(longest):
        logger.log({k: v[i] for k, v in columns.items()})


def _load_cached(
    where: Path, wanted: dict[str, Any], device: torch.device | str
) -> tuple[nn.Module, ChatTokenizer] | None:
    """The cached run in ``where`` if ``wanted`` made it, else ``None`` (missing, made by
    another recipe, or damaged)."""
    try:
        record = json.loads((where / RLHF_FILE).read_text(encoding="utf-8"))
        if not all(record.get(k) == v for k, v in wanted.items()):
            return None
        return load_run(where, device)
    except (OSError, ValueError, KeyError, CheckpointError):
        return None


def _record(name: str) -> dict[str, Any]:
    load_rlhf(name)  # trains it first if needed
    return json.loads((folder(name) / RLHF_FILE).read_text(encoding="utf-8"))


def history(name: str) -> dict[str, list[float]]:
    """The logged curves of a run (``metrics.json`` beside its weights), trained if needed."""
    _record(name)
    return json.loads((folder(name) / "metrics.json").read_text(encoding="utf-8"))


def info(name: str) -> dict[str, Any]:
    """A run's record: provenance, ``seconds``, ``threads``, ``trained_on`` and ``figures``
    (final held-out figures; for policies also the SFT model's)."""
    return _record(name)


def pairs(split: str = "train") -> list[PreferencePair]:
    """The reward model's preference pairs (``train`` or ``heldout``), as it saved them."""
    if split not in ("train", "heldout"):
        raise ValueError(f"split must be 'train' or 'heldout', got {split!r}")
    _record("gpt-tiny-rm")
    return load_jsonl(folder("gpt-tiny-rm") / f"pairs_{split}.jsonl")


def load_start(source: str, device: torch.device | str = "cpu") -> tuple[nn.Module, ChatTokenizer]:
    """The chat model to start from: an ``llmcourse.sft`` checkpoint name (``gpt-tiny-sft``)
    or a folder written by ``sft.save_chat_model`` / ``save_run``."""
    from llmcourse.sft.train import RECIPES as SFT_RECIPES
    from llmcourse.sft.train import load_chat_model, load_sft

    if source in SFT_RECIPES:
        return load_sft(source, device)
    if not Path(source).is_dir():
        raise ValueError(
            f"{source!r} is neither a fine-tuned checkpoint ({', '.join(SFT_RECIPES)}) nor a folder"
        )
    return load_chat_model(source, device)


def cli_pairs(
    model: nn.Module, tok: ChatTokenizer, train_path: str | None, heldout_path: str | None
) -> tuple[list[PreferencePair], list[PreferencePair]]:
    """The pairs of a command-line run: from JSON Lines files when given, else sampled from
    ``model`` as for the course runs (``PreferenceData()``)."""
    if train_path is None:
        train, heldout = preference_pairs(model, tok, PreferenceData())
    else:
        train, heldout = load_jsonl(train_path), []
    if heldout_path is not None:
        heldout = load_jsonl(heldout_path)
    return train, heldout


def add_cli_arguments(parser: argparse.ArgumentParser, presets: Sequence[str]) -> None:
    """The options that ``python -m llmcourse.rlhf.reward`` and ``.dpo`` share."""
    parser.add_argument(
        "--preset",
        choices=presets,
        default="tiny",
        help="tiny: the course run on a CPU; gpu: longer, bf16, compiled",
    )
    parser.add_argument(
        "--start",
        default=SFT,
        help="the chat model to start from: an llmcourse.sft checkpoint name "
        "or a chat-model folder (default: %(default)s)",
    )
    parser.add_argument(
        "--pairs",
        help="training pairs as JSON Lines (the format of "
        "llmcourse.rlhf.preferences); default: sampled from the start model",
    )
    parser.add_argument("--steps", type=int, help="override the preset's steps")
    parser.add_argument("--lr", type=float, help="override the preset's learning rate")
    parser.add_argument("--device", help="cpu, cuda, mps (default: the best available)")
    parser.add_argument("--out", required=True, help="folder to write the trained model to")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m llmcourse.rlhf.course",
        description="Train (once) and summarise the course's cached RLHF runs.",
    )
    parser.add_argument("names", nargs="*", help=f"runs (default: all): {', '.join(RECIPES)}")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    for name in args.names or RECIPES:
        record = info(name)
        print(f"{name}: {record['seconds']} s on {record['threads']} thread(s), "
              f"{record['trained_on']}: {json.dumps(record['figures'])}")  # fmt: skip


if __name__ == "__main__":
    main()
