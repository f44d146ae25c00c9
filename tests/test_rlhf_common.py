"""The shared RL pieces: token and sequence log-probabilities against independent
computations, the final hidden states, Schulman's KL estimators against the exact KL, and
rollouts (grouping, the cut after <|end|>, the response mask, seeding)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from tiny_models import Chars, tiny_gpt

from llmcourse.llama import Llama, LlamaConfig
from llmcourse.rlhf.kl import kl_estimate
from llmcourse.rlhf.logprobs import logits_and_hidden, sequence_logprobs, token_logprobs
from llmcourse.rlhf.rollout import sample_rollouts
from llmcourse.sft import ChatTemplate, ChatTokenizer, Example

pytestmark = pytest.mark.usefixtures("one_thread")


def test_token_logprobs_match_log_softmax_gather_and_cross_entropy() -> None:
    torch.manual_seed(0)
    logits, ids = torch.randn(3, 7, 11), torch.randint(0, 11, (3, 7))
    got = token_logprobs(logits, ids)
    assert got.shape == (3, 6)
    by_hand = torch.tensor(
        [[logits[b, t].log_softmax(-1)[ids[b, t + 1]].item() for t in range(6)] for b in range(3)]
    )
    torch.testing.assert_close(got, by_hand)
    ce = F.cross_entropy(logits[:, :-1].reshape(-1, 11), ids[:, 1:].reshape(-1), reduction="none")
    torch.testing.assert_close(got, -ce.view(3, 6))
    with pytest.raises(ValueError, match="logits must be"):
        token_logprobs(logits, ids[:, :-1])


def test_sequence_logprobs_sum_the_response_only() -> None:
    model = tiny_gpt(20)
    ids = torch.randint(0, 20, (2, 12), generator=torch.Generator().manual_seed(1))
    mask = torch.zeros(2, 12, dtype=torch.bool)
    mask[0, 5:9] = True  # prompt 0..4, response 5..8, padding after
    mask[1, 3:12] = True
    got = sequence_logprobs(model, ids, mask)
    with torch.no_grad():  # oracle: run the model on each prefix, read the next token
        want = [
            sum(model(ids[b : b + 1, :t])[0, -1].log_softmax(-1)[ids[b, t]].item() for t in span)
            for b, span in ((0, range(5, 9)), (1, range(3, 12)))
        ]
    torch.testing.assert_close(got.detach(), torch.tensor(want))
    changed = ids.clone()
    changed[0, 9:] = (changed[0, 9:] + 1) % 20  # padding after the response: no effect
    torch.testing.assert_close(sequence_logprobs(model, changed, mask)[0], got[0])
    changed[0, 2] = (changed[0, 2] + 1) % 20  # the prompt conditions the response
    assert sequence_logprobs(model, changed, mask)[0] != got[0]
    with pytest.raises(ValueError, match="bool tensor"):
        sequence_logprobs(model, ids, mask.long())
    mask[0, 0] = True
    with pytest.raises(ValueError, match="position 0"):
        sequence_logprobs(model, ids, mask)


@pytest.mark.parametrize("arch", ["gpt", "llama"])
def test_logits_and_hidden_read_the_final_norm(arch: str) -> None:
    torch.manual_seed(0)
    if arch == "gpt":
        model = tiny_gpt(30)
    else:
        model = Llama(LlamaConfig(vocab_size=30, dim=32, n_layer=1, n_head=4, n_kv_heads=2,
                                  hidden_dim=64, max_seq_len=32)).eval()  # fmt: skip
    ids = torch.randint(0, 30, (2, 9))
    logits, hidden = logits_and_hidden(model, ids)
    assert hidden.shape == (2, 9, 32)
    torch.testing.assert_close(model.lm_head(hidden).float(), logits)
    torch.testing.assert_close(logits, model(ids))
    norm = model.transformer.ln_f if arch == "gpt" else model.model.norm
    assert not norm._forward_hooks  # the hook is gone
    with pytest.raises(TypeError, match="final hidden states"):
        logits_and_hidden(torch.nn.Linear(3, 3), ids)


def test_kl_estimators_against_the_exact_kl() -> None:
    gen = torch.Generator().manual_seed(0)
    p_logits, q_logits = torch.randn(6, generator=gen), torch.randn(6, generator=gen)
    p, q = (
        torch.distributions.Categorical(logits=p_logits),
        torch.distributions.Categorical(logits=q_logits),
    )
    exact = torch.distributions.kl_divergence(p, q).item()
    torch.manual_seed(0)
    y = p.sample((400_000,))
    logp, ref = p.log_prob(y), q.log_prob(y)
    k1, k2, k3 = (kl_estimate(logp, ref, k) for k in ("k1", "k2", "k3"))
    assert k1.mean().item() == pytest.approx(exact, rel=0.02)
    assert k3.mean().item() == pytest.approx(exact, rel=0.02)  # unbiased
    assert (k3 >= 0).all() and (k2 >= 0).all() and (k1 < 0).any()
    assert k3.var() < k1.var()
    # k2 is biased, but close for nearby distributions
    near = torch.distributions.Categorical(logits=p_logits + 0.1 * q_logits)
    ref_near = near.log_prob(y)
    exact_near = torch.distributions.kl_divergence(p, near).item()
    assert kl_estimate(logp, ref_near, "k2").mean().item() == pytest.approx(exact_near, rel=0.1)
    # by hand on one token
    torch.testing.assert_close(
        kl_estimate(torch.tensor([-1.0]), torch.tensor([-2.0]), "k3"),
        torch.tensor([torch.exp(torch.tensor(-1.0)).item() - 1 + 1]),
    )
    with pytest.raises(ValueError, match="unknown KL"):
        kl_estimate(logp, ref, "k4")
    with pytest.raises(ValueError, match="shape"):
        kl_estimate(logp, ref[:-1])


def chars_examples() -> list[Example]:
    return [
        Example((("user", "ab"), ("assistant", "ba")), "reverse"),
        Example((("user", "abcdc"), ("assistant", "d")), "count"),
        Example((("user", "c"), ("assistant", "c")), "repeat"),
    ]


def test_rollouts_group_cut_at_end_and_mask_the_response() -> None:
    tok = ChatTokenizer(Chars())
    model, end = tiny_gpt(tok.n_vocab), tok.token_id("<|end|>")
    examples = chars_examples()
    r = sample_rollouts(model, tok, examples, n_per_prompt=4, max_new_tokens=12, seed=3)
    assert len(r) == 12 and r.ids.shape[0] == 12 and r.response_mask.shape == r.ids.shape
    assert r.examples == [e for e in examples for _ in range(4)]
    assert r.finished.any() and not r.finished.all()  # both kinds occur with this seed
    for i in range(12):
        prompt = ChatTemplate().prompt_ids(tok, r.examples[i].prompt)
        n = int(r.prompt_lens[i])
        assert n == len(prompt) and r.ids[i, :n].tolist() == prompt
        marked = r.response_mask[i].nonzero().flatten().tolist()
        response = r.ids[i, marked].tolist()
        assert marked == list(range(n, n + len(response)))  # contiguous, right after the prompt
        assert end not in response[:-1]  # cut at the first <|end|>
        assert (response[-1] == end) == bool(r.finished[i])
        assert len(response) == 12 or r.finished[i]
        assert (r.ids[i, n + len(response) :] == end).all()  # right padding
        text_ids = response[:-1] if r.finished[i] else response
        assert r.texts[i] == tok.decode(text_ids)
    again = sample_rollouts(model, tok, examples, n_per_prompt=4, max_new_tokens=12, seed=3)
    assert torch.equal(again.ids, r.ids) and again.texts == r.texts
    other = sample_rollouts(model, tok, examples, n_per_prompt=4, max_new_tokens=12, seed=4)
    assert other.texts != r.texts
    greedy = sample_rollouts(model, tok, examples, 2, 12, temperature=0.0)
    assert greedy.texts[0::2] == greedy.texts[1::2]  # a group's greedy answers agree
    with pytest.raises(ValueError, match="context window"):
        sample_rollouts(model, tok, examples, 1, 64)
    with pytest.raises(ValueError, match="no examples"):
        sample_rollouts(model, tok, [], 1, 8)


def test_rollouts_never_sample_ids_past_the_tokenizer() -> None:
    tok = ChatTokenizer(Chars())
    model = tiny_gpt(tok.n_vocab + 7)  # rows the tokenizer has no ids for, as in course models
    with torch.no_grad():  # make those rows likely
        model.transformer.wte.weight[tok.n_vocab :] *= 40
    probs = model(torch.tensor([[0, 1, 2]]))[0, -1].softmax(-1)
    assert probs[tok.n_vocab :].sum() > 0.5
    r = sample_rollouts(model, tok, chars_examples(), n_per_prompt=4, max_new_tokens=10, seed=0)
    assert int(r.ids.max()) < tok.n_vocab and len(r.texts) == 12


def test_rl_prompts_stay_out_of_chapter_9s_sets() -> None:
    from llmcourse.rlhf.rollout import rl_prompts
    from llmcourse.sft import build_splits

    prompts = rl_prompts(300, ("repeat", "sort"))
    sft_train, sft_heldout = build_splits(6000, 400, 1)
    assert len(prompts) == 300 and {e.task for e in prompts} == {"repeat", "sort"}
    assert not {e.key for e in prompts} & {e.key for e in sft_train + sft_heldout}
    assert len({e.key for e in prompts}) == 300
    with pytest.raises(ValueError, match="seed 1"):
        rl_prompts(10, seed=1)
