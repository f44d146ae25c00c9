"""Distillation loss against an independent computation (``F.kl_div`` with ``log_target`` and
sums written out), the T^2 factor's effect on the gradient, alpha = 0 as plain cross-entropy,
and a short run that lowers it on a micro student."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from llmcourse.compress.distill import DistillConfig, distillation_loss, train_student
from llmcourse.gpt import GPT, GPTConfig

pytestmark = pytest.mark.usefixtures("one_thread")


def _logits(seed: int = 0, shape=(2, 5, 7)) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    student = torch.randn(shape, generator=g) * 2
    teacher = torch.randn(shape, generator=g) * 2
    labels = torch.randint(0, shape[-1], shape[:-1], generator=g)
    return student, teacher, labels


@pytest.mark.parametrize(("T", "alpha"), [(1.0, 0.5), (2.0, 0.5), (4.0, 0.9), (2.0, 1.0)])
def test_loss_equals_kl_div_and_hand_sums(T, alpha):
    s, t, y = _logits()
    y[0, 1] = -100  # an unscored position
    got = distillation_loss(s, t, y, T=T, alpha=alpha)
    keep = y.flatten() != -100
    s2, t2, y2 = s.reshape(-1, 7)[keep], t.reshape(-1, 7)[keep], y.flatten()[keep]
    kl = F.kl_div(F.log_softmax(s2 / T, -1), F.log_softmax(t2 / T, -1), log_target=True,
                  reduction="batchmean")  # fmt: skip
    ce = F.cross_entropy(s2, y2)
    torch.testing.assert_close(got, alpha * T**2 * kl + (1 - alpha) * ce)
    # the same from the definitions, one position and one token at a time
    by_hand_kl, by_hand_ce = 0.0, 0.0
    for zs, zt, label in zip(s2.tolist(), t2.tolist(), y2.tolist(), strict=True):
        ps = [math.exp(v / T) for v in zs]
        pt = [math.exp(v / T) for v in zt]
        ps, pt = [v / sum(ps) for v in ps], [v / sum(pt) for v in pt]
        by_hand_kl += sum(b * math.log(b / a) for a, b in zip(ps, pt, strict=True))
        by_hand_ce -= zs[label] - math.log(sum(math.exp(v) for v in zs))
    n = len(y2)
    expected = alpha * T * T * by_hand_kl / n + (1 - alpha) * by_hand_ce / n
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_alpha_zero_is_cross_entropy_and_teacher_equal_student_gives_no_kl():
    s, t, y = _logits(1)
    ce = F.cross_entropy(s.reshape(-1, 7), y.flatten())
    torch.testing.assert_close(distillation_loss(s, t, y, T=3.0, alpha=0.0), ce)
    assert distillation_loss(s, s, y, T=3.0, alpha=1.0).abs().item() < 1e-6


def test_t_squared_keeps_the_gradient_comparable_across_temperatures():
    s, t, y = _logits(2, shape=(64, 50))
    s, t = s * 0.5, t * 0.5  # logits small against T: the regime where the 1/T^2 shows

    def grad_norm(T: float, scaled: bool) -> float:
        z = s.clone().requires_grad_(True)
        loss = distillation_loss(z, t, y, T=T, alpha=1.0)
        (loss if scaled else loss / T**2).backward()
        return z.grad.norm().item()

    scaled = [grad_norm(T, True) for T in (2.0, 4.0, 8.0)]
    raw = [grad_norm(T, False) for T in (2.0, 4.0, 8.0)]
    assert max(scaled) / min(scaled) < 1.5  # comparable at every T
    assert raw[0] / raw[2] > 10  # without T^2: 16x smaller from T = 2 to T = 8


def test_bad_shapes_are_refused():
    s, t, y = _logits()
    with pytest.raises(ValueError, match="differ"):
        distillation_loss(s, t[:, :3], y)
    with pytest.raises(ValueError, match="labels"):
        distillation_loss(s, t, y[:, :3])
    with pytest.raises(ValueError, match="T > 0"):
        distillation_loss(s, t, y, T=0.0)


def test_a_few_steps_lower_the_loss_on_a_micro_student():
    torch.manual_seed(0)
    teacher = GPT(GPTConfig(vocab_size=12, n_positions=16, n_layer=2, n_head=2, n_embd=16))
    with torch.no_grad():
        for p in teacher.parameters():
            p.add_(0.3 * torch.randn_like(p))
    teacher.eval()
    ids = torch.randint(0, 12, (3000,))
    config = DistillConfig(n_layer=1, n_head=2, n_embd=16, steps=30, batch_size=8, seq_len=15,
                           lr=1e-2, warmup=3, eval_every=10, eval_windows=8)  # fmt: skip
    student, history = train_student(config, teacher, ids, ids[:500])
    assert student.config.n_layer == 1 and student.config.vocab_size == 12
    windows = ids[: 16 * 20].view(20, 16)

    def kd_loss(model: GPT) -> float:  # the soft term alone: labels here are noise
        with torch.no_grad():
            return distillation_loss(model(windows[:, :-1]), teacher(windows[:, :-1]),
                                     windows[:, 1:], alpha=1.0).item()  # fmt: skip

    fresh = GPT(student.config)
    assert kd_loss(student) < 0.5 * kd_loss(fresh)
    assert history["step"] == [10, 20, 30] and len(history["val_loss"]) == 3
    hard, _ = train_student(DistillConfig(**{**config.__dict__, "alpha": 0.0}), teacher, ids, ids)
    assert not torch.equal(hard.lm_head.weight, student.lm_head.weight)
