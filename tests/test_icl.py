"""In-context learning: the data (held-out functions never trained on, answers consistent with
each sequence's function), the references and the accuracy bookkeeping against plain loops,
a few training steps, the cached run and the command line."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

from llmcourse.data import CACHE_ENV
from llmcourse.gpt import GPT
from llmcourse.prompting import icl
from llmcourse.runtime import seed_everything

pytestmark = pytest.mark.usefixtures("one_thread")

MICRO = icl.PRESETS["micro"]


def test_sequences_follow_their_function_and_label_only_the_outputs() -> None:
    n = 6
    functions = icl.random_permutations(9, n, torch.Generator().manual_seed(0))
    inputs, labels = icl.make_sequences(functions, 7, torch.Generator().manual_seed(1))
    assert inputs.shape == labels.shape == (9, 14)
    for f, seq, lab in zip(functions.tolist(), inputs.tolist(), labels.tolist(), strict=True):
        assert seq[0] == 2 * n  # <bos>
        tokens = [*seq[1:], None]
        for i in range(7):
            x = tokens[2 * i]
            assert 0 <= x < n and lab[2 * i + 1] == f[x] + n  # labelled where x_i is read
            if tokens[2 * i + 1] is not None:
                assert tokens[2 * i + 1] == f[x] + n
        assert all(lab[j] == icl.IGNORE for j in range(0, 14, 2))


def test_repeat_prob_repeats_the_previous_input() -> None:
    functions = icl.random_permutations(50, 6, torch.Generator().manual_seed(0))
    generator = torch.Generator().manual_seed(1)
    inputs, _ = icl.make_sequences(functions, 9, generator, repeat_prob=1.0)
    xs = icl.query_inputs(inputs)
    assert torch.equal(xs, xs[:, :1].expand_as(xs))
    inputs, _ = icl.make_sequences(functions, 200, generator, repeat_prob=0.5)
    xs = icl.query_inputs(inputs)
    same = (xs[:, 1:] == xs[:, :-1]).float().mean().item()
    assert same == pytest.approx(0.5 + 0.5 / 6, abs=0.02)


def test_function_keys_tell_every_permutation_apart() -> None:
    perms = torch.tensor(list(itertools.permutations(range(5))))
    assert torch.unique(icl.function_keys(perms)).numel() == len(perms)


def test_heldout_functions_never_appear_in_training_batches() -> None:
    # 3 symbols: 6 permutations, 3 held out; training must draw only (and all of) the others
    config = MICRO.replace(n_symbols=3, n_heldout=3)
    heldout = icl.heldout_functions(config)
    keys = icl.function_keys(heldout)
    assert keys.unique().numel() == 3
    generator = torch.Generator().manual_seed(0)
    drawn = torch.cat([icl.training_functions(50, config, keys, generator) for _ in range(4)])
    drawn_keys = set(icl.function_keys(drawn).tolist())
    assert not drawn_keys & set(keys.tolist())
    assert len(drawn_keys) == 3
    # and the evaluation sequences use only held-out functions
    inputs, labels = icl.eval_batch(config)
    xs, ys = icl.query_inputs(inputs), labels[:, 1::2] - 3
    for row in range(len(xs)):
        f = heldout[row % 3]
        assert torch.equal(f[xs[row]], ys[row])


def test_seen_before_and_references_against_loops() -> None:
    n, k = 4, 9
    functions = icl.random_permutations(30, n, torch.Generator().manual_seed(3))
    inputs, _ = icl.make_sequences(functions, k, torch.Generator().manual_seed(4))
    seen = icl.seen_before(inputs)
    ref = icl.reference_accuracy(inputs, n)
    bayes, copy = [0.0] * k, [0.0] * k
    for b, xs in enumerate(icl.query_inputs(inputs).tolist()):
        for i, x in enumerate(xs):
            was_seen = x in xs[:i]
            assert bool(seen[b, i]) == was_seen
            bayes[i] += 1.0 if was_seen else 1 / (n - len(set(xs[:i])))
            copy[i] += 1.0 if was_seen else 1 / n
    assert ref["bayes"] == pytest.approx([v / 30 for v in bayes])
    assert ref["copy_only"] == pytest.approx([v / 30 for v in copy])
    assert ref["chance"] == [1 / n] * k
    assert ref["bayes"][0] == ref["copy_only"][0] == pytest.approx(1 / n)


class LookUp(nn.Module):
    """A scripted in-context learner: the output of the last earlier pair with the query's
    input when there is one, else output symbol 0."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = n
        self.anchor = nn.Parameter(torch.zeros(()))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(*ids.shape, 2 * self.n + 1)
        for b, seq in enumerate(ids.tolist()):
            for t in range(1, len(seq), 2):
                earlier = [seq[j + 1] for j in range(1, t, 2) if seq[j] == seq[t]]
                logits[b, t, earlier[-1] if earlier else self.n] = 1.0
        return logits


def test_accuracy_by_shots_on_a_scripted_model() -> None:
    n, k = 5, 8
    functions = icl.random_permutations(40, n, torch.Generator().manual_seed(5))
    inputs, labels = icl.make_sequences(functions, k, torch.Generator().manual_seed(6))
    acc = icl.accuracy_by_shots(LookUp(n), inputs, labels, n)
    seen = icl.seen_before(inputs)
    assert acc["seen"][0] != acc["seen"][0]  # NaN: nothing is seen before the first pair
    assert acc["seen"][1:] == [1.0 if seen[:, i].any() else pytest.approx(math.nan, nan_ok=True)
                               for i in range(1, k)]  # fmt: skip
    answers = labels[:, 1::2] - n
    for i in range(k):
        unseen = ~seen[:, i]
        want = (answers[unseen, i] == 0).float().mean().item()  # the fallback guesses 0
        assert acc["unseen"][i] == pytest.approx(want)
        total = (seen[:, i] | (answers[:, i] == 0)).float().mean().item()
        assert acc["all"][i] == pytest.approx(total)


def test_a_few_steps_lower_the_loss() -> None:
    config = MICRO.replace(steps=30)
    seed_everything(config.seed)
    start = GPT(config.gpt_config())
    model, record = icl.train_icl(config)
    batch = icl.eval_batch(config)
    with torch.no_grad():
        before, after = icl.icl_loss(start.eval(), batch), icl.icl_loss(model, batch)
    assert after < before - 0.3
    assert record["history"]["step"][-1] == 30
    assert [d["step"] for d in record["during"]] == [0, 10, 20, 30]
    assert len(record["accuracy"]["all"]) == config.n_pairs


def test_cached_run_round_trip(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    config = MICRO.replace(steps=10)
    model, record = icl.load_icl("icl-test", config)
    again, record2 = icl.load_icl("icl-test", config)
    assert record2["trained_on"] == record["trained_on"]
    for (name, p), (_, q) in zip(model.state_dict().items(), again.state_dict().items(),
                                 strict=True):  # fmt: skip
        assert torch.equal(p, q), name
    assert record["provenance"]["recipe"]["steps"] == 10
    (tmp_path / "course_models" / "icl-test" / "model.safetensors").write_bytes(b"broken")
    with pytest.raises(RuntimeError, match="damaged"):
        icl.load_icl("icl-test", config)


def test_command_line(capsys) -> None:
    assert icl.main(["--preset", "micro", "--steps", "5"]) == 0
    out = capsys.readouterr().out
    assert "shots" in out and "bayes" in out and "chance 0.200" in out
    with pytest.raises(SystemExit):
        icl.main(["--help"])
    with pytest.raises(ValueError, match="n_symbols"):
        MICRO.replace(n_symbols=16)
