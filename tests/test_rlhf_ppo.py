"""PPO: GAE against a hand unroll, the clipped losses' gradients, whitening, the value head, the
shaped per-token rewards, and a tiny bandit run
in which PPO raises the probability of the rewarded token."""

from __future__ import annotations

import pytest
import torch
from tiny_models import Chars, tiny_gpt

from llmcourse.gpt import GPT
from llmcourse.rlhf.ppo import (
    PolicyWithValue,
    PPOConfig,
    clip_fraction,
    gae,
    per_token_rewards,
    policy_logprobs,
    ppo_clip_loss,
    train_ppo,
    value_loss,
    whiten,
)
from llmcourse.sft import ChatTemplate, ChatTokenizer, Example

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_policy(vocab: int, seed: int = 0) -> GPT:
    """``tiny_gpt`` in training mode, as a policy about to be trained."""
    return tiny_gpt(vocab, seed).train()


def hand_gae(r: list[float], v: list[float], gamma: float, lam: float) -> list[float]:
    """A_t = sum_l (gamma lam)^l delta_{t+l}, delta_t = r_t + gamma V_{t+1} - V_t, V_T = 0."""
    n = len(r)
    values = [*v, 0.0]
    deltas = [r[t] + gamma * values[t + 1] - values[t] for t in range(n)]
    return [sum((gamma * lam) ** k * deltas[t + k] for k in range(n - t)) for t in range(n)]


def test_gae_equals_the_hand_unrolled_sum_on_the_masked_steps() -> None:
    gen = torch.Generator().manual_seed(0)
    rewards, values = torch.randn(2, 7, generator=gen), torch.randn(2, 7, generator=gen)
    mask = torch.tensor([[0, 0, 1, 1, 1, 1, 0], [0, 1, 1, 1, 0, 0, 0]], dtype=torch.bool)
    adv, ret = gae(rewards, values, mask, gamma=0.9, lam=0.8)
    for b in range(2):
        cols = mask[b].nonzero().flatten()
        want = hand_gae(rewards[b, cols].tolist(), values[b, cols].tolist(), 0.9, 0.8)
        torch.testing.assert_close(adv[b, cols], torch.tensor(want))
        torch.testing.assert_close(ret[b, cols], adv[b, cols] + values[b, cols])
    assert not adv[~mask].any() and not ret[~mask].any()  # nothing off the episode
    # rewards and values off the mask change nothing
    noisy_r = rewards.masked_fill(~mask, 5.0)
    noisy_v = values.masked_fill(~mask, -3.0)
    torch.testing.assert_close(gae(noisy_r, noisy_v, mask, 0.9, 0.8)[0], adv)


def test_gae_with_gamma_and_lambda_one_is_reward_to_go_minus_value() -> None:
    rewards = torch.tensor([[0.5, -1.0, 0.0, 2.0]])
    values = torch.tensor([[0.3, 0.1, -0.2, 0.7]])
    adv, ret = gae(rewards, values, torch.ones(1, 4, dtype=torch.bool), gamma=1.0, lam=1.0)
    to_go = torch.tensor([[1.5, 1.0, 2.0, 2.0]])
    torch.testing.assert_close(adv, to_go - values)
    torch.testing.assert_close(ret, to_go)
    # lambda = 0: the one-step TD error
    adv0, _ = gae(rewards, values, torch.ones(1, 4, dtype=torch.bool), gamma=0.5, lam=0.0)
    next_v = torch.tensor([[0.1, -0.2, 0.7, 0.0]])
    torch.testing.assert_close(adv0, rewards + 0.5 * next_v - values)


def test_whiten_gives_zero_mean_unit_variance_on_the_mask_only() -> None:
    x = torch.tensor([[1.0, 2.0, 3.0, 100.0], [4.0, 5.0, -50.0, 6.0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 1]], dtype=torch.bool)
    w = whiten(x, mask)
    kept = x[mask]
    torch.testing.assert_close(w[mask], (kept - kept.mean()) / kept.std(unbiased=False))
    assert not w[~mask].any()
    torch.testing.assert_close(whiten(3 * x - 7, mask), w)  # invariant to a * x + b, a > 0
    with pytest.raises(ValueError, match="selects nothing"):
        whiten(x, torch.zeros_like(mask))


def test_clip_loss_value_and_zero_gradient_outside_the_trust_region() -> None:
    old = torch.zeros(1, 6)
    # ratios 1.5, 0.5 (clipped side for A>0 / A<0), 1.1, 0.9 (inside), 0.5 and 1.5 (unclipped)
    ratio = torch.tensor([[1.5, 0.5, 1.1, 0.9, 0.5, 1.5]])
    adv = torch.tensor([[1.0, -1.0, 2.0, -2.0, 1.0, -1.0]])
    logp = ratio.log().requires_grad_(True)
    mask = torch.ones(1, 6, dtype=torch.bool)
    loss = ppo_clip_loss(logp, old, adv, mask, clip=0.2)
    clipped = ratio.clamp(0.8, 1.2)
    want = -torch.minimum(ratio * adv, clipped * adv).mean()
    torch.testing.assert_close(loss, want)
    (grad,) = torch.autograd.grad(loss, logp)
    # d/dlogp of -A * rho / N is -A * rho / N where the unclipped term is active, else 0
    expected = torch.tensor([[0.0, 0.0, -2.0 * 1.1, 2.0 * 0.9, -0.5, 1.5]]) / 6
    torch.testing.assert_close(grad, expected)
    assert clip_fraction(logp.detach(), old, adv, mask, 0.2) == pytest.approx(2 / 6)
    # masked tokens count for nothing
    half = torch.tensor([[1, 1, 1, 0, 0, 0]], dtype=torch.bool)
    torch.testing.assert_close(
        ppo_clip_loss(logp, old, adv, half, 0.2),
        -torch.minimum(ratio * adv, clipped * adv)[:, :3].mean(),
    )


def test_value_loss_is_clipped_around_the_old_values() -> None:
    old = torch.tensor([[0.0, 0.0, 0.0]])
    returns = torch.tensor([[1.0, 1.0, -1.0]])
    values = torch.tensor([[0.5, 2.0, 0.1]], requires_grad=True)
    loss = value_loss(values, old, returns, torch.ones(1, 3, dtype=torch.bool), clip=0.2)
    # V_clip = 0.2, 0.2, 0.1; max of the squared errors: 0.64, 1.0 (unclipped), 1.21
    torch.testing.assert_close(loss, torch.tensor(0.5 * (0.64 + 1.0 + 1.21) / 3))
    (grad,) = torch.autograd.grad(loss, values)
    # the first value's clipped error is the larger: no gradient to it
    torch.testing.assert_close(grad, torch.tensor([[0.0, 1.0, 1.1]]) / 3)


def test_value_head_reads_the_final_hidden_states_and_trains_the_body() -> None:
    lm = tiny_policy(11)
    with torch.no_grad():
        lm.transformer.ln_f.weight.mul_(1.5)  # a perturbed final norm must show in the values
    policy = PolicyWithValue(lm)
    torch.nn.init.normal_(policy.value_head.weight)
    ids = torch.randint(0, 11, (3, 9))
    logits, values = policy(ids)
    torch.testing.assert_close(logits, lm(ids))
    t = lm.transformer
    x = t.wte(ids) + t.wpe(torch.arange(9))
    for block in t.h:
        x = block(x)
    torch.testing.assert_close(values, policy.value_head(t.ln_f(x)).squeeze(-1))
    values.sum().backward()
    assert lm.transformer.h[0].attn.c_attn.weight.grad.abs().sum() > 0


def test_policy_logprobs_are_the_tempered_softmax_over_the_tokenizer_ids() -> None:
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 5, 12, generator=gen)
    ids = torch.randint(0, 9, (2, 5), generator=gen)
    got = policy_logprobs(logits, ids, n_vocab=9, temperature=0.7)
    probs = torch.softmax(logits[..., :9] / 0.7, dim=-1)  # the 3 spare rows are never sampled
    want = torch.stack(
        [torch.stack([probs[b, t, ids[b, t + 1]].log() for t in range(4)]) for b in range(2)]
    )
    torch.testing.assert_close(got, want)


def test_shaped_rewards_pay_the_kl_per_token_and_the_score_at_the_last_token() -> None:
    logp = torch.tensor([[0.0, -1.0, -2.0, -0.5], [0.0, -0.3, -0.2, 0.0]])
    ref = torch.tensor([[0.0, -1.5, -1.0, -0.5], [0.0, -0.1, -0.2, 0.0]])
    mask = torch.tensor([[0, 1, 1, 0], [0, 1, 1, 1]], dtype=torch.bool)
    r = per_token_rewards(torch.tensor([2.0, -1.0]), logp, ref, mask, kl_coef=0.1)
    want = torch.tensor([[0.0, -0.05, 0.1 + 2.0, 0.0], [0.0, 0.02, 0.0, -1.0]])
    torch.testing.assert_close(r, want)


def test_ppo_raises_the_probability_of_the_rewarded_token() -> None:
    """A one-step bandit: the answer is a single token and only "a" is rewarded."""
    tok = ChatTokenizer(Chars())
    policy, reference = tiny_policy(tok.n_vocab), tiny_policy(tok.n_vocab)
    prompts = [Example((("user", u), ("assistant", "a")), "repeat") for u in ("ab", "cd", "bc")]
    prompt = torch.tensor([ChatTemplate().prompt_ids(tok, prompts[0].prompt)])
    a = tok.encode("a")[0]

    def p_a() -> float:
        with torch.no_grad():
            return torch.softmax(policy(prompt)[0, -1], -1)[a].item()

    def reward(examples: list[Example], texts: list[str]) -> torch.Tensor:
        return torch.tensor([float(t == "a") for t in texts])

    before = p_a()
    config = PPOConfig(
        iterations=8, prompts_per_iter=3, n_per_prompt=16, max_new_tokens=1, epochs=2,
        minibatch_size=16, lr=3e-3, kl_coef=0.0, eval_every=100, device="cpu",
    )  # fmt: skip
    with pytest.raises(ValueError, match="frozen copy"):
        train_ppo(policy, policy, tok, reward, prompts, config)
    policy.requires_grad_(False)  # a frozen copy of the reference, as the course runs pass it
    history = train_ppo(policy, reference, tok, reward, prompts, config, heldout=prompts)
    assert p_a() > max(0.6, 3 * before)
    assert history["score"][-1] > history["score"][0]
    assert len(history["kl"]) == 8 and history["kl"][-1] > 0  # it moved off the reference
    # greedy answers run on past the one rewarded token, so exact match stays 0: only logged
    assert history["eval_iteration"] == [0, 8] and len(history["exact_match"]) == 2
