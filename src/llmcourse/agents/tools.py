"""The agent's tools: a safe calculator, a small key-value memory, and a registry of tools.

A tool is a name, a one-line description and a function from one string (the argument the
model wrote between the brackets of ``Action: name[argument]``) to one string (the
observation the loop writes back). A tool that cannot do what it was asked raises
``ToolError`` with a message written for the model to read: the loop shows it as the
observation (``Observation: error: division by zero``), so the model can try again.

Why the calculator never calls ``eval``: the argument is text written by a model, and a model
writes whatever its training and its prompt (which may contain text from anyone) make likely.
``eval("__import__('os').system('rm -rf ~')")`` runs that program with the user's rights. The
``Calculator`` instead parses the text with ``ast.parse(..., mode="eval")`` into a syntax tree
and walks it itself, accepting only number literals, the binary operators
``+ - * / // % **``, unary ``+ -`` and parentheses (which leave no node of their own).
Anything else, a name, a call, an attribute, a string, a comparison, a subscript, a lambda,
a conditional expression, is refused before anything is computed. Even pure arithmetic can
be an attack: ``9**9**9`` has about 370 million digits and would take the process's memory
and minutes of CPU, so the size of every operand and result is bounded, and a power is
checked *before* it is computed (the bit length of ``a**b`` is about ``b * bit_length(a)``).
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol


class ToolError(Exception):
    """A tool refused its argument or could not answer; the message is the observation."""


Number = int | float

_BINARY: dict[type, Callable[[Number, Number], Number]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type, Callable[[Number], Number]] = {ast.UAdd: operator.pos, ast.USub: operator.neg}
_REFUSED_NAMES = {
    ast.Name: "a name",
    ast.Call: "a function call",
    ast.Attribute: "an attribute",
    ast.Subscript: "a subscript",
    ast.Compare: "a comparison",
    ast.BoolOp: "a boolean operator",
    ast.IfExp: "a conditional expression",
    ast.Lambda: "a lambda",
    ast.JoinedStr: "a string",
    ast.List: "a list",
    ast.Tuple: "a tuple",
    ast.Dict: "a dict",
    ast.Set: "a set",
}


def format_number(value: Number) -> str:
    """How a result is written in an observation: integers in full, floats with up to 12
    significant digits (``7/2`` -> ``3.5``, ``1/3`` -> ``0.333333333333``)."""
    if isinstance(value, int):
        return str(value)
    return format(value, ".12g")


@dataclass(frozen=True)
class Calculator:
    """Arithmetic on numbers only, parsed with ``ast`` and evaluated node by node.

    Limits: at most ``max_length`` characters of input, integers of at most ``max_bits``
    bits (about 300 decimal digits) as operands and results, exponents of at most
    ``max_exponent`` in absolute value, finite floats. ``evaluate`` returns the number,
    ``__call__`` its text; both raise ``ToolError`` for anything else.
    """

    max_length: int = 100
    max_bits: int = 1000
    max_exponent: int = 100
    name: str = "calc"
    description: str = "arithmetic on numbers: + - * / // % ** and parentheses"

    def __call__(self, argument: str) -> str:
        return format_number(self.evaluate(argument))

    def evaluate(self, expression: str) -> Number:
        """The value of ``expression``; ``ToolError`` saying why when it is not arithmetic."""
        if not isinstance(expression, str):
            raise ToolError(f"the calculator takes text, got {type(expression).__name__}")
        text = expression.strip()
        if not text:
            raise ToolError("empty expression: write arithmetic such as 3*47+2*85")
        if len(text) > self.max_length:
            raise ToolError(
                f"expression too long ({len(text)} characters, at most {self.max_length})"
            )
        try:
            tree = ast.parse(text, mode="eval")
        except (SyntaxError, ValueError, MemoryError, RecursionError):
            raise ToolError(f"not an arithmetic expression: {text!r}") from None
        return self._value(tree.body)

    def _value(self, node: ast.AST) -> Number:
        if isinstance(node, ast.Constant):
            value = node.value
            if type(value) not in (int, float):  # bool, str, bytes, complex, None, ...
                kind = "a string" if isinstance(value, str | bytes) else repr(value)
                raise ToolError(f"only numbers are allowed, not {kind}")
            return self._checked(value)
        if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
            return self._checked(_UNARY[type(node.op)](self._value(node.operand)))
        if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
            left, right = self._value(node.left), self._value(node.right)
            if isinstance(node.op, ast.Pow):
                self._check_power(left, right)
            try:
                result = _BINARY[type(node.op)](left, right)
            except ZeroDivisionError:
                raise ToolError("division by zero") from None
            except OverflowError:
                raise ToolError("the result is too large") from None
            return self._checked(result)
        what = _REFUSED_NAMES.get(type(node), f"'{type(node).__name__}'")
        if isinstance(node, ast.BinOp | ast.UnaryOp):
            what = f"the operator {type(node.op).__name__}"
        raise ToolError(f"only arithmetic on numbers is allowed, not {what}")

    def _check_power(self, base: Number, exponent: Number) -> None:
        if abs(exponent) > self.max_exponent:
            raise ToolError(f"exponent {exponent} is too large (at most {self.max_exponent})")
        exact = isinstance(base, int) and isinstance(exponent, int)
        if exact and exponent > 0 and base.bit_length() * exponent > self.max_bits:
            raise ToolError("the result is too large")
        if isinstance(exponent, float) and base < 0:
            raise ToolError("a negative number to a fractional power is not a real number")

    def _checked(self, value: Number) -> Number:
        if isinstance(value, complex):
            raise ToolError("the result is not a real number")
        if isinstance(value, int) and value.bit_length() > self.max_bits:
            raise ToolError("the result is too large")
        if isinstance(value, float) and not math.isfinite(value):
            raise ToolError("the result is too large")
        return value


def normalize_key(key: str) -> str:
    """How memory keys are compared: lower case, surrounding spaces dropped, inner runs of
    spaces made one (``"  Fig  Price "`` -> ``"fig price"``)."""
    return " ".join(str(key).lower().split())


@dataclass
class Memory:
    """A small local key-value store: ``lookup[key]`` returns the value stored under the
    normalized key, or ``ToolError("no entry for ...")``; ``write`` adds or replaces one."""

    entries: dict[str, str] = field(default_factory=dict)
    name: str = "lookup"
    description: str = "the value stored under a key, e.g. lookup[fig]"
    max_entries: int = 1000

    def __post_init__(self) -> None:
        items = list(self.entries.items())
        self.entries = {}
        for key, value in items:
            self.write(key, value)

    @classmethod
    def from_pairs(cls, pairs: Mapping[str, object] | Iterable[tuple[str, object]]) -> Memory:
        """A memory holding ``pairs`` (a dict or ``(key, value)`` pairs)."""
        items = pairs.items() if isinstance(pairs, Mapping) else pairs
        memory = cls()
        for key, value in items:
            memory.write(key, value)
        return memory

    def write(self, key: str, value: object) -> None:
        """Store ``value`` (as text) under ``normalize_key(key)``."""
        norm = normalize_key(key)
        if not norm:
            raise ValueError("a memory key must not be empty")
        if norm not in self.entries and len(self.entries) >= self.max_entries:
            raise ValueError(f"the memory is full ({self.max_entries} entries)")
        self.entries[norm] = str(value)

    def __call__(self, argument: str) -> str:
        key = normalize_key(argument)
        if not key:
            raise ToolError("lookup needs a key, e.g. lookup[fig]")
        if key not in self.entries:
            raise ToolError(f"no entry for '{key}'")
        return self.entries[key]

    def __len__(self) -> int:
        return len(self.entries)


@dataclass(frozen=True)
class Unavailable:
    """A tool taken away: every call raises ``ToolError("tool unavailable")``. Used to
    measure what the agent does without its tools, with the prompt format unchanged."""

    name: str
    description: str = "unavailable"

    def __call__(self, argument: str) -> str:
        raise ToolError("tool unavailable")


class Tool(Protocol):
    """What the registry needs of a tool: ``name``, ``description``, ``__call__(str) -> str``
    (raising ``ToolError`` to refuse). ``Calculator``, ``Memory`` and ``Unavailable`` are
    tools; so is any object with these three."""

    name: str
    description: str

    def __call__(self, argument: str) -> str: ...


class ToolRegistry:
    """The tools an agent may call, by name."""

    def __init__(self, tools: Iterable[Tool] = ()) -> None:
        self._tools: dict[str, Tool] = {}
        for tool in tools:
            self.register(tool)

    def register(self, tool: Tool) -> None:
        """Add ``tool`` under ``tool.name`` (a second tool of the same name is an error)."""
        name = getattr(tool, "name", None)
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(f"a tool needs a name made of letters, digits and _: {name!r}")
        if name in self._tools:
            raise ValueError(f"there is already a tool named {name!r}")
        if not callable(tool):
            raise TypeError(f"tool {name!r} is not callable")
        self._tools[name] = tool

    @property
    def names(self) -> list[str]:
        return list(self._tools)

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __getitem__(self, name: str) -> Tool:
        return self._tools[name]

    def call(self, name: str, argument: str) -> str:
        """The observation of ``name[argument]``; ``ToolError`` for an unknown tool or a
        refusal."""
        if name not in self._tools:
            raise ToolError(f"unknown tool '{name}': the tools are {', '.join(self.names)}")
        return self._tools[name](argument)

    def without_tools(self) -> ToolRegistry:
        """The same names, every tool ``Unavailable``."""
        return ToolRegistry(Unavailable(name) for name in self.names)

    def describe(self) -> str:
        """One line per tool: ``name[...]: description``."""
        return "\n".join(f"{n}[...]: {t.description}" for n, t in self._tools.items())


def default_tools(memory: Memory | Mapping[str, object] | None = None) -> ToolRegistry:
    """The course agent's two tools: ``calc`` (``Calculator``) and ``lookup`` (``Memory``)."""
    if memory is None:
        memory = Memory()
    elif not isinstance(memory, Memory):
        memory = Memory.from_pairs(memory)
    return ToolRegistry([Calculator(), memory])
