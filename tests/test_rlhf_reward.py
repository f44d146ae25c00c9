"""Preferences and the reward model: Bradley-Terry on a separable toy, rankings to pairs,
the checkable grades, JSONL round trip and errors, and the reward read at the last response
token (padding-invariant) of a model that learns a preference."""

from __future__ import annotations

import json
import math

import pytest
import torch
from tiny_models import Chars, tiny_gpt

from llmcourse.checkpoint import CheckpointError
from llmcourse.rlhf.logprobs import logits_and_hidden
from llmcourse.rlhf.preferences import (
    PreferencePair,
    build_preferences,
    encode_pairs,
    grade,
    load_jsonl,
    ranking_to_pairs,
    save_jsonl,
)
from llmcourse.rlhf.reward import (
    RewardModel,
    RMConfig,
    bradley_terry_loss,
    pair_accuracy,
    reward_fn,
    train_reward_model,
)
from llmcourse.sft import ChatTokenizer, Example

pytestmark = pytest.mark.usefixtures("one_thread")


def ex(prompt: str, answer: str, task: str = "reverse") -> Example:
    return Example((("user", prompt), ("assistant", answer)), task)


def test_bradley_terry_loss_by_hand_and_weighted() -> None:
    r_c, r_r = torch.tensor([2.0, -1.0, 0.5]), torch.tensor([1.0, 1.0, 0.5])
    by_hand = [-math.log(1 / (1 + math.exp(-(c - r)))) for c, r in zip(r_c, r_r, strict=True)]
    assert bradley_terry_loss(r_c, r_r).item() == pytest.approx(sum(by_hand) / 3)
    w = torch.tensor([0.5, 0.25, 0.25])
    weighted = sum(wi * li for wi, li in zip(w.tolist(), by_hand, strict=True))
    assert bradley_terry_loss(r_c, r_r, w).item() == pytest.approx(weighted)
    assert bradley_terry_loss(r_c + 7, r_r + 7).item() == pytest.approx(sum(by_hand) / 3)
    with pytest.raises(ValueError, match="chosen"):
        bradley_terry_loss(r_c, r_r[:2])


def test_bradley_terry_learns_a_separable_toy() -> None:
    gen = torch.Generator().manual_seed(0)
    true_w = torch.randn(8, generator=gen)
    a, b = torch.randn(2, 600, 8, generator=gen).unbind(0)
    better = (a @ true_w > b @ true_w)[:, None]
    chosen, rejected = torch.where(better, a, b), torch.where(better, b, a)
    w = torch.zeros(8, requires_grad=True)
    opt = torch.optim.Adam([w], lr=0.05)
    for _ in range(200):
        opt.zero_grad()
        bradley_terry_loss(chosen[:500] @ w, rejected[:500] @ w).backward()
        opt.step()
    with torch.no_grad():
        accuracy = (chosen[500:] @ w > rejected[500:] @ w).float().mean().item()
    assert accuracy > 0.95


def test_ranking_to_pairs_counts_and_ties() -> None:
    for k in (2, 4, 9):
        pairs = ranking_to_pairs(list(range(k)))
        assert len(pairs) == k * (k - 1) // 2 and all(c < r for c, r in pairs)
    pairs = ranking_to_pairs(["w", "x", "y", "z"], [3, 2, 2, 0])
    assert pairs == [("w", "x"), ("w", "y"), ("w", "z"), ("x", "z"), ("y", "z")]
    assert ranking_to_pairs(["x", "y"], [1, 1]) == []
    with pytest.raises(ValueError, match="best first"):
        ranking_to_pairs(["x", "y"], [0, 1])
    with pytest.raises(ValueError, match="scores"):
        ranking_to_pairs(["x", "y"], [1])


def test_grade_ranks_right_over_well_formed_over_malformed() -> None:
    e = ex('Reverse the word "abc".', "cba")
    assert grade(e, "cba<|end|>") == 3
    assert grade(e, "abc<|end|>") == 2  # wrong, the reference's length
    assert grade(e, "cb<|end|>") == 1
    assert grade(e, "cba") == 0  # never ended
    assert grade(e, "cba\nx<|end|>") == 0
    assert grade(e, "<|end|>") == 0


def test_build_preferences_pairs_differ_in_grade() -> None:
    tok = ChatTokenizer(Chars())
    model = tiny_gpt(tok.n_vocab)
    examples = [ex("ab", "ba"), ex("cd", "d"), ex("a", "a"), ex("bcd", "c")]
    pairs = build_preferences(model, tok, examples, k=6, seed=1, max_new_tokens=6)
    assert pairs and {p.example for p in pairs} <= set(examples)
    assert all(grade(p.example, p.chosen) > grade(p.example, p.rejected) for p in pairs)
    assert all(p.chosen != p.rejected for p in pairs)
    assert pairs == build_preferences(model, tok, examples, k=6, seed=1, max_new_tokens=6)
    with pytest.raises(ValueError, match="k >= 2"):
        build_preferences(model, tok, examples, k=1)


def test_jsonl_round_trip_and_bad_lines(tmp_path) -> None:
    system = Example((("system", "Be brief."), ("user", "Sort: cab"), ("assistant", "abc")), "sort")
    pairs = [
        PreferencePair(ex('Reverse "ab".', "ba"), "ba<|end|>", "ab<|end|>"),
        PreferencePair(system, "abc<|end|>", "ab\nc"),
    ]
    path = save_jsonl(pairs, tmp_path / "prefs.jsonl")
    assert load_jsonl(path) == pairs
    human = {"prompt": [{"role": "user", "content": "Hi?"}], "chosen": "Hello.", "rejected": "x"}
    good = json.dumps(human)
    (tmp_path / "human.jsonl").write_text(good + "\n\n" + good + "\n")
    loaded = load_jsonl(tmp_path / "human.jsonl")
    assert len(loaded) == 2 and loaded[0].example.task == "human"
    assert loaded[0].example.prompt == human["prompt"] and loaded[0].example.answer == "Hello."
    bad_lines = {
        "{not json": "line 2",
        json.dumps({**human, "chosen": ""}): "non-empty string",
        json.dumps({"prompt": human["prompt"], "chosen": "a"}): "missing field",
        json.dumps({**human, "prompt": [{"role": "robot", "content": "x"}]}): "role",
        json.dumps({**human, "prompt": []}): "non-empty list",
        json.dumps([1, 2]): "JSON object",
    }
    for line, message in bad_lines.items():
        (tmp_path / "bad.jsonl").write_text(good + "\n" + line + "\n")
        with pytest.raises(ValueError, match=f"bad.jsonl, line 2: .*{message}|{message}"):
            load_jsonl(tmp_path / "bad.jsonl")
    with pytest.raises(FileNotFoundError, match="no preference file"):
        load_jsonl(tmp_path / "missing.jsonl")


def test_reward_is_read_at_the_last_response_token_and_ignores_padding() -> None:
    tok = ChatTokenizer(Chars())
    lm = tiny_gpt(tok.n_vocab)
    rm = RewardModel(lm)
    with torch.no_grad():  # a non-zero head, so the reward depends on the hidden state
        rm.head.weight.normal_(generator=torch.Generator().manual_seed(0))
        rm.head.bias.fill_(0.3)
    e = ex("abc", "cba")
    pairs = [PreferencePair(e, "cba<|end|>", "c<|end|>")]
    ids, mask = encode_pairs(tok, pairs, 64)  # row 1 is shorter: padded after its <|end|>
    rewards = rm(ids, mask)
    for row in range(2):
        last = int(mask[row].nonzero().max())
        _, hidden = logits_and_hidden(lm, ids[row : row + 1, : last + 1])
        torch.testing.assert_close(rewards[row], rm.head(hidden[0, -1]).squeeze())
    padded = torch.cat([ids, torch.full((2, 5), 1)], dim=1)  # other padding, longer
    wide_mask = torch.cat([mask, torch.zeros(2, 5, dtype=torch.bool)], dim=1)
    torch.testing.assert_close(rm(padded, wide_mask), rewards)
    score = reward_fn(rm, tok)([e, e], ["cba", "c"])
    torch.testing.assert_close(score, rewards.detach())
    with pytest.raises(ValueError, match="at least one response token"):
        rm(ids, torch.zeros_like(mask))


def test_reward_model_learns_a_preference_and_leaves_the_lm_alone() -> None:
    tok = ChatTokenizer(Chars())
    lm = tiny_gpt(tok.n_vocab)
    before = {k: v.clone() for k, v in lm.state_dict().items()}
    prompts = ["ab", "ba", "cd", "dc", "abc", "cab", "bcd", "dcb", "a", "d", "bd", "ca"]
    pairs = [  # prefer answers that end with "a"
        PreferencePair(ex(p, "a"), r1 + "a<|end|>", r2 + "<|end|>")
        for p in prompts
        for r1, r2 in (("c", "cd"), ("b", "bb"), ("", "d"))
    ]
    lm.requires_grad_(False)  # a frozen reference: the reward model's copy still trains
    rm = RewardModel(lm)
    assert pair_accuracy(rm, tok, pairs) == 0.5  # zero head: all rewards tie
    config = RMConfig(steps=40, prompts_per_step=6, lr=3e-3, warmup=2, log_every=10)
    history = train_reward_model(rm, tok, pairs, config, heldout=pairs[:6], eval_every=20)
    assert history["train_loss"][-1] < 0.3 and history["heldout_accuracy"][-1] == 1.0
    assert history["eval_step"] == [20, 40]
    assert pair_accuracy(rm, tok, pairs) == 1.0
    for k, v in lm.state_dict().items():
        assert torch.equal(v, before[k]), k
        assert not torch.equal(v, rm.lm.state_dict()[k]), k  # every weight of the copy moved


def test_course_cache_round_trip_and_stale_or_damaged_runs(tmp_path) -> None:
    from llmcourse.causal_lm.data import ByteTokenizer
    from llmcourse.rlhf.course import _load_cached, load_run, save_run

    tok = ChatTokenizer(ByteTokenizer(eot=True))
    rm = RewardModel(tiny_gpt(tok.n_vocab))
    with torch.no_grad():
        rm.head.weight.normal_(generator=torch.Generator().manual_seed(1))
    record = {"name": "gpt-tiny-rm", "recipe": {"lr": 0.1}}
    logged = {"step": [1.0, 2.0], "train_loss": [0.7, 0.6], "eval_step": [2.0]}
    save_run(tmp_path, rm, tok, logged, record)
    assert json.loads((tmp_path / "metrics.json").read_text()) == logged
    assert (tmp_path / "metrics.csv").read_text().splitlines()[0] == "step,train_loss"
    loaded, _ = _load_cached(tmp_path, record, "cpu")
    assert isinstance(loaded, RewardModel) and isinstance(load_run(tmp_path)[0], RewardModel)
    pairs = [PreferencePair(ex("ab", "ba"), "ba<|end|>", "b<|end|>")]
    ids, mask = encode_pairs(tok, pairs, 64)
    torch.testing.assert_close(loaded(ids, mask), rm(ids, mask))
    assert _load_cached(tmp_path, {**record, "recipe": {"lr": 0.2}}, "cpu") is None
    (tmp_path / "reward_head.safetensors").write_bytes(b"damaged")
    assert _load_cached(tmp_path, record, "cpu") is None
    with pytest.raises(CheckpointError, match="reward head"):
        load_run(tmp_path)
    assert _load_cached(tmp_path / "missing", record, "cpu") is None
    with pytest.raises(CheckpointError, match="not a complete RLHF run"):
        load_run(tmp_path / "missing")


def test_reward_command_line_trains_on_a_jsonl_file(tmp_path, capsys) -> None:
    from llmcourse.causal_lm.data import ByteTokenizer
    from llmcourse.rlhf.course import load_run
    from llmcourse.rlhf.reward import main
    from llmcourse.sft import save_chat_model

    tok = ChatTokenizer(ByteTokenizer(eot=True))
    save_chat_model(tmp_path / "start", tiny_gpt(tok.n_vocab), tok, {})
    pairs = [PreferencePair(ex(p, "a"), "a<|end|>", "bb<|end|>") for p in ("ab", "cd", "ef")]
    save_jsonl(pairs, tmp_path / "pairs.jsonl")
    main(["--start", str(tmp_path / "start"), "--pairs", str(tmp_path / "pairs.jsonl"),
          "--heldout", str(tmp_path / "pairs.jsonl"), "--steps", "3", "--device", "cpu",
          "--out", str(tmp_path / "rm")])  # fmt: skip
    assert "3 training pairs" in capsys.readouterr().out
    rm, _ = load_run(tmp_path / "rm")
    assert isinstance(rm, RewardModel) and rm.head.weight.abs().sum() > 0
    record = json.loads((tmp_path / "rm" / "rlhf.json").read_text())
    assert record["config"]["steps"] == 3 and "heldout_accuracy" in record["figures"]
    with pytest.raises(ValueError, match="neither a fine-tuned checkpoint"):
        main(["--start", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x")])
