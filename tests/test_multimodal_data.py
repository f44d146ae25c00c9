"""The generated image-text data: deterministic, drawn where the scene says, questions true."""

import numpy as np
import pytest
import torch

from llmcourse.multimodal import data as D


@pytest.fixture(scope="module")
def train():
    return D.make_split("train", 300, seed=0)


@pytest.fixture(scope="module")
def heldout():
    return D.make_split("heldout", 200, seed=0)


def test_vocab_and_answers():
    assert D.VOCAB[:2] == ["<pad>", "<unk>"]
    assert len(set(D.VOCAB)) == len(D.VOCAB)
    assert len(set(D.ANSWERS)) == len(D.ANSWERS)
    assert set(D.COLORS) | set(D.SHAPES) | set(D.SIZES) <= set(D.VOCAB)


def test_deterministic_by_seed(train):
    again = D.make_split("train", 300, seed=0)
    assert torch.equal(again.images, train.images)
    assert again.questions == train.questions and torch.equal(again.answers, train.answers)
    other = D.make_split("train", 300, seed=1)
    assert not torch.equal(other.images, train.images)
    test = D.make_split("test", 300, seed=0)
    assert set(test.captions) != set(train.captions)


def test_images_show_the_scene(train):
    """Each object's pixels carry its color; the rest is background; masks are disjoint,
    non-empty and inside the image (the mask of a full box fits in the frame)."""
    assert train.images.shape == (300, 3, 32, 32)
    assert train.images.min() >= 0 and train.images.max() <= 1
    for image, scene in zip(train.images[:100], train.scenes[:100], strict=True):
        covered = np.zeros((32, 32), dtype=int)
        for o in scene.objects:
            mask = D.object_mask(o, 32)
            assert mask.sum() > 5
            assert o.r <= o.x <= 1 - o.r and o.r <= o.y <= 1 - o.r
            covered += mask
            assert torch.allclose(image[:, torch.from_numpy(mask)].T, torch.tensor(D.RGB[o.color]))
        assert covered.max() <= 1, "objects overlap"
        rest = torch.from_numpy(covered == 0)
        assert torch.allclose(image[:, rest].T, torch.tensor(D.BACKGROUND))
        assert 1 <= len(scene.objects) <= 3


def test_render_other_sizes():
    scene = D.Scene((D.Obj("circle", "red", "large", 0.5, 0.5),))
    big = D.render(scene, 64)
    assert big.shape == (3, 64, 64)
    assert torch.allclose(big[:, 32, 32], torch.tensor(D.RGB["red"]))
    with pytest.raises(ValueError, match="image_size"):
        D.render(scene, 4)


def test_captions_and_answers_match_the_scene(train, heldout):
    for s in (train, heldout):
        for scene, cap, q, a in zip(s.scenes, s.captions, s.questions, s.answers, strict=True):
            objs = scene.objects
            names = [f"a {o.size} {o.color} {o.shape}" for o in sorted(objs, key=lambda o: o.x)]
            assert cap == " and ".join(names)
            answer = D.ANSWERS[int(a)]
            w = q.split()
            if q.startswith("what color is the"):
                (o,) = [o for o in objs if o.shape == w[4]]
                assert answer == o.color
            elif q.startswith("what shape is the"):
                (o,) = [o for o in objs if o.color == w[4]]
                assert answer == o.shape
            elif q.startswith("what size is the"):
                (o,) = [o for o in objs if (o.color, o.shape) == (w[4], w[5])]
                assert answer == o.size
            elif q.startswith("how many objects"):
                assert answer == D.COUNTS[len(objs) - 1]
            elif q.startswith("is there a"):
                present = any((o.color, o.shape) == (w[3], w[4]) for o in objs)
                assert answer == ("yes" if present else "no")
            else:
                assert "left or right" in q
                (a_obj,) = [o for o in objs if (o.color, o.shape) == (w[2], w[3])]
                (b_obj,) = [o for o in objs if (o.color, o.shape) == (w[9], w[10])]
                assert answer == ("left" if a_obj.x < b_obj.x else "right")


def test_every_question_kind_and_answer_balance(train):
    assert set(train.kinds) == set(D.QUESTION_KINDS)
    yes_no = [
        D.ANSWERS[int(a)] for a, k in zip(train.answers, train.kinds, strict=True) if k == "exists"
    ]
    assert 0.3 < yes_no.count("yes") / len(yes_no) < 0.7


def test_heldout_pairs_never_in_training(train, heldout):
    D.check_no_heldout(train.scenes)
    D.check_no_heldout(D.make_split("test", 200, seed=0).scenes)
    for scene in train.scenes:
        assert not any(o.pair in D.HELDOUT_PAIRS for o in scene.objects)
    for text in train.questions + train.captions:  # not even a "no" question names one
        for shape, color in D.HELDOUT_PAIRS:
            assert f"{color} {shape}" not in text
    assert all(any(o.pair in D.HELDOUT_PAIRS for o in s.objects) for s in heldout.scenes)
    with pytest.raises(ValueError, match="held-out"):
        D.check_no_heldout(heldout.scenes)
    # every shape and every color is seen in training, only the pairings are new
    seen = {o.pair for s in train.scenes for o in s.objects}
    assert {s for s, _ in seen} == set(D.SHAPES) and {c for _, c in seen} == set(D.COLORS)


def test_encode_text_round_trip(train):
    for q, ids in zip(train.questions[:50], train.question_ids[:50], strict=True):
        assert D.decode_text(ids) == q
        assert D.UNK not in ids.tolist()
    for c, ids in zip(train.captions[:50], train.caption_ids[:50], strict=True):
        assert D.decode_text(ids) == c
    ids = D.encode_text("What colour is the circle?", 8)
    assert ids.tolist()[1] == D.UNK and ids.tolist()[-2:] == [D.PAD, D.PAD]
    assert D.decode_text(ids) == "what <unk> is the circle ?"


def test_bad_arguments():
    with pytest.raises(ValueError, match="split"):
        D.make_split("valid", 10, 0)
    with pytest.raises(ValueError, match="positive"):
        D.make_split("train", 0, 0)
    with pytest.raises(ValueError, match="max_len"):
        D.encode_text("a b c", 2)
    with pytest.raises(ValueError, match="shape"):
        D.Obj("hexagon", "red", "small", 0.5, 0.5)
    with pytest.raises(ValueError, match="overlap"):
        D.Scene(
            (D.Obj("circle", "red", "small", 0.5, 0.5), D.Obj("cross", "red", "small", 0.55, 0.5))
        )
    with pytest.raises(ValueError, match="inside"):
        D.Scene((D.Obj("circle", "red", "large", 0.05, 0.5),))
    with pytest.raises(ValueError, match="1 to 3"):
        D.Scene(())
