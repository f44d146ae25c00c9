"""Fusion models: shapes, late fusion as a product of experts, training, robustness bookkeeping."""

from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from llmcourse.multimodal import data as D
from llmcourse.multimodal import fusion as Fu


@pytest.fixture(scope="module")
def batch():
    return D.make_split("train", 64, seed=3)


def _perturb(model: torch.nn.Module) -> None:
    g = torch.Generator().manual_seed(2)
    for name, p in model.named_parameters():
        if "norm" in name:
            p.data += 0.3 * torch.randn(p.shape, generator=g)


@pytest.mark.parametrize("kind", Fu.KINDS)
def test_forward_shapes_and_gradients(kind, batch):
    torch.manual_seed(0)
    model = Fu.make_model(kind, dim=32)
    _perturb(model)
    logits = model(batch.images[:5], batch.question_ids[:5])
    assert logits.shape == (5, len(D.ANSWERS)) and torch.isfinite(logits).all()
    F.cross_entropy(logits, batch.answers[:5]).backward()
    assert all(p.grad is not None for p in model.parameters())


def test_baselines_see_one_modality(batch):
    torch.manual_seed(0)
    x, q = batch.images[:8], batch.question_ids[:8]
    image_only, text_only = Fu.make_model("image-only", 32), Fu.make_model("text-only", 32)
    torch.testing.assert_close(image_only(x, q), image_only(x, q.flip(0)))
    torch.testing.assert_close(text_only(x, q), text_only(torch.zeros_like(x), q))
    early = Fu.make_model("early", 32)
    assert not torch.allclose(early(x, q), early(x, q.flip(0)))
    assert not torch.allclose(early(x, q), early(x.flip(0), q))


def test_late_fusion_is_a_product_of_experts(batch):
    torch.manual_seed(0)
    model = Fu.make_model("late", 32).eval()
    _perturb(model)
    x, q = batch.images[:8], batch.question_ids[:8]
    p_image = F.softmax(model.image_head(model.image(x)), dim=-1)
    p_text = F.softmax(model.text_head(model.text.pooled(q)), dim=-1)
    logits = model(x, q)
    torch.testing.assert_close(logits, p_image.log() + p_text.log())
    # the fused distribution is the renormalised product p_I * p_T
    product = p_image * p_text
    torch.testing.assert_close(F.softmax(logits, -1), product / product.sum(-1, keepdim=True))
    # the image expert does not depend on the question
    image_a, _ = model.experts(x, q)
    image_b, _ = model.experts(x, q.flip(0))
    torch.testing.assert_close(image_a, image_b)


def test_cross_attention_weights(batch):
    torch.manual_seed(0)
    model = Fu.make_model("cross-attention", 32, cross_depth=2).eval()
    _perturb(model)
    x, q = batch.images[:4], batch.question_ids[:4]
    h, weights = model.attend(x, q, need_weights=True)
    assert h.shape == (4, D.QUESTION_LEN, 32) and len(weights) == 2
    assert weights[0].shape == (4, 4, D.QUESTION_LEN, 64)
    torch.testing.assert_close(weights[0].sum(-1), torch.ones(4, 4, D.QUESTION_LEN))
    h_fast, _ = model.attend(x, q)  # the fused attention path gives the same vectors
    torch.testing.assert_close(h_fast, h, atol=1e-5, rtol=1e-4)
    empty = torch.zeros_like(q)  # a missing question still gives finite logits
    assert torch.isfinite(model(x, empty)).all()


@pytest.mark.parametrize("kind", ["early", "cross-attention"])
def test_a_few_steps_lower_the_loss(kind, batch):
    torch.manual_seed(0)
    config = replace(Fu.PRESETS["tiny"], steps=30, batch_size=32, lr=3e-3)
    model = Fu.make_model(kind, config.dim, conv_width=8)
    losses = Fu.fit(model, batch, config)
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.3


def test_accuracy_against_a_count(batch):
    class Oracle(torch.nn.Module):  # right on even examples, wrong on odd ones
        def forward(self, images, questions):
            n = len(images)
            answers = batch.answers[self.offset : self.offset + n].clone()
            odd = (torch.arange(self.offset, self.offset + n) % 2) == 1
            answers[odd] = (answers[odd] + 1) % len(D.ANSWERS)
            self.offset += n
            return F.one_hot(answers, len(D.ANSWERS)).float()

    oracle = Oracle()
    oracle.offset = 0
    assert Fu.accuracy(oracle, batch.images, batch.question_ids, batch.answers) == 0.5


def test_corrupted_inputs(batch):
    conditions = Fu.corrupted_inputs(batch, (0.1, 0.5), seed=0)
    assert list(conditions) == ["clean", "noise 0.1", "noise 0.5", "no image", "no question"]
    assert conditions["clean"][0] is batch.images
    for name in ("noise 0.1", "noise 0.5"):
        images, questions = conditions[name]
        assert images.min() >= 0 and images.max() <= 1 and questions is batch.question_ids
        assert not torch.equal(images, batch.images)
    # clipping aside, the noise has the stated standard deviation: measure it on mid pixels
    noisy = Fu.corrupted_inputs(batch, (0.02,), seed=0)["noise 0.02"][0]
    diff = (noisy - batch.images)[(batch.images > 0.2) & (batch.images < 0.8)]
    assert abs(diff.std().item() - 0.02) < 0.002
    assert torch.equal(conditions["no image"][0], torch.zeros_like(batch.images))
    assert (conditions["no question"][1] == D.PAD).all()
    again = Fu.corrupted_inputs(batch, (0.1, 0.5), seed=0)
    assert torch.equal(again["noise 0.5"][0], conditions["noise 0.5"][0])


def test_compare_bookkeeping():
    config = replace(
        Fu.PRESETS["tiny"], n_train=64, n_test=32, n_heldout=32, steps=3,
        kinds=("image-only", "text-only"), noise_levels=(0.5,),
    )  # fmt: skip
    record = Fu.compare(config, "cpu")
    assert set(record["table"]) == {"image-only", "text-only"}
    assert set(record["table"]["text-only"]) == {"train", "test", "heldout"}
    text, image = record["robustness"]["text-only"], record["robustness"]["image-only"]
    assert list(text) == ["clean", "noise 0.5", "no image", "no question"]
    # a model blind to a modality cannot be hurt by corrupting it
    assert text["clean"] == text["noise 0.5"] == text["no image"]
    assert image["clean"] == image["no question"]
    assert text["clean"] == record["table"]["text-only"]["test"]
    assert len(record["loss_curves"]["text-only"]) > 0
    assert "heldout" in Fu.format_table(record) and "text-only" in Fu.format_table(record)
    with pytest.raises(ValueError, match="kind"):
        Fu.compare(replace(config, kinds=("middle",)))


def test_command_line(capsys):
    with pytest.raises(SystemExit) as exit_info:
        Fu.main(["--help"])
    assert exit_info.value.code == 0
    assert "cross-attention" in capsys.readouterr().out
    assert set(Fu.COURSE_RUNS) == {"multimodal-fusion"}
