"""CLIP: the symmetric InfoNCE against F.cross_entropy and a by-hand loop (with and without
duplicate captions), the temperature's clamp and gradient, recall@k against a brute-force
count, and bad inputs refused with a clear message."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from llmcourse.multimodal.clip import (
    INIT_LOGIT_SCALE,
    MAX_LOGIT_SCALE,
    CLIPConfig,
    CLIPModel,
    caption_matches,
    distinct_caption_batch,
    info_nce,
    load,
    main,
    recall_at_k,
    single_objects,
    train,
    zero_shot,
)
from llmcourse.multimodal.data import COLORS, HELDOUT_PAIRS, SHAPES, encode_text, make_split

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


def small_config(**changes: object) -> CLIPConfig:
    base = CLIPConfig(dim=16, depth=1, heads=2, embed_dim=8, n_train=96, steps=12, batch_size=16,
                      gallery=12, n_zero_shot=10, lr=3e-3)  # fmt: skip
    return replace(base, **changes)  # type: ignore[arg-type]


def perturbed(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Move every LayerNorm and bias off its init, so a skipped parameter shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name or name.endswith("bias"):
                p.add_(0.1 * torch.randn(p.shape, generator=g))
    return model


@pytest.mark.parametrize("encoder", ["conv", "patch"])
def test_model_loss_is_info_nce_of_its_projections(encoder: str) -> None:
    torch.manual_seed(0)
    model = perturbed(CLIPModel(small_config(image_encoder=encoder)))
    batch = make_split("train", 6, seed=0)
    images, ids = batch.images, batch.caption_ids
    loss = model(images, ids)
    h = model.image_encoder(images)
    h = h[:, 0] if h.dim() == 3 else h  # the [CLS] vector of the patch encoder
    u = model.image_proj(h)
    v = model.text_proj(model.text_encoder.pooled(ids))
    torch.testing.assert_close(loss, info_nce(u, v, model.logit_scale))
    emb = model.encode_image(images)
    assert emb.shape == (6, 8)
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(6))
    torch.testing.assert_close(model.encode_text(ids).norm(dim=1), torch.ones(6))
    loss.backward()
    silent = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    assert silent == []
    assert model.logit_scale.grad is not None and model.logit_scale.grad.item() != 0.0


def test_batches_hold_distinct_captions() -> None:
    captions = ["a", "b", "a", "c", "b", "a", "d"]
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        rows = distinct_caption_batch(captions, 3, g)
        assert len(rows) == 3 and len({captions[i] for i in rows}) == 3
    assert sorted(captions[i] for i in distinct_caption_batch(captions, 10, g)) == list("abcd")


def test_training_lowers_the_loss_and_keeps_the_clamp() -> None:
    config = small_config()
    torch.manual_seed(0)
    model = CLIPModel(config)
    with torch.no_grad():
        model.logit_scale.fill_(MAX_LOGIT_SCALE + 3.0)  # above the clamp: pulled back in place
    model, curves = train(config, model, device=torch.device("cpu"))
    assert len(curves["loss"]) == config.steps
    assert sum(curves["loss"][-4:]) / 4 < sum(curves["loss"][:4]) / 4 - 0.2
    assert 0.0 <= model.logit_scale.item() <= MAX_LOGIT_SCALE + 1e-6
    assert curves["temperature"][0] == pytest.approx(0.01, rel=1e-4)
    assert not model.training


def test_zero_shot_picks_the_nearest_prompt() -> None:
    torch.manual_seed(1)
    model = perturbed(CLIPModel(small_config())).eval()
    images, labels = single_objects("heldout", 6, seed=0)
    assert all(pair in HELDOUT_PAIRS for pair in labels)
    got = zero_shot(model, images, labels)
    # by hand: each image against each "a <color> <shape>" prompt, one at a time
    hits = 0
    for img, label in zip(images, labels, strict=True):
        u = model.encode_image(img[None])[0].detach()
        scores = {}
        for s in SHAPES:
            for c in COLORS:
                v = model.encode_text(encode_text(f"a {c} {s}", 16)[None])[0].detach()
                scores[(s, c)] = float(u @ v)
        hits += max(scores, key=scores.__getitem__) == label
    assert got["accuracy"] == pytest.approx(hits / 6)
    assert got["chance"] == pytest.approx(1 / 20)
    assert got["accuracy"] <= min(got["shape_accuracy"], got["color_accuracy"])


def test_bad_model_inputs_and_cli() -> None:
    with pytest.raises(ValueError, match="image_encoder"):
        small_config(image_encoder="mlp")
    with pytest.raises(ValueError, match="steps must be positive"):
        small_config(steps=0)
    with pytest.raises(ValueError, match="batch_size"):
        small_config(batch_size=1)
    model = CLIPModel(small_config())
    with pytest.raises(ValueError, match="images must be"):
        model.encode_image(torch.zeros(2, 32, 32))
    with pytest.raises(ValueError, match="captions"):
        model(torch.zeros(2, 3, 32, 32), torch.zeros(3, 16, dtype=torch.long))
    with pytest.raises(FileNotFoundError, match=r"model\.safetensors"):
        load(Path("/nonexistent/clip-run"))
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
