"""The evaluation harness and the pitfalls: bookkeeping checked by hand and against
independent computations, on tiny random models (no course checkpoint is needed)."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from llmcourse.causal_lm.data import ByteTokenizer
from llmcourse.evaluate import harness, pitfalls
from llmcourse.evaluate.__main__ import main
from llmcourse.evaluate.harness import (
    PRESETS,
    Checkpoint,
    Comparison,
    Question,
    choose,
    option_logprobs,
    scores_by_task,
    stream_of,
    window_nats,
)
from llmcourse.evaluate.perplexity import token_nll
from llmcourse.gpt import GPT, GPTConfig
from llmcourse.sft.data import single_turn
from llmcourse.sft.template import ChatTemplate, ChatTokenizer, add_special_tokens
from llmcourse.sft.train import save_chat_model

TINY = PRESETS["tiny"]


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_chat(seed: int = 0) -> tuple[GPT, ChatTokenizer]:
    torch.manual_seed(seed)
    model = GPT(GPTConfig(vocab_size=257, n_positions=96, n_layer=1, n_head=2, n_embd=32))
    with torch.no_grad():  # away from the init, so a skipped parameter would show
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    tok = add_special_tokens(model, ByteTokenizer(eot=True))
    return model.eval(), tok


def test_choose_sum_vs_length_normalised_by_hand() -> None:
    # option 0: one token at log p -1.5; option 1: four tokens at -0.5 each (sum -2.0)
    scored = [(-1.5, 1), (-2.0, 4), (-9.0, 3)]
    assert choose(scored, normalise=False) == 0  # -1.5 > -2.0
    assert choose(scored, normalise=True) == 1  # -0.5 per token > -1.5


def test_option_logprobs_match_a_hand_computed_log_softmax() -> None:
    model, tok = tiny_chat()
    ckpt = Checkpoint("t", model, tok, chat=True)
    q = Question("reverse", 'Reverse the word "abc".', ("cba", "abc", "cbaa", "x"), 0)
    got = option_logprobs(ckpt, [q])[0]
    end = tok.token_id("<|end|>")
    prompt = ChatTemplate().prompt_ids(tok, [{"role": "user", "content": q.prompt}])
    for option, (lp, n) in zip(q.options, got, strict=True):
        answer = [*tok.encode_ordinary(option), end]
        ids = torch.tensor([prompt + answer])
        with torch.no_grad():
            logp = F.log_softmax(model(ids)[0, :-1].double(), -1)
        want = sum(float(logp[t - 1, ids[0, t]]) for t in range(len(prompt), ids.shape[1]))
        assert n == len(answer)
        assert lp == pytest.approx(want, abs=1e-4)


def test_multiple_choice_questions_are_well_formed() -> None:
    qs = harness.multiple_choice_questions(6, seed=3)
    assert len(qs) == 30 and qs == harness.multiple_choice_questions(6, seed=3)
    for q in qs:
        assert len(set(q.options)) == 4 and 0 <= q.answer < 4
    answers_at = {q.answer for q in qs}
    assert len(answers_at) > 1  # the right option is not always in the same place
    rev = next(q for q in qs if q.kind == "reverse")
    word = rev.prompt.split('"')[1]
    assert rev.options[rev.answer] == word[::-1]


def test_scores_by_task_counts_each_task_and_all() -> None:
    ex = [single_turn(f"q{i}", "a", t) for i, t in enumerate(["add", "add", "sort", "add"])]
    s = scores_by_task([True, False, True, True], ex, TINY)
    assert s["add"].value == pytest.approx(2 / 3) and s["add"].n == 3
    assert s["sort"].value == 1.0 and s["sort"].low == s["sort"].high == 1.0
    assert s["all"].value == 0.75 and s["all"].low <= 0.75 <= s["all"].high


def test_pass_at_k_suite_agrees_with_enumerating_k_subsets(monkeypatch) -> None:
    examples = [single_turn(f"What is {i} plus 1?", str(i + 1), "add") for i in range(3)]
    scripted = [["1", "x", "1", "y"], ["x", "x", "x", "2 "], ["x", "x", "x", "x"]]
    monkeypatch.setattr(harness, "passk_examples", lambda config: examples)
    monkeypatch.setattr(harness, "sample_answers", lambda *a, **k: scripted)
    ckpt = Checkpoint("t", *tiny_chat(), chat=True)
    got = harness.pass_at_k_suite(ckpt, TINY.replace(passk_ks=(1, 2, 3)))
    for k in (1, 2, 3):
        per_prompt = []
        for samples, e in zip(scripted, examples, strict=True):
            ok = [s.strip() == e.answer for s in samples]
            subsets = list(itertools.combinations(ok, k))
            per_prompt.append(sum(any(s) for s in subsets) / len(subsets))
        assert got[f"pass@{k}"].value == pytest.approx(np.mean(per_prompt))


def test_window_nats_add_up_to_the_stream_cross_entropy() -> None:
    model, tok = tiny_chat()
    ids, n_bytes = stream_of(tok, ["hello world", "abc"], max_tokens=None)
    assert ids.tolist() == [*b"hello world", 256, *b"abc", 256] and n_bytes == 14
    nats, tokens = window_nats(model, ids, seq_len=5)
    total, count = token_nll(model, ids, seq_len=5)
    assert tokens.sum() == count == len(ids) - 1
    assert nats.sum() == pytest.approx(total, rel=1e-5)
    with pytest.raises(ValueError, match="fits"):
        stream_of(tok, ["a long document"], max_tokens=3)


def test_ngram_overlap_on_a_hand_made_example() -> None:
    train = torch.tensor([1, 2, 3, 4, 5, 1, 2, 9])
    index = pitfalls.ngram_index(train, 3)
    assert len(index) == 6
    items = [[1, 2, 3, 4], [1, 2, 9, 9], [7, 7, 7], [1, 2]]
    # [1,2,3],[2,3,4] both in; [1,2,9] in, [2,9,9] not; [7,7,7] not; too short -> 0
    assert pitfalls.ngram_overlap(items, index, 3).tolist() == [1.0, 0.5, 0.0, 0.0]


def test_judge_agreement_by_hand() -> None:
    exact = [True, True, False, False, True]
    scores = [0.9, -0.2, 0.5, -1.0, 0.1]
    r = pitfalls.judge_agreement(exact, scores, threshold=0.0)
    # judged right: 0, 2, 4; truth right: 0, 1, 4
    assert r["agreement"] == 0.6 and r["false_accepts"] == [2] and r["false_rejects"] == [1]
    assert r["precision"] == pytest.approx(2 / 3) and r["recall"] == pytest.approx(2 / 3)
    t = pitfalls.best_threshold(exact, scores)
    assert pitfalls.judge_agreement(exact, scores, t)["agreement"] >= 0.6


def test_rephrase_keeps_the_answer_and_refuses_other_tasks() -> None:
    e = single_turn('Reverse the word "abc".', "cba", "reverse")
    assert pitfalls.rephrase(e, "question").messages[0][1] == "What is the reverse of abc?"
    assert pitfalls.rephrase(e, "terse").answer == "cba"
    assert pitfalls.rephrase(e, "original") == e
    with pytest.raises(ValueError, match="rephrased"):
        pitfalls.rephrase(single_turn("What is 1 plus 2?", "3", "add"), "terse")
    with pytest.raises(ValueError, match="unknown format"):
        pitfalls.rephrase(e, "shouting")


def test_cli_on_a_tiny_folder_writes_table_json_and_figure(tmp_path, capsys) -> None:
    model, tok = tiny_chat()
    folder = save_chat_model(tmp_path / "tiny", model, tok, {"base": "test"})
    out = tmp_path / "out"
    argv = ["--checkpoint", str(folder), "--suite", "multiple_choice", "exact_match",
            "--preset", "tiny", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    table = capsys.readouterr().out
    assert "| tiny |" in table and "multiple_choice norm:all" in table
    data = json.loads((out / "comparison.json").read_text())
    scores = data["results"]["tiny"]["suites"]
    assert scores["exact_match"]["all"]["n"] == TINY.n_heldout
    assert scores["multiple_choice"]["sum:all"]["n"] == 5 * TINY.mc_per_kind
    assert (out / "comparison.png").stat().st_size > 1000
    again = Comparison.load_json(out / "comparison.json")
    assert again.results == data["results"] and again.config == TINY


def test_bad_names_and_suites_give_clear_errors(tmp_path, capsys) -> None:
    assert main(["--checkpoint", str(tmp_path / "missing"), "--preset", "tiny"]) == 2
    assert "neither a folder nor a course checkpoint" in capsys.readouterr().err
    with pytest.raises(ValueError, match="unknown suite"):
        harness.evaluate_checkpoint(Checkpoint("t", *tiny_chat(), chat=True), ["bleu"], TINY)
    with pytest.raises(ValueError, match="not a comparison"):
        (tmp_path / "x.json").write_text("{}")
        Comparison.load_json(tmp_path / "x.json")


def test_weights_hash_changes_with_one_weight() -> None:
    model, _ = tiny_chat()
    before = harness.weights_hash(model)
    with torch.no_grad():
        model.transformer.ln_f.weight[0] += 1e-3
    assert harness.weights_hash(model) != before and len(before) == 16
    assert math.isfinite(float(model.transformer.ln_f.weight[0]))
