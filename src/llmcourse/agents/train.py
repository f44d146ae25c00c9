"""Teaching ``gpt-tiny-sft`` to use the tools: fine-tuning on transcripts of the right tool use.

The training data are the ``problems``' solution transcripts (thought, actions, answer), and,
for the comparison without tools, the same problems with their facts written into the
question and the bare answer after it. Three details:

* **Four new tokens.** The model's context holds 128 tokens, and its tokenizer is bytes: the
  keywords ``Thought: ``, ``Action: ``, ``Observation: `` and ``Answer: `` would cost 9-13
  tokens each, eight times per transcript. ``add_agent_tokens`` gives each one token (the
  checkpoint's spare embedding rows 261-264), initialised to the mean of its bytes'
  embeddings, so the longest transcript fits in 126 tokens.
* **The loss is on what the model writes.** As in SFT (``sft_loss``), every position gets a
  label: the token itself for the thought, action and answer lines (newline and ``<|end|>``
  included: they are how the model hands control back), and ``IGNORE`` for the question and
  for every observation. The observations come from the tools at run time; training the model
  to predict them would teach it to invent tool results, which is exactly what must not
  happen (the loop would throw them away, but the weights would have spent capacity on it).
* **Both formats in one model.** Each training problem appears once with tools and once
  with its facts in the question; the same weights, trained on the same problems, are then
  measured both ways, so the comparison is about the tools, not about two different runs.

``load_agent()`` returns the course's cached fine-tuned agent (``COURSE_RUNS``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from llmcourse import course_runs
from llmcourse.causal_lm.data import step_generator
from llmcourse.causal_lm.optim import lr_scheduler, make_adamw
from llmcourse.runtime import autocast, pick_device, seed_everything
from llmcourse.sft.packing import Tokenized, pad_batch
from llmcourse.sft.template import IGNORE, ChatTemplate, ChatTokenizer, sft_loss
from llmcourse.training import train

from .problems import DATA_VERSION, Problem, build_splits, direct_question, solution_lines
from .react import KEYWORDS, agent_prompt


@dataclass(frozen=True)
class AgentConfig:
    """The fine-tuning recipe and its evaluation (all of ``gpt-tiny-agent``'s provenance)."""

    start: str = "gpt-tiny-sft"
    # data
    n_train: int = 3000
    n_heldout: int = 200
    data_seed: int = 0
    # optimisation
    steps: int = 700
    batch_size: int = 16
    lr: float = 1e-3
    min_lr: float = 1e-4
    warmup: int = 30
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    seed: int = 0
    device: str | None = None
    bf16: bool = True
    log_every: int = 10
    # evaluation
    max_steps: int = 6
    n_eval_unavailable: int = 50
    n_eval_base_tools: int = 20


RECIPES: dict[str, AgentConfig] = {"gpt-tiny-agent": AgentConfig()}
"""The course's agent checkpoints and their recipes (``load_agent``)."""


def add_agent_tokens(model: nn.Module, tokenizer: ChatTokenizer) -> ChatTokenizer:
    """A tokenizer with the four ReAct keywords (``react.KEYWORDS``) as special tokens after
    the chat tokens; each one's row of ``model``'s (tied) embedding starts at the mean of the
    embeddings of its bytes. The model must already have the rows (``vocab_size`` is rounded
    up to 320 in the course checkpoints); the chat tokens' trained rows are kept."""
    if any(k in tokenizer.special_tokens for k in KEYWORDS):
        raise ValueError("the tokenizer already has the agent keywords")
    extended = ChatTokenizer(tokenizer.base, (*tokenizer.special_tokens, *KEYWORDS))
    embedding = model.transformer.wte
    if embedding.weight.shape[0] < extended.n_vocab:
        raise ValueError(
            f"the model has {embedding.weight.shape[0]} embedding rows, fewer than the "
            f"{extended.n_vocab} ids with the agent keywords"
        )
    with torch.no_grad():
        for keyword in KEYWORDS:
            rows = embedding.weight[tokenizer.encode_ordinary(keyword)]
            embedding.weight[extended.token_id(keyword)] = rows.mean(dim=0)
    return extended


def encode_solution(tokenizer: ChatTokenizer, problem: Problem) -> Tokenized:
    """``(ids, labels)`` of the problem's solution transcript: ``ids`` equal
    ``tokenizer.encode`` of the whole text (prompt, lines, ``<|end|>``); ``labels`` equal the
    ids on the model's lines and ``<|end|>``, ``IGNORE`` on the prompt and the observations."""
    ids = tokenizer.encode(agent_prompt(problem.question))
    labels = [IGNORE] * len(ids)
    for text, learn in solution_lines(problem):
        piece = tokenizer.encode(text)
        ids += piece
        labels += piece if learn else [IGNORE] * len(piece)
    end = tokenizer.token_id(ChatTemplate().end)
    return [*ids, end], [*labels, end]


def direct_messages(problem: Problem) -> list[dict[str, str]]:
    """The problem without tools: its facts in the question, the bare answer after it."""
    return [
        {"role": "user", "content": direct_question(problem)},
        {"role": "assistant", "content": str(problem.answer)},
    ]


def training_rows(
    tokenizer: ChatTokenizer, problems: Sequence[Problem], seq_len: int
) -> list[Tokenized]:
    """Each problem twice: its tool transcript and its direct form (``ValueError`` if one
    does not fit in ``seq_len`` tokens: the problems are sized to fit)."""
    rows = []
    for p in problems:
        rows.append(encode_solution(tokenizer, p))
        rows.append(ChatTemplate().encode(tokenizer, direct_messages(p)))
    longest = max(len(ids) for ids, _ in rows)
    if longest > seq_len:
        raise ValueError(f"a training example has {longest} tokens, more than {seq_len}")
    return rows


def finetune_agent(
    model: nn.Module, tokenizer: ChatTokenizer, problems: Sequence[Problem], config: AgentConfig
) -> dict[str, list[float]]:
    """Fine-tune every parameter of ``model`` on ``training_rows`` with the loss on the
    model's own tokens (see the module docstring); return the logged history."""
    seed_everything(config.seed)
    device = pick_device(config.device)
    model.to(device).train()
    rows = training_rows(tokenizer, problems, model.max_seq_len)
    pad_id = tokenizer.token_id(ChatTemplate().end)

    def next_batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
        gen = step_generator(config.seed, step)
        picks = torch.randint(0, len(rows), (config.batch_size,), generator=gen).tolist()
        ids, labels = pad_batch([rows[i] for i in picks], pad_id)
        return ids.to(device), labels.to(device)

    def loss_fn(m: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        with autocast(device, enabled=config.bf16):
            return sft_loss(m(batch[0]), batch[1])

    optimizer = make_adamw(model, config.lr, config.weight_decay, device=device)
    scheduler = lr_scheduler(
        optimizer, "cosine", max_lr=config.lr, min_lr=config.min_lr, warmup=config.warmup,
        total=config.steps,
    )  # fmt: skip
    history = train(
        model, optimizer, next_batch, loss_fn, config.steps, log_every=config.log_every,
        grad_clip=config.grad_clip, progress=False, scheduler=scheduler,
    )  # fmt: skip
    model.eval()
    return history


def provenance(config: AgentConfig) -> dict[str, Any]:
    """What decides ``gpt-tiny-agent``: the recipe, the version of the problems' format, the
    starting checkpoint's own provenance (its recipe and its base's fingerprint) and torch's
    version."""
    from llmcourse.sft import RECIPES as SFT_RECIPES
    from llmcourse.sft.train import provenance as sft_provenance

    return {
        "recipe": dataclasses.asdict(config),
        "data_version": DATA_VERSION,
        "start": sft_provenance(SFT_RECIPES[config.start]),
        "torch": course_runs.torch_version(),
    }


def build_agent(config: AgentConfig, out: Path) -> dict[str, Any]:
    """Fine-tune, save the checkpoint into ``out`` and measure it (``evaluate.measure``)."""
    from llmcourse.sft import load_sft
    from llmcourse.sft.train import save_chat_model

    from .evaluate import measure

    train_set, heldout = build_splits(config.n_train, config.n_heldout, config.data_seed)
    model, chat = load_sft(config.start)
    tokenizer = add_agent_tokens(model, chat)
    history = finetune_agent(model, tokenizer, train_set, dataclasses.replace(config, device="cpu"))
    save_chat_model(out, model, tokenizer, {"agent": dataclasses.asdict(config)})
    base, base_tok = load_sft(config.start)
    figures, examples = measure(model, tokenizer, base, base_tok, heldout, config)
    return {"figures": figures, "examples": examples, "history": history}


def agent_run(name: str = "gpt-tiny-agent") -> Path:
    """The folder of the cached run ``name`` (fine-tuned and measured on first use)."""
    if name not in RECIPES:
        raise ValueError(f"unknown agent checkpoint {name!r}: choose from {', '.join(RECIPES)}")
    config = RECIPES[name]
    return course_runs.cached_run(name, provenance(config), lambda out: build_agent(config, out))


def load_agent(
    name: str = "gpt-tiny-agent", device: torch.device | str = "cpu"
) -> tuple[nn.Module, ChatTokenizer]:
    """The fine-tuned agent model (eval mode) and its tokenizer (chat tokens and the four
    ReAct keywords), trained on first use (a few minutes on a CPU core) and cached."""
    from llmcourse.sft.train import load_chat_model

    return load_chat_model(agent_run(name), device)


COURSE_RUNS = {name: (lambda name=name: agent_run(name)) for name in RECIPES}
"""Run name -> a function that builds (or finds) the cached run (callable with no argument
or with the name)."""
