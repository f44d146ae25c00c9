"""Tests of llmcourse.agents: the safe calculator against Python's arithmetic and its refusals,
the memory and the registry, the action parser, the ReAct loop with scripted models, the
problems and their held-out split, the loss mask of the observations, the command line."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
import torch
from tiny_models import tiny_gpt

from llmcourse.agents import (
    BAD_ACTION,
    KEYWORDS,
    STEP_LIMIT,
    TOOL_ERROR,
    ActionError,
    AgentResult,
    Calculator,
    Memory,
    Step,
    ToolError,
    ToolRegistry,
    Unavailable,
    add_agent_tokens,
    agent_accuracy,
    agent_prompt,
    build_splits,
    default_tools,
    direct_question,
    encode_solution,
    failure_kind,
    format_number,
    make_problem,
    model_completer,
    parse_action,
    parse_line,
    run_agent,
    solution_lines,
    training_rows,
)
from llmcourse.agents.__main__ import main
from llmcourse.causal_lm.data import ByteTokenizer
from llmcourse.sft.template import IGNORE, SPECIAL_TOKENS, ChatTokenizer, sft_loss
from llmcourse.sft.train import save_chat_model

pytestmark = pytest.mark.usefixtures("one_thread")


def agent_tokenizer() -> ChatTokenizer:
    return ChatTokenizer(ByteTokenizer(eot=True), (*SPECIAL_TOKENS, *KEYWORDS))


# --------------------------------------------------------------------------------------------
# The calculator
# --------------------------------------------------------------------------------------------


def random_expression(rng: random.Random, depth: int = 0) -> str:
    """A random arithmetic expression over small integers and the calculator's operators."""
    if depth > 2 or rng.random() < 0.3:
        number = str(rng.randint(0, 999))
        return f"-{number}" if rng.random() < 0.15 else number
    op = rng.choice(["+", "-", "*", "/", "//", "%", "**"])
    left = random_expression(rng, depth + 1)
    right = str(rng.randint(0, 4)) if op == "**" else random_expression(rng, depth + 1)
    return f"({left}){op}({right})" if rng.random() < 0.5 else f"({left} {op} {right})"


def test_calculator_matches_python_arithmetic() -> None:
    rng = random.Random(0)
    calc = Calculator()
    checked = errors = 0
    for _ in range(400):
        text = random_expression(rng)
        try:
            expected = eval(text, {"__builtins__": {}})  # the test's own oracle
        except ZeroDivisionError:
            with pytest.raises(ToolError, match="division by zero"):
                calc.evaluate(text)
            errors += 1
            continue
        if abs(expected) > 2**1000 or len(text) > calc.max_length:
            continue
        got = calc.evaluate(text)
        assert type(got) is type(expected), text
        assert got == expected or (math.isnan(got) and math.isnan(expected)), text
        assert calc(text) == format_number(expected)
        checked += 1
    assert checked > 250 and errors > 5


@pytest.mark.parametrize(
    "text, message",
    [
        ("__import__('os')", "function call"),
        ("__import__('os').system('echo hacked')", "function call"),
        ("x", "a name"),
        ("x + 1", "a name"),
        ("abs(-3)", "function call"),
        ("(1).real", "attribute"),
        ("1 if 1 else 2", "conditional"),
        ("9**9**9", "too large"),
        ("2**100000", "too large"),
        ("10**400", "too large"),
        ("2**-1000", "too large"),
        ("1e308*10", "too large"),
        ("'a'", "string"),
        ("'a'*3", "string"),
        ("b'a'", "string"),
        ("1 < 2", "comparison"),
        ("1 and 2", "boolean"),
        ("not 1", "Not"),
        ("~1", "Invert"),
        ("1 << 3", "LShift"),
        ("lambda: 1", "lambda"),
        ("[1][0]", "subscript"),
        ("[1, 2]", "list"),
        ("(1, 2)", "tuple"),
        ("{1: 2}", "dict"),
        ("True + 1", "True"),
        ("1j", "1j"),
        ("f'{1}'", "string"),
        ("1/0", "division by zero"),
        ("5 % 0", "division by zero"),
        ("7 // 0.0", "division by zero"),
        ("(-8) ** 0.5", "real"),
        ("1 +", "not an arithmetic expression"),
        ("import os", "not an arithmetic expression"),
        ("", "empty"),
        ("1+" * 60 + "1", "too long"),
    ],
)
def test_calculator_refuses(text: str, message: str) -> None:
    with pytest.raises(ToolError, match=message):
        Calculator().evaluate(text)


def test_calculator_never_runs_the_code(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    attack = f"__import__('pathlib').Path({str(marker)!r}).touch()"
    with pytest.raises(ToolError):
        Calculator(max_length=500).evaluate(attack)
    assert not marker.exists()
    with pytest.raises(ToolError, match="takes text"):
        Calculator().evaluate(3)  # type: ignore[arg-type]


def test_calculator_formats_numbers() -> None:
    calc = Calculator()
    assert calc("3*47+2*85") == "311"
    assert calc(" 7/2 ") == "3.5"
    assert calc("1/3") == "0.333333333333"
    assert calc("-(2**10)") == "-1024"
    assert calc("((1+2))*-3") == "-9"
    assert calc("2**0.5") == format(2**0.5, ".12g")


# --------------------------------------------------------------------------------------------
# Memory and the registry
# --------------------------------------------------------------------------------------------


def test_memory_lookup_normalizes_keys_and_says_when_there_is_no_entry() -> None:
    memory = Memory.from_pairs({"Fig": 47, "  big   Town ": "900"})
    assert memory(" FIG ") == "47"
    assert memory("Big town") == "900"
    with pytest.raises(ToolError, match="no entry for 'pear'"):
        memory("Pear")
    with pytest.raises(ToolError, match="needs a key"):
        memory("  ")
    memory.write("pear", 12)
    assert memory("pear") == "12" and len(memory) == 3
    with pytest.raises(ValueError, match="empty"):
        memory.write(" ", 1)
    assert Memory({"A b": 1}).entries == {"a b": "1"}


def test_registry_calls_by_name_and_reports_unknown_tools() -> None:
    tools = default_tools({"fig": 47})
    assert tools.names == ["calc", "lookup"]
    assert tools.call("lookup", "fig") == "47"
    assert tools.call("calc", "47*2") == "94"
    with pytest.raises(ToolError, match="unknown tool 'search': the tools are calc, lookup"):
        tools.call("search", "x")
    with pytest.raises(ValueError, match="already a tool"):
        tools.register(Calculator())
    with pytest.raises(ValueError, match="name"):
        ToolRegistry([Unavailable("not a name")])
    gone = tools.without_tools()
    assert gone.names == tools.names
    with pytest.raises(ToolError, match="tool unavailable"):
        gone.call("calc", "1+1")
    assert "calc[...]" in tools.describe()


# --------------------------------------------------------------------------------------------
# The action parser
# --------------------------------------------------------------------------------------------


def test_parse_action() -> None:
    assert parse_action("calc[3*47+2*85]").tool == "calc"
    assert parse_action(" lookup[ big town ] ").argument == " big town "
    action = parse_action("calc[(1+2)*[3][0]]")
    assert (action.tool, action.argument) == ("calc", "(1+2)*[3][0]")
    assert str(action) == "calc[(1+2)*[3][0]]"
    assert parse_action("calc[]").argument == ""
    for text, message in [
        ("", "empty action"),
        ("calc 1+2", "no '\\['"),
        ("calc[1+2", "must end with '\\]'"),
        ("calc[1+2] then more", "must end with"),
        ("[1+2]", "bad tool name"),
        ("2calc[1]", "bad tool name"),
        ("my tool[1]", "bad tool name"),
    ]:
        with pytest.raises(ActionError, match=message):
            parse_action(text)


def test_parse_line() -> None:
    assert parse_line("Thought: need fig") == ("Thought: ", "need fig")
    assert parse_line("  Action:lookup[fig] ") == ("Action: ", "lookup[fig]")
    assert parse_line("Answer: 311") == ("Answer: ", "311")
    with pytest.raises(ActionError, match="observations come from the tools"):
        parse_line("Observation: 47")
    with pytest.raises(ActionError, match="start the line with Thought:, Action: or Answer:"):
        parse_line("the answer is 3")


# --------------------------------------------------------------------------------------------
# The loop, with scripted models
# --------------------------------------------------------------------------------------------


class Scripted:
    """A model that returns the given completions in turn and records what it was shown."""

    def __init__(self, *outputs: str) -> None:
        self.outputs = list(outputs)
        self.seen: list[str] = []

    def __call__(self, text: str) -> str:
        self.seen.append(text)
        return self.outputs.pop(0) if self.outputs else "Action: calc[1+1]"


def test_loop_calls_tools_inserts_observations_and_returns_the_answer() -> None:
    model = Scripted(
        "Thought: need fig\n", "Action: lookup[fig]\n", "Action: calc[3*47]", "Answer: 141"
    )
    seen: list[tuple[int, Step]] = []
    result = run_agent(
        model,
        "Cost of 3 figs?",
        default_tools({"fig": 47}),
        on_step=lambda i, s: seen.append((i, s)),
    )
    assert result.answer == "141" and result.stopped == "answer"
    assert [(s.thought, s.action, s.observation, s.error) for s in result.steps] == [
        ("need fig", "lookup[fig]", "47", None),
        (None, "calc[3*47]", "141", None),
    ]
    assert [i for i, _ in seen] == [1, 2]
    prompt = agent_prompt("Cost of 3 figs?")
    assert model.seen[0] == prompt
    assert model.seen[2] == prompt + "Thought: need fig\nAction: lookup[fig]\nObservation: 47\n"
    assert result.transcript == model.seen[3] + "Answer: 141"
    assert "1. Thought: need fig" in result.show() and result.show().endswith("Answer: 141")


def test_loop_drops_what_the_model_writes_after_its_action() -> None:
    model = Scripted("Thought: t\nAction: lookup[fig]\nObservation: 999\nAnswer: 999", "Answer: 47")
    result = run_agent(model, "q", default_tools({"fig": 47}))
    assert result.steps[0].observation == "47" and result.answer == "47"
    assert "999" not in model.seen[1]
    assert model.seen[1].endswith("Thought: t\nAction: lookup[fig]\nObservation: 47\n")


def test_loop_stops_at_the_step_limit() -> None:
    result = run_agent(Scripted(), "q", default_tools(), max_steps=4)
    assert result.answer is None and result.stopped == STEP_LIMIT
    assert len(result.steps) == 4 and all(s.observation == "2" for s in result.steps)
    assert "stopped at the step limit" in result.show()
    with pytest.raises(ValueError, match="max_steps"):
        run_agent(Scripted(), "q", default_tools(), max_steps=0)


def test_loop_shows_errors_as_observations_and_goes_on() -> None:
    model = Scripted(
        "Action: calc 1+1",  # malformed
        "Action: search[fig]",  # unknown tool
        "Action: calc[__import__('os')]",  # refused by the calculator
        "Action: lookup[pear]",  # not in memory
        "the answer is 3",  # no keyword
        "Thought: hmm",  # only thoughts: no action in max_lines completions
        "Thought: hmm",
        "Thought: hmm",
        "Answer: 3",
    )
    result = run_agent(model, "q", default_tools({"fig": 47}), max_steps=8)
    assert result.answer == "3"
    assert result.errors() == [
        BAD_ACTION,
        BAD_ACTION,
        TOOL_ERROR,
        TOOL_ERROR,
        BAD_ACTION,
        BAD_ACTION,
    ]
    observations = [s.observation for s in result.steps]
    assert observations[0].startswith("error: no '['")
    assert observations[1] == "error: unknown tool 'search': the tools are calc, lookup"
    assert observations[2] == "error: only arithmetic on numbers is allowed, not a function call"
    assert observations[3] == "error: no entry for 'pear'"
    assert "start the line with" in observations[4]
    assert (
        observations[5].startswith("error: no action") and result.steps[5].thought == "hmm hmm hmm"
    )
    assert "Action: calc 1+1\nObservation: error: no '['" in result.transcript


def test_failure_kinds() -> None:
    problem = make_problem(random.Random(3), "age gap")
    x, y = problem.keys
    facts = problem.facts
    good = [Step(None, f"lookup[{x}]", str(facts[x])), Step(None, f"lookup[{y}]", str(facts[y]))]
    calc = Step(None, f"calc[{problem.expression}]", str(problem.answer))
    assert failure_kind(AgentResult(str(problem.answer), [*good, calc]), problem) is None
    assert failure_kind(AgentResult(None, [calc], STEP_LIMIT), problem) == STEP_LIMIT
    bad = Step(None, "calc 1", "error: ...", BAD_ACTION)
    assert failure_kind(AgentResult("0", [bad, *good, calc]), problem) == BAD_ACTION
    refused = Step(None, "lookup[zed]", "error: no entry for 'zed'", TOOL_ERROR)
    assert failure_kind(AgentResult("0", [refused, *good, calc]), problem) == TOOL_ERROR
    wrong_calc = Step(None, "calc[1+1]", "2")
    assert failure_kind(AgentResult("2", [*good, wrong_calc]), problem) == TOOL_ERROR
    assert failure_kind(AgentResult("2", [good[0], calc]), problem) == TOOL_ERROR
    assert failure_kind(AgentResult("1", [*good, calc]), problem) == "wrong answer"


# --------------------------------------------------------------------------------------------
# The problems and their training rows
# --------------------------------------------------------------------------------------------


def test_problems_are_right_seeded_and_the_heldout_split_is_disjoint() -> None:
    train, heldout = build_splits(600, 150, seed=5)
    assert len(train) == 600 and len(heldout) == 150
    assert len({p.question for p in heldout}) == 150
    assert not {p.question for p in train} & {p.question for p in heldout}
    assert build_splits(600, 150, seed=5) == (train, heldout)
    assert build_splits(600, 150, seed=6)[1] != heldout
    assert {p.kind for p in heldout} == {"cost", "price gap", "age gap", "age sum", "trip"}
    for p in train[:200]:
        facts = p.facts
        assert len(facts) == 4 and set(p.keys) <= set(facts)
        numbers = [facts[k] for k in p.keys]
        if p.kind == "cost":
            a, b = (int(w) for w in p.question.split() if w.isdigit())
            assert p.answer == a * numbers[0] + b * numbers[1]
            assert p.plan == f"need {a} {p.keys[0]}, {b} {p.keys[1]}"
        elif p.kind in ("price gap", "age gap"):
            assert p.answer == numbers[0] - numbers[1] > 0
        elif p.kind == "age sum":
            assert p.answer == sum(numbers)
        else:
            assert p.answer == 2 * sum(numbers)
        if p.kind != "cost":
            assert p.plan == "need " + ", ".join(p.keys)
        assert all(f"{k}={v}" in direct_question(p) for k, v in facts.items())
    with pytest.raises(ValueError, match="unknown problem kind"):
        make_problem(random.Random(0), "poetry")


def test_the_solution_replayed_through_the_loop_is_the_training_text() -> None:
    """The loop writes observations exactly as the training transcripts do, and the right
    actions solve each problem."""
    tok = agent_tokenizer()
    for p in build_splits(0, 40, seed=1)[1]:
        written = [text for text, by_model in solution_lines(p) if by_model]
        result = run_agent(Scripted(*written), p.question, default_tools(p.facts))
        assert result.answer == str(p.answer) and not result.errors()
        ids, _ = encode_solution(tok, p)
        assert tok.decode(ids) == result.transcript + "<|end|>"
        assert len(ids) <= 128  # fits the course model's context


def test_loss_is_masked_on_the_prompt_and_the_observations() -> None:
    tok = agent_tokenizer()
    problem = make_problem(random.Random(0), "cost")
    ids, labels = encode_solution(tok, problem)
    text = agent_prompt(problem.question) + "".join(t for t, _ in solution_lines(problem))
    assert ids == tok.encode(text + "<|end|>")
    learned = tok.decode([i for i, y in zip(ids, labels, strict=True) if y != IGNORE])
    model_lines = "".join(t for t, by_model in solution_lines(problem) if by_model)
    assert learned == model_lines + "<|end|>"
    assert "Observation" not in learned
    assert all(y in (IGNORE, i) for i, y in zip(ids, labels, strict=True))
    # the loss does not depend on the logits that predict an observation's tokens
    ids_t, labels_t = torch.tensor([ids]), torch.tensor([labels])
    logits = torch.randn(1, len(ids), tok.n_vocab, generator=torch.Generator().manual_seed(0))
    masked = torch.tensor([y == IGNORE for y in labels[1:]] + [True])
    changed = logits.clone()
    changed[0, masked] += 5 * torch.randn(int(masked.sum()), tok.n_vocab)
    assert torch.allclose(sft_loss(logits, labels_t), sft_loss(changed, labels_t))
    changed[0, ~masked] += 1.0 * torch.randn(int((~masked).sum()), tok.n_vocab)
    assert not torch.allclose(sft_loss(logits, labels_t), sft_loss(changed, labels_t))
    assert ids_t.shape == labels_t.shape
    rows = training_rows(tok, [problem], 128)
    assert rows[0] == (ids, labels)
    assert tok.decode(rows[1][0]).startswith(f"<|user|>{direct_question(problem)}<|end|>")
    with pytest.raises(ValueError, match="more than 20"):
        training_rows(tok, [problem], 20)


def test_add_agent_tokens_gives_each_keyword_one_row_at_its_bytes_mean() -> None:
    chat = ChatTokenizer(ByteTokenizer(eot=True))
    model = tiny_gpt(320)
    before = model.transformer.wte.weight.detach().clone()
    tok = add_agent_tokens(model, chat)
    weight = model.transformer.wte.weight
    assert tok.n_vocab == chat.n_vocab + 4
    assert tok.encode("Action: calc[1]") == [tok.token_id("Action: "), *b"calc[1]"]
    for keyword in KEYWORDS:
        expected = before[list(keyword.encode())].mean(dim=0)
        assert torch.allclose(weight[tok.token_id(keyword)], expected)
    kept = [i for i in range(320) if i not in [tok.token_id(k) for k in KEYWORDS]]
    assert torch.equal(weight[kept], before[kept])
    assert model.lm_head.weight is weight
    with pytest.raises(ValueError, match="already has"):
        add_agent_tokens(model, tok)
    with pytest.raises(ValueError, match="embedding rows"):
        add_agent_tokens(tiny_gpt(262), chat)


# --------------------------------------------------------------------------------------------
# A real model in the loop, the evaluation and the command line
# --------------------------------------------------------------------------------------------


def test_model_completer_returns_the_greedy_line() -> None:
    tok = agent_tokenizer()
    model = tiny_gpt(320)
    complete = model_completer(model, tok, max_new_tokens=12)
    text = agent_prompt("Cost of 3 figs?")
    out = complete(text)
    ids = tok.encode(text)
    stops = {10, tok.token_id("<|end|>")}
    for _ in range(12):  # greedy decoding by hand, one forward pass per token
        next_id = int(model(torch.tensor([ids]))[0, -1].argmax())
        if next_id == tok.token_id("<|end|>"):
            break
        ids.append(next_id)
        if next_id in stops:
            break
    assert out == tok.decode(ids[len(tok.encode(text)) :])
    assert "\n" not in out[:-1] and "<|end|>" not in out
    long = complete("x" * 300)  # longer than the context: the last tokens are kept
    assert isinstance(long, str)
    with pytest.raises(ValueError, match="max_new_tokens"):
        model_completer(model, tok, 0)


def test_agent_accuracy_on_a_tiny_model() -> None:
    tok = agent_tokenizer()
    problems = build_splits(0, 3, seed=2)[1]
    figures, runs = agent_accuracy(tiny_gpt(320), tok, problems, max_steps=2)
    assert figures["n"] == 3 and len(runs) == 3
    assert figures["accuracy"] == 0 and figures["mean_steps"] == 2
    assert sum(figures["failures"].values()) == 3


@pytest.fixture
def tiny_checkpoint(tmp_path: Path) -> Path:
    model = tiny_gpt(320)
    tok = add_agent_tokens(model, ChatTokenizer(ByteTokenizer(eot=True)))
    return save_chat_model(tmp_path / "agent", model, tok, {"test": True})


def test_cli_runs_a_checkpoint_step_by_step(
    tiny_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    facts = tmp_path / "facts.json"
    facts.write_text(json.dumps({"Fig": 47}))
    argv = ["--checkpoint", str(tiny_checkpoint), "--task", "Cost of 3 figs?", "--max-steps", "2"]
    assert main([*argv, "--memory", "yam=85", "--memory-file", str(facts)]) == 0
    out = capsys.readouterr().out
    assert "task: Cost of 3 figs?" in out and "{'fig': '47', 'yam': '85'}" in out
    assert "1. Action: " in out and "2. Observation: " in out
    assert "stopped at the step limit of 2 steps" in out or "Answer: " in out


def test_cli_errors(
    tiny_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cases = [
        (["--checkpoint", "gpt-huge-agent", "--task", "q"], "unknown checkpoint 'gpt-huge-agent'"),
        (["--checkpoint", str(tmp_path), "--task", "q"], "no config.json"),
        (["--checkpoint", str(tiny_checkpoint)], "give a --task"),
        (["--task", "q", "--memory", "fig"], "key=value"),
        (["--task", "q", "--memory-file", str(tmp_path / "none.json")], "cannot read"),
        (["--task", "q", "--max-steps", "0"], "--max-steps"),
        (["--heldout", "100000"], "--heldout must be"),
        (["--checkpoint", str(tiny_checkpoint), "--task", "q", "--device", "tpu"], "device"),
    ]
    (tmp_path / "bad.json").write_text("[1, 2]")
    cases.append((["--task", "q", "--memory-file", str(tmp_path / "bad.json")], "JSON object"))
    for argv, message in cases:
        assert main(argv) == 2, argv
        assert message in capsys.readouterr().err, argv


def test_cached_run_names_and_provenance() -> None:
    from llmcourse.agents import COURSE_RUNS, RECIPES, agent_run
    from llmcourse.agents.train import provenance

    assert set(COURSE_RUNS) == set(RECIPES) == {"gpt-tiny-agent"}
    with pytest.raises(ValueError, match="unknown agent checkpoint 'gpt-huge'"):
        agent_run("gpt-huge")
    record = provenance(RECIPES["gpt-tiny-agent"])
    assert record["recipe"]["start"] == "gpt-tiny-sft"
    assert record["start"]["base_fingerprint"]  # a retrained base retrains the agent
    assert json.loads(json.dumps(record)) == record
