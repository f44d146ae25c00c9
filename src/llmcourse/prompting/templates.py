"""Prompt templates, few-shot prompts, and what they do to a small model's answers.

A *prompt* is all the text a model conditions on before it answers. A *template* decides how
a question and its answer are written (``### Instruction:`` blocks, ``Q:``/``A:`` lines, chat
turns, ...). *Zero-shot* prompting gives the question alone; *few-shot* prompting (Brown et
al., 2020, "Language Models are Few-Shot Learners") puts ``k`` worked examples, the *shots*,
before it, written in the same template, so the model can pick up the format and the task
from its context::

    Q: Reverse the word "abc".       <- shot 1
    A: cba

    Q: Reverse the word "tcfut".     <- the query; the model writes the rest
    A:

``PromptTemplate`` holds one way of writing; ``few_shot_prompt(shots, query, template)``
builds the text; ``choose_shots`` draws the shots (same task, seeded, never the query itself
and never from the held-out set); ``encode_prompt`` turns the text into ids, special tokens
included. Shots cost context: with the byte tokenizer of the course models one worked example
is 30 to 90 tokens, so a 128-token window holds the query and only a few shots;
``exact_match_by_shots`` counts the tokens of every prompt with its reference answer and
measures only those that fit, and says how many did not.

``shots_run()`` is the course's cached run ``prompting-shots``: the exact match of
``gpt-tiny-tasks`` (plain templates) and ``gpt-tiny-sft`` (its chat template) on chapter 9's
held-out questions, by number of shots and by template. ``python -m
llmcourse.prompting.templates --help`` shows a prompt or prints the run's tables.
"""

from __future__ import annotations

import argparse
import random
import sys
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import regex
import torch
from torch import nn

from llmcourse import course_runs
from llmcourse.generate import GenerationConfig, generate
from llmcourse.sft.data import Example

RUN_NAME = "prompting-shots"
VERSION = 1
"""Bumped when code that the run's result depends on changes in a way its recipe does not show."""


@dataclass(frozen=True)
class PromptTemplate:
    """How a conversation is written as text.

    ``turn`` writes one question/answer exchange: it holds ``{question}`` and then
    ``{answer}``; a query is the turn cut just before ``{answer}``, so the model's
    continuation is the answer. ``turn_separator`` joins the exchanges of one conversation
    (a dialogue), ``shot_separator`` joins the worked examples and the query, ``header`` comes
    first (an instruction about the whole task, or nothing). The answer ends at the first of
    the ``stop`` strings (each one token of the tokenizer).
    """

    name: str
    turn: str
    turn_separator: str = "\n\n"
    shot_separator: str = "\n\n"
    stop: tuple[str, ...] = ("\n",)
    header: str = ""

    def __post_init__(self) -> None:
        q, a = self.turn.find("{question}"), self.turn.find("{answer}")
        if q < 0 or a < q:
            raise ValueError(f"template {self.name!r}: turn needs {{question}} then {{answer}}")

    def exchange(self, question: str, answer: str | None) -> str:
        """One turn; ``answer=None`` stops where the answer would begin."""
        head, tail = self.turn.split("{answer}", 1)
        head = head.replace("{question}", question)
        return head if answer is None else head + answer + tail

    def conversation(self, example: Example, with_answer: bool) -> str:
        """All exchanges of ``example``; the last one without its answer unless
        ``with_answer``."""
        messages = list(example.messages)
        roles = [r for r, _ in messages]
        if roles != ["user", "assistant"] * (len(roles) // 2) or not roles:
            raise ValueError(f"example is not user/assistant exchanges: {example.messages!r}")
        turns = []
        for i in range(0, len(messages), 2):
            last = i == len(messages) - 2
            answer = None if last and not with_answer else messages[i + 1][1]
            turns.append(self.exchange(messages[i][1], answer))
        return self.turn_separator.join(turns)


EOT = "<|endoftext|>"
TEMPLATES: dict[str, PromptTemplate] = {
    t.name: t
    for t in (
        # the pretraining corpus's format; each document ended with <|endoftext|>
        PromptTemplate(
            "instruction", "### Instruction:\n{question}\n### Response:\n{answer}",
            shot_separator=EOT, stop=("\n", EOT),
        ),
        # the same blocks, worked examples separated by a blank line instead
        PromptTemplate(
            "instruction-blank-line", "### Instruction:\n{question}\n### Response:\n{answer}",
            stop=("\n", EOT),
        ),
        PromptTemplate("qa", "Q: {question}\nA: {answer}", stop=("\n", EOT)),
        PromptTemplate("arrow", "{question} => {answer}", "\n", "\n", stop=("\n", EOT)),
        # chapter 9's chat template (ChatTemplate's rendering), for the fine-tuned models
        PromptTemplate(
            "chat", "<|user|>{question}<|end|>\n<|assistant|>{answer}<|end|>\n", "", "",
            stop=("<|end|>",),
        ),
    )
}  # fmt: skip
"""The templates measured: the base's own format, other wordings, and the chat template."""


def few_shot_prompt(
    shots: Sequence[Example], query: Example, template: PromptTemplate | str = "instruction"
) -> str:
    """The prompt text: ``header``, the worked ``shots`` with their answers, then ``query``
    without its final answer, joined by ``template.shot_separator``. Zero shots give the
    zero-shot prompt; a shot equal to the query is refused (it would give the answer away)."""
    template = TEMPLATES[template] if isinstance(template, str) else template
    for shot in shots:
        if shot.key == query.key:
            raise ValueError(f"a shot asks the query's own question: {query.key!r}")
    parts = [template.conversation(s, with_answer=True) for s in shots]
    parts.append(template.conversation(query, with_answer=False))
    return template.header + template.shot_separator.join(parts)


def choose_shots(
    pool: Sequence[Example],
    query: Example,
    k: int,
    seed: int = 0,
    heldout: Sequence[Example] = (),
) -> list[Example]:
    """``k`` worked examples for ``query``: single-exchange examples of the same task from
    ``pool``, never the query's own question nor any question of ``heldout``, drawn by a
    generator seeded by ``seed`` and the query (the same query gets the same shots, and the
    ``k`` shots are the first ``k`` of a larger draw)."""
    banned = {query.key} | {e.key for e in heldout}
    candidates = [e for e in pool if e.task == query.task and len(e.messages) == 2]
    candidates = [e for e in candidates if e.key not in banned]
    if len(candidates) < k:
        raise ValueError(f"only {len(candidates)} shots of task {query.task!r} for k = {k}")
    random.Random(f"{seed}|{query.key}").shuffle(candidates)
    return candidates[:k]


def special_tokens(tokenizer: Any) -> dict[str, int]:
    """The tokenizer's special tokens and those of its base (a ``ChatTokenizer``'s bytes)."""
    found = dict(getattr(getattr(tokenizer, "base", None), "special_tokens", {}) or {})
    return found | dict(getattr(tokenizer, "special_tokens", {}) or {})


def encode_prompt(tokenizer: Any, text: str) -> list[int]:
    """Ids of ``text``, special-token strings (``<|endoftext|>``, ``<|user|>``, ...) as their
    single ids, everything else as ordinary text."""
    specials = special_tokens(tokenizer)
    plain = getattr(tokenizer, "encode_ordinary", tokenizer.encode)
    if not specials:
        return plain(text)
    pattern = "|".join(regex.escape(s) for s in sorted(specials, key=len, reverse=True))
    ids: list[int] = []
    for piece in regex.split(f"({pattern})", text):
        if piece in specials:
            ids.append(specials[piece])
        elif piece:
            ids += plain(piece)
    return ids


def stop_ids(tokenizer: Any, template: PromptTemplate) -> tuple[int, ...]:
    """The token id of each of the template's stop strings (each must be one token)."""
    out = []
    for s in template.stop:
        ids = encode_prompt(tokenizer, s)
        if len(ids) != 1:
            raise ValueError(f"stop string {s!r} is {len(ids)} tokens, not one")
        out.append(ids[0])
    return tuple(out)


@torch.no_grad()
def greedy_answers(
    model: nn.Module,
    tokenizer: Any,
    prompts: Sequence[list[int]],
    stop: Sequence[int],
    max_new_tokens: int | Sequence[int] = 40,
    batch_size: int = 64,
) -> list[str]:
    """The greedy continuation of each prompt (ids) up to its first stop token, decoded and
    stripped. Prompts of equal length are generated as one batch; each may write at most
    ``max_new_tokens`` (one number, or one per prompt), and no further than the end of the
    context window."""
    window = model.max_seq_len
    if isinstance(max_new_tokens, int):
        max_new_tokens = [max_new_tokens] * len(prompts)
    if len(max_new_tokens) != len(prompts):
        raise ValueError(f"{len(max_new_tokens)} limits for {len(prompts)} prompts")
    by_length: dict[int, list[int]] = defaultdict(list)
    for i, p in enumerate(prompts):
        if not 0 < len(p) < window:
            raise ValueError(f"prompt {i} has {len(p)} tokens; the window holds {window}")
        by_length[len(p)].append(i)
    out = [""] * len(prompts)
    for length, indices in sorted(by_length.items()):
        for start in range(0, len(indices), batch_size):
            chunk = indices[start : start + batch_size]
            room = min(max(max_new_tokens[i] for i in chunk), window - length)
            config = GenerationConfig(max_new_tokens=room, temperature=0.0, stop_ids=tuple(stop))
            new = generate(model, torch.tensor([prompts[i] for i in chunk]), config)
            for i, ids in zip(chunk, new[:, length:].tolist(), strict=True):
                ids = ids[: max_new_tokens[i]]
                cut = next((j for j, t in enumerate(ids) if t in stop), len(ids))
                out[i] = tokenizer.decode(ids[:cut]).strip()
    return out


def exact_match_by_shots(
    model: nn.Module,
    tokenizer: Any,
    queries: Sequence[Example],
    pool: Sequence[Example],
    template: PromptTemplate | str,
    shots: Sequence[int] = (0, 1, 2, 4),
    seed: int = 0,
    max_new_tokens: int = 40,
) -> list[dict[str, Any]]:
    """Exact match per task and number of shots, one row each: ``task``, ``shots``, ``n``
    (queries of the task), ``fit`` (how many of their prompts, with the reference answer and
    its stop token, fit in the context window: only those are asked), ``exact_match`` over
    those (``None`` if none fits), and ``zero_shot_same`` (the zero-shot exact match of the
    same queries, for a fair comparison when the longer ones do not fit). A task ``"all"``
    sums the tasks."""
    template = TEMPLATES[template] if isinstance(template, str) else template
    shots = sorted(set(shots) | {0})
    stop = stop_ids(tokenizer, template)
    window = model.max_seq_len
    prompts: list[list[int]] = []
    limits: list[int] = []  # an answer longer than the reference's + 2 tokens is wrong anyway
    where: dict[tuple[int, int], int] = {}  # (query, k) -> index in prompts
    for qi, query in enumerate(queries):
        drawn = choose_shots(pool, query, max(shots), seed)
        answer = len(encode_prompt(tokenizer, query.answer))
        for k in shots:
            ids = encode_prompt(tokenizer, few_shot_prompt(drawn[:k], query, template))
            if len(ids) + answer + 1 <= window:
                where[qi, k] = len(prompts)
                prompts.append(ids)
                limits.append(min(max_new_tokens, answer + 2))
    got = greedy_answers(model, tokenizer, prompts, stop, limits)
    correct = {key: got[i] == queries[key[0]].answer.strip() for key, i in where.items()}
    by_task: dict[str, list[int]] = defaultdict(list)
    for qi, query in enumerate(queries):
        by_task[query.task].append(qi)
        by_task["all"].append(qi)
    rows = []
    for task, members in sorted(by_task.items()):
        for k in shots:
            fit = [qi for qi in members if (qi, k) in where]
            zero = [qi for qi in fit if (qi, 0) in where]
            rows.append({
                "template": template.name, "task": task, "shots": k, "n": len(members),
                "fit": len(fit),
                "exact_match": sum(correct[qi, k] for qi in fit) / len(fit) if fit else None,
                "zero_shot_same": sum(correct[qi, 0] for qi in zero) / len(zero) if zero else None,
            })  # fmt: skip
    return rows


def prompt_lengths(
    tokenizer: Any,
    queries: Sequence[Example],
    pool: Sequence[Example],
    template: PromptTemplate | str,
    k: int,
    seed: int = 0,
) -> list[int]:
    """Tokens of each query's ``k``-shot prompt plus its reference answer and stop token:
    what must fit in the context window."""
    out = []
    for query in queries:
        text = few_shot_prompt(choose_shots(pool, query, k, seed), query, template)
        out.append(
            len(encode_prompt(tokenizer, text)) + len(encode_prompt(tokenizer, query.answer)) + 1
        )
    return out


# --------------------------------------------------------------------------------------------
# The course run: exact match by shots and template on the course checkpoints
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ShotsRecipe:
    """What ``prompting-shots`` measures: chapter 9's held-out questions of the single-turn
    tasks (``build_splits(n_train, n_heldout, split_seed)``; the dialogues are left out: most
    overflow the window with no shot at all), shots drawn from its training split."""

    base_templates: tuple[str, ...] = ("instruction", "instruction-blank-line", "qa", "arrow")
    chat_templates: tuple[str, ...] = ("chat",)
    shots: tuple[int, ...] = (0, 1, 2, 4, 8)
    n_train: int = 6000
    n_heldout: int = 400
    split_seed: int = 1
    shot_seed: int = 0
    max_new_tokens: int = 40


def pool_and_queries(recipe: ShotsRecipe) -> tuple[list[Example], list[Example]]:
    """(the training split, where shots come from; the single-turn held-out questions)."""
    from llmcourse.sft import build_splits

    train, heldout = build_splits(recipe.n_train, recipe.n_heldout, recipe.split_seed)
    return train, [e for e in heldout if len(e.messages) == 2]


def _build_shots(recipe: ShotsRecipe) -> Callable[[Path], dict[str, Any]]:
    def build(out: Path) -> dict[str, Any]:
        from llmcourse import course_models
        from llmcourse.sft import load_sft

        pool, queries = pool_and_queries(recipe)
        rows, lengths = [], {}
        models = (("gpt-tiny-tasks", course_models.load, recipe.base_templates),
                  ("gpt-tiny-sft", load_sft, recipe.chat_templates))  # fmt: skip
        for name, load, templates in models:
            model, tokenizer = load(name, device="cpu")
            for t in templates:
                for row in exact_match_by_shots(model, tokenizer, queries, pool, t,
                                                recipe.shots, recipe.shot_seed,
                                                recipe.max_new_tokens):  # fmt: skip
                    rows.append({"model": name, **row})
                lengths[t] = {k: prompt_lengths(tokenizer, queries, pool, t, k, recipe.shot_seed)
                              for k in recipe.shots}  # fmt: skip
        return {"rows": rows, "lengths": lengths, "tasks": [q.task for q in queries],
                "window": model.max_seq_len}  # fmt: skip

    return build


def shots_run(name: str = RUN_NAME, recipe: ShotsRecipe | None = None) -> dict[str, Any]:
    """The record of the cached run ``name`` (built on first use, about a minute): ``rows``
    of ``exact_match_by_shots`` for each model and template, ``lengths`` (prompt tokens per
    template, shots and query), ``tasks`` and the context ``window``."""
    from llmcourse import course_models
    from llmcourse.sft.train import RECIPES as SFT_RECIPES
    from llmcourse.sft.train import provenance as sft_provenance

    recipe = recipe or ShotsRecipe()
    provenance = {
        "version": VERSION,
        "recipe": asdict(recipe),
        "gpt-tiny-tasks": course_models.recipe("gpt-tiny-tasks").fingerprint(),
        "gpt-tiny-sft": sft_provenance(SFT_RECIPES["gpt-tiny-sft"]),
        "torch": course_runs.torch_version(),
    }
    folder = course_runs.cached_run(name, provenance, _build_shots(recipe))
    return course_runs.run_record(folder)


COURSE_RUNS: dict[str, Callable[..., object]] = {RUN_NAME: shots_run}
"""Run name -> a function that builds it if it is not cached (``course_models --all``)."""


def shots_table(rows: Sequence[dict[str, Any]], template: str, model: str | None = None) -> str:
    """A text table, task by number of shots, of one template's exact match (``-`` where no
    prompt fits, ``*`` where only some do)."""
    chosen = [r for r in rows if r["template"] == template and model in (None, r.get("model"))]
    ks = sorted({r["shots"] for r in chosen})
    lines = [f"{'task':<11}" + "".join(f"{k:>8}" for k in ks)]
    for task in sorted({r["task"] for r in chosen}, key=lambda t: (t == "all", t)):
        cells = []
        for k in ks:
            r = next(r for r in chosen if r["task"] == task and r["shots"] == k)
            if r["exact_match"] is None:
                cells.append(f"{'-':>8}")
            else:
                mark = "*" if r["fit"] < r["n"] else " "
                cells.append(f"{100 * r['exact_match']:>7.0f}{mark}")
        lines.append(f"{task:<11}" + "".join(cells))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m llmcourse.prompting.templates",
        description="Show a few-shot prompt for a held-out question of chapter 9, or print the "
        f"exact match by shots and template of the cached run {RUN_NAME}.",
    )
    parser.add_argument("--template", default="instruction", choices=list(TEMPLATES))
    parser.add_argument("--shots", type=int, default=2, help="number of worked examples")
    parser.add_argument("--query", type=int, default=0, help="index of the held-out question")
    parser.add_argument("--seed", type=int, default=0, help="seed of the shot choice")
    parser.add_argument(
        "--course-run", action="store_true", help=f"print the tables of the run {RUN_NAME}"
    )
    args = parser.parse_args(argv)
    if args.course_run:
        record = shots_run()
        for row in dict.fromkeys((r["model"], r["template"]) for r in record["rows"]):
            print(f"{row[0]}, template {row[1]!r} (exact match %, * some prompts too long, "
                  f"- none fits in {record['window']} tokens)")  # fmt: skip
            print(shots_table(record["rows"], row[1], row[0]), end="\n\n")
        return 0
    pool, queries = pool_and_queries(ShotsRecipe())
    if not 0 <= args.query < len(queries):
        print(f"error: --query must be in 0..{len(queries) - 1}", file=sys.stderr)
        return 2
    query = queries[args.query]
    try:
        shots = choose_shots(pool, query, args.shots, args.seed)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(few_shot_prompt(shots, query, args.template))
    print(f"\n[reference answer: {query.answer!r}; task {query.task}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
