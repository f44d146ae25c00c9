"""In-context learning that emerges: a tiny GPT that infers a new function from its prompt.

A large language model given ``apple -> pomme, cat -> chat, dog ->`` answers ``chien``: it
picks up the task from examples in its context, with no gradient step. This module makes that
behaviour appear in a model small enough to train on one CPU thread in a few minutes, on a task
where it can only come from the context.

**The task.** Each training sequence draws its own function ``f``: a random *permutation*
mapping ``n`` input symbols ``a, b, c, ...`` one-to-one onto ``n`` output symbols ``A, B, C,
...``. The sequence is a run of queries, inputs drawn uniformly with replacement (so a
query's input may or may not have appeared before); after each query its answer is revealed
as a *shot*::

    <bos> c (c,F) a (a,B) c (c,F) e (e,A) ...      (f(c) = F, f(a) = B, c again, ...)

The model is trained to answer every query from everything before it: query ``k + 1`` is
answered with ``k`` shots. Since ``f`` is new in every sequence, weights alone can do no
better than chance, ``1/n``; everything above chance is inferred from the context. A shot is
one *pair token* ``(x, y)`` by default (``shot_tokens=1``), or two tokens, the input and then
the output, as text would write it (``shot_tokens=2``).

**The best possible predictor.** If the query's input already appeared among the ``k`` shots,
its output is known: accuracy 1. If not, the output is one of those not yet used (``f`` is a
permutation), each equally likely: accuracy ``1 / (n - d)`` with ``d`` the number of distinct
inputs seen. Averaged over sequences, the Bayes-optimal accuracy after ``k`` shots is about
``1 - (1 - 1/n)^k`` plus a little for the unseen queries; ``copy_only`` (1 when seen, ``1/n``
otherwise) is the same without the elimination of used outputs.

**Unseen functions.** ``heldout_functions`` draws a fixed set of permutations with a seed of
its own; ``training_functions`` rejects any of them, so every function the model is measured
on was never trained on (``accuracy_by_shots`` on them is in-context learning, not recall).

**Why it emerges, and when.** With pair tokens, one attention step solves the task: the
query attends to the shot whose input part equals its own and copies the output part. Both
halves have to form together (matching is useless without copying and the other way round),
so training sits on a plateau at the loss ``ln n`` of a uniform guess, then falls steeply;
``train_icl`` records accuracy by shots every ``eval_every`` steps to show it. Written as two
tokens, a shot first needs a head that moves each input into the position of its output (a
"previous-token head"), then the matching head: an *induction head* (Olsson et al., 2022),
whose plateau is longer still (the ``two-token`` preset). Large batches shorten the plateau
(Kirsch et al., 2022), which is why ``tiny`` uses 128 sequences a step. Garg et al. (2022)
trained Transformers in the same spirit on random linear functions and found in-context
predictions close to least squares, the optimal estimator there.

Run ``python -m llmcourse.prompting.icl --help``; ``load_icl()`` returns the course's cached
run ``gpt-tiny-icl``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from llmcourse import course_runs
from llmcourse.gpt import GPT, GPTConfig
from llmcourse.runtime import pick_device, seed_everything
from llmcourse.training import train

IGNORE = -100
RUN_NAME = "gpt-tiny-icl"
VERSION = 1
"""Bumped when code that the run's result depends on changes in a way its recipe does not show."""


@dataclass(frozen=True)
class ICLConfig:
    """The task (``n_symbols``, ``n_pairs`` per sequence, ``n_heldout`` unseen functions), the
    model (a ``GPT`` of ``n_layer`` x ``n_embd``) and its training (AdamW, warm-up then cosine
    decay to ``lr / 10``); ``eval_every`` steps the held-out accuracy by shots is recorded."""

    n_symbols: int = 6
    n_pairs: int = 12
    n_heldout: int = 100
    shot_tokens: int = 1
    repeat_prob: float = 0.0
    n_layer: int = 2
    n_head: int = 4
    n_embd: int = 64
    batch_size: int = 128
    steps: int = 1000
    lr: float = 3e-3
    warmup: int = 50
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    eval_every: int = 100
    eval_sequences: int = 1000
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        if not 2 <= self.n_symbols <= 15:
            raise ValueError(
                f"n_symbols must be in 2..15 (one key per int64), got {self.n_symbols}"
            )
        if self.shot_tokens not in (1, 2):
            raise ValueError(f"shot_tokens must be 1 or 2, got {self.shot_tokens}")
        for name in ("n_pairs", "n_heldout", "steps", "batch_size", "eval_sequences"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    def replace(self, **changes: Any) -> ICLConfig:
        return dataclasses.replace(self, **changes)

    @property
    def vocab_size(self) -> int:
        """Inputs ``0 .. n-1``, outputs ``n .. 2n-1``, ``<bos>`` = ``2n``, and with one token
        per shot the ``n^2`` pair tokens ``(x, y)`` = ``2n + 1 + x n + y``."""
        return 2 * self.n_symbols + 1 + (self.n_symbols**2 if self.shot_tokens == 1 else 0)

    @property
    def seq_len(self) -> int:
        """``<bos>`` and ``n_pairs`` pairs."""
        return 1 + 2 * self.n_pairs

    def gpt_config(self) -> GPTConfig:
        return GPTConfig(
            vocab_size=self.vocab_size, n_positions=self.seq_len, n_layer=self.n_layer,
            n_head=self.n_head, n_embd=self.n_embd,
        )  # fmt: skip


PRESETS: dict[str, ICLConfig] = {
    "micro": ICLConfig(
        n_symbols=5,
        n_pairs=8,
        n_heldout=10,
        n_layer=1,
        n_head=2,
        n_embd=16,
        batch_size=8,
        steps=20,
        eval_every=10,
        eval_sequences=32,
    ),
    "tiny": ICLConfig(),
    "small": ICLConfig(n_symbols=10, n_pairs=24, n_layer=3, n_embd=128, steps=3000),
    "two-token": ICLConfig(shot_tokens=2, repeat_prob=0.3, steps=5000),
}
"""``micro`` for tests; ``tiny`` is the course run ``gpt-tiny-icl``; ``small`` more symbols
and shots; ``two-token`` writes each shot as two tokens, which needs an induction head, and
repeats the previous input 30 % of the time, which makes its first half (copying the previous
token) pay on its own. In the course's trials on one CPU thread, two-token shots with batches
of 32 and no repeats stayed on the plateau for 5,000 steps; with this preset's data the loss
left it within about 1,000 steps and reached its floor after about 5,000 (four minutes)."""


# --------------------------------------------------------------------------------------------
# Data: random permutations, held-out ones never trained on
# --------------------------------------------------------------------------------------------


def function_keys(functions: torch.Tensor) -> torch.Tensor:
    """One int64 per permutation (its outputs read as a base-``n`` number), for set lookups."""
    n = functions.shape[-1]
    powers = n ** torch.arange(n, dtype=torch.int64)
    return (functions.long() * powers).sum(-1)


def random_permutations(count: int, n: int, generator: torch.Generator) -> torch.Tensor:
    """``count`` uniform random permutations of ``0 .. n-1`` as rows (``f[x]`` is ``f(x)``)."""
    return torch.argsort(torch.rand(count, n, generator=generator), dim=1)


def heldout_functions(config: ICLConfig) -> torch.Tensor:
    """The ``n_heldout`` distinct permutations kept for evaluation (their own seed)."""
    generator = torch.Generator().manual_seed(10_000 + config.seed)
    out, keys = [], set()
    while len(out) < config.n_heldout:
        f = random_permutations(1, config.n_symbols, generator)[0]
        key = int(function_keys(f))
        if key not in keys:
            keys.add(key)
            out.append(f)
    return torch.stack(out)


def training_functions(
    count: int, config: ICLConfig, heldout_keys: torch.Tensor, generator: torch.Generator
) -> torch.Tensor:
    """``count`` random permutations, none of them among the held-out ones (redrawn if so)."""
    functions = random_permutations(count, config.n_symbols, generator)
    while True:
        bad = torch.isin(function_keys(functions), heldout_keys)
        if not bad.any():
            return functions
        functions[bad] = random_permutations(int(bad.sum()), config.n_symbols, generator)


def make_sequences(
    functions: torch.Tensor,
    n_pairs: int,
    generator: torch.Generator,
    repeat_prob: float = 0.0,
    shot_tokens: int = 2,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token sequences ``<bos> x1 s1 ... xK sK`` for each row of ``functions`` (inputs drawn
    uniformly with replacement; with probability ``repeat_prob`` the previous input again)
    and their labels: the output ``y_i = f(x_i)`` at the position of ``x_i``, where the model
    answers the query, ``IGNORE`` elsewhere. After the query the shot ``s_i`` is revealed:
    the output token ``y_i`` (``shot_tokens=2``: a pair is two tokens, as in text) or the
    single pair token ``(x_i, y_i)`` (``shot_tokens=1``). Returns ``(inputs, labels)``, each
    ``(B, 2K)``: the sequence without its last token, and the labels."""
    batch, n = functions.shape
    xs = torch.randint(0, n, (batch, n_pairs), generator=generator)
    repeat = torch.rand(batch, n_pairs, generator=generator) < repeat_prob
    for i in range(1, n_pairs):  # with probability repeat_prob, the previous input again
        xs[:, i] = torch.where(repeat[:, i], xs[:, i - 1], xs[:, i])
    ys = torch.gather(functions, 1, xs) + n
    tokens = torch.empty(batch, 1 + 2 * n_pairs, dtype=torch.long)
    tokens[:, 0] = 2 * n
    tokens[:, 1::2] = xs
    tokens[:, 2::2] = ys if shot_tokens == 2 else 2 * n + 1 + xs * n + (ys - n)
    labels = torch.full((batch, 2 * n_pairs), IGNORE, dtype=torch.long)
    labels[:, 1::2] = ys  # position 2i - 1 holds x_i (<bos> is at 0); its next token is y_i
    return tokens[:, :-1], labels


def query_inputs(inputs: torch.Tensor) -> torch.Tensor:
    """The query inputs ``x_1 .. x_K`` of ``make_sequences``'s inputs, shape ``(B, K)``."""
    return inputs[:, 1::2]


def eval_batch(config: ICLConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """The fixed evaluation sequences: the held-out functions in turn, their own seed."""
    functions = heldout_functions(config)
    rows = functions[torch.arange(config.eval_sequences) % len(functions)]
    generator = torch.Generator().manual_seed(20_000 + config.seed)
    return make_sequences(rows, config.n_pairs, generator, shot_tokens=config.shot_tokens)


# --------------------------------------------------------------------------------------------
# Measuring: accuracy by number of shots, and the references
# --------------------------------------------------------------------------------------------


def seen_before(inputs: torch.Tensor) -> torch.Tensor:
    """``(B, K)`` booleans: was query ``i``'s input among the inputs of pairs ``1 .. i-1``?"""
    xs = query_inputs(inputs)
    same = xs.unsqueeze(2) == xs.unsqueeze(1)  # (B, i, j): x_i == x_j
    earlier = torch.ones(xs.shape[1], xs.shape[1], dtype=torch.bool).tril(-1)
    return (same & earlier).any(-1)


def reference_accuracy(inputs: torch.Tensor, n_symbols: int) -> dict[str, list[float]]:
    """Expected accuracy by shots of two ideal predictors on these sequences: ``bayes`` (the
    output when the input was seen, else a uniform guess among the outputs not yet used),
    ``copy_only`` (the output when seen, else a uniform guess among all ``n``), and
    ``chance`` (``1/n``)."""
    xs = query_inputs(inputs)
    seen = seen_before(inputs).float()
    one_hot = F.one_hot(xs, n_symbols)
    distinct = one_hot.cumsum(1).clamp(max=1).sum(-1).float()  # distinct inputs in 1 .. i
    distinct_before = torch.cat([torch.zeros_like(distinct[:, :1]), distinct[:, :-1]], dim=1)
    unused = (n_symbols - distinct_before).clamp(min=1)  # 1 when all were seen (no unseen)
    bayes = seen + (1 - seen) / unused
    copy = seen + (1 - seen) / n_symbols
    return {
        "bayes": bayes.mean(0).tolist(),
        "copy_only": copy.mean(0).tolist(),
        "chance": [1 / n_symbols] * xs.shape[1],
        "seen_share": seen.mean(0).tolist(),
    }


@torch.no_grad()
def predictions(model: nn.Module, inputs: torch.Tensor, n_symbols: int) -> torch.Tensor:
    """The model's answer to every query, ``(B, K)`` output symbols ``0 .. n-1``: the argmax
    over the output tokens only, at the positions of the query inputs."""
    device = next(model.parameters()).device
    logits = model(inputs.to(device))[:, 1::2, n_symbols : 2 * n_symbols]
    return logits.argmax(-1).cpu()


def accuracy_by_shots(
    model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor, n_symbols: int
) -> dict[str, list[float]]:
    """Accuracy of the model's answers by number of shots ``k = 0 .. K-1`` before the query:
    ``all`` queries, those whose input was ``seen`` among the shots, and ``unseen`` ones (NaN
    where a group is empty, e.g. ``seen`` at ``k = 0``)."""
    was_training = model.training
    model.eval()
    try:
        correct = (predictions(model, inputs, n_symbols) == labels[:, 1::2] - n_symbols).float()
    finally:
        model.train(was_training)
    seen = seen_before(inputs)

    def mean_where(mask: torch.Tensor) -> list[float]:
        counts, hits = mask.sum(0).tolist(), (correct * mask).sum(0).tolist()
        return [h / c if c else math.nan for h, c in zip(hits, counts, strict=True)]

    return {
        "all": correct.mean(0).tolist(),
        "seen": mean_where(seen),
        "unseen": mean_where(~seen),
    }


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------


def icl_loss(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Cross-entropy of the outputs given everything before them (inputs are not targets)."""
    inputs, labels = batch
    logits = model(inputs)
    return F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORE)


def lr_factor(step: int, config: ICLConfig) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to a tenth."""
    if step < config.warmup:
        return (step + 1) / config.warmup
    progress = (step - config.warmup) / max(1, config.steps - config.warmup)
    return 0.1 + 0.45 * (1 + math.cos(math.pi * min(1.0, progress)))


def train_icl(
    config: ICLConfig, progress: bool = False, metrics_path: str | Path | None = None
) -> tuple[GPT, dict[str, Any]]:
    """Train a GPT on the task; returns it (eval mode, on the CPU) and a record: the loss
    curve, held-out accuracy by shots every ``eval_every`` steps (``during``) and at the end
    (``accuracy``: all, seen and unseen queries) with the ``reference`` predictors, the
    chance loss ``ln n``, the training time and the number of parameters."""
    seed_everything(config.seed)
    device = pick_device(config.device)
    model = GPT(config.gpt_config()).to(device)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": rest}],
        lr=config.lr, betas=(0.9, 0.98), fused=device.type == "cuda",
    )  # fmt: skip
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, config))
    heldout_keys = function_keys(heldout_functions(config))
    eval_inputs, eval_labels = eval_batch(config)
    during: list[dict[str, Any]] = [
        {"step": 0, "accuracy": accuracy_by_shots(model, eval_inputs, eval_labels,
                                                  config.n_symbols)["all"]}
    ]  # fmt: skip

    def next_batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
        generator = torch.Generator().manual_seed(config.seed * 1_000_003 + step)
        functions = training_functions(config.batch_size, config, heldout_keys, generator)
        inputs, labels = make_sequences(
            functions, config.n_pairs, generator, config.repeat_prob, config.shot_tokens
        )
        return inputs.to(device), labels.to(device)

    def evaluate(m: nn.Module) -> dict[str, float]:
        acc = accuracy_by_shots(m, eval_inputs, eval_labels, config.n_symbols)["all"]
        during.append({"step": scheduler.last_epoch, "accuracy": acc})
        return {"heldout_accuracy": sum(acc) / len(acc)}

    began = time.perf_counter()
    history = train(
        model, optimizer, next_batch, icl_loss, config.steps, evaluate=evaluate,
        eval_every=config.eval_every, log_every=10, grad_clip=config.grad_clip,
        metrics_path=metrics_path, progress=progress, scheduler=scheduler,
    )  # fmt: skip
    seconds = time.perf_counter() - began
    model = model.cpu().eval()
    final = accuracy_by_shots(model, eval_inputs, eval_labels, config.n_symbols)
    record = {
        "history": {"step": history["step"], "train_loss": history["train_loss"]},
        "during": during,
        "accuracy": final,
        "reference": reference_accuracy(eval_inputs, config.n_symbols),
        "chance_loss": math.log(config.n_symbols),
        "train_seconds": round(seconds, 1),
        "parameters": model.num_params(),
    }
    return model, record


# --------------------------------------------------------------------------------------------
# The course run
# --------------------------------------------------------------------------------------------


def _build(config: ICLConfig) -> Callable[[Path], dict[str, Any]]:
    def build(out: Path) -> dict[str, Any]:
        from safetensors.torch import save_file

        model, record = train_icl(config)
        state = {k: v.contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"}
        save_file(state, str(out / "model.safetensors"))
        return record

    return build


def load_icl(name: str = RUN_NAME, config: ICLConfig | None = None) -> tuple[GPT, dict[str, Any]]:
    """The cached run ``name`` (trained on first use by ``config``, default the ``tiny``
    preset): its GPT in eval mode on the CPU and its record (``course_runs.run_record``)."""
    from safetensors.torch import load_file

    config = config or PRESETS["tiny"]
    provenance = {
        "version": VERSION,
        "recipe": asdict(config),
        "torch": course_runs.torch_version(),
    }
    folder = course_runs.cached_run(name, provenance, _build(config))
    model = GPT(config.gpt_config())
    try:
        state = load_file(str(folder / "model.safetensors"))
    except Exception as err:  # safetensors raises its own error type for a corrupt header
        raise RuntimeError(
            f"the cached run {folder} is damaged ({err}): delete the folder to retrain it"
        ) from None
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or set(missing) != {"lm_head.weight"}:
        raise RuntimeError(f"{folder} does not match the recipe: missing {missing}, "
                           f"unexpected {unexpected}; delete the folder to retrain")  # fmt: skip
    return model.eval(), course_runs.run_record(folder)


COURSE_RUNS: dict[str, Callable[..., object]] = {RUN_NAME: load_icl}
"""Run name -> a function that builds it if it is not cached (``course_models --all``)."""


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def format_curve(record: dict[str, Any], every: int = 4) -> str:
    """A text table of accuracy by shots: the model, the Bayes optimum, copy-only, chance."""
    acc, ref = record["accuracy"], record["reference"]
    lines = [f"{'shots':>5} {'model':>7} {'seen':>7} {'unseen':>7} {'bayes':>7} {'copy':>7}"]
    for k in range(0, len(acc["all"]), every):
        lines.append(
            f"{k:>5} {acc['all'][k]:>7.3f} {acc['seen'][k]:>7.3f} {acc['unseen'][k]:>7.3f} "
            f"{ref['bayes'][k]:>7.3f} {ref['copy_only'][k]:>7.3f}"
        )
    lines.append(f"chance {ref['chance'][0]:.3f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m llmcourse.prompting.icl",
        description="Train a tiny GPT on sequences of input/output pairs of a new random "
        "permutation each, and print its accuracy by number of shots on held-out functions.",
    )
    parser.add_argument("--preset", default="tiny", choices=list(PRESETS))
    parser.add_argument("--steps", type=int, help="override the preset's steps")
    parser.add_argument("--seed", type=int, help="override the preset's seed")
    parser.add_argument("--device", help="cpu, cuda or mps (default: the preset's)")
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    parser.add_argument("--course-run", action="store_true",
                        help=f"load (or build once) the cached course run {RUN_NAME}")  # fmt: skip
    parser.add_argument("--out", type=Path, help="folder for model.safetensors and record.json")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.course_run:
        _, record = load_icl()
    else:
        changes = {k: getattr(args, k) for k in ("steps", "seed", "device")}
        config = PRESETS[args.preset].replace(**{k: v for k, v in changes.items() if v is not None})
        try:
            model, record = train_icl(config, progress=sys.stderr.isatty())
        except ValueError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        if args.out:
            from safetensors.torch import save_file

            args.out.mkdir(parents=True, exist_ok=True)
            state = {k: v.contiguous() for k, v in model.state_dict().items()
                     if k != "lm_head.weight"}  # fmt: skip
            save_file(state, str(args.out / "model.safetensors"))
            (args.out / "record.json").write_text(json.dumps(record, indent=2), encoding="utf-8")
    loss = record["history"]["train_loss"]
    print(f"loss {loss[0]:.3f} -> {loss[-1]:.3f} (chance {record['chance_loss']:.3f}), "
          f"{record['train_seconds']} s")  # fmt: skip
    print(format_curve(record))
    return 0


if __name__ == "__main__":
    sys.exit(main())
