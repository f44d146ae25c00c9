"""GRPO: group-normalised advantages, the loss against its formula and its gradient's direction,
the verifiable reward, and a tiny run in which GRPO raises that reward."""

from __future__ import annotations

import json

import pytest
import torch
from test_rlhf_ppo import Chars, tiny_policy

from llmcourse.rlhf.grpo import GRPOConfig, exact_reward, group_advantages, grpo_loss, train_grpo
from llmcourse.sft import ChatTemplate, ChatTokenizer, Example

pytestmark = pytest.mark.usefixtures("one_thread")


def example(answer: str, user: str = "ab") -> Example:
    return Example((("user", user), ("assistant", answer)), "repeat")


def test_group_advantages_sum_to_zero_and_a_constant_group_gives_zero() -> None:
    rewards = torch.tensor([[1.0, 0.0, 0.0, 1.0], [0.0, 0.0, 0.0, 1.0], [1.0, 1.0, 1.0, 1.0]])
    adv = group_advantages(rewards)
    torch.testing.assert_close(adv.sum(dim=1), torch.zeros(3), atol=1e-5, rtol=0)
    assert torch.equal(adv[2], torch.zeros(4))  # all right: no signal, and no NaN
    for row in range(2):  # (r - mean) / (sample std + eps), written out
        r = rewards[row].tolist()
        mean = sum(r) / 4
        std = (sum((x - mean) ** 2 for x in r) / 3) ** 0.5
        torch.testing.assert_close(adv[row], torch.tensor([(x - mean) / (std + 1e-4) for x in r]))
    assert adv[1, 3] > 0 > adv[1, 0]  # the one right answer is pushed up, the others down
    with pytest.raises(ValueError, match="group of >= 2"):
        group_advantages(torch.ones(3, 1))


def test_grpo_loss_matches_its_formula_per_answer_then_per_group() -> None:
    gen = torch.Generator().manual_seed(0)
    logp = -torch.rand(2, 5, generator=gen)
    old = logp + 0.3 * torch.randn(2, 5, generator=gen)
    ref = logp + 0.3 * torch.randn(2, 5, generator=gen)
    adv = torch.tensor([1.5, -0.7])
    mask = torch.tensor([[0, 1, 1, 1, 0], [0, 0, 1, 1, 1]], dtype=torch.bool)
    loss = grpo_loss(logp, old, ref, adv, mask, clip=0.2, beta=0.1)
    total = 0.0
    for i in range(2):
        terms = []
        for t in mask[i].nonzero().flatten().tolist():
            rho = torch.exp(logp[i, t] - old[i, t])
            surrogate = min(rho * adv[i], rho.clamp(0.8, 1.2) * adv[i])
            log_r = ref[i, t] - logp[i, t]
            k3 = torch.exp(log_r) - 1 - log_r
            terms.append(-(surrogate - 0.1 * k3))
        total += sum(terms) / len(terms)
    torch.testing.assert_close(loss, total / 2)


def test_grpo_gradient_raises_better_answers_and_pulls_back_to_the_reference() -> None:
    mask = torch.tensor([[0, 1, 1, 0], [0, 1, 1, 1]], dtype=torch.bool)
    adv = torch.tensor([1.0, -1.0])
    logp = torch.full((2, 4), -1.0, requires_grad=True)
    # on-policy and at the reference: only the advantages act, -A_i / (|o_i| * G) per token
    loss = grpo_loss(logp, logp.detach(), logp.detach(), adv, mask, beta=0.5)
    (grad,) = torch.autograd.grad(loss, logp)
    want = torch.tensor([[0.0, -1 / 4, -1 / 4, 0.0], [0.0, 1 / 6, 1 / 6, 1 / 6]])
    torch.testing.assert_close(grad, want)
    # no advantage, policy above the reference: the k3 term lowers the policy's log-probs
    ref = logp.detach() - 0.5
    loss = grpo_loss(logp, logp.detach(), ref, torch.zeros(2), mask, beta=0.5)
    (grad,) = torch.autograd.grad(loss, logp)
    assert (grad[mask] > 0).all() and not grad[~mask].any()


def test_exact_reward_is_one_for_the_reference_answer_only() -> None:
    examples = [example("abc"), example("abc"), example("12"), example("x")]
    got = exact_reward(examples, [" abc ", "ab", "12", "X"])
    assert torch.equal(got, torch.tensor([1.0, 0.0, 1.0, 0.0]))
    with pytest.raises(ValueError, match="4 examples but 3 answers"):
        exact_reward(examples, ["a", "b", "c"])


def test_grpo_raises_the_verifiable_reward() -> None:
    """One-token answers; the reference answer of every prompt is "a"."""
    tok = ChatTokenizer(Chars())
    policy, reference = tiny_policy(tok.n_vocab), tiny_policy(tok.n_vocab)
    prompts = [example("a", u) for u in ("ab", "cd", "bc", "dc")]
    prompt = torch.tensor([ChatTemplate().prompt_ids(tok, prompts[0].prompt)])
    a = tok.encode("a")[0]

    def p_a() -> float:
        with torch.no_grad():
            return torch.softmax(policy(prompt)[0, -1], -1)[a].item()

    before = p_a()
    config = GRPOConfig(
        iterations=8, prompts_per_iter=4, group_size=8, max_new_tokens=1, epochs=2,
        minibatch_size=16, lr=3e-3, beta=0.0, eval_every=100, device="cpu",
    )  # fmt: skip
    with pytest.raises(ValueError, match="frozen copy"):
        train_grpo(policy, policy, tok, exact_reward, prompts, config)
    policy.requires_grad_(False)  # a frozen copy of the reference, as the course runs pass it
    history = train_grpo(policy, reference, tok, exact_reward, prompts, config, heldout=prompts)
    assert p_a() > max(0.6, 3 * before)
    assert history["score"][-1] > history["score"][0] + 0.3
    assert len(history["zero_std_frac"]) == 8 and history["eval_iteration"] == [0, 8]


def test_command_line_trains_and_saves_a_policy(tmp_path) -> None:
    from llmcourse.causal_lm.data import ByteTokenizer
    from llmcourse.rlhf.course import load_run
    from llmcourse.rlhf.grpo import main
    from llmcourse.sft import save_chat_model

    tok = ChatTokenizer(ByteTokenizer(eot=True))
    save_chat_model(tmp_path / "start", tiny_policy(tok.n_vocab), tok, {"note": "test"})
    out = tmp_path / "grpo"
    main(["--start", str(tmp_path / "start"), "--iterations", "1", "--device", "cpu",
          "--out", str(out)])  # fmt: skip
    model, _ = load_run(out)
    record = json.loads((out / "rlhf.json").read_text())
    assert record["kind"] == "grpo" and record["config"]["iterations"] == 1
    assert 0 <= record["figures"]["exact_match"]["all"] <= 1
    assert json.loads((out / "metrics.json").read_text())["iteration"] == [1.0]
    assert model.config.vocab_size == tok.n_vocab
