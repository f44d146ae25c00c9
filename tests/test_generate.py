"""`llmcourse.generate` against Hugging Face's logits processors and `generate`, and by
construction (cached == uncached, seeds, stop tokens, sampling frequencies)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from transformers.generation.logits_process import (
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from llmcourse import generate as G
from llmcourse.causal_lm import ByteTokenizer, TrainConfig, load_trained, train_causal_lm
from llmcourse.generate.__main__ import decode_stream, main
from llmcourse.gpt import GPT, GPTConfig
from llmcourse.llama import Llama, LlamaConfig

V = 50


def rand(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def tied_logits(seed: int = 0) -> torch.Tensor:
    """(4, V) logits with many exact ties: integers in -3..3."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(-3, 4, (4, V), generator=g).float()


def same_mask(ours: torch.Tensor, theirs: torch.Tensor) -> None:
    """The same tokens are masked (-inf) and the kept ones have the same values."""
    assert torch.equal(torch.isinf(ours), torch.isinf(theirs))
    torch.testing.assert_close(ours, theirs)


# ------------------------------------------------------------------------------------------
# Logit processors against transformers
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 2, 7, V - 1, V, V + 10])
def test_top_k_matches_hf(k: int) -> None:
    hf = TopKLogitsWarper(top_k=k)
    for logits in (rand(4, V, seed=k), tied_logits(k)):
        same_mask(G.top_k_filter(logits, k), hf(None, logits.clone()))
    # ties at the k-th value are kept
    kept = torch.isfinite(G.top_k_filter(tied_logits(k), k)).sum(-1)
    assert (kept >= min(k, V)).all()
    # a (V,) vector, or (..., V), works row by row
    row = rand(V, seed=1)
    same_mask(G.top_k_filter(row, k), hf(None, row[None].clone())[0])
    cube = rand(2, 3, V, seed=2)
    same_mask(G.top_k_filter(cube, k), hf(None, cube.reshape(6, V)).reshape(2, 3, V))


@pytest.mark.parametrize("p", [1e-6, 0.1, 0.5, 0.9, 0.999, 1.0])
def test_top_p_matches_hf(p: float) -> None:
    hf = TopPLogitsWarper(top_p=p)
    for seed in range(5):
        logits = rand(4, V, seed=seed) * 2
        same_mask(G.top_p_filter(logits, p), hf(None, logits.clone()))
    cube = rand(2, 3, V, seed=9)
    same_mask(G.top_p_filter(cube, p), hf(None, cube.reshape(6, V)).reshape(2, 3, V))


@pytest.mark.parametrize("p", [0.05, 0.3, 0.6, 0.95])
def test_top_p_with_ties_keeps_hf_set_and_its_ties(p: float) -> None:
    # With ties at the boundary Hugging Face keeps whichever tied tokens its sort puts first;
    # ours keeps all of them. So ours = theirs plus the tokens tied with their smallest kept.
    hf = TopPLogitsWarper(top_p=p)
    for seed in range(5):
        logits = tied_logits(seed)
        theirs = hf(None, logits.clone())
        smallest = theirs.masked_fill(torch.isinf(theirs), float("inf")).amin(-1, keepdim=True)
        expected = logits.masked_fill(logits < smallest, float("-inf"))
        same_mask(G.top_p_filter(logits, p), expected)


def test_top_p_keeps_the_smallest_set_reaching_p() -> None:
    logits = torch.tensor([2.0, 1.0, 0.0, -1.0])  # probabilities 0.64, 0.24, 0.09, 0.03
    kept = lambda p: torch.isfinite(G.top_p_filter(logits, p)).sum().item()  # noqa: E731
    # cumulative: 0.644, 0.881, 0.968, 1
    assert [kept(p) for p in (0.5, 0.64, 0.65, 0.8, 0.88, 0.9, 0.96, 0.97, 1.0)] == [
        1, 1, 2, 2, 2, 3, 3, 4, 4,
    ]  # fmt: skip
    assert kept(1e-9) == 1  # the most likely token is always kept


@pytest.mark.parametrize("t", [0.1, 0.7, 1.0, 2.5])
def test_temperature_matches_hf(t: float) -> None:
    logits = rand(3, V, seed=3)
    torch.testing.assert_close(
        G.apply_temperature(logits, t), TemperatureLogitsWarper(t)(None, logits)
    )


@pytest.mark.parametrize("penalty", [0.5, 1.0, 1.3, 2.0])
def test_repetition_penalty_matches_hf(penalty: float) -> None:
    logits = rand(3, V, seed=4)
    logits[:, 5] = 0.0  # zero stays zero
    previous = torch.randint(V, (3, 12), generator=torch.Generator().manual_seed(5))
    previous[:, :3] = 5  # repeated ids count once
    theirs = RepetitionPenaltyLogitsProcessor(penalty)(previous, logits.clone())
    torch.testing.assert_close(G.repetition_penalty(logits, previous, penalty), theirs)
    ours_row = G.repetition_penalty(logits[0], previous[0], penalty)
    torch.testing.assert_close(ours_row, theirs[0])
    # by hand: a positive logit is divided, a negative one multiplied
    z = torch.tensor([2.0, -2.0, 1.0])
    assert G.repetition_penalty(z, torch.tensor([0, 1]), 2.0).tolist() == [1.0, -4.0, 1.0]


def test_processors_reject_bad_arguments() -> None:
    logits = rand(2, V)
    for k in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="k >= 1"):
            G.top_k_filter(logits, k)
    for p in (0, -0.1, 1.01, float("nan")):
        with pytest.raises(ValueError, match="0 < p <= 1"):
            G.top_p_filter(logits, p)
    for t in (-1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="temperature"):
            G.apply_temperature(logits, t)
    with pytest.raises(ValueError, match="greedy"):
        G.apply_temperature(logits, 0.0)
    with pytest.raises(ValueError, match="penalty"):
        G.repetition_penalty(logits, torch.zeros(2, 3, dtype=torch.long), 0.0)
    with pytest.raises(ValueError, match="do not match"):
        G.repetition_penalty(logits, torch.zeros(3, 3, dtype=torch.long), 1.2)
    with pytest.raises(ValueError, match=r"\[0, 50\)"):
        G.repetition_penalty(logits, torch.full((2, 3), V), 1.2)
    with pytest.raises(ValueError, match=r"shape \(\.\.\., V\)"):
        G.top_k_filter(torch.tensor(1.0), 2)


# ------------------------------------------------------------------------------------------
# The loop, on the course's GPT and LLaMA
# ------------------------------------------------------------------------------------------


def tiny_gpt(n_positions: int = 32, seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    model = GPT(GPTConfig(vocab_size=V, n_positions=n_positions, n_layer=2, n_head=2, n_embd=16))
    with torch.no_grad():  # away from the init, so the logits are far from uniform
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    return model.eval()


def tiny_llama(n_kv_heads: int, max_seq_len: int = 16, seed: int = 0) -> Llama:
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=V, dim=32, n_layer=2, n_head=4, n_kv_heads=n_kv_heads,
                         hidden_dim=48, max_seq_len=max_seq_len)  # fmt: skip
    model = Llama(config)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    return model.eval()


def prompts(batch: int = 3, length: int = 5, seed: int = 1) -> torch.Tensor:
    return torch.randint(V, (batch, length), generator=torch.Generator().manual_seed(seed))


def run(model: torch.nn.Module, ids: torch.Tensor, **settings: object) -> torch.Tensor:
    return G.generate(model, ids, G.GenerationConfig(**settings))


def test_greedy_matches_hf_generate() -> None:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    # no end-of-text id: HF would stop there, or suppress it with min_new_tokens
    config = GPT2Config(
        vocab_size=V, n_positions=40, n_embd=32, n_layer=2, n_head=4, bos_token_id=None,
        eos_token_id=None, pad_token_id=None,
    )  # fmt: skip
    hf = GPT2LMHeadModel(config).eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    ours = GPT.from_hf(hf)
    ids = prompts(2, 6)
    for penalty in (1.0, 1.5):
        theirs = hf.generate(
            ids, attention_mask=torch.ones_like(ids), max_new_tokens=20, min_new_tokens=20,
            do_sample=False, repetition_penalty=penalty,
        )  # fmt: skip
        for use_cache in (True, False):
            got = run(ours, ids, max_new_tokens=20, temperature=0.0, repetition_penalty=penalty,
                      use_cache=use_cache)  # fmt: skip
            assert torch.equal(got, theirs), (penalty, use_cache)


SAMPLED = {"temperature": 0.9, "top_k": 20, "top_p": 0.9, "repetition_penalty": 1.2, "seed": 3}


@pytest.mark.parametrize("settings", [{"temperature": 0.0}, SAMPLED], ids=["greedy", "sampled"])
@pytest.mark.parametrize("family", ["gpt", "llama-mha", "llama-gqa"])
def test_cached_equals_uncached(family: str, settings: dict) -> None:
    # 5 + 24 tokens: the text runs past the window of 16, where the cache is rebuilt each step
    model = {
        "gpt": lambda: tiny_gpt(n_positions=16),
        "llama-mha": lambda: tiny_llama(n_kv_heads=4),
        "llama-gqa": lambda: tiny_llama(n_kv_heads=2),  # two query heads per key/value head
    }[family]()
    ids = prompts()
    cached = run(model, ids, max_new_tokens=24, use_cache=True, **settings)
    uncached = run(model, ids, max_new_tokens=24, use_cache=False, **settings)
    assert cached.shape == (3, 29)
    assert torch.equal(cached, uncached)
    assert torch.equal(cached[:, :5], ids)
    # within the window: the prompt once, then one token per step through the cache
    lengths: list[int] = []
    hook = model.register_forward_pre_hook(lambda _, args: lengths.append(args[0].shape[1]))
    short = run(model, ids, max_new_tokens=11, use_cache=True, **settings)
    assert lengths == [5] + [1] * 10
    lengths.clear()
    run(model, ids, max_new_tokens=11, use_cache=False, **settings)
    hook.remove()
    assert lengths == list(range(5, 16))  # without: the whole sequence every step
    assert torch.equal(short, cached[:, :16])


def test_seeded_sampling_is_reproducible() -> None:
    model, ids = tiny_gpt(), prompts()
    first = run(model, ids, max_new_tokens=15, seed=7)
    assert torch.equal(first, run(model, ids, max_new_tokens=15, seed=7))
    assert not torch.equal(first, run(model, ids, max_new_tokens=15, seed=8))
    torch.manual_seed(0)  # seed None draws from torch's global generator
    unseeded = run(model, ids, max_new_tokens=15)
    torch.manual_seed(0)
    assert torch.equal(unseeded, run(model, ids, max_new_tokens=15))


def test_stream_yields_what_generate_returns() -> None:
    model, ids = tiny_gpt(), prompts()
    config = G.GenerationConfig(max_new_tokens=8, seed=1, top_k=10)
    steps = list(G.stream(model, ids, config))
    assert len(steps) == 8 and all(s.shape == (3,) for s in steps)
    assert torch.equal(torch.stack(steps, 1), G.generate(model, ids, config)[:, 5:])


def test_stop_tokens_end_each_sequence_and_pad_after() -> None:
    model, ids = tiny_gpt(), prompts(4)
    free = run(model, ids, max_new_tokens=20, temperature=0.0)[:, 5:]
    stop = free[0, 3].item()  # a token the first sequence emits at step 4
    stopped = run(model, ids, max_new_tokens=20, temperature=0.0, stop_ids=(stop,), pad_id=V - 1)
    stopped = stopped[:, 5:]
    ends = []
    for row in range(4):
        hits = (free[row] == stop).nonzero()
        ends.append(hits[0].item() + 1 if len(hits) else 20)  # the stop token is kept
    assert stopped.shape[1] == max(ends)  # ends when the last sequence stops
    for row, end in enumerate(ends):
        assert torch.equal(stopped[row, :end], free[row, :end])
        assert (stopped[row, end:] == V - 1).all()
    # a stop id no sequence produces changes nothing
    never = next(i for i in range(V) if not (free == i).any())
    assert torch.equal(
        run(model, ids, max_new_tokens=20, temperature=0.0, stop_ids=[never])[:, 5:], free
    )


def test_sampling_frequencies_follow_the_processed_softmax() -> None:
    model = tiny_gpt()
    prompt = prompts(1, 4)
    n = 6000
    settings = {"temperature": 0.8, "top_k": 12, "top_p": 0.95}
    config = G.GenerationConfig(max_new_tokens=1, seed=0, **settings)
    draws = G.generate(model, prompt.expand(n, -1), config)[:, -1]
    freq = torch.bincount(draws, minlength=V).float() / n
    logits = model(prompt)[:, -1]
    expected = torch.softmax(G.process_logits(logits, prompt, config), -1)[0]
    # by hand, not through process_logits: temperature, then top-k, then top-p
    by_hand = torch.softmax(G.top_p_filter(G.top_k_filter(logits[0] / 0.8, 12), 0.95), -1)
    torch.testing.assert_close(expected, by_hand)
    assert (freq[expected == 0] == 0).all()  # filtered tokens are never drawn
    assert (freq - expected).abs().max() < 0.025  # about 4 standard deviations at n = 6000


def test_next_token_distribution() -> None:
    model, ids = tiny_gpt(), prompts(2, 4)
    top_ids, top_probs = G.next_token_distribution(model, ids[0], top=5)
    probs = torch.softmax(model(ids[:1])[0, -1], -1)
    assert top_ids.shape == top_probs.shape == (5,)
    torch.testing.assert_close(top_probs, probs[top_ids])
    assert torch.equal(top_ids, probs.argsort(descending=True)[:5])
    assert (top_probs[:-1] >= top_probs[1:]).all()
    batch_ids, batch_probs = G.next_token_distribution(model, ids, top=V + 5)
    assert batch_ids.shape == (2, V)
    torch.testing.assert_close(batch_probs.sum(-1), torch.ones(2))
    with pytest.raises(ValueError, match="top"):
        G.next_token_distribution(model, ids, top=0)


def test_bad_generation_arguments_are_refused() -> None:
    model = tiny_gpt(n_positions=8)
    bad = [
        ({"top_k": 0}, "top_k"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"temperature": -0.5}, "temperature"),
        ({"repetition_penalty": 0.0}, "repetition_penalty"),
        ({"max_new_tokens": -1}, "max_new_tokens"),
    ]
    for settings, message in bad:
        with pytest.raises(ValueError, match=message):
            G.GenerationConfig(**settings)
    with pytest.raises(ValueError, match="context window"):
        run(model, prompts(1, 9))
    with pytest.raises(ValueError, match="empty"):
        run(model, torch.zeros(1, 0, dtype=torch.long))
    with pytest.raises(ValueError, match="integer token ids"):
        run(model, torch.zeros(1, 3))
    assert torch.equal(run(model, prompts(1, 3), max_new_tokens=0), prompts(1, 3))


def test_time_generation_table() -> None:
    table = G.time_generation(tiny_gpt(n_positions=32), new_tokens=(4, 16), prompt_len=4)
    assert table["new_tokens"] == [4, 16]
    assert all(t > 0 for t in table["cached_s"] + table["uncached_s"])
    assert table["speedup"] == [
        u / c for u, c in zip(table["uncached_s"], table["cached_s"], strict=True)
    ]
    with pytest.raises(ValueError, match="context window"):
        G.time_generation(tiny_gpt(n_positions=32), new_tokens=(40,))


# ------------------------------------------------------------------------------------------
# Command line, on a checkpoint trained here for a few steps
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("gen") / "run"
    cfg = TrainConfig(
        corpus="pydoc-topics", tokenizer="bytes", n_layer=1, n_head=2, n_embd=32, seq_len=32,
        batch_size=4, steps=3, warmup=1, eval_every=0, checkpoint_every=0, out=str(out),
        device="cpu",
    )  # fmt: skip
    train_causal_lm(cfg)
    return out


def test_cli_streams_what_generate_gives(checkpoint: Path, capsys: pytest.CaptureFixture) -> None:
    model, tokenizer = load_trained(checkpoint)
    prompt = "The list "
    config = G.GenerationConfig(max_new_tokens=12, temperature=0.8, top_k=40, seed=3)
    ids = G.generate(model, torch.tensor([tokenizer.encode(prompt)]), config)[0]
    expected = tokenizer.decode(ids.tolist())
    args = ["--checkpoint", str(checkpoint), "--prompt", prompt, "--max-new-tokens", "12",
            "--temperature", "0.8", "--top-k", "40", "--seed", "3", "--device", "cpu"]  # fmt: skip
    for extra in ([], ["--no-cache"]):
        assert main(args + extra) == 0
        assert capsys.readouterr().out == expected + "\n"


def test_cli_errors(checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["--checkpoint", str(tmp_path / "nowhere"), "--prompt", "x"]) == 2
    assert "no checkpoint folder" in capsys.readouterr().err
    broken = tmp_path / "broken"
    shutil.copytree(checkpoint, broken)
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    assert main(["--checkpoint", str(broken), "--prompt", "x", "--device", "cpu"]) == 2
    assert "cannot load the checkpoint" in capsys.readouterr().err
    bad = ["--checkpoint", str(checkpoint), "--prompt", "x", "--device", "cpu", "--top-p", "2"]
    assert main(bad) == 2
    assert "top_p" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    assert "--repetition-penalty" in capsys.readouterr().out


def test_decode_stream_holds_back_a_split_character() -> None:
    tokenizer = ByteTokenizer()
    pieces = list(decode_stream(tokenizer, iter(tokenizer.encode("aé中b"))))
    assert pieces == ["a", "é", "中", "b"]  # never half a character
