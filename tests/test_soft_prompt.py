"""Soft prompts: the forward with k = 0 is the model's own, only the soft vectors train, a few
steps lower the loss, and bad inputs are refused with a clear message."""

from __future__ import annotations

import pytest
import torch

from llmcourse.gpt import GPT, GPTConfig
from llmcourse.prompting.soft_prompt import (
    SoftPrompt,
    answer_loss,
    encode_examples,
    few_shot_text,
    task_answer,
    words,
)
from llmcourse.sft.lora import trainable_parameters

pytestmark = pytest.mark.usefixtures("one_thread")


def micro_gpt(seed: int = 0) -> GPT:
    """A tiny byte GPT with weights larger than GPT-2's init (so the input matters) and its
    LayerNorms and biases moved off their init."""
    torch.manual_seed(seed)
    model = GPT(GPTConfig(vocab_size=257, n_positions=24, n_layer=2, n_head=2, n_embd=16))
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.add_((0.1 if "ln" in name or name.endswith("bias") else 0.3) * torch.randn_like(p))
    return model.eval()


def test_zero_soft_tokens_is_the_model_itself() -> None:
    model = micro_gpt()
    ids = torch.randint(0, 257, (3, 10))
    soft = SoftPrompt(model, 0)
    assert torch.allclose(soft(ids), model(ids), atol=1e-6, rtol=0)


def test_soft_tokens_equal_real_tokens_when_initialised_from_them() -> None:
    """Soft vectors that are the embeddings of ids p give the logits of model(p + x) at x."""
    model = micro_gpt(1)
    prefix, ids = torch.tensor([5, 77, 200]), torch.randint(0, 257, (2, 7))
    soft = SoftPrompt(model, 3, init=prefix.tolist())
    full = model(torch.cat([prefix.expand(2, -1), ids], dim=1))[:, 3:]
    assert torch.allclose(soft(ids), full, atol=1e-5, rtol=0)


def test_only_the_soft_vectors_train_and_the_loss_falls() -> None:
    model = micro_gpt(2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    soft = SoftPrompt(model, 4, init="random", generator=torch.Generator().manual_seed(0))
    assert trainable_parameters(soft) == 4 * 16
    ids, labels = encode_examples(words(0, 16))
    start = soft.prompt.detach().clone()
    optimizer = torch.optim.AdamW([soft.prompt], lr=0.05)
    losses = []
    for _ in range(15):
        loss = answer_loss(soft, ids, labels)
        optimizer.zero_grad()
        loss.backward()
        assert all(p.grad is None for p in model.parameters())
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.1
    assert not torch.equal(soft.prompt.detach(), start)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), f"{k} changed"


def test_bad_inputs_are_refused() -> None:
    model = micro_gpt()
    soft = SoftPrompt(model, 4)
    with pytest.raises(ValueError, match="exceed the model's context of 24"):
        soft(torch.zeros(1, 21, dtype=torch.long))
    with pytest.raises(ValueError, match="batch, length"):
        soft(torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match="integer token ids"):
        soft(torch.zeros(1, 5))
    with pytest.raises(ValueError, match=r"0\.\.256"):
        soft(torch.full((1, 3), 300))
    with pytest.raises(ValueError, match="no room"):
        SoftPrompt(model, 24)
    with pytest.raises(ValueError, match=">= 0"):
        SoftPrompt(model, -1)
    with pytest.raises(ValueError, match="needs 2 token ids"):
        SoftPrompt(model, 2, init=[1, 2, 3])
    with pytest.raises(ValueError, match="unknown init"):
        SoftPrompt(model, 2, init="zeros")


def test_task_data() -> None:
    heldout = words(1, 50)
    train = words(0, 500, exclude=set(heldout))
    assert len(set(train)) == 500 and not set(train) & set(heldout)
    assert task_answer("abc") == "CBA"
    assert few_shot_text(["xy"], "abc") == "xy>YX\nabc>"
    ids, labels = encode_examples(["abc"])
    assert bytes(ids[0, :4].tolist()).decode() == "abc>"
    assert labels[0].tolist() == [-100] * 4 + [ord(c) for c in "CBA"] + [256]
