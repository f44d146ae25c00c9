"""Estimating KL(pi || ref) per token from the policy's own samples (Schulman's k1, k2, k3).

RLHF keeps the policy ``pi`` near the frozen reference ``ref`` (the SFT model) by penalising

    KL(pi || ref) = E_{y ~ pi}[ log pi(y) - log ref(y) ].

Summing over the whole vocabulary at every position is possible but costly, and what a
rollout gives is the log-probabilities of the *sampled* tokens. With ``r = ref(y) / pi(y)``,
``log r = ref_logp - logp``, three single-sample estimators are used:

* ``k1 = -log r = logp - ref_logp``: unbiased, but high variance and negative for many samples;
* ``k2 = (log r)^2 / 2``: always >= 0, low variance, biased (exact to second order when the
  two distributions are close);
* ``k3 = (r - 1) - log r``: unbiased (``E_pi[r - 1] = 0``) *and* >= 0, since
  ``x - 1 >= log x``; GRPO's KL term.

Each is computed per token; averaging over samples of ``pi`` gives the KL.
"""

from __future__ import annotations

import torch

KINDS = ("k1", "k2", "k3")


def kl_estimate(logp: torch.Tensor, ref_logp: torch.Tensor, kind: str = "k1") -> torch.Tensor:
    """The per-token estimate of ``KL(pi || ref)`` from the log-probabilities of tokens
    sampled from ``pi``: ``logp`` under ``pi``, ``ref_logp`` under ``ref`` (same shape)."""
    if logp.shape != ref_logp.shape:
        raise ValueError(
            f"logp {tuple(logp.shape)} and ref_logp {tuple(ref_logp.shape)} differ in shape"
        )
    log_ratio = ref_logp - logp  # log r, r = ref / pi
    if kind == "k1":
        return -log_ratio
    if kind == "k2":
        return log_ratio.pow(2) / 2
    if kind == "k3":
        return torch.expm1(log_ratio) - log_ratio
    raise ValueError(f"unknown KL estimator {kind!r}: use one of {', '.join(KINDS)}")
