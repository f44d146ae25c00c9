"""DPO: the loss against the paper's formula by hand, its value and gradients where the policy
equals the reference, and a short training run that raises the chosen-rejected margin."""

from __future__ import annotations

import json
import math

import pytest
import torch
from tiny_models import Chars, tiny_gpt

from llmcourse.rlhf.dpo import DPOConfig, dpo_loss, pair_logprobs, train_dpo
from llmcourse.rlhf.logprobs import sequence_logprobs
from llmcourse.rlhf.preferences import PreferencePair, encode_pairs
from llmcourse.sft import ChatTokenizer, Example

pytestmark = pytest.mark.usefixtures("one_thread")


def test_dpo_loss_is_the_papers_formula() -> None:
    pc, pr = torch.tensor([-3.0, -5.0, -2.0]), torch.tensor([-4.0, -4.5, -2.0])
    rc, rr = torch.tensor([-3.5, -4.0, -1.0]), torch.tensor([-3.0, -6.0, -2.5])
    beta = 0.3
    by_hand = []
    for i in range(3):
        z = beta * ((pc[i] - rc[i]) - (pr[i] - rr[i])).item()
        by_hand.append(-math.log(1 / (1 + math.exp(-z))))
    loss, chosen, rejected = dpo_loss(pc, pr, rc, rr, beta)
    assert loss.item() == pytest.approx(sum(by_hand) / 3)
    torch.testing.assert_close(chosen, beta * (pc - rc))
    torch.testing.assert_close(rejected, beta * (pr - rr))
    with pytest.raises(ValueError, match="one shape"):
        dpo_loss(pc, pr[:2], rc, rr)
    with pytest.raises(ValueError, match="beta"):
        dpo_loss(pc, pr, rc, rr, beta=0.0)


def test_at_the_reference_the_loss_is_log2_and_the_gradients_cancel() -> None:
    beta, n = 0.2, 4
    ref_c, ref_r = torch.randn(n), torch.randn(n)
    pc, pr = ref_c.clone().requires_grad_(), ref_r.clone().requires_grad_()
    loss, _, _ = dpo_loss(pc, pr, ref_c, ref_r, beta)
    assert loss.item() == pytest.approx(math.log(2))
    loss.backward()
    # per pair: dL/d log pi(y_c) = -beta/2, dL/d log pi(y_r) = +beta/2 (mean over n pairs)
    torch.testing.assert_close(pc.grad * n, torch.full((n,), -beta / 2))
    torch.testing.assert_close(pr.grad * n, torch.full((n,), beta / 2))
    # the same at any beta-scaled equal log-ratios: only the difference matters
    shift = torch.randn(n)
    pc2, pr2 = (ref_c + shift).requires_grad_(), (ref_r + shift).requires_grad_()
    loss2, chosen, rejected = dpo_loss(pc2, pr2, ref_c, ref_r, beta)
    torch.testing.assert_close(chosen, rejected)
    loss2.backward()
    torch.testing.assert_close(pc2.grad + pr2.grad, torch.zeros(n))
    assert loss2.item() == pytest.approx(math.log(2))


def test_identical_responses_give_no_parameter_gradient() -> None:
    tok = ChatTokenizer(Chars())
    policy = tiny_gpt(tok.n_vocab)
    e = Example((("user", "ab"), ("assistant", "ba")), "reverse")
    pairs = [PreferencePair(e, "ba<|end|>", "ba<|end|>")]
    ids, mask = encode_pairs(tok, pairs, 64)
    logps = sequence_logprobs(policy, ids, mask)
    ref = logps.detach() - 0.7  # the policy has moved away from the reference
    loss, _, _ = dpo_loss(logps[:1], logps[1:], ref[:1], ref[1:], 0.1)
    loss.backward()
    assert all(p.grad is None or p.grad.abs().max() < 1e-7 for p in policy.parameters())


def test_dpo_training_raises_the_margin() -> None:
    tok = ChatTokenizer(Chars())
    policy, reference = tiny_gpt(tok.n_vocab), tiny_gpt(tok.n_vocab)
    frozen = {k: v.clone() for k, v in reference.state_dict().items()}
    prompts = ["ab", "ba", "cd", "dc", "abc", "cab", "bcd", "dcb", "a", "d", "bd", "ca"]
    pairs = [
        PreferencePair(Example((("user", p), ("assistant", "a")), "x"), c, r)
        for p in prompts
        for c, r in (("ca<|end|>", "cd<|end|>"), ("a<|end|>", "d<|end|>"))
    ]
    before_c, before_r = pair_logprobs(policy, tok, pairs)
    config = DPOConfig(beta=0.5, steps=30, batch_size=8, lr=3e-3, warmup=2, log_every=5,
                       eval_every=15)  # fmt: skip
    history = train_dpo(policy, reference, tok, pairs, config, evaluate=lambda m: {"probe": 1.0})
    after_c, after_r = pair_logprobs(policy, tok, pairs)
    assert history["margin"][0] < history["margin"][-1] and history["margin"][-1] > 0.5
    assert history["accuracy"][-1] == 1.0 and history["train_loss"][-1] < math.log(2) / 2
    assert ((after_c - before_c) - (after_r - before_r) > 0).all()
    assert history["eval_step"] == [15, 30] and history["probe"] == [1.0, 1.0]
    for k, v in reference.state_dict().items():
        assert torch.equal(v, frozen[k]), k
    # the first step's loss, at policy == reference: log 2 + w * the chosen NLL per token
    policy = tiny_gpt(tok.n_vocab)
    one = config.replace(steps=1, log_every=1, batch_size=len(pairs), nll_weight=0.5)
    first = train_dpo(policy, reference, tok, pairs, one, evaluate=None)["train_loss"][0]
    _, mask = encode_pairs(tok, pairs, 64)
    lengths = mask[: len(pairs)].sum(-1)
    nll = -(before_c / lengths).mean().item()
    assert first == pytest.approx(math.log(2) + 0.5 * nll, rel=1e-5)
    with pytest.raises(ValueError, match="no preference pairs"):
        train_dpo(policy, reference, tok, [], config)


def test_dpo_command_line_trains_on_a_jsonl_file(tmp_path, capsys) -> None:
    from llmcourse.causal_lm.data import ByteTokenizer
    from llmcourse.rlhf.course import load_run
    from llmcourse.rlhf.dpo import main
    from llmcourse.rlhf.preferences import save_jsonl
    from llmcourse.sft import save_chat_model

    tok = ChatTokenizer(ByteTokenizer(eot=True))
    start = tiny_gpt(tok.n_vocab)
    save_chat_model(tmp_path / "start", start, tok, {})
    pairs = [
        PreferencePair(Example((("user", p), ("assistant", "a")), "x"), "a<|end|>", "bb<|end|>")
        for p in ("ab", "cd", "ef")
    ]
    save_jsonl(pairs, tmp_path / "pairs.jsonl")
    main(["--start", str(tmp_path / "start"), "--pairs", str(tmp_path / "pairs.jsonl"),
          "--steps", "2", "--lr", "1e-3", "--device", "cpu",
          "--out", str(tmp_path / "dpo")])  # fmt: skip
    assert "3 pairs" in capsys.readouterr().out
    policy, _ = load_run(tmp_path / "dpo")
    before = start.state_dict()
    assert all(not torch.equal(v, before[k]) for k, v in policy.state_dict().items())
    record = json.loads((tmp_path / "dpo" / "rlhf.json").read_text())
    assert record["config"]["lr"] == 1e-3 and "exact_match" in record["figures"]
