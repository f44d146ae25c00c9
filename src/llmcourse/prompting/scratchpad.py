"""Chain of thought as a written scratchpad: multi-digit addition answered directly or worked.

A Transformer of fixed depth does a fixed amount of computation per token it emits. Asked for
``123+989=`` and then directly ``1112``, its first output digit (the 1 of the thousands)
depends on every carry below it, and all of that has to happen inside the forward pass of one
position. Written out instead, each step is small and local (Nye et al. 2021, "Show your work:
scratchpads"; Wei et al. 2022, chain-of-thought prompting):

    direct:      123+989=1112$
    scratchpad:  123+989=[3+9+0=12,2+8+1=11,1+9+1=11]1112$

The scratchpad goes through the digits from the right (least significant first). Each step
``a+b+c=ts`` reads one digit of each operand (0 past the end of the shorter one) and the carry
``c`` coming in, and writes their two-digit sum: ``s`` is the digit of the answer, ``t`` the
carry into the next step. After ``]`` comes the answer: the last carry if it is 1, then the
digits ``s`` in reverse order. ``$`` ends every sequence.

Two GPTs of the same size train on the same problems in the same batches for the same number
of steps, one on each format, with the loss on everything after ``=`` (the scratchpad model
therefore reads and writes about three times as many tokens: ``tokens_seen`` counts them).
Both are then asked held-out problems, never in training (``heldout_problems`` draws them
first and the training pool is drawn without them), greedily, and scored by exact answer for
each number of digits, including one digit more than training ever showed.

Cached runs (``COURSE_RUNS``): ``gpt-tiny-add-direct`` and ``gpt-tiny-add-scratchpad``.
Run ``python -m llmcourse.prompting.scratchpad --help``.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from llmcourse import course_runs
from llmcourse.generate import GenerationConfig, generate
from llmcourse.gpt import GPT, GPTConfig
from llmcourse.runtime import pick_device, torch_threads
from llmcourse.training import train

FORMATS = ("direct", "scratchpad")
VOCAB = "0123456789+=,[]$"
"""One token per character; ``$`` ends a sequence (and pads a batch)."""
END = VOCAB.index("$")
IGNORE = -100


# --- the two formats ---------------------------------------------------------------------------


def prompt_text(a: int, b: int) -> str:
    """What both models are asked: ``"123+989="``."""
    if a < 0 or b < 0:
        raise ValueError(f"operands must be non-negative integers, got {a} and {b}")
    return f"{a}+{b}="


def scratchpad_steps(a: int, b: int) -> list[tuple[int, int, int, int]]:
    """The column additions from the right: (digit of a, digit of b, carry in, sum), where
    sum = digit_a + digit_b + carry_in < 20, its tens digit the carry into the next column."""
    da, db = str(a)[::-1], str(b)[::-1]
    steps, carry = [], 0
    for i in range(max(len(da), len(db))):
        x = int(da[i]) if i < len(da) else 0
        y = int(db[i]) if i < len(db) else 0
        total = x + y + carry
        steps.append((x, y, carry, total))
        carry = total // 10
    return steps


def target_text(a: int, b: int, fmt: str) -> str:
    """What the model writes after the prompt, ending in ``$``: ``"1112$"`` (direct) or
    ``"[3+9+0=12,2+8+1=11,1+9+1=11]1112$"`` (scratchpad)."""
    check_format(fmt)
    if fmt == "direct":
        return f"{a + b}$"
    steps = scratchpad_steps(a, b)
    work = ",".join(f"{x}+{y}+{c}={s:02d}" for x, y, c, s in steps)
    answer = "".join(str(s % 10) for *_, s in reversed(steps))
    if steps[-1][3] >= 10:
        answer = "1" + answer
    return f"[{work}]{answer}$"


def parse_scratchpad(text: str) -> tuple[list[tuple[int, int, int, int]], str]:
    """The steps and the answer of a scratchpad target (``target_text(..., "scratchpad")``,
    with or without the final ``$``); ``ValueError`` if it is not in that format."""
    body = text.removesuffix("$")
    if not body.startswith("[") or "]" not in body:
        raise ValueError(f"not a scratchpad ('[steps]answer'): {text!r}")
    work, answer = body[1:].split("]", 1)
    steps = []
    for step in work.split(","):
        try:
            left, total = step.split("=")
            x, y, c = (int(v) for v in left.split("+"))
            steps.append((x, y, c, int(total)))
        except ValueError:
            raise ValueError(f"bad scratchpad step {step!r} in {text!r}") from None
    return steps, answer


def answer_of(generated: str, fmt: str) -> str:
    """The final answer in a model's output (the text after the prompt): everything before
    ``$``, past the ``]`` that closes the scratchpad; ``""`` if there is none."""
    text = generated.split("$", 1)[0]
    if fmt == "scratchpad":
        return text.split("]", 1)[1] if "]" in text else ""
    return text


def encode(text: str) -> list[int]:
    """Token ids of a text over ``VOCAB``."""
    try:
        return [VOCAB.index(ch) for ch in text]
    except ValueError:
        bad = sorted({ch for ch in text if ch not in VOCAB})
        raise ValueError(f"characters {bad} are not in the vocabulary {VOCAB!r}") from None


def decode(ids: Sequence[int]) -> str:
    return "".join(VOCAB[i] for i in ids)


def check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}: choose from {', '.join(FORMATS)}")


# --- problems: held-out first, training without them -------------------------------------------


def random_operand(rng: random.Random, digits: int) -> int:
    """A number with exactly ``digits`` digits (0-9 for one digit)."""
    return rng.randint(0, 9) if digits == 1 else rng.randint(10 ** (digits - 1), 10**digits - 1)


def heldout_problems(
    per_length: int, max_digits: int, seed: int
) -> dict[int, list[tuple[int, int]]]:
    """For n = 1 .. max_digits, distinct problems whose operands both have n digits: at most
    ``per_length``, and at most half of all such problems (one-digit sums are only 100)."""
    rng = random.Random(f"heldout-{seed}")
    out = {}
    for n in range(1, max_digits + 1):
        count = 10 if n == 1 else 9 * 10 ** (n - 1)
        want, chosen = min(per_length, count * count // 2), set()
        while len(chosen) < want:
            chosen.add((random_operand(rng, n), random_operand(rng, n)))
        out[n] = sorted(chosen)
    return out


def training_problems(
    count: int, max_digits: int, seed: int, exclude: set[tuple[int, int]]
) -> list[tuple[int, int]]:
    """``count`` problems whose operands have 1..max_digits digits each (drawn independently,
    so lengths mix), none of them in ``exclude``."""
    rng = random.Random(f"train-{seed}")
    out = []
    while len(out) < count:
        a = random_operand(rng, rng.randint(1, max_digits))
        b = random_operand(rng, rng.randint(1, max_digits))
        if (a, b) not in exclude:
            out.append((a, b))
    return out


def encode_problems(
    problems: Sequence[tuple[int, int]], fmt: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids (N, T) right-padded with ``$`` and labels: the target's ids (through its ``$``),
    ``IGNORE`` on the prompt and the padding."""
    rows = [(encode(prompt_text(a, b)), encode(target_text(a, b, fmt))) for a, b in problems]
    width = max(len(p) + len(t) for p, t in rows)
    ids = torch.full((len(rows), width), END, dtype=torch.long)
    labels = torch.full_like(ids, IGNORE)
    for i, (p, t) in enumerate(rows):
        ids[i, : len(p) + len(t)] = torch.tensor(p + t)
        labels[i, len(p) : len(p) + len(t)] = torch.tensor(t)
    return ids, labels


def target_loss(model: torch.nn.Module, ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of the next-token predictions on the target tokens only."""
    logits = model(ids[:, :-1])
    return F.cross_entropy(logits.flatten(0, 1), labels[:, 1:].flatten(), ignore_index=IGNORE)


# --- training and evaluation -------------------------------------------------------------------


@dataclass(frozen=True)
class AddConfig:
    """One recipe for both formats: the same model size, problems, batches and steps."""

    max_digits: int = 5  # training operands have 1..max_digits digits
    train_problems: int = 50_000
    heldout_per_length: int = 200
    n_layer: int = 2
    n_head: int = 4
    n_embd: int = 64
    steps: int = 1000
    batch_size: int = 64
    lr: float = 3e-3
    min_lr: float = 3e-4
    warmup: int = 50
    weight_decay: float = 0.0
    eval_every: int = 100
    device: str = "cpu"
    seed: int = 0

    def max_len(self) -> int:
        """Positions needed for the longest sequence, one digit beyond training included."""
        big = 10 ** (self.max_digits + 1) - 1
        return len(prompt_text(big, big)) + len(target_text(big, big, "scratchpad"))


PRESETS: dict[str, AddConfig] = {
    "tiny": AddConfig(),
    "smoke": AddConfig(
        max_digits=3, train_problems=2000, heldout_per_length=20, n_embd=32, steps=20, eval_every=10
    ),
}
RUN_VERSION = 2
"""Bumped when the cached runs' code changes in a way the recipe's fields do not show."""
RUNS = {"gpt-tiny-add-direct": "direct", "gpt-tiny-add-scratchpad": "scratchpad"}


def new_model(config: AddConfig) -> GPT:
    """The GPT both formats train (the same size for both)."""
    sizes = {"n_layer": config.n_layer, "n_head": config.n_head, "n_embd": config.n_embd}
    return GPT(GPTConfig(vocab_size=len(VOCAB), n_positions=config.max_len(), **sizes))


def splits(config: AddConfig) -> tuple[list[tuple[int, int]], dict[int, list[tuple[int, int]]]]:
    """(training pool, held-out problems by number of digits); the held-out ones include
    ``max_digits + 1``, and no held-out problem is in the pool."""
    heldout = heldout_problems(config.heldout_per_length, config.max_digits + 1, config.seed)
    exclude = {p for group in heldout.values() for p in group}
    return training_problems(
        config.train_problems, config.max_digits, config.seed, exclude
    ), heldout


@torch.no_grad()
def solve(
    model: GPT, problems: Sequence[tuple[int, int]], fmt: str, batch_size: int = 256
) -> list[str]:
    """The model's greedy output after each prompt, up to ``$`` (kept) or the context's end."""
    check_format(fmt)
    device = next(model.parameters()).device
    out = [""] * len(problems)
    groups: dict[int, list[int]] = {}
    for i, (a, b) in enumerate(problems):
        groups.setdefault(len(prompt_text(a, b)), []).append(i)
    for length, indices in groups.items():
        config = GenerationConfig(max_new_tokens=model.max_seq_len - length, temperature=0.0,
                                  stop_ids=(END,))  # fmt: skip
        for start in range(0, len(indices), batch_size):
            chunk = indices[start : start + batch_size]
            prompts = torch.tensor(
                [encode(prompt_text(*problems[i])) for i in chunk], device=device
            )
            new = generate(model, prompts, config)[:, length:].tolist()
            for i, ids in zip(chunk, new, strict=True):
                text = decode(ids)
                out[i] = text[: text.index("$") + 1] if "$" in text else text
    return out


def accuracy_by_digits(
    model: GPT, heldout: dict[int, list[tuple[int, int]]], fmt: str
) -> dict[int, float]:
    """Share of exact answers (greedy) for each number of digits."""
    result = {}
    for n, problems in heldout.items():
        got = solve(model, problems, fmt)
        right = [answer_of(g, fmt) == str(a + b) for g, (a, b) in zip(got, problems, strict=True)]
        result[n] = sum(right) / len(right)
    return result


def train_adder(config: AddConfig, fmt: str, progress: bool = False) -> tuple[GPT, dict[str, Any]]:
    """Train the model of ``fmt`` (seeded: both formats draw the same problems per step).
    Returns it and a record: loss curve, held-out loss at ``eval_every``, accuracy by digits,
    tokens seen (all positions of each batch, and target tokens only), parameters."""
    check_format(fmt)
    device = pick_device(config.device)
    torch.manual_seed(config.seed)
    pool, heldout = splits(config)
    model = new_model(config).to(device)
    ids, labels = encode_problems(pool, fmt)
    lengths = (labels != IGNORE).sum(1) + torch.tensor([len(prompt_text(a, b)) for a, b in pool])
    eval_ids, eval_labels = encode_problems(
        [p for n in heldout if n <= config.max_digits for p in heldout[n]], fmt
    )
    order = torch.Generator().manual_seed(config.seed)
    batches = [torch.randint(0, len(pool), (config.batch_size,), generator=order)
               for _ in range(config.steps)]  # fmt: skip
    seen = {"tokens": 0, "target_tokens": 0}

    def next_batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
        rows = batches[step]
        width = int(lengths[rows].max())
        seen["tokens"] += int(lengths[rows].sum())
        seen["target_tokens"] += int((labels[rows] != IGNORE).sum())
        return ids[rows, :width].to(device), labels[rows, :width].to(device)

    def evaluate(m: torch.nn.Module) -> dict[str, float]:
        return {"heldout_loss": target_loss(m, eval_ids.to(device), eval_labels.to(device)).item()}

    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, betas=(0.9, 0.98),
                                  weight_decay=config.weight_decay)  # fmt: skip
    history = train(
        model, optimizer, next_batch, lambda m, batch: target_loss(m, *batch), config.steps,
        evaluate=evaluate, eval_every=config.eval_every, log_every=10, grad_clip=1.0,
        progress=progress, scheduler=_cosine(optimizer, config),
    )  # fmt: skip
    model.eval()
    record = {
        "format": fmt,
        "history": history,
        "accuracy": {str(n): v for n, v in accuracy_by_digits(model, heldout, fmt).items()},
        "tokens_seen": seen,
        "parameters": model.num_params(),
        "heldout_in_training": sum(p in set(pool) for g in heldout.values() for p in g),
        "train_problems": len(set(pool)),
    }
    return model, record


def _cosine(
    optimizer: torch.optim.Optimizer, config: AddConfig
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up, then cosine from ``lr`` down to ``min_lr``."""
    floor = config.min_lr / config.lr

    def factor(step: int) -> float:
        if step < config.warmup:
            return (step + 1) / config.warmup
        progress = (step - config.warmup) / max(1, config.steps - config.warmup)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


# --- cached runs -------------------------------------------------------------------------------


def run(name: str, config: AddConfig | None = None) -> Path:
    """The folder of the cached run ``name`` (``RUNS``), trained on one thread the first time:
    ``model.safetensors``, ``config.json`` and ``run.json`` (``course_runs.run_record``)."""
    if name not in RUNS:
        raise ValueError(f"unknown run {name!r}: choose from {', '.join(RUNS)}")
    config = config or PRESETS["tiny"]
    fmt = RUNS[name]
    provenance = {"recipe": asdict(config), "format": fmt, "code": RUN_VERSION,
                  "torch": course_runs.torch_version()}  # fmt: skip

    def build(out: Path) -> dict[str, Any]:
        from safetensors.torch import save_file

        with torch_threads(1):
            model, record = train_adder(config, fmt)
            save_file(_weights(model), str(out / "model.safetensors"))
            if fmt == "direct":  # and once more on as many tokens as the scratchpad's run
                bigger = replace(config, batch_size=same_token_batch(config))
                model_big, record_big = train_adder(bigger, fmt)
                save_file(_weights(model_big), str(out / "model-same-tokens.safetensors"))
                record["same_tokens"] = {"batch_size": bigger.batch_size, **record_big}
        (out / "config.json").write_text(json.dumps(model.config.to_dict()), encoding="utf-8")
        return record

    return course_runs.cached_run(name, provenance, build)


def _weights(model: GPT) -> dict[str, torch.Tensor]:
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    state.pop("lm_head.weight")  # tied to transformer.wte.weight
    return state


def same_token_batch(config: AddConfig) -> int:
    """The batch size at which the direct format reads as many tokens in ``config.steps``
    steps as the scratchpad does at ``config.batch_size`` (the ratio of their mean lengths
    over the training pool): the same number of updates, on the same amount of text."""
    pool, _ = splits(config)
    lengths = {fmt: sum(len(prompt_text(a, b)) + len(target_text(a, b, fmt)) for a, b in pool)
               for fmt in FORMATS}  # fmt: skip
    return round(config.batch_size * lengths["scratchpad"] / lengths["direct"])


def load_run(
    name: str, config: AddConfig | None = None, same_tokens: bool = False
) -> tuple[GPT, dict[str, Any]]:
    """The trained model of run ``name`` (eval mode, CPU) and its record; ``same_tokens``: the
    direct run's second model, trained for as many tokens as the scratchpad's."""
    from safetensors.torch import load_file

    folder = run(name, config)
    weights = folder / ("model-same-tokens.safetensors" if same_tokens else "model.safetensors")
    if not weights.is_file():
        raise ValueError(f"run {name!r} has no {weights.name}")
    config_dict = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    model = GPT(GPTConfig(**config_dict))
    state = load_file(str(weights))
    state["lm_head.weight"] = state["transformer.wte.weight"]
    model.load_state_dict(state)
    return model.eval(), course_runs.run_record(folder)


COURSE_RUNS: dict[str, Callable[..., object]] = {
    name: (lambda *_, name=name: run(name)) for name in RUNS
}
"""Run name -> a function that builds the run if it is not cached (and returns its folder)."""


# --- command line ------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """``python -m llmcourse.prompting.scratchpad``: the cached comparison, or a new run."""
    parser = argparse.ArgumentParser(
        prog="python -m llmcourse.prompting.scratchpad",
        description="Multi-digit addition answered directly vs with a written scratchpad: two "
        "GPTs of the same size, the same problems and steps; accuracy by number of digits.",
    )
    parser.add_argument(
        "--preset", choices=PRESETS, default="tiny",
        help="recipe; 'tiny' (unchanged) is the course's cached pair of runs",
    )  # fmt: skip
    parser.add_argument("--steps", type=int, help="override the preset's steps")
    parser.add_argument("--max-digits", type=int, help="override the preset's max_digits")
    parser.add_argument("--device", help="override the preset's device (cpu, cuda, mps)")
    parser.add_argument("--show", metavar="A+B", help="also print both models' output for A+B")
    args = parser.parse_args(argv)
    changes = {"steps": args.steps, "max_digits": args.max_digits, "device": args.device}
    config = replace(PRESETS[args.preset], **{k: v for k, v in changes.items() if v is not None})
    show = None
    if args.show:
        a_text, _, b_text = args.show.partition("+")
        if not (a_text.isdigit() and b_text.isdigit()):
            parser.error(f"--show needs two non-negative integers as A+B, got {args.show!r}")
        show = (int(a_text), int(b_text))
    results = {}
    try:
        for name, fmt in RUNS.items():
            if config == PRESETS["tiny"]:
                model, record = load_run(name)
            else:
                model, record = train_adder(config, fmt, progress=True)
            results[fmt] = (model.cpu(), record)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    digits = list(results["direct"][1]["accuracy"])
    print("exact answers on held-out problems, by digits per operand "
          f"(training: 1..{config.max_digits})")  # fmt: skip
    print(f"{'format':<11}" + "".join(f"{d:>7}" for d in digits) + f"{'tokens seen':>14}")
    for fmt, (_, record) in results.items():
        acc = record["accuracy"]
        print(f"{fmt:<11}" + "".join(f"{acc[d]:>7.0%}" for d in digits)
              + f"{record['tokens_seen']['tokens']:>14,}")  # fmt: skip
    if show is not None:
        for fmt, (model, _) in results.items():
            print(f"{fmt:<11} {prompt_text(*show)}{solve(model, [show], fmt)[0]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
