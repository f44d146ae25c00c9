"""The evaluation harness: run checkpoints over suites of offline tasks and compare them.

A *suite* is one way of asking a model what it can do; each returns named scores, every score
with a 95 % bootstrap interval over the items it averages (``Score``):

* ``perplexity``: bits per byte on held-out text, the same bytes for every model (the base's
  ``val.bin``, split into its two sources, and the 400 held-out examples written as
  pretraining documents, one stream per task). Perplexities are comparable only over the same
  text and the same tokenizer; bits per byte, ``BPB = sum_t -log2 p(x_t | x_<t) / n_bytes``,
  divides by the bytes of the text instead of the tokens, so it is comparable across
  tokenizers as well. The interval is over windows of ``seq_len`` tokens.
* ``exact_match``: the greedy answer equals the reference, per instruction type, on
  chapter 9's 400 held-out examples; chat models are asked with the chat template, a base
  model in the plain ``### Instruction: / ### Response:`` format it was pretrained on.
* ``multiple_choice``: new instructions of five kinds, each with four candidate answers
  (the right one and three near misses); the model *writes* nothing, each option is scored
  by its log-likelihood as the answer, ``sum_t log p(o_t | prompt, o_<t)`` (the end marker
  included), and the highest wins. Summed log-likelihood favours short options (every token
  costs probability); the length-normalised score divides by the option's token count. Both
  accuracies are reported.
* ``pass_at_k``: ``n`` answers sampled at temperature 0.8 per addition prompt; with ``c``
  right, the unbiased ``pass@k = 1 - C(n - c, k) / C(n, k)`` (Chen et al., 2021) estimates
  the chance that at least one of ``k`` samples is right, averaged over the prompts.

``evaluate_checkpoint(name_or_folder, suites)`` runs one checkpoint (a course name or a
folder), ``compare(names, suites)`` several, with ``Comparison.markdown()`` (the side-by-side
table), ``.save_json(path)`` and ``.figure()``; ``cached_compare`` keeps a comparison's JSON
under ``cache_dir()/evaluations/``, keyed by the checkpoints' weights and the settings.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import random
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from llmcourse.data import cache_dir
from llmcourse.evaluate.metrics import bootstrap_ci, pass_at_k
from llmcourse.evaluate.perplexity import bits_per_byte, perplexity
from llmcourse.generate import GenerationConfig, generate
from llmcourse.sft.data import Example, build_splits
from llmcourse.sft.evaluate import answers, plain_prompt
from llmcourse.sft.template import ChatTemplate, ChatTokenizer

HARNESS_VERSION = 1
"""Part of the cache key: bump it when a suite changes what it measures."""

BASE_NAMES = ("gpt-tiny-tasks",)
COURSE_CHECKPOINTS = ("gpt-tiny-tasks", "gpt-tiny-sft", "gpt-tiny-ppo", "gpt-tiny-dpo",
                      "gpt-tiny-grpo")  # fmt: skip
"""The course checkpoints the chapter compares: the base, SFT, and the three RLHF runs."""


# --------------------------------------------------------------------------------------------
# Settings, scores, checkpoints
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SuiteConfig:
    """The sizes and seeds of the suites (the ``course`` preset; ``tiny`` for tests)."""

    n_heldout: int = 400  # chapter 9's held-out examples (exact match, per-task perplexity)
    ppl_tokens: int = 8192  # tokens of val.bin scored per source
    seq_len: int | None = None  # perplexity windows; None: the model's context
    mc_per_kind: int = 40  # multiple-choice questions per kind
    passk_prompts: int = 20  # addition prompts for pass@k
    passk_samples: int = 10  # samples per prompt (n)
    passk_ks: tuple[int, ...] = (1, 5, 10)
    temperature: float = 0.8
    max_new_tokens: int = 40
    n_resamples: int = 1000  # bootstrap resamples
    seed: int = 0

    def replace(self, **changes: Any) -> SuiteConfig:
        return dataclasses.replace(self, **changes)


PRESETS = {
    "course": SuiteConfig(),
    "tiny": SuiteConfig(
        n_heldout=24, ppl_tokens=1024, seq_len=32, mc_per_kind=4, passk_prompts=3,
        passk_samples=4, passk_ks=(1, 2), max_new_tokens=8, n_resamples=200,
    ),
}  # fmt: skip


@dataclass(frozen=True)
class Score:
    """A mean over ``n`` items with its bootstrap interval ``[low, high]``."""

    value: float
    low: float
    high: float
    n: int

    def as_dict(self) -> dict[str, float | int]:
        return dataclasses.asdict(self)


def score_of(values: Sequence[float], config: SuiteConfig) -> Score:
    """The mean of ``values`` with a 95 % bootstrap interval (a single value: no interval)."""
    v = np.asarray(values, dtype=float)
    if v.size == 0:
        raise ValueError("no values to score")
    if v.size == 1:
        return Score(float(v[0]), float(v[0]), float(v[0]), 1)
    low, high = bootstrap_ci(v, n_resamples=config.n_resamples, seed=config.seed)
    return Score(float(v.mean()), float(low), float(high), int(v.size))


@dataclass
class Checkpoint:
    """A model ready for the suites. ``chat``: asked with the chat template (a fine-tuned
    model) or in the plain pretraining format (a base). ``tokenizer`` is a ``ChatTokenizer``
    either way (a base's has ids for the chat tokens it never uses)."""

    name: str
    model: nn.Module
    tokenizer: ChatTokenizer
    chat: bool
    provenance: str = field(default="")

    @property
    def style(self) -> str:
        return "template" if self.chat else "plain"


def weights_hash(model: nn.Module) -> str:
    """A short SHA-256 of the model's state dict: what the cache key of a result uses."""
    h = hashlib.sha256()
    for key, value in sorted(model.state_dict().items()):
        h.update(key.encode())
        h.update(value.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def load_checkpoint(name_or_folder: str | Path) -> Checkpoint:
    """A course checkpoint by name (a base of ``course_models``, a fine-tuned one of
    ``llmcourse.sft``, a policy of ``llmcourse.rlhf``) or a folder (a fine-tuned folder with a
    ``chat_tokenizer.json``, else a trained base), on the CPU in eval mode."""
    from llmcourse import course_models
    from llmcourse.causal_lm import load_trained
    from llmcourse.rlhf.course import RECIPES as RLHF_RECIPES
    from llmcourse.rlhf.course import load_rlhf
    from llmcourse.sft.train import RECIPES as SFT_RECIPES
    from llmcourse.sft.train import load_chat_model, load_sft

    name = str(name_or_folder)
    if name in course_models.RECIPES:
        model, tok = course_models.load(name, device="cpu")
        ckpt = Checkpoint(name, model, ChatTokenizer(tok), chat=False)
    elif name in SFT_RECIPES:
        ckpt = Checkpoint(name, *load_sft(name), chat=True)
    elif name in RLHF_RECIPES:
        if name.endswith("-rm"):
            raise ValueError(f"{name} is a reward model, not a language model to evaluate")
        ckpt = Checkpoint(name, *load_rlhf(name), chat=True)
    elif Path(name).is_dir():
        folder = Path(name)
        if (folder / "chat_tokenizer.json").is_file():
            ckpt = Checkpoint(folder.name, *load_chat_model(folder), chat=True)
        else:
            model, tok = load_trained(folder)
            ckpt = Checkpoint(folder.name, model, ChatTokenizer(tok), chat=False)
    else:
        known = [*course_models.RECIPES, *SFT_RECIPES, *RLHF_RECIPES]
        raise ValueError(
            f"{name!r} is neither a folder nor a course checkpoint ({', '.join(known)})"
        )
    ckpt.model.eval()
    ckpt.provenance = weights_hash(ckpt.model)
    return ckpt


def heldout_examples(config: SuiteConfig) -> list[Example]:
    """Chapter 9's held-out examples (the first ``n_heldout`` of the 400)."""
    return build_splits(6000, 400, 1)[1][: config.n_heldout]


# --------------------------------------------------------------------------------------------
# Perplexity
# --------------------------------------------------------------------------------------------


def pretraining_documents() -> dict[str, list[str]]:
    """The documents of the base's ``val.bin``, grouped by source (``instructions`` blocks
    start with ``### Instruction:``, the rest are ``arithmetic`` lines)."""
    from llmcourse.sft.train import pretraining_tokens

    _, val = pretraining_tokens("gpt-tiny-tasks")
    ids = val.tolist()
    docs: dict[str, list[str]] = defaultdict(list)
    start = 0
    for i, token in enumerate([*ids, 256]):
        if token == 256:
            if i > start:
                text = bytes(ids[start:i]).decode("utf-8", errors="replace")
                kind = "instructions" if text.startswith("### Instruction:") else "arithmetic"
                docs[kind].append(text)
            start = i + 1
    return dict(docs)


def task_documents(examples: Sequence[Example]) -> dict[str, list[str]]:
    """Each held-out example as a pretraining document (``plain_prompt`` + answer), by task."""
    docs: dict[str, list[str]] = defaultdict(list)
    for e in examples:
        docs[e.task].append(plain_prompt(e) + e.answer)
    return dict(sorted(docs.items()))


def stream_of(tok: ChatTokenizer, documents: Sequence[str], max_tokens: int | None = None
              ) -> tuple[torch.Tensor, int]:  # fmt: skip
    """``(ids, n_bytes)``: the documents encoded one after another, each followed by the base's
    end-of-text id where it has one, cut to ``max_tokens``; ``n_bytes`` counts the UTF-8 bytes
    of the text the kept tokens stand for."""
    eot = getattr(tok.base, "eot_token", None)
    ids: list[int] = []
    n_bytes = 0
    for text in documents:
        piece = tok.encode_ordinary(text) + ([eot] if eot is not None else [])
        if max_tokens is not None and len(ids) + len(piece) > max_tokens:
            break
        ids += piece
        n_bytes += len(text.encode("utf-8"))
    if not ids:
        raise ValueError("no document fits in max_tokens")
    return torch.tensor(ids, dtype=torch.long), n_bytes


@torch.no_grad()
def window_nats(model: nn.Module, ids: torch.Tensor, seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    """``(nats, tokens)`` per window: the summed cross-entropy of each non-overlapping window
    of ``seq_len`` predictions (the last id of one window is the first of the next, so every
    id but the first is scored once) and its token count; a bootstrap resamples windows."""
    out, counts = [], []
    for start in range(0, len(ids) - 1, seq_len):
        chunk = ids[start : start + seq_len + 1][None]
        if chunk.shape[1] < 2:
            break
        logits = model(chunk[:, :-1]).float()
        loss = torch.nn.functional.cross_entropy(logits[0], chunk[0, 1:], reduction="sum")
        out.append(float(loss))
        counts.append(chunk.shape[1] - 1)
    return np.asarray(out), np.asarray(counts)


def perplexity_suite(ckpt: Checkpoint, config: SuiteConfig) -> dict[str, Score]:
    """Bits per byte on val.bin's sources and on the held-out examples' documents per task;
    ``ppl:*`` the token perplexity of val.bin (see the module docstring)."""
    seq_len = config.seq_len or ckpt.model.max_seq_len
    corpora = {f"val:{k}": v for k, v in sorted(pretraining_documents().items())}
    corpora |= {f"task:{k}": v for k, v in task_documents(heldout_examples(config)).items()}
    out: dict[str, Score] = {}
    for label, docs in corpora.items():
        ids, n_bytes = stream_of(ckpt.tokenizer, docs, config.ppl_tokens)
        nats, tokens = window_nats(ckpt.model, ids, seq_len)
        bytes_per_token = n_bytes / tokens.sum()
        s = score_of(nats / tokens / math.log(2) / bytes_per_token, config)
        bpb = bits_per_byte(ckpt.model, ids, n_bytes, seq_len=seq_len)
        out[f"bpb:{label}"] = Score(float(bpb), s.low, s.high, s.n)
        if label.startswith("val:"):
            ppl = perplexity(ckpt.model, ids, seq_len=seq_len)
            out[f"ppl:{label}"] = Score(float(ppl), float(ppl), float(ppl), s.n)
    return out


# --------------------------------------------------------------------------------------------
# Exact match
# --------------------------------------------------------------------------------------------


def correct(predictions: Sequence[str], examples: Sequence[Example]) -> list[bool]:
    """Each prediction equals its example's answer (surrounding spaces stripped)."""
    return [p.strip() == e.answer.strip() for p, e in zip(predictions, examples, strict=True)]


def scores_by_task(hits: Sequence[bool], examples: Sequence[Example], config: SuiteConfig
                   ) -> dict[str, Score]:  # fmt: skip
    """The share of hits per task and over all (``"all"``), with intervals."""
    by: dict[str, list[float]] = defaultdict(list)
    for ok, e in zip(hits, examples, strict=True):
        by[e.task].append(float(ok))
        by["all"].append(float(ok))
    return {task: score_of(v, config) for task, v in sorted(by.items())}


def exact_match_suite(ckpt: Checkpoint, config: SuiteConfig) -> dict[str, Score]:
    """Greedy exact match per instruction type on the held-out examples."""
    examples = heldout_examples(config)
    got = answers(ckpt.model, ckpt.tokenizer, examples, ckpt.style, config.max_new_tokens)
    return scores_by_task(correct(got, examples), examples, config)


# --------------------------------------------------------------------------------------------
# Multiple choice
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Question:
    """A prompt, its options and the index of the right one."""

    kind: str
    prompt: str
    options: tuple[str, ...]
    answer: int


def _word(rng: random.Random, low: int = 4, high: int = 7) -> str:
    return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(low, high)))


def _distinct(right: str, wrong: Sequence[str], rng: random.Random, word: str) -> list[str]:
    """``right`` then three different wrong options (filled with shuffles if some collide)."""
    options = [right]
    for w in wrong:
        if w not in options:
            options.append(w)
    while len(options) < 4:
        shuffled = "".join(rng.sample(word, len(word)))
        if shuffled not in options:
            options.append(shuffled)
    return options[:4]


def multiple_choice_questions(per_kind: int, seed: int = 0) -> list[Question]:
    """``per_kind`` generated questions of each kind (``reverse``, ``capitals``, ``sort``,
    ``add``, ``repeat``), worded as the course's instructions, four options each, the right
    one at a random place. The wrong
    options are near misses: the word itself, one letter changed, a wrong count of repeats.
    The words and numbers come from a seed the course's data never used (1000 + seed)."""
    rng = random.Random(1000 + seed)
    out: list[Question] = []
    for kind in ("reverse", "capitals", "sort", "add", "repeat"):
        for _ in range(per_kind):
            w = _word(rng)
            if kind == "reverse":
                prompt, right = f'Reverse the word "{w}".', w[::-1]
                wrong = [w, w[::-1][1:] + w[::-1][0], w[::-1][:-1]]
            elif kind == "capitals":
                prompt, right = f'Write "{w}" in capital letters.', w.upper()
                wrong = [w, w[::-1].upper(), w[0].upper() + w[1:]]
            elif kind == "sort":
                prompt, right = f'Sort the letters of "{w}" alphabetically.', "".join(sorted(w))
                wrong = ["".join(sorted(w, reverse=True)), w, "".join(sorted(w))[1:]]
            elif kind == "add":
                a, b = rng.randint(0, 99), rng.randint(0, 99)
                prompt, right = f"What is {a} plus {b}?", str(a + b)
                wrong = [str(a + b + 1), str(a + b + 10), str(abs(a - b))]
            else:
                k = rng.randint(2, 4)
                prompt, right = f'Repeat "{w}" {k} times, separated by spaces.', " ".join([w] * k)
                wrong = [" ".join([w] * j) for j in (1, 2, 3, 4, 5) if j != k][:3]
            options = _distinct(right, wrong, rng, w)
            order = rng.sample(range(4), 4)
            shuffled = tuple(options[i] for i in order)
            out.append(Question(kind, prompt, shuffled, order.index(0)))
    return out


def _prompt_ids(ckpt: Checkpoint, prompt: str) -> list[int]:
    example = Example((("user", prompt), ("assistant", "")), "")
    if ckpt.chat:
        return ChatTemplate().prompt_ids(ckpt.tokenizer, example.prompt)
    return ckpt.tokenizer.encode_ordinary(plain_prompt(example))


def _end_id(ckpt: Checkpoint) -> int:
    """The token that ends an answer: ``<|end|>`` for chat models, the base's end-of-text
    (or a line break when it has none) for a base."""
    if ckpt.chat:
        return ckpt.tokenizer.token_id(ChatTemplate().end)
    eot = getattr(ckpt.tokenizer.base, "eot_token", None)
    return eot if eot is not None else ckpt.tokenizer.encode_ordinary("\n")[0]


@torch.no_grad()
def option_logprobs(
    ckpt: Checkpoint, questions: Sequence[Question], batch_size: int = 128
) -> list[list[tuple[float, int]]]:
    """For each question and option: ``(sum of log p over the option's tokens and the end
    marker, that token count)``, the option written after the prompt as the answer."""
    from llmcourse.rlhf.logprobs import sequence_logprobs

    rows, masks, where = [], [], []
    room = ckpt.model.max_seq_len
    end = _end_id(ckpt)
    for qi, q in enumerate(questions):
        prompt = _prompt_ids(ckpt, q.prompt)
        for option in q.options:
            answer = [*ckpt.tokenizer.encode_ordinary(option), end]
            ids = (prompt + answer)[-room:]
            n = min(len(answer), len(ids) - 1)
            rows.append(ids)
            masks.append([False] * (len(ids) - n) + [True] * n)
            where.append(qi)
    out: list[list[tuple[float, int]]] = [[] for _ in questions]
    for start in range(0, len(rows), batch_size):
        chunk = range(start, min(start + batch_size, len(rows)))
        width = max(len(rows[i]) for i in chunk)
        ids = torch.tensor([rows[i] + [end] * (width - len(rows[i])) for i in chunk])
        mask = torch.tensor([masks[i] + [False] * (width - len(masks[i])) for i in chunk])
        logp = sequence_logprobs(ckpt.model, ids, mask)
        for i, lp in zip(chunk, logp.tolist(), strict=True):
            out[where[i]].append((lp, sum(masks[i])))
    return out


def choose(scored: Sequence[tuple[float, int]], normalise: bool) -> int:
    """The option with the highest log-likelihood, per token when ``normalise``."""
    values = [lp / n if normalise else lp for lp, n in scored]
    return int(np.argmax(values))


def multiple_choice_suite(ckpt: Checkpoint, config: SuiteConfig) -> dict[str, Score]:
    """Accuracy per kind and over all, by summed (``sum:*``) and length-normalised
    (``norm:*``) log-likelihood; chance is 25 %."""
    questions = multiple_choice_questions(config.mc_per_kind, config.seed)
    scored = option_logprobs(ckpt, questions)
    out: dict[str, Score] = {}
    for mode, normalise in (("sum", False), ("norm", True)):
        by: dict[str, list[float]] = defaultdict(list)
        for q, s in zip(questions, scored, strict=True):
            ok = float(choose(s, normalise) == q.answer)
            by[q.kind].append(ok)
            by["all"].append(ok)
        out |= {f"{mode}:{k}": score_of(v, config) for k, v in sorted(by.items())}
    return out


# --------------------------------------------------------------------------------------------
# pass@k
# --------------------------------------------------------------------------------------------


@torch.no_grad()
def sample_answers(
    ckpt: Checkpoint, examples: Sequence[Example], n: int, temperature: float,
    max_new_tokens: int, seed: int,
) -> list[list[str]]:  # fmt: skip
    """``n`` sampled answers per example, in the checkpoint's prompt style; the distribution
    is restricted to the tokenizer's ids and each answer ends at its end marker (and, in the
    plain style, at its first line break, as ``sft.answers`` reads a base's answer)."""
    from llmcourse.rlhf.rollout import VocabLimited

    model = VocabLimited(ckpt.model, ckpt.tokenizer.n_vocab)
    end = _end_id(ckpt)
    room = ckpt.model.max_seq_len - max_new_tokens
    out: list[list[str]] = []
    for i, e in enumerate(examples):
        if ckpt.chat:
            prompt = ChatTemplate().prompt_ids(ckpt.tokenizer, e.prompt)
        else:
            prompt = ckpt.tokenizer.encode_ordinary(plain_prompt(e))
        batch = torch.tensor([prompt[-room:]] * n)
        config = GenerationConfig(max_new_tokens=max_new_tokens, temperature=temperature,
                                  stop_ids=(end,), seed=seed * 100_003 + i)  # fmt: skip
        new = generate(model, batch, config)[:, batch.shape[1] :].tolist()
        texts = []
        for ids in new:
            ids = ids[: ids.index(end)] if end in ids else ids
            text = ckpt.tokenizer.decode(ids)
            texts.append(text if ckpt.chat else text.split("\n")[0])
        out.append(texts)
    return out


def passk_examples(config: SuiteConfig) -> list[Example]:
    """The held-out addition prompts (``add``: "What is a plus b?") for pass@k."""
    adds = [e for e in build_splits(6000, 400, 1)[1] if e.task == "add"]
    return adds[: config.passk_prompts]


def pass_at_k_suite(ckpt: Checkpoint, config: SuiteConfig) -> dict[str, Score]:
    """Mean unbiased pass@k over the addition prompts, for each ``k`` in ``passk_ks``."""
    examples = passk_examples(config)
    samples = sample_answers(ckpt, examples, config.passk_samples, config.temperature,
                             config.max_new_tokens, config.seed)  # fmt: skip
    right = [sum(correct(s, [e] * len(s))) for s, e in zip(samples, examples, strict=True)]
    n = config.passk_samples
    return {
        f"pass@{k}": score_of([pass_at_k(n, c, k) for c in right], config)
        for k in config.passk_ks
        if k <= n
    }


# --------------------------------------------------------------------------------------------
# Running and comparing
# --------------------------------------------------------------------------------------------


SUITES: dict[str, Callable[[Checkpoint, SuiteConfig], dict[str, Score]]] = {
    "perplexity": perplexity_suite,
    "exact_match": exact_match_suite,
    "multiple_choice": multiple_choice_suite,
    "pass_at_k": pass_at_k_suite,
}
"""The suites by name: ``suite(checkpoint, config) -> {metric: Score}``."""

HEADLINE = {
    "perplexity": ("bpb:val:instructions", "bpb:val:arithmetic"),
    "exact_match": ("all",),
    "multiple_choice": ("sum:all", "norm:all"),
    "pass_at_k": ("pass@1", "pass@10"),
}
"""The scores of each suite that the side-by-side table shows (the JSON has them all)."""


def _check_suites(suites: Sequence[str]) -> list[str]:
    unknown = [s for s in suites if s not in SUITES]
    if unknown or not suites:
        raise ValueError(f"unknown suite(s) {unknown}: choose from {', '.join(SUITES)}")
    return list(suites)


def evaluate_checkpoint(
    name_or_folder: str | Path | Checkpoint,
    suites: Sequence[str] = tuple(SUITES),
    config: SuiteConfig | None = None,
) -> dict[str, Any]:
    """Run ``suites`` on one checkpoint: ``{"checkpoint", "provenance", "style",
    "suites": {suite: {metric: {value, low, high, n}}}, "seconds": {suite: s}}``."""
    config = config or PRESETS["course"]
    suites = _check_suites(suites)
    ckpt = name_or_folder
    if not isinstance(ckpt, Checkpoint):
        ckpt = load_checkpoint(ckpt)
    result: dict[str, Any] = {
        "checkpoint": ckpt.name,
        "provenance": ckpt.provenance,
        "style": ckpt.style,
        "suites": {},
        "seconds": {},
    }
    for suite in suites:
        began = time.perf_counter()
        scores = SUITES[suite](ckpt, config)
        result["suites"][suite] = {k: s.as_dict() for k, s in scores.items()}
        result["seconds"][suite] = round(time.perf_counter() - began, 2)
    return result


@dataclass
class Comparison:
    """Several checkpoints' results (``evaluate_checkpoint``'s dicts, by checkpoint name)."""

    results: dict[str, dict[str, Any]]
    config: SuiteConfig

    def score(self, checkpoint: str, suite: str, metric: str) -> dict[str, float] | None:
        return self.results[checkpoint]["suites"].get(suite, {}).get(metric)

    def columns(self) -> list[tuple[str, str]]:
        """The (suite, metric) pairs of the table: each suite's headline scores present."""
        cols: list[tuple[str, str]] = []
        for r in self.results.values():
            for suite, scores in r["suites"].items():
                for metric in HEADLINE.get(suite, ()):
                    if metric in scores and (suite, metric) not in cols:
                        cols.append((suite, metric))
        return cols

    def markdown(self, columns: Sequence[tuple[str, str]] | None = None) -> str:
        """The side-by-side table, one row per checkpoint, ``value [low, high]`` per cell
        (shares in %, bits per byte as they are)."""
        cols = list(columns or self.columns())
        head = "| checkpoint | " + " | ".join(f"{s} {m}" for s, m in cols) + " |"
        lines = [head, "|---" * (len(cols) + 1) + "|"]
        for name in self.results:
            cells = [_cell(self.score(name, s, m), percent=s != "perplexity") for s, m in cols]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        return {"version": HARNESS_VERSION, "config": dataclasses.asdict(self.config),
                "results": self.results}  # fmt: skip

    def save_json(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.as_dict(), indent=2) + "\n")
        return path

    @classmethod
    def load_json(cls, path: str | Path) -> Comparison:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
            config = SuiteConfig(
                **{**data["config"], "passk_ks": tuple(data["config"]["passk_ks"])}
            )
            return cls(data["results"], config)
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise ValueError(f"{path} is not a comparison written by save_json: {err}") from None

    def figure(self, columns: Sequence[tuple[str, str]] | None = None) -> Any:
        """Bars with their intervals: one panel per table column, one bar per checkpoint."""
        import matplotlib.pyplot as plt

        cols = list(columns or self.columns())
        names = list(self.results)
        fig, axes = plt.subplots(1, len(cols), figsize=(2.2 * len(cols) + 1, 3.2), squeeze=False)
        colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
        for ax, (suite, metric) in zip(axes[0], cols, strict=True):
            scale = 1 if suite == "perplexity" else 100
            for i, name in enumerate(names):
                s = self.score(name, suite, metric)
                if s is None:
                    continue
                err = [[scale * (s["value"] - s["low"])], [scale * (s["high"] - s["value"])]]
                ax.bar(i, scale * s["value"], yerr=err, capsize=3, color=colors[i % len(colors)])
            ax.set_xticks(range(len(names)), [n.removeprefix("gpt-tiny-") for n in names],
                          rotation=45, fontsize=8)  # fmt: skip
            ax.set_title(f"{suite}\n{metric}", fontsize=8)
            ax.set_ylabel("bits per byte" if suite == "perplexity" else "%", fontsize=8)
        fig.tight_layout()
        return fig


def _cell(s: dict[str, float] | None, percent: bool) -> str:
    if s is None:
        return "-"
    if percent:
        return f"{100 * s['value']:.0f} [{100 * s['low']:.0f}, {100 * s['high']:.0f}]"
    return f"{s['value']:.3f} [{s['low']:.3f}, {s['high']:.3f}]"


def compare(
    names: Sequence[str | Path], suites: Sequence[str] = tuple(SUITES),
    config: SuiteConfig | None = None,
) -> Comparison:  # fmt: skip
    """Every checkpoint over the same suites, side by side."""
    config = config or PRESETS["course"]
    suites = _check_suites(suites)
    checkpoints = [load_checkpoint(name) for name in names]  # every name checked first
    results: dict[str, dict[str, Any]] = {}
    for ckpt in checkpoints:
        r = evaluate_checkpoint(ckpt, suites, config)
        results[r["checkpoint"]] = r
    return Comparison(results, config)


def cache_key(names: Sequence[str | Path], suites: Sequence[str], config: SuiteConfig) -> str:
    """What decides a comparison: the checkpoints' weights, the suites, the settings."""
    weights = [load_checkpoint(n).provenance for n in names]
    spec = {"version": HARNESS_VERSION, "names": [str(n) for n in names], "weights": weights,
            "suites": list(suites), "config": dataclasses.asdict(config)}  # fmt: skip
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def cached_compare(
    names: Sequence[str | Path] = COURSE_CHECKPOINTS, suites: Sequence[str] = tuple(SUITES),
    config: SuiteConfig | None = None,
) -> Comparison:  # fmt: skip
    """``compare``, its JSON kept under ``cache_dir()/evaluations/<key>.json``: a later call
    with the same checkpoints' weights, suites and settings reads it back."""
    config = config or PRESETS["course"]
    path = cache_dir() / "evaluations" / f"{cache_key(names, suites, config)}.json"
    if path.is_file():
        try:
            return Comparison.load_json(path)
        except ValueError:
            pass  # damaged: evaluate again
    result = compare(names, suites, config)
    tmp = path.with_suffix(f".tmp{time.time_ns()}")
    result.save_json(tmp)
    tmp.replace(path)
    return result
