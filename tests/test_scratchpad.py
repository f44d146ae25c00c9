"""Scratchpad addition: the formats round-trip, the reference scratchpad computes the sum, the
held-out problems never reach training, and a few training steps lower the loss."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest
import torch

from llmcourse.prompting.scratchpad import (
    END,
    PRESETS,
    answer_of,
    decode,
    encode,
    encode_problems,
    new_model,
    parse_scratchpad,
    prompt_text,
    same_token_batch,
    solve,
    splits,
    target_loss,
    target_text,
    train_adder,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_worked_example() -> None:
    assert prompt_text(123, 989) + target_text(123, 989, "direct") == "123+989=1112$"
    text = target_text(123, 989, "scratchpad")
    assert text == "[3+9+0=12,2+8+1=11,1+9+1=11]1112$"
    assert target_text(5, 70, "scratchpad") == "[5+0+0=05,0+7+0=07]75$"


def test_reference_scratchpad_adds_random_problems() -> None:
    rng = random.Random(0)
    for _ in range(500):
        a, b = rng.randint(0, 10 ** rng.randint(1, 7)), rng.randint(0, 10 ** rng.randint(1, 7))
        steps, answer = parse_scratchpad(target_text(a, b, "scratchpad"))
        assert int(answer) == a + b
        assert answer_of(target_text(a, b, "scratchpad"), "scratchpad") == str(a + b)
        assert answer_of(target_text(a, b, "direct"), "direct") == str(a + b)
        # each step is digit + digit + carry, the carry the tens of the step before
        da, db = str(a)[::-1], str(b)[::-1]
        carry = 0
        for i, (x, y, c, s) in enumerate(steps):
            assert (x, y, c) == (int(da[i]) if i < len(da) else 0,
                                 int(db[i]) if i < len(db) else 0, carry)  # fmt: skip
            assert s == x + y + c
            carry = s // 10
        text = prompt_text(a, b) + target_text(a, b, "scratchpad")
        assert decode(encode(text)) == text


def test_bad_text_is_refused() -> None:
    with pytest.raises(ValueError, match="not a scratchpad"):
        parse_scratchpad("1112$")
    with pytest.raises(ValueError, match="bad scratchpad step"):
        parse_scratchpad("[3+9=12]12$")
    with pytest.raises(ValueError, match="not in the vocabulary"):
        encode("12-3")
    with pytest.raises(ValueError, match="unknown format"):
        target_text(1, 2, "cot")
    with pytest.raises(ValueError, match="non-negative"):
        prompt_text(-1, 2)
    assert answer_of("[3+9+0=12", "scratchpad") == ""


def test_heldout_never_in_training() -> None:
    config = replace(PRESETS["smoke"], train_problems=20_000)
    pool, heldout = splits(config)
    assert sorted(heldout) == [1, 2, 3, 4]  # one digit beyond training's 1..3
    assert len(heldout[1]) == 20 and all(len(g) == 20 for g in heldout.values())
    for n, group in heldout.items():
        assert all(len(str(a)) == n and len(str(b)) == n for a, b in group)
    assert not set(pool) & {p for g in heldout.values() for p in g}
    # the pool is dense in small problems, so the exclusion had work to do
    assert sum(max(a, b) < 10 for a, b in pool) > 100
    assert {len(str(a)) for a, _ in pool} == {1, 2, 3}


def test_labels_cover_the_target_only() -> None:
    ids, labels = encode_problems([(12, 5), (7, 8)], "scratchpad")
    row = ids[0].tolist()
    assert decode(row[: row.index(END) + 1]) == "12+5=[2+5+0=07,1+0+0=01]17$"
    prompt = len("12+5=")
    assert (labels[0, :prompt] == -100).all()
    assert decode(labels[0, prompt : prompt + 21].tolist()) == "[2+5+0=07,1+0+0=01]17$"[:21]


def test_a_few_steps_lower_the_loss_and_solve_runs() -> None:
    config = replace(PRESETS["smoke"], steps=30, eval_every=0, heldout_per_length=5)
    model, record = train_adder(config, "scratchpad")
    losses = record["history"]["train_loss"]
    assert losses[-1] < losses[0] - 0.3  # logged every 10 steps: 10, 20, 30
    assert record["heldout_in_training"] == 0
    assert record["tokens_seen"]["tokens"] > record["tokens_seen"]["target_tokens"] > 0
    out = solve(model, [(12, 34), (5, 6)], "scratchpad")
    assert len(out) == 2 and all(isinstance(o, str) for o in out)
    assert same_token_batch(config) > 2 * config.batch_size  # the scratchpad is much longer


def test_loss_ignores_padding() -> None:
    torch.manual_seed(0)
    model = new_model(PRESETS["smoke"])
    ids, labels = encode_problems([(3, 4)], "direct")
    padded = torch.cat([ids, torch.full((1, 5), END)], dim=1)
    padded_labels = torch.cat([labels, torch.full((1, 5), -100)], dim=1)
    assert torch.allclose(
        target_loss(model, ids, labels), target_loss(model, padded, padded_labels)
    )
