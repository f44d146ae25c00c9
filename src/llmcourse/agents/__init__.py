"""Agents: a language model that thinks, calls tools, reads what they return, and answers.

An agent, in the sense of this chapter, is a model in a loop: it *perceives* (the task and
every tool result come back to it as text), *plans* (it writes what it needs before it acts),
*acts* through tools (a calculator, a lookup) and keeps a *memory* outside its weights (a
small key-value store it can query). The loop here is ReAct's (Yao et al., 2022).

* ``tools``: ``Calculator`` (arithmetic parsed with ``ast``, never ``eval``; anything else
  refused with ``ToolError``), ``Memory`` (a key-value store with normalized keys),
  ``ToolRegistry`` and ``default_tools``;
* ``react``: the ``Thought:`` / ``Action: tool[argument]`` / ``Observation:`` / ``Answer:``
  format, ``parse_action``, ``run_agent`` (step limit, transcript) for any
  ``complete(text) -> str``, and ``model_completer`` for a chat model;
* ``problems``: multi-step problems over invented facts (2-3 lookups and multi-digit
  arithmetic), their solution transcripts, the same questions with the facts written in,
  and a held-out split whose questions never occur in training;
* ``train``: ``gpt-tiny-sft`` fine-tuned on the transcripts with the loss on what the model
  writes (not the observations), the cached run ``gpt-tiny-agent`` and ``load_agent``;
* ``evaluate``: task accuracy with tools, without tools and with the tools taken away, mean
  steps, and failures by kind.

Run ``python -m llmcourse.agents --checkpoint gpt-tiny-agent --task "..."`` to watch a run
step by step.
"""

from .evaluate import FAILURES, agent_accuracy, direct_accuracy, failure_kind, measure
from .problems import KINDS, Problem, build_splits, direct_question, make_problem, solution_lines
from .react import (
    ACTION,
    ANSWER,
    BAD_ACTION,
    KEYWORDS,
    OBSERVATION,
    STEP_LIMIT,
    THOUGHT,
    TOOL_ERROR,
    Action,
    ActionError,
    AgentResult,
    Step,
    agent_prompt,
    model_completer,
    parse_action,
    parse_line,
    run_agent,
)
from .tools import (
    Calculator,
    Memory,
    Tool,
    ToolError,
    ToolRegistry,
    Unavailable,
    default_tools,
    format_number,
    normalize_key,
)
from .train import (
    COURSE_RUNS,
    RECIPES,
    AgentConfig,
    add_agent_tokens,
    agent_run,
    encode_solution,
    finetune_agent,
    load_agent,
    training_rows,
)

__all__ = [
    "ACTION",
    "ANSWER",
    "BAD_ACTION",
    "COURSE_RUNS",
    "FAILURES",
    "KEYWORDS",
    "KINDS",
    "OBSERVATION",
    "RECIPES",
    "STEP_LIMIT",
    "THOUGHT",
    "TOOL_ERROR",
    "Action",
    "ActionError",
    "AgentConfig",
    "AgentResult",
    "Calculator",
    "Memory",
    "Problem",
    "Step",
    "Tool",
    "ToolError",
    "ToolRegistry",
    "Unavailable",
    "add_agent_tokens",
    "agent_accuracy",
    "agent_prompt",
    "agent_run",
    "build_splits",
    "default_tools",
    "direct_accuracy",
    "direct_question",
    "encode_solution",
    "failure_kind",
    "finetune_agent",
    "format_number",
    "load_agent",
    "make_problem",
    "measure",
    "model_completer",
    "normalize_key",
    "parse_action",
    "parse_line",
    "run_agent",
    "solution_lines",
    "training_rows",
]
