"""`llmcourse.generate` against Hugging Face's logits processors and `generate`, and by
construction (cached == uncached, seeds, stop tokens, sampling frequencies)."""

from __future__ import annotations

import pytest
import torch
from transformers.generation.logits_process import (
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from llmcourse import generate as G

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
