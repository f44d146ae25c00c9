"""Soft prompts (prompt tuning, Lester et al. 2021): train k vectors, not the model.

A hard prompt is text: token ids looked up in the embedding table, so every prompt is a row
of the table's V points. A *soft* prompt skips the lookup: k free vectors P = (p_1 .. p_k),
each of the model's width d, are put before the embedded input and trained by gradient
descent while every weight of the model stays frozen. For a GPT with token table E and
position table W_pos, the input to the first block becomes

    h_0 = [p_1, ..., p_k, E[x_1], ..., E[x_T]] + W_pos[0 .. k + T - 1],

then the model's own blocks, final LayerNorm and output layer as usual; the logits at the
positions of x predict the next tokens, and the loss is taken on the answer only. k d numbers
train (2048 for k = 16, d = 128), one small file per task, and one frozen model serves every
task by swapping the prompt. The prompt takes k of the context's positions.

``compare`` measures it on a task the base never saw (write a word backwards in capital
letters, ``"abc>"`` -> ``"CBA"``) against few-shot prompting (no training), LoRA and full
fine-tuning, with the same training words, batches and steps, on the same held-out words;
the cached run is ``soft-prompt-compare`` (``COURSE_RUNS``).
Run ``python -m llmcourse.prompting.soft_prompt --help``.
"""

from __future__ import annotations

import argparse
import copy
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from llmcourse import course_runs
from llmcourse.gpt import GPT
from llmcourse.sft.lora import apply_lora, trainable_parameters

INITS = ("vocab", "random")
RUN_VERSION = 3
"""Bumped when the cached run's code changes in a way its recipe fields do not show."""


class SoftPrompt(nn.Module):
    """k trainable vectors before the input embeddings of a frozen GPT.

    ``init``: ``"vocab"`` (the embeddings of k token ids drawn at random from the vocabulary,
    Lester et al.'s "sampled vocabulary"), ``"random"`` (normal, the scale of the embedding
    table) or a sequence of k token ids whose embeddings start the prompt (e.g. a text that
    describes the task). The model is frozen in place (``requires_grad_(False)``).
    ``forward(input_ids)`` returns the logits at the input's positions, (B, T, V): with
    ``n_tokens = 0`` exactly ``model(input_ids)``.
    """

    def __init__(
        self,
        model: GPT,
        n_tokens: int,
        init: str | Sequence[int] = "vocab",
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if isinstance(n_tokens, bool) or not isinstance(n_tokens, int) or n_tokens < 0:
            raise ValueError(f"n_tokens must be an integer >= 0, got {n_tokens!r}")
        if n_tokens >= model.max_seq_len:
            raise ValueError(
                f"{n_tokens} soft tokens leave no room in a context of {model.max_seq_len}"
            )
        self.model = model.requires_grad_(False)
        table = model.transformer.wte.weight.detach()
        if isinstance(init, str):
            if init not in INITS:
                raise ValueError(f"unknown init {init!r}: {', '.join(INITS)} or k token ids")
            if init == "vocab":
                ids = torch.randint(0, table.shape[0], (n_tokens,), generator=generator)
                start = table[ids.to(table.device)].clone()
            else:
                noise = torch.randn(n_tokens, table.shape[1], generator=generator)
                start = noise.to(table) * table.std()
        else:
            ids = torch.as_tensor(list(init), dtype=torch.long)
            if ids.shape != (n_tokens,):
                raise ValueError(f"init needs {n_tokens} token ids, got {len(ids)}")
            if len(ids) and (ids.min() < 0 or ids.max() >= table.shape[0]):
                raise ValueError(f"init token ids must be in 0..{table.shape[0] - 1}")
            start = table[ids.to(table.device)].clone()
        self.prompt = nn.Parameter(start)

    @property
    def n_tokens(self) -> int:
        return self.prompt.shape[0]

    @property
    def max_seq_len(self) -> int:
        """Room left for the input: the model's context minus the k soft tokens."""
        return self.model.max_seq_len - self.n_tokens

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        batch, length = check_token_ids(input_ids, self.model.transformer.wte.num_embeddings)
        if self.n_tokens + length > self.model.max_seq_len:
            raise ValueError(
                f"{self.n_tokens} soft tokens + {length} input tokens exceed the model's "
                f"context of {self.model.max_seq_len}"
            )
        return prefixed_logits(
            self.model, self.prompt.unsqueeze(0).expand(batch, -1, -1), input_ids
        )


def check_token_ids(input_ids: torch.Tensor, vocab_size: int) -> tuple[int, int]:
    """``(batch, length)`` of a batch of token ids, or a clear ``ValueError`` for anything else
    (not a 2-D integer tensor, empty, ids outside ``0..vocab_size-1``; the range is checked on
    the CPU only, where it costs no device synchronisation)."""
    if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2:
        shape = tuple(input_ids.shape) if isinstance(input_ids, torch.Tensor) else type(input_ids)
        raise ValueError(f"input_ids must be a (batch, length) tensor of token ids, got {shape}")
    if input_ids.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"input_ids must hold integer token ids, got dtype {input_ids.dtype}")
    batch, length = input_ids.shape
    if length < 1:
        raise ValueError("input_ids is empty: need at least one token per sequence")
    if input_ids.device.type == "cpu":
        low, high = int(input_ids.min()), int(input_ids.max())
        if low < 0 or high >= vocab_size:
            raise ValueError(f"token ids must be in 0..{vocab_size - 1}, got {low}..{high}")
    return batch, length


def prefixed_logits(model: GPT, prefix: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """The logits of ``model`` at the positions of ``input_ids`` when the vectors ``prefix``
    ``(batch, k, d)`` stand before their embeddings: ``[prefix; E[ids]] + P``, the blocks,
    ``ln_f``, ``lm_head``. A soft prompt (here) and the image tokens of chapter 14's connector
    both enter a GPT this way; with ``k = 0`` it is the model's own forward."""
    t = model.transformer
    k = prefix.shape[1]
    x = torch.cat([prefix.to(t.wte.weight.dtype), t.wte(input_ids)], dim=1)
    positions = torch.arange(k + input_ids.shape[1], device=input_ids.device)
    x = t.drop(x + t.wpe(positions))
    for block in t.h:
        x = block(x)
    return model.lm_head(t.ln_f(x[:, k:])).float()


# --- the new task and the comparison -----------------------------------------------------------

EOT = 256  # the course byte tokenizer's <|endoftext|>
NEWLINE = 10
_LETTERS = "abcdefghijklmnopqrstuvwxyz"


def task_answer(word: str) -> str:
    """The new task: the word backwards, in capital letters (``"abc"`` -> ``"CBA"``). The base
    has seen reversing and capitalising as instructions, never this frame nor the two at once."""
    return word[::-1].upper()


def task_prompt(word: str) -> str:
    """The input every method sees for ``word``: ``"abc>"``; no instruction in words."""
    return f"{word}>"


def words(seed: int, count: int, exclude: set[str] = frozenset()) -> list[str]:
    """``count`` distinct lower-case words of 3 to 6 letters, none in ``exclude``."""
    rng = random.Random(f"words-{seed}")
    out: dict[str, None] = {}
    while len(out) < count:
        w = "".join(rng.choice(_LETTERS) for _ in range(rng.randint(3, 6)))
        if w not in exclude:
            out[w] = None
    return list(out)


def encode_examples(word_list: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Byte ids (N, T) of prompt + answer + <|endoftext|>, right-padded with <|endoftext|>, and
    labels: the answer and its end, -100 elsewhere."""
    rows = [(list(task_prompt(w).encode()), [*task_answer(w).encode(), EOT]) for w in word_list]
    width = max(len(p) + len(a) for p, a in rows)
    ids = torch.full((len(rows), width), EOT, dtype=torch.long)
    labels = torch.full_like(ids, -100)
    for i, (p, a) in enumerate(rows):
        ids[i, : len(p) + len(a)] = torch.tensor(p + a)
        labels[i, len(p) : len(p) + len(a)] = torch.tensor(a)
    return ids, labels


def answer_loss(model: nn.Module, ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the next-token predictions on the answer tokens only."""
    logits = model(ids[:, :-1])
    return F.cross_entropy(logits.flatten(0, 1), labels[:, 1:].flatten(), ignore_index=-100)


def few_shot_text(shots: Sequence[str], word: str) -> str:
    """``"xyz>ZYX\\nab>BA\\n...abc>"``: solved examples, one per line, then the question."""
    return "".join(f"{task_prompt(s)}{task_answer(s)}\n" for s in shots) + task_prompt(word)


@torch.no_grad()
def greedy_answers(model: nn.Module, prompts: Sequence[str], max_new_tokens: int = 8) -> list[str]:
    """Greedy continuation of each prompt (bytes) up to a line break or <|endoftext|>, through
    any module that maps (B, T) ids to logits (a GPT, a ``SoftPrompt``). Prompts of equal
    length go as one batch; the whole sequence is recomputed at each step (answers are short)."""
    was_training = model.training
    model.eval()
    out = [""] * len(prompts)
    groups: dict[int, list[int]] = {}
    for i, p in enumerate(prompts):
        groups.setdefault(len(p.encode()), []).append(i)
    device = next(model.parameters()).device
    for length, indices in groups.items():
        ids = torch.tensor([list(prompts[i].encode()) for i in indices], device=device)
        for _ in range(max_new_tokens):
            ids = torch.cat([ids, model(ids)[:, -1:].argmax(-1)], dim=1)
        for i, row in zip(indices, ids[:, length:].tolist(), strict=True):
            ends = [j for j, t in enumerate(row) if t in (EOT, NEWLINE)]
            out[i] = bytes(t for t in row[: ends[0] if ends else len(row)] if t < 256).decode(
                errors="replace"
            )
    model.train(was_training)
    return out


def score(
    model: nn.Module, prompts: Sequence[str], heldout: Sequence[str], show: int = 6
) -> dict[str, Any]:
    """Exact match of the greedy answers to ``prompts`` (one per held-out word), the share of
    letters right at their place (out of the longer of answer and reference), the answer loss
    on the held-out words (their plain prompts) and the first ``show`` answers."""
    got = greedy_answers(model, prompts)
    refs = [task_answer(w) for w in heldout]
    pairs = list(zip(got, refs, strict=True))
    letters = sum(sum(x == y for x, y in zip(g, r, strict=False)) for g, r in pairs)
    with torch.no_grad():
        loss = answer_loss(model.eval(), *encode_examples(heldout)).item()
    return {"exact_match": sum(g == r for g, r in pairs) / len(pairs), "heldout_loss": loss,
            "letters_right": letters / sum(max(len(g), len(r)) for g, r in pairs),
            "answers": dict(zip(heldout[:show], got[:show], strict=True))}  # fmt: skip


@dataclass(frozen=True)
class SoftPromptConfig:
    """The comparison: every trained method sees the same words in the same batches for the
    same steps; each has its own learning rate (a soft prompt's few numbers take a large one,
    as in Lester et al.)."""

    base: str = "gpt-tiny-tasks"
    n_train: int = 2000
    n_heldout: int = 200
    shots: int = 4
    n_tokens: int = 16
    init: str = "vocab"
    lora_rank: int = 2
    lora_alpha: float = 4.0
    steps: int = 150
    batch_size: int = 32
    lr_soft: float = 0.1
    lr_lora: float = 1e-2
    lr_full: float = 1e-3
    sweep: tuple[int, ...] = (1, 4, 64)  # extra soft-prompt lengths, with the same budget
    seed: int = 0


def fit(
    module: nn.Module,
    data: tuple[torch.Tensor, torch.Tensor],
    config: SoftPromptConfig,
    lr: float,
) -> dict[str, Any]:
    """AdamW on ``module``'s trainable parameters, the same batches for every method; returns
    the loss curve, the seconds taken and the optimizer state's bytes (measured)."""
    params = [p for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    order = torch.Generator().manual_seed(config.seed)
    ids, labels = data
    losses = []
    module.train()
    began = time.perf_counter()
    for _ in range(config.steps):
        rows = torch.randint(0, len(ids), (config.batch_size,), generator=order)
        width = int((labels[rows] != -100).nonzero()[:, 1].max()) + 1
        loss = answer_loss(module, ids[rows, :width], labels[rows, :width])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    state = sum(t.numel() * t.element_size() for s in optimizer.state.values()
                for k, t in s.items() if k in ("exp_avg", "exp_avg_sq"))  # fmt: skip
    return {"losses": losses, "seconds": time.perf_counter() - began, "optimizer_bytes": state}


def compare(config: SoftPromptConfig, base: GPT | None = None) -> dict[str, Any]:
    """Few-shot, soft prompt, LoRA and full fine-tuning on the same held-out words (never in
    training: checked); one row per method plus the soft prompt's accuracy against k."""
    from llmcourse import course_models

    if base is None:
        base = course_models.load(config.base)[0]
    base = base.cpu().eval()
    heldout = words(config.seed + 1, config.n_heldout)
    train_words = words(config.seed, config.n_train, exclude=set(heldout))
    if set(train_words) & set(heldout):
        raise AssertionError("held-out words leaked into training")
    data = encode_examples(train_words)
    plain = [task_prompt(w) for w in heldout]
    rng = random.Random(f"shots-{config.seed}")
    shot_prompts = [few_shot_text(rng.sample(train_words, config.shots), w) for w in heldout]
    rows = [{"method": f"few-shot ({config.shots} examples)", "trainable": 0, "optimizer_bytes": 0,
             **score(base, shot_prompts, heldout), "seconds": 0.0, "losses": []}]  # fmt: skip
    zero_shot = score(base, plain, heldout)

    def soft(k: int) -> dict[str, Any]:
        g = torch.Generator().manual_seed(config.seed)
        module = SoftPrompt(copy.deepcopy(base), k, config.init, generator=g)
        result = fit(module, data, config, config.lr_soft)
        return {"method": f"soft prompt (k={k})", "trainable": trainable_parameters(module),
                **score(module, plain, heldout), **result}  # fmt: skip

    rows.append(soft(config.n_tokens))
    torch.manual_seed(config.seed)  # LoRA's A draws from the global generator
    lora = apply_lora(copy.deepcopy(base), r=config.lora_rank, alpha=config.lora_alpha)
    result = fit(lora, data, config, config.lr_lora)
    rows.append({"method": f"LoRA (r={config.lora_rank})", "trainable": trainable_parameters(lora),
                 **score(lora, plain, heldout), **result})  # fmt: skip
    full = copy.deepcopy(base).requires_grad_(True)
    result = fit(full, data, config, config.lr_full)
    rows.append({"method": "full fine-tuning", "trainable": trainable_parameters(full),
                 **score(full, plain, heldout), **result})  # fmt: skip
    keep = ("exact_match", "letters_right", "heldout_loss", "seconds")
    by_k = {config.n_tokens: rows[1]} | {k: soft(k) for k in config.sweep}
    return {
        "rows": rows,
        "zero_shot": zero_shot,
        "by_k": {str(k): {key: by_k[k][key] for key in keep} for k in sorted(by_k)},
        "heldout_in_training": len(set(train_words) & set(heldout)),
        "n_train": len(train_words),
        "n_heldout": len(heldout),
    }


def run(config: SoftPromptConfig | None = None) -> Path:
    """The folder of the cached run ``soft-prompt-compare`` (built on one thread first)."""
    from llmcourse import course_models

    config = config or SoftPromptConfig()
    provenance = {
        "recipe": asdict(config),
        "code": RUN_VERSION,
        "base": course_models.recipe(config.base).fingerprint(),
        "torch": course_runs.torch_version(),
    }

    def build(out: Path) -> dict[str, Any]:
        from llmcourse.runtime import torch_threads

        with torch_threads(1):
            return compare(config)

    return course_runs.cached_run("soft-prompt-compare", provenance, build)


COURSE_RUNS: dict[str, Callable[..., object]] = {"soft-prompt-compare": lambda *_: run()}
"""Run name -> a function that builds the run if it is not cached (and returns its folder)."""


def main(argv: list[str] | None = None) -> int:
    """``python -m llmcourse.prompting.soft_prompt``: the comparison table."""
    defaults = SoftPromptConfig()
    parser = argparse.ArgumentParser(
        prog="python -m llmcourse.prompting.soft_prompt",
        description="Prompt tuning vs few-shot, LoRA and full fine-tuning on a new task "
        "(a word backwards in capitals) for the frozen course checkpoint.",
    )
    parser.add_argument(
        "--n-tokens", type=int, help=f"soft prompt length k (default {defaults.n_tokens})"
    )
    parser.add_argument("--steps", type=int, help=f"training steps (default {defaults.steps})")
    parser.add_argument(
        "--init", help=f"soft prompt init: vocab or random (default {defaults.init})"
    )
    args = parser.parse_args(argv)
    changes = {"n_tokens": args.n_tokens, "steps": args.steps, "init": args.init}
    config = replace(defaults, **{k: v for k, v in changes.items() if v is not None})
    try:
        record = course_runs.run_record(run()) if config == defaults else compare(config)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"zero-shot (no examples): {record['zero_shot']['exact_match']:.0%}")
    print(f"{'method':<24} {'trainable':>10} {'AdamW bytes':>12} {'exact':>6} {'letters':>8} "
          f"{'seconds':>8}")  # fmt: skip
    for r in record["rows"]:
        scores = f"{r['exact_match']:>6.0%} {r['letters_right']:>8.0%} {r['seconds']:>8.1f}"
        print(f"{r['method']:<24} {r['trainable']:>10,} {r['optimizer_bytes']:>12,} {scores}")
    for k, r in record["by_k"].items():
        print(
            f"soft prompt k={k}: exact {r['exact_match']:.0%}, letters {r['letters_right']:.0%}, "
            f"held-out loss {r['heldout_loss']:.2f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
