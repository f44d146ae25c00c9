"""Prompt templates: the prompts against chapter 9's own formats, the choice of shots, token
counting against the context window, and the exact-match bookkeeping on a scripted model."""

from __future__ import annotations

import pytest
import torch
from tiny_models import tiny_gpt
from torch import nn

from llmcourse.causal_lm.data import ByteTokenizer
from llmcourse.generate import GenerationConfig, generate
from llmcourse.prompting import templates as T
from llmcourse.sft.data import Example, dialogue_examples, instruction_examples
from llmcourse.sft.evaluate import plain_prompt
from llmcourse.sft.template import ChatTemplate, ChatTokenizer

pytestmark = pytest.mark.usefixtures("one_thread")

POOL = instruction_examples(300, seed=5)
QUERIES = instruction_examples(12, seed=6)


def test_zero_shot_prompts_are_chapter_9s_formats() -> None:
    for e in instruction_examples(5, seed=3) + dialogue_examples(3, seed=3):
        assert T.few_shot_prompt([], e, "instruction") == plain_prompt(e)
        assert T.few_shot_prompt([], e, "chat") == ChatTemplate().render(e.prompt, True)


def test_few_shot_chat_prompt_is_the_conversation_with_the_shots_first() -> None:
    query = QUERIES[0]
    shots = T.choose_shots(POOL, query, 3)
    messages = [m for s in shots for m in s.chat()] + query.prompt
    assert T.few_shot_prompt(shots, query, "chat") == ChatTemplate().render(messages, True)


def test_few_shot_prompt_layout() -> None:
    a = Example((("user", "Q1"), ("assistant", "A1")), "t")
    b = Example((("user", "Q2"), ("assistant", "A2")), "t")
    q = Example((("user", "Q3"), ("assistant", "A3")), "t")
    assert T.few_shot_prompt([a, b], q, "qa") == "Q: Q1\nA: A1\n\nQ: Q2\nA: A2\n\nQ: Q3\nA: "
    assert T.few_shot_prompt([a], q, "arrow") == "Q1 => A1\nQ3 => "
    eot = "<|endoftext|>"
    got = T.few_shot_prompt([a], q, "instruction")
    assert (
        got == f"### Instruction:\nQ1\n### Response:\nA1{eot}### Instruction:\nQ3\n### Response:\n"
    )
    with pytest.raises(ValueError, match="query's own question"):
        T.few_shot_prompt([a, q], q, "qa")
    with pytest.raises(ValueError, match="question"):
        T.PromptTemplate("bad", "{answer} then {question}")


def test_choose_shots_same_task_never_the_query_nor_heldout_and_seeded() -> None:
    heldout = POOL[:50]
    for query in QUERIES:
        pool = [*POOL, query]  # the query itself is in the pool: it must never be drawn
        shots = T.choose_shots(pool, query, 4, seed=1, heldout=heldout)
        assert len(shots) == 4 and len({s.key for s in shots}) == 4
        assert all(s.task == query.task for s in shots)
        assert all(s.key != query.key for s in shots)
        assert not {s.key for s in shots} & {e.key for e in heldout}
        assert shots == T.choose_shots(pool, query, 4, seed=1, heldout=heldout)
        assert shots[:2] == T.choose_shots(pool, query, 2, seed=1, heldout=heldout)
    draws = [[s.key for s in T.choose_shots(POOL, q, 4, seed=s)] for q in QUERIES for s in (1, 2)]
    assert draws[0::2] != draws[1::2]
    with pytest.raises(ValueError, match="only"):
        T.choose_shots(POOL[:3], QUERIES[0], 4)


def test_encode_prompt_turns_special_strings_into_their_ids() -> None:
    tok = ByteTokenizer(eot=True)
    assert T.encode_prompt(tok, "ab<|endoftext|>c") == [97, 98, 256, 99]
    chat = ChatTokenizer(tok)
    text = T.few_shot_prompt(T.choose_shots(POOL, QUERIES[1], 2), QUERIES[1], "chat")
    assert T.encode_prompt(chat, text) == chat.encode(text)
    assert T.encode_prompt(chat, "x<|endoftext|><|end|>") == [120, 256, chat.token_id("<|end|>")]
    assert T.stop_ids(chat, T.TEMPLATES["chat"]) == (chat.token_id("<|end|>"),)
    assert T.stop_ids(tok, T.TEMPLATES["qa"]) == (10, 256)
    with pytest.raises(ValueError, match="not one"):
        T.stop_ids(tok, T.PromptTemplate("x", "{question}{answer}", stop=("ab",)))


def test_prompt_lengths_count_prompt_answer_and_stop() -> None:
    tok = ByteTokenizer(eot=True)
    for k in (0, 2):
        got = T.prompt_lengths(tok, QUERIES, POOL, "instruction", k)
        for q, n in zip(QUERIES, got, strict=True):
            text = T.few_shot_prompt(T.choose_shots(POOL, q, k), q, "instruction")
            eots = text.count("<|endoftext|>")
            assert eots == k
            assert n == len(text.encode()) - eots * (len("<|endoftext|>") - 1) + len(q.answer) + 1


def test_greedy_answers_batched_by_length_match_one_at_a_time() -> None:
    model = tiny_gpt(257, seed=1)
    prompts = [[1, 2, 3], [4, 5, 6], [7, 8], [9, 10, 11, 12, 13], [3, 3, 3]]
    stop = (5, 17)
    got = T.greedy_answers(model, ByteTokenizer(eot=True), prompts, stop, [6, 3, 6, 6, 2],
                           batch_size=2)  # fmt: skip
    for p, limit, answer in zip(prompts, [6, 3, 6, 6, 2], got, strict=True):
        config = GenerationConfig(max_new_tokens=limit, temperature=0.0)
        new = generate(model, torch.tensor([p]), config)[0, len(p) :].tolist()
        cut = next((i for i, t in enumerate(new) if t in stop), len(new))
        assert answer == ByteTokenizer(eot=True).decode(new[:cut]).strip()
    with pytest.raises(ValueError, match="window"):
        T.greedy_answers(model, ByteTokenizer(), [[1] * 64], stop)


class _Cache:
    """Just enough of a KV cache for ``generate``: the scripted model keeps the whole text."""

    def __init__(self) -> None:
        self.ids: list[list[int]] = []
        self.length = 0

    def reset(self) -> None:
        self.ids, self.length = [], 0


class Scripted(nn.Module):
    """A byte-level "model" with a known behaviour: after a ``qa`` prompt it writes the right
    answer when the prompt holds at least one shot and the task is one of ``knows``, a wrong
    one ("?") otherwise, then a newline."""

    def __init__(self, answers: dict[str, tuple[str, str]], knows: set[str], window: int) -> None:
        super().__init__()
        self.answers, self.knows, self.max_seq_len = answers, knows, window
        self.anchor = nn.Parameter(torch.zeros(()))

    def new_cache(self, batch: int, max_len: int) -> _Cache:
        return _Cache()

    def forward(self, ids: torch.Tensor, cache: _Cache | None = None) -> torch.Tensor:
        assert cache is not None
        if not cache.ids:
            cache.ids = [[] for _ in range(ids.shape[0])]
        logits = torch.full((ids.shape[0], ids.shape[1], 257), -1.0)
        for row, new in enumerate(ids.tolist()):
            cache.ids[row] += new
            text = bytes(t for t in cache.ids[row] if t < 256).decode()
            question, _, written = text.rpartition("Q: ")[2].partition("\nA: ")
            answer, task = self.answers[question]
            shots = text.count("Q: ") - 1
            target = answer if task in self.knows and shots >= 1 else "?"
            next_char = target[len(written)] if len(written) < len(target) else "\n"
            logits[row, -1, ord(next_char)] = 1.0
        cache.length += ids.shape[1]
        return logits


def test_exact_match_by_shots_bookkeeping_on_a_scripted_model() -> None:
    tok = ByteTokenizer(eot=True)
    queries = QUERIES
    answers = {e.key: (e.answer, e.task) for e in [*POOL, *queries]}
    knows = {queries[0].task}
    window = 120
    model = Scripted(answers, knows, window)
    rows = T.exact_match_by_shots(model, tok, queries, POOL, "qa", shots=(1, 2, 4))
    assert {r["shots"] for r in rows} == {0, 1, 2, 4}
    for k in (0, 1, 2, 4):
        lengths = T.prompt_lengths(tok, queries, POOL, "qa", k)
        for task in {q.task for q in queries} | {"all"}:
            row = next(r for r in rows if r["task"] == task and r["shots"] == k)
            members = [i for i, q in enumerate(queries) if task in ("all", q.task)]
            fit = [i for i in members if lengths[i] <= window]
            assert row["n"] == len(members) and row["fit"] == len(fit)
            if not fit:
                assert row["exact_match"] is None
                continue
            right = [i for i in fit if k >= 1 and queries[i].task in knows]
            assert row["exact_match"] == pytest.approx(len(right) / len(fit))
            assert row["zero_shot_same"] == 0.0  # no shot, no right answer
    fits = {r["shots"]: r["fit"] for r in rows if r["task"] == "all"}
    assert fits[0] == len(queries) and fits[4] < fits[0]  # the window cuts the longest prompts
    assert "-" in T.shots_table(rows, "qa") or "*" in T.shots_table(rows, "qa")


def test_command_line_shows_a_prompt(capsys) -> None:
    assert T.main(["--template", "qa", "--shots", "1", "--query", "2"]) == 0
    out = capsys.readouterr().out
    assert out.count("Q: ") == 2 and "reference answer" in out
    assert T.main(["--query", "100000"]) == 2
    assert "--query must be" in capsys.readouterr().err
