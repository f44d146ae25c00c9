"""The ReAct loop: the model thinks, acts with a tool, reads the observation, and goes on.

ReAct (Yao et al., 2022) interleaves reasoning and acting in one text. The model writes lines
that start with a keyword::

    Thought: need 3 fig, 2 yam          <- written by the model (optional)
    Action: lookup[fig]                 <- written by the model: tool[argument]
    Observation: 47                     <- written by the loop: what the tool returned
    Action: lookup[yam]
    Observation: 85
    Action: calc[3*47+2*85]
    Observation: 311
    Answer: 311                         <- written by the model: the loop stops

The model is asked for its next line (generation stops at the end of the line); the loop
parses it. A ``Thought:`` line is kept and the model is asked again; an ``Action:`` line is
parsed into a tool name and an argument (``parse_action``), the tool is run, and
``Observation: <result>`` is appended; ``Answer:`` ends the run. Anything the model writes
after its action line (a made-up observation, say) is dropped: the observation is the tool's,
never the model's. A malformed line, an unknown tool or a tool's refusal becomes an
``Observation: error: ...`` that the model can react to. A *step* is one action and its
observation; after ``max_steps`` steps without an answer the run ends at the step limit.

The loop works with any function ``complete(text) -> str`` that continues a text: a scripted
list of lines in the tests, a fine-tuned GPT in ``model_completer``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from llmcourse.generate import GenerationConfig, generate
from llmcourse.sft.template import ChatTemplate, ChatTokenizer

from .tools import ToolError, ToolRegistry

THOUGHT = "Thought: "
ACTION = "Action: "
OBSERVATION = "Observation: "
ANSWER = "Answer: "
KEYWORDS = (THOUGHT, ACTION, OBSERVATION, ANSWER)
"""The line keywords, each with its space: the fine-tuned checkpoint has one token for each."""

BAD_ACTION = "bad action"
TOOL_ERROR = "wrong tool use"
STEP_LIMIT = "step limit"

LINE_TOKENS = 32
"""The most tokens the model may write for one line (``model_completer``)."""

Complete = Callable[[str], str]
_TOOL_NAME = re.compile(r"[A-Za-z_]\w*")


class ActionError(ValueError):
    """A line the loop cannot act on; the message says how to write it."""


@dataclass(frozen=True)
class Action:
    """``tool[argument]``."""

    tool: str
    argument: str

    def __str__(self) -> str:
        return f"{self.tool}[{self.argument}]"


def parse_action(text: str) -> Action:
    """``"calc[3*47+2*85]"`` -> ``Action("calc", "3*47+2*85")``; ``ActionError`` otherwise.

    The tool name runs up to the first ``[``; the argument from there to the ``]`` that ends
    the text (it may itself hold brackets)."""
    text = text.strip()
    if not text:
        raise ActionError("empty action: write tool[argument], e.g. calc[2+3]")
    if "[" not in text:
        raise ActionError(f"no '[' in action {text!r}: write tool[argument]")
    if not text.endswith("]"):
        raise ActionError(f"action {text!r} must end with ']': write tool[argument]")
    name, argument = text[:-1].split("[", 1)
    name = name.strip()
    if not _TOOL_NAME.fullmatch(name):
        raise ActionError(f"bad tool name {name!r}: use letters, digits and _")
    return Action(name, argument)


def parse_line(line: str) -> tuple[str, str]:
    """``(keyword, rest)`` of one line the model wrote, with ``keyword`` one of ``THOUGHT``,
    ``ACTION``, ``ANSWER`` (the spaces around it forgiven); ``ActionError`` for a line that
    starts with none of them, or with ``Observation:``, which only the loop writes."""
    stripped = line.strip()
    for keyword in KEYWORDS:
        word = keyword.strip()
        if stripped.startswith(word):
            if keyword == OBSERVATION:
                raise ActionError("observations come from the tools: write an Action instead")
            return keyword, stripped[len(word) :].strip()
    shown = stripped if len(stripped) <= 40 else stripped[:37] + "..."
    raise ActionError(f"cannot read {shown!r}: start the line with Thought:, Action: or Answer:")


@dataclass
class Step:
    """One step of a run: the thought before the action (if any), the action as written,
    the observation shown to the model, and the kind of failure (``None`` when the tool
    answered)."""

    thought: str | None
    action: str
    observation: str
    error: str | None = None

    def show(self, number: int) -> str:
        """The step as numbered lines, for a reader."""
        lines = [f"{number}. Thought: {self.thought}"] if self.thought else []
        lines.append(f"{number}. Action: {self.action}")
        lines.append(f"{number}. Observation: {self.observation}")
        return "\n".join(lines)


@dataclass
class AgentResult:
    """A finished run: the answer (``None`` at the step limit), the steps, why it stopped
    (``"answer"`` or ``STEP_LIMIT``) and the whole text the model saw and wrote."""

    answer: str | None
    steps: list[Step] = field(default_factory=list)
    stopped: str = "answer"
    transcript: str = ""

    def errors(self) -> list[str]:
        """The kinds of the failed steps, in order."""
        return [s.error for s in self.steps if s.error]

    def show(self) -> str:
        """The run step by step, for a reader."""
        lines = [s.show(i) for i, s in enumerate(self.steps, 1)]
        if self.answer is not None:
            lines.append(f"Answer: {self.answer}")
        else:
            lines.append(f"(no answer: stopped at the {self.stopped})")
        return "\n".join(lines)


def agent_prompt(task: str) -> str:
    """The text the model continues: the task as a user turn of the chat template, then the
    assistant's turn, where the Thought/Action lines go."""
    return ChatTemplate().render([{"role": "user", "content": task}], add_generation_prompt=True)


def run_agent(
    complete: Complete,
    task: str,
    tools: ToolRegistry,
    max_steps: int = 6,
    max_lines: int = 3,
    on_step: Callable[[int, Step], None] | None = None,
) -> AgentResult:
    """Run the ReAct loop on ``task`` (see the module docstring) and return the result.

    ``complete(text)`` continues the text; the loop reads the lines it returns up to the first
    action or answer, and asks again (at most ``max_lines`` times in a step) when it got only
    thoughts. ``max_steps`` bounds the actions. ``on_step(number, step)``, if given, is
    called after each step (to show a run as it happens)."""
    if max_steps < 1 or max_lines < 1:
        raise ValueError(f"max_steps and max_lines must be >= 1, got {max_steps}, {max_lines}")
    text = agent_prompt(task)
    steps: list[Step] = []
    for _ in range(max_steps):
        text, step, answer = _next_step(complete, text, tools, max_lines)
        if answer is not None:
            return AgentResult(answer, steps, "answer", text)
        text += OBSERVATION + step.observation + "\n"
        steps.append(step)
        if on_step is not None:
            on_step(len(steps), step)
    return AgentResult(None, steps, STEP_LIMIT, text)


def _next_step(
    complete: Complete, text: str, tools: ToolRegistry, max_lines: int
) -> tuple[str, Step, None] | tuple[str, None, str]:
    """Read the model's lines up to its next action or answer: ``(text, step, None)`` with the
    tool run, or ``(text, None, answer)``; ``text`` grows by the lines read."""
    thoughts: list[str] = []
    for _ in range(max_lines):
        for line in complete(text).split("\n"):
            line = line.strip()
            if not line:
                continue
            thought = " ".join(thoughts) or None
            try:
                keyword, rest = parse_line(line)
            except ActionError as err:
                return text + line + "\n", Step(thought, line, f"error: {err}", BAD_ACTION), None
            if keyword == ANSWER:
                return text + ANSWER + rest, None, rest
            if keyword == ACTION:  # what follows the action line is dropped
                return text + ACTION + rest + "\n", _act(rest, tools, thought), None
            text += THOUGHT + rest + "\n"
            thoughts.append(rest)
    message = "error: no action: write Action: tool[argument] or Answer: ..."
    return text, Step(" ".join(thoughts) or None, "", message, BAD_ACTION), None


def _act(written: str, tools: ToolRegistry, thought: str | None) -> Step:
    try:
        action = parse_action(written)
    except ActionError as err:
        return Step(thought, written, f"error: {err}", BAD_ACTION)
    if action.tool not in tools:
        message = f"unknown tool '{action.tool}': the tools are {', '.join(tools.names)}"
        return Step(thought, written, f"error: {message}", BAD_ACTION)
    try:
        return Step(thought, written, tools.call(action.tool, action.argument))
    except ToolError as err:
        return Step(thought, written, f"error: {err}", TOOL_ERROR)


def model_completer(
    model: nn.Module, tokenizer: ChatTokenizer, max_new_tokens: int = LINE_TOKENS
) -> Complete:
    """``complete(text)`` for a chat model: greedy decoding of the next line, stopping at a
    line break or ``<|end|>`` (which is left out of the returned text). A text longer than
    the context window keeps its last tokens (and the generation loop slides its window)."""
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    room = model.max_seq_len
    end = tokenizer.token_id(ChatTemplate().end)
    newline = tokenizer.encode_ordinary("\n")
    stops = (end, *newline) if len(newline) == 1 else (end,)
    config = GenerationConfig(max_new_tokens=max_new_tokens, temperature=0.0, stop_ids=stops)

    def complete(text: str) -> str:
        ids = tokenizer.encode(text)[-room:]
        new = generate(model, torch.tensor([ids]), config)[0, len(ids) :].tolist()
        if end in new:
            new = new[: new.index(end)]
        return tokenizer.decode(new)

    return complete
