"""Task accuracy with and without tools, mean steps, and what went wrong.

A problem counts as solved when the final answer, stripped of spaces, is the right number.
Each unsolved agent run gets one failure kind, the first that applies:

* ``step limit``: no ``Answer:`` within the step limit;
* ``bad action``: a line the loop could not act on (no keyword, a malformed action, an
  unknown tool);
* ``wrong tool use``: a tool refused (a key not in memory, input the calculator rejects), or
  the tools were used on the wrong things (other keys than the question needs, a calculation
  whose value is not the answer);
* ``wrong answer``: every call right, and still the answer differs from the last result.

The conditions measured on the held-out problems (``measure``):

* ``agent, tools``: the fine-tuned agent in the ReAct loop with ``calc`` and ``lookup``;
* ``agent, no tools``: the same weights, the facts written into the question
  (``direct_question``), the answer written at once: the format it was also trained on;
* ``agent, tools unavailable``: the ReAct loop whose tools all answer ``tool unavailable``:
  no facts at all, a check that the agent does not guess its way to the answers;
* ``SFT, no tools`` / ``SFT, tools``: the starting checkpoint ``gpt-tiny-sft`` in both forms.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any

from torch import nn

from llmcourse.sft.data import Example
from llmcourse.sft.evaluate import answers
from llmcourse.sft.template import ChatTokenizer

from .problems import Problem, direct_question
from .react import (
    BAD_ACTION,
    STEP_LIMIT,
    TOOL_ERROR,
    AgentResult,
    model_completer,
    parse_action,
    run_agent,
)
from .tools import ToolRegistry, default_tools, normalize_key

WRONG_ANSWER = "wrong answer"
FAILURES = (STEP_LIMIT, BAD_ACTION, TOOL_ERROR, WRONG_ANSWER)


def is_correct(answer: str | None, problem: Problem) -> bool:
    return answer is not None and answer.strip() == str(problem.answer)


def failure_kind(result: AgentResult, problem: Problem) -> str | None:
    """``None`` for a solved problem, else its failure kind (see the module docstring)."""
    if is_correct(result.answer, problem):
        return None
    if result.stopped == STEP_LIMIT:
        return STEP_LIMIT
    errors = result.errors()
    if BAD_ACTION in errors:
        return BAD_ACTION
    if TOOL_ERROR in errors:
        return TOOL_ERROR
    calls = [(parse_action(s.action), s.observation) for s in result.steps]
    looked_up = sorted(normalize_key(a.argument) for a, _ in calls if a.tool == "lookup")
    computed = [obs for a, obs in calls if a.tool == "calc"]
    if looked_up != sorted(problem.keys) or str(problem.answer) not in computed:
        return TOOL_ERROR
    return WRONG_ANSWER


def agent_accuracy(
    model: nn.Module,
    tokenizer: ChatTokenizer,
    problems: Sequence[Problem],
    max_steps: int = 6,
    tools_available: bool = True,
) -> tuple[dict[str, Any], list[tuple[Problem, AgentResult]]]:
    """Run the agent on each problem (its own memory, the calculator); return the figures
    (``accuracy``, ``mean_steps`` over all runs, ``failures`` by kind, ``by_kind`` accuracy)
    and the runs."""
    complete = model_completer(model, tokenizer)
    runs, failures, hits = [], Counter(), defaultdict(list)
    for p in problems:
        tools: ToolRegistry = default_tools(p.facts)
        if not tools_available:
            tools = tools.without_tools()
        result = run_agent(complete, p.question, tools, max_steps=max_steps)
        kind = failure_kind(result, p)
        if kind:
            failures[kind] += 1
        hits[p.kind].append(kind is None)
        runs.append((p, result))
    figures = {
        "n": len(problems),
        "accuracy": sum(sum(v) for v in hits.values()) / len(problems),
        "mean_steps": sum(len(r.steps) for _, r in runs) / len(problems),
        "failures": {k: failures.get(k, 0) for k in FAILURES},
        "by_kind": {k: sum(v) / len(v) for k, v in sorted(hits.items())},
    }
    return figures, runs


def direct_accuracy(
    model: nn.Module, tokenizer: ChatTokenizer, problems: Sequence[Problem]
) -> dict[str, Any]:
    """Accuracy of the greedy answer to the question with its facts written in it."""
    examples = [
        Example((("user", direct_question(p)), ("assistant", str(p.answer))), p.kind)
        for p in problems
    ]
    got = answers(model, tokenizer, examples, max_new_tokens=8)
    hits = defaultdict(list)
    for p, a in zip(problems, got, strict=True):
        hits[p.kind].append(is_correct(a, p))
    return {
        "n": len(problems),
        "accuracy": sum(sum(v) for v in hits.values()) / len(problems),
        "by_kind": {k: sum(v) / len(v) for k, v in sorted(hits.items())},
    }


def transcript_record(problem: Problem, result: AgentResult) -> dict[str, Any]:
    """A run as JSON: the question, memory, right answer, the model's text, failure kind."""
    return {
        "question": problem.question,
        "memory": dict(problem.memory),
        "answer": problem.answer,
        "got": result.answer,
        "failure": failure_kind(result, problem),
        "transcript": result.transcript,
    }


def measure(
    agent: nn.Module,
    agent_tok: ChatTokenizer,
    base: nn.Module,
    base_tok: ChatTokenizer,
    heldout: Sequence[Problem],
    config: Any,
) -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]:
    """The figures of every condition (module docstring) and example transcripts: the first
    solved and unsolved agent runs, and a few of the starting checkpoint's."""
    figures: dict[str, Any] = {}
    figures["agent, tools"], runs = agent_accuracy(agent, agent_tok, heldout, config.max_steps)
    figures["agent, no tools"] = direct_accuracy(agent, agent_tok, heldout)
    figures["agent, tools unavailable"], _ = agent_accuracy(
        agent, agent_tok, heldout[: config.n_eval_unavailable], config.max_steps, False
    )
    figures["SFT, no tools"] = direct_accuracy(base, base_tok, heldout)
    figures["SFT, tools"], base_runs = agent_accuracy(
        base, base_tok, heldout[: config.n_eval_base_tools], config.max_steps
    )
    solved = [transcript_record(p, r) for p, r in runs if failure_kind(r, p) is None]
    failed = [transcript_record(p, r) for p, r in runs if failure_kind(r, p) is not None]
    examples = {
        "solved": solved[:5],
        "failed": failed[:20],
        "sft": [transcript_record(p, r) for p, r in base_runs[:3]],
    }
    return figures, examples
