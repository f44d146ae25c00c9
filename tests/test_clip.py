"""CLIP: the symmetric InfoNCE against F.cross_entropy and a by-hand loop (with and without
duplicate captions), the temperature's clamp and gradient, recall@k against a brute-force
count, and bad inputs refused with a clear message."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from llmcourse.multimodal.clip import (
    INIT_LOGIT_SCALE,
    MAX_LOGIT_SCALE,
    caption_matches,
    info_nce,
    recall_at_k,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def pairs(b: int = 6, d: int = 5, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, d, generator=g) * 3, torch.randn(b, d, generator=g) * 0.5


def by_hand(img: torch.Tensor, txt: torch.Tensor, scale: float, right: list[list[bool]]) -> float:
    """InfoNCE written as loops over Python floats: cosines, then for each row and each column
    the cross-entropy against the uniform distribution over its right answers."""
    b = len(right)
    unit = lambda v: [x / math.sqrt(sum(y * y for y in v)) for x in v]  # noqa: E731
    a = [unit(r.tolist()) for r in img]
    t = [unit(r.tolist()) for r in txt]
    s = [[scale * sum(x * y for x, y in zip(a[i], t[j], strict=True)) for j in range(b)]
         for i in range(b)]  # fmt: skip
    total = 0.0
    for i in range(b):  # image i: which text?
        log_z = math.log(sum(math.exp(s[i][j]) for j in range(b)))
        hits = [j for j in range(b) if right[i][j]]
        total += -sum(s[i][j] - log_z for j in hits) / len(hits) / b / 2
    for j in range(b):  # text j: which image?
        log_z = math.log(sum(math.exp(s[i][j]) for i in range(b)))
        hits = [i for i in range(b) if right[i][j]]
        total += -sum(s[i][j] - log_z for i in hits) / len(hits) / b / 2
    return total


def test_info_nce_matches_cross_entropy_both_ways_and_a_loop() -> None:
    img, txt = pairs()
    scale = torch.tensor(1.3)
    got = info_nce(img, txt, scale)
    # independent: normalise with torch.linalg.norm, both directions as separate matmuls
    a = img / torch.linalg.norm(img, dim=1, keepdim=True)
    t = txt / torch.linalg.norm(txt, dim=1, keepdim=True)
    labels = torch.arange(len(img))
    i2t = F.cross_entropy(math.exp(1.3) * a @ t.T, labels)
    t2i = F.cross_entropy(math.exp(1.3) * t @ a.T, labels)
    torch.testing.assert_close(got, (i2t + t2i) / 2)
    eye = [[i == j for j in range(len(img))] for i in range(len(img))]
    assert got.item() == pytest.approx(by_hand(img, txt, math.exp(1.3), eye), rel=1e-5)
    # the two directions differ (else a one-way loss would pass)
    assert abs(i2t.item() - t2i.item()) > 1e-3


def test_duplicate_captions_share_the_target() -> None:
    img, txt = pairs(b=5, seed=1)
    captions = ["a red circle", "a blue square", "a red circle", "a green star", "a blue square"]
    m = caption_matches(captions)
    assert m.sum().item() == 5 + 2 + 2
    for texts in (txt, txt[[0, 1, 0, 3, 1]]):  # distinct text vectors, then one per caption
        got = info_nce(img, texts, 0.7, m)
        assert got.item() == pytest.approx(by_hand(img, texts, math.exp(0.7), m.tolist()), rel=1e-5)
        # the same with F.cross_entropy's probability targets
        logits = math.exp(0.7) * F.normalize(img, dim=1) @ F.normalize(texts, dim=1).T
        p = m.float()
        ref = (F.cross_entropy(logits, p / p.sum(1, keepdim=True))
               + F.cross_entropy(logits.T, p.T / p.T.sum(1, keepdim=True))) / 2  # fmt: skip
        torch.testing.assert_close(got, ref)
    # shared targets change the loss of distinct vectors; for identical text vectors (what one
    # caption gives) they equal the one-hot loss: the duplicates' terms only trade places
    assert abs(info_nce(img, txt, 0.7, m).item() - info_nce(img, txt, 0.7).item()) > 1e-3
    same = txt[[0, 1, 0, 3, 1]]
    torch.testing.assert_close(info_nce(img, same, 0.7, m), info_nce(img, same, 0.7))


def test_temperature_gets_a_gradient_and_is_clamped() -> None:
    img, txt = pairs(seed=2)
    scale = torch.tensor(INIT_LOGIT_SCALE, requires_grad=True)
    loss = info_nce(img, txt, scale)
    loss.backward()
    # autograd's value vs a central finite difference in float64
    f = lambda s: info_nce(img.double(), txt.double(), s).item()  # noqa: E731
    h = 1e-4
    numeric = (f(INIT_LOGIT_SCALE + h) - f(INIT_LOGIT_SCALE - h)) / (2 * h)
    assert scale.grad is not None and scale.grad.item() == pytest.approx(numeric, rel=1e-3)
    assert abs(numeric) > 1e-3
    # above the clamp the scale is log(100): same loss, no gradient
    high = torch.tensor(MAX_LOGIT_SCALE + 2.0, requires_grad=True)
    loss_high = info_nce(img, txt, high)
    loss_high.backward()
    assert loss_high.item() == pytest.approx(info_nce(img, txt, MAX_LOGIT_SCALE).item())
    assert high.grad is not None and high.grad.item() == 0.0
    assert math.exp(MAX_LOGIT_SCALE) == pytest.approx(100.0)
    assert 1 / math.exp(INIT_LOGIT_SCALE) == pytest.approx(0.07)


def test_perfect_alignment_gives_a_small_loss() -> None:
    img = torch.eye(4)
    assert info_nce(img, img, MAX_LOGIT_SCALE).item() < 1e-3
    assert info_nce(img, img.roll(1, 0), MAX_LOGIT_SCALE).item() > 10


def brute_recall(sim: torch.Tensor, k: int, right: torch.Tensor) -> tuple[float, float]:
    """For each query, its rank = how many candidates score strictly higher than its best right
    answer; a hit when that rank is below k."""
    n = sim.shape[0]
    i2t = t2i = 0
    for i in range(n):
        best = max(sim[i, j].item() for j in range(n) if right[i, j])
        i2t += sum(sim[i, j].item() > best for j in range(n)) < k
    for j in range(n):
        best = max(sim[i, j].item() for i in range(n) if right[i, j])
        t2i += sum(sim[i, j].item() > best for i in range(n)) < k
    return i2t / n, t2i / n


@pytest.mark.parametrize("k", [1, 3, 7])
def test_recall_matches_brute_force(k: int) -> None:
    g = torch.Generator().manual_seed(k)
    n = 12
    sim = torch.randn(n, n, generator=g) + 1.5 * torch.eye(n)
    for right in (torch.eye(n, dtype=torch.bool), caption_matches([str(i % 5) for i in range(n)])):
        got = recall_at_k(sim, k, None if right.equal(torch.eye(n, dtype=torch.bool)) else right)
        i2t, t2i = brute_recall(sim, k, right)
        assert got == {"image_to_text": pytest.approx(i2t), "text_to_image": pytest.approx(t2i)}
    # an asymmetric matrix gives different recalls in the two directions
    skew = 0.5 * torch.eye(3)
    skew[0, 1] = skew[2, 1] = 1.0  # images 0 and 2 both prefer text 1: two misses that way,
    # one miss the other way (text 1 prefers another image, texts 0 and 2 are right)
    assert recall_at_k(skew, 1) == {"image_to_text": pytest.approx(1 / 3),
                                    "text_to_image": pytest.approx(2 / 3)}  # fmt: skip
    assert recall_at_k(sim, n) == {"image_to_text": 1.0, "text_to_image": 1.0}


def test_bad_inputs_are_refused() -> None:
    img, txt = pairs()
    with pytest.raises(ValueError, match="same shape"):
        info_nce(img, txt[:3], 1.0)
    with pytest.raises(ValueError, match=r"\(B, D\)"):
        info_nce(img[0], txt[0], 1.0)
    with pytest.raises(ValueError, match="diagonal"):
        info_nce(img, txt, 1.0, torch.zeros(6, 6, dtype=torch.bool))
    with pytest.raises(ValueError, match="scalar"):
        info_nce(img, txt, torch.ones(2))
    with pytest.raises(ValueError, match="k must be"):
        recall_at_k(torch.zeros(4, 4), 5)
    with pytest.raises(ValueError, match="square"):
        recall_at_k(torch.zeros(4, 3), 1)
