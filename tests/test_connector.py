"""The LLaVA connector: with no image tokens the forward is the GPT's own, with image tokens it
matches Hugging Face GPT-2 fed the same embeddings, stage 1 trains only encoder and projector,
the loss is on the answer only, a few steps lower it, and bad inputs get a clear message."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from llmcourse.gpt import GPT, GPTConfig
from llmcourse.multimodal import data
from llmcourse.multimodal.connector import (
    EOT,
    PooledCells,
    VisionLanguageModel,
    answer_loss,
    corrupt,
    encode_qa,
    greedy_answers,
    main,
    prompt,
    train_stage,
)
from llmcourse.multimodal.encoders import ConvEncoder, PatchEncoder

pytestmark = pytest.mark.usefixtures("one_thread")


def perturb(module: nn.Module, scale: float = 0.1) -> nn.Module:
    """Move every parameter (LayerNorm weights, biases included) off its init."""
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn_like(p))
    return module


def micro_vlm(seed: int = 0, positions: int = 96) -> VisionLanguageModel:
    """A 2-layer byte GPT (d = 32) and a 16x16-pixel patch encoder (4 patches + [CLS])."""
    torch.manual_seed(seed)
    lm = perturb(GPT(GPTConfig(vocab_size=257, n_positions=positions, n_layer=2, n_head=2,
                               n_embd=32)))  # fmt: skip
    encoder = perturb(PatchEncoder(image_size=16, patch=8, dim=16, depth=1, heads=2))
    return perturb(VisionLanguageModel(lm, encoder, 16)).eval()


class ClsOnly(nn.Module):
    """An encoder whose only output is the [CLS] vector: zero patch tokens once it is dropped."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.encoder(images)[:, :1]


def test_without_image_tokens_the_forward_is_the_gpts_own() -> None:
    vlm = micro_vlm()
    ids = torch.randint(0, 257, (3, 11))
    assert torch.equal(vlm(None, ids), vlm.lm(ids))
    empty = VisionLanguageModel(vlm.lm, ClsOnly(vlm.encoder), 16).eval()
    images = torch.rand(3, 3, 16, 16)
    assert empty.image_tokens(images).shape == (3, 0, 32)
    assert torch.equal(empty(images, ids), vlm.lm(ids))


def test_image_tokens_match_hugging_face_gpt2_fed_the_same_embeddings() -> None:
    """An independent oracle: HF GPT-2 with the same weights, given inputs_embeds =
    [projected patches, token embeddings], predicts the same logits at the text."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(3)
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=257, n_positions=64, n_embd=32, n_layer=2, n_head=2, resid_pdrop=0.0,
        embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=256, eos_token_id=256))  # fmt: skip
    perturb(hf).eval()
    encoder = perturb(PatchEncoder(image_size=16, patch=8, dim=16, depth=1, heads=2))
    vlm = VisionLanguageModel(GPT.from_hf(hf), encoder, 16).eval()
    perturb(vlm.projector)
    images, ids = torch.rand(2, 3, 16, 16), torch.randint(0, 257, (2, 9))
    with torch.no_grad():
        vision = vlm.image_tokens(images)
        assert vision.shape == (2, 4, 32)  # 4 patches, [CLS] dropped
        embeds = torch.cat([vision, hf.transformer.wte(ids)], dim=1)
        expected = hf(inputs_embeds=embeds).logits[:, 4:]
        assert torch.allclose(vlm(images, ids), expected, atol=1e-4, rtol=0)
        # the image matters: another image, other logits
        assert not torch.allclose(vlm(images.flip(0), ids), expected, atol=1e-3, rtol=0)


def test_stage_one_trains_encoder_and_projector_only_stage_two_everything() -> None:
    vlm = micro_vlm(1).train()
    ids, labels = encode_qa(["what color is the circle ?"] * 2, ["red", "blue"])
    images = torch.rand(2, 3, 16, 16)
    answer_loss(vlm.stage(1), images, ids, labels).backward()
    for name, p in vlm.named_parameters():
        if name.startswith("lm."):
            assert p.grad is None and not p.requires_grad, name
        else:
            assert p.grad is not None and p.grad.abs().sum() > 0, f"{name} got no gradient"
    vlm.zero_grad(set_to_none=True)
    answer_loss(vlm.stage(2), images, ids, labels).backward()
    for name, p in vlm.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"{name} got no gradient"
    with pytest.raises(ValueError, match="stage must be 1 or 2"):
        vlm.stage(3)


def test_a_pretrained_encoder_stays_frozen_in_both_stages() -> None:
    vlm = micro_vlm(8)
    frozen = VisionLanguageModel(vlm.lm, vlm.encoder, 16, train_encoder=False).train()
    ids, labels = encode_qa(["what shape is the red object ?"], ["cross"])
    images = torch.rand(1, 3, 16, 16)
    for number in (1, 2):
        frozen.zero_grad(set_to_none=True)
        answer_loss(frozen.stage(number), images, ids, labels).backward()
        assert all(p.grad is None for p in frozen.encoder.parameters())
        assert all(p.grad is not None for p in frozen.projector.parameters())
        assert all((p.grad is not None) == (number == 2) for p in frozen.lm.parameters())


def test_the_loss_is_on_the_answer_only() -> None:
    ids, labels = encode_qa(["how many objects are there ?", "is there a red cross ?"],
                            ["two", "no"])  # fmt: skip
    first = prompt("how many objects are there ?").encode()
    assert ids[0, : len(first)].tolist() == list(first)
    kept = labels[0][labels[0] != -100].tolist()
    assert kept == [*b"two", EOT]
    assert labels[1][labels[1] != -100].tolist() == [*b"no", EOT]
    assert (ids[1, len(prompt("is there a red cross ?").encode()) + 3 :] == EOT).all()  # padding
    vlm = micro_vlm(2)
    images = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        logits = vlm(images, ids[:, :-1])
        total, count = 0.0, 0
        for b in range(2):  # by hand: -log p(next byte) at every answer position
            for t in range(ids.shape[1] - 1):
                if labels[b, t + 1] != -100:
                    total -= F.log_softmax(logits[b, t], -1)[labels[b, t + 1]].item()
                    count += 1
        assert count == 4 + 3
        assert answer_loss(vlm, images, ids, labels).item() == pytest.approx(total / count, 1e-5)


def test_a_few_steps_lower_the_loss() -> None:
    split = data.make_split("train", 48, seed=0, image_size=16)
    ids, labels = encode_qa(split.questions, [data.ANSWERS[int(a)] for a in split.answers])
    vlm = micro_vlm(4).stage(1)
    lm_before = {k: v.clone() for k, v in vlm.lm.state_dict().items()}
    params = [*vlm.encoder.parameters(), *vlm.projector.parameters()]
    with torch.no_grad():
        before = answer_loss(vlm.eval(), split.images, ids, labels).item()
    losses = train_stage(vlm, split.images, ids, labels, 40, [{"params": params, "lr": 3e-2}],
                         16, torch.Generator().manual_seed(0))  # fmt: skip
    with torch.no_grad():
        after = answer_loss(vlm.eval(), split.images, ids, labels).item()
    assert len(losses) == 40
    assert after < before - 0.1
    for k, v in vlm.lm.state_dict().items():
        assert torch.equal(v, lm_before[k]), f"{k} changed in stage 1"


def test_greedy_answers_batched_equal_one_at_a_time() -> None:
    vlm = micro_vlm(5)
    questions = [
        "what color is the circle ?",
        "what color is the square ?",
        "is there a red cross ?",
    ]
    images = torch.rand(3, 3, 16, 16)
    batched = greedy_answers(vlm, images, questions, max_new_tokens=4)
    for i, q in enumerate(questions):
        ids = torch.tensor([list(prompt(q).encode())])
        with torch.no_grad():
            for _ in range(4):
                ids = torch.cat([ids, vlm(images[i : i + 1], ids)[:, -1:].argmax(-1)], dim=1)
        row = ids[0, len(prompt(q).encode()) :].tolist()
        cut = next((j for j, t in enumerate(row) if t in (EOT, 10)), len(row))
        expected = bytes(t for t in row[:cut] if t < 256).decode(errors="replace").strip()
        assert batched[i] == expected


def test_pooled_conv_cells_average_two_by_two_blocks() -> None:
    torch.manual_seed(7)
    conv = perturb(ConvEncoder(dim=8, width=4))
    images = torch.rand(2, 3, 32, 32)
    cells = conv.features(images).reshape(2, 8, 8, 8)  # (B, row, column, dim)
    pooled = PooledCells(conv, pool=2)(images)
    assert pooled.shape == (2, 16, 8)
    by_hand = cells[:, 2:4, 4:6].mean(dim=(1, 2))  # block row 1, block column 2
    assert torch.allclose(pooled[:, 1 * 4 + 2], by_hand, atol=1e-6)


def test_image_conditions() -> None:
    images = torch.rand(3, 3, 8, 8)
    assert torch.equal(corrupt(images, "real"), images)
    assert torch.equal(corrupt(images, "shuffled")[1], images[0])
    blank = corrupt(images, "blank")
    assert torch.equal(blank[2, :, 5, 1], torch.tensor(data.BACKGROUND, dtype=images.dtype))
    assert corrupt(images, "none") is None
    with pytest.raises(ValueError, match="unknown image mode"):
        corrupt(images, "noisy")


def test_bad_inputs_are_refused() -> None:
    vlm = micro_vlm(6, positions=24)
    images = torch.rand(1, 3, 16, 16)
    with pytest.raises(ValueError, match=r"4 image tokens \+ 21 text tokens exceed .* 24"):
        vlm(images, torch.zeros(1, 21, dtype=torch.long))
    vlm(images, torch.zeros(1, 20, dtype=torch.long))  # exactly full: fine
    with pytest.raises(ValueError, match="batch, 3, height, width"):
        vlm(torch.rand(1, 16, 16), torch.zeros(1, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="2 images for 1 token sequences"):
        vlm(torch.rand(2, 3, 16, 16), torch.zeros(1, 5, dtype=torch.long))
    with pytest.raises(ValueError, match=r"token ids must be in 0\.\.256"):
        vlm(images, torch.full((1, 5), 300))
    with pytest.raises(ValueError, match="integer token ids"):
        vlm(images, torch.zeros(1, 5))


def test_command_line_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    assert "gpt-tiny-llava" in capsys.readouterr().out
