"""CLIP-style contrastive learning (Radford et al. 2021): images and captions in one space.

Two encoders, one per modality, each followed by a linear projection into a shared space of
width D and an L2 normalisation, so that the similarity of image i and caption j is the
cosine s_ij = <u_i, v_j>. A batch of B (image, caption) pairs gives the B x B matrix S; the
pairs on its diagonal should score higher than every other entry of their row and column.
The loss is the *symmetric InfoNCE*: a B-way cross-entropy over each row (image -> which
caption?) and over each column (caption -> which image?), averaged,

    L = 1/2 [ CE_rows(S / tau) + CE_cols(S / tau) ],
    CE_rows = -1/B sum_i log( exp(s_ii / tau) / sum_j exp(s_ij / tau) ).

The temperature tau is learned, parameterised by its logarithm: ``logit_scale`` = log(1 / tau),
initialised at log(1 / 0.07) and clamped at log(100) (logits scaled by at most 100), as in CLIP.
Cosines live in [-1, 1]; without the scale, softmax over B of them could never get peaked.

Several scenes share one caption ("a small red circle"), so a batch may hold the same caption
twice: then caption j is as right for image i as caption i is, and a one-hot target would ask
the model to tell identical texts apart. ``info_nce`` therefore takes an optional boolean match
matrix M (M_ij: pair j's caption is a right answer for image i) and uses the target
distribution M_ij / sum_j M_ij in each row and column (uniform over the right answers); with
the identity it is the usual loss. ``recall_at_k`` likewise counts a hit when any right answer
is among the top k.

``CLIPModel`` pairs the course's image and text encoders (``multimodal.encoders``); ``train``
fits it on the captions of the training split and ``evaluate`` measures retrieval (recall@1/5
both ways) and zero-shot classification of single objects by prompts ("a red circle"), on new
scenes of seen combinations ("test") and on combinations never seen in training ("heldout").
The cached run is ``clip-tiny`` (``COURSE_RUNS``). Run ``python -m llmcourse.multimodal.clip
--help``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

INIT_LOGIT_SCALE = math.log(1 / 0.07)
"""CLIP's initial log(1 / tau): tau = 0.07."""
MAX_LOGIT_SCALE = math.log(100.0)
"""CLIP's clamp: logits are scaled by at most 100 (tau >= 0.01)."""


def _check_pair(image_emb: torch.Tensor, text_emb: torch.Tensor) -> None:
    if image_emb.dim() != 2 or text_emb.dim() != 2:
        raise ValueError(
            f"embeddings must be (B, D): got image {tuple(image_emb.shape)}, "
            f"text {tuple(text_emb.shape)}"
        )
    if image_emb.shape != text_emb.shape:
        raise ValueError(
            f"image and text embeddings must have the same shape (B pairs of width D): got "
            f"{tuple(image_emb.shape)} and {tuple(text_emb.shape)}"
        )


def similarity(image_emb: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor:
    """The (N_images, N_texts) matrix of cosine similarities (each row L2-normalised first)."""
    if image_emb.dim() != 2 or text_emb.dim() != 2 or image_emb.shape[1] != text_emb.shape[1]:
        raise ValueError(
            f"embeddings must be (N, D) with the same D: got {tuple(image_emb.shape)} and "
            f"{tuple(text_emb.shape)}"
        )
    return F.normalize(image_emb, dim=-1) @ F.normalize(text_emb, dim=-1).T


def info_nce(
    image_emb: torch.Tensor,
    text_emb: torch.Tensor,
    logit_scale: torch.Tensor | float,
    matches: torch.Tensor | None = None,
) -> torch.Tensor:
    """Symmetric InfoNCE of B (image, text) pairs, the mean of both directions' cross-entropy.

    ``image_emb``, ``text_emb``: (B, D), row i of each is a pair (normalised here, so raw
    projections are fine). ``logit_scale``: log(1 / tau), a scalar (tensor or float); it is
    clamped at ``MAX_LOGIT_SCALE`` as CLIP does. ``matches``: optional (B, B) bool, True where
    text j is a right answer for image i (e.g. the same caption); the diagonal must be True.
    None means the identity: only the pair itself is right.
    """
    _check_pair(image_emb, text_emb)
    scale = torch.as_tensor(logit_scale, dtype=image_emb.dtype, device=image_emb.device)
    if scale.numel() != 1:
        raise ValueError(f"logit_scale must be a scalar, got shape {tuple(scale.shape)}")
    logits = scale.reshape(()).clamp(max=MAX_LOGIT_SCALE).exp() * similarity(image_emb, text_emb)
    b = logits.shape[0]
    if matches is None:
        labels = torch.arange(b, device=logits.device)
        return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
    if matches.shape != (b, b) or matches.dtype != torch.bool:
        raise ValueError(f"matches must be a ({b}, {b}) bool tensor, got {matches.dtype} "
                         f"{tuple(matches.shape)}")  # fmt: skip
    if not bool(matches.diagonal().all()):
        raise ValueError("matches must be True on its diagonal (each pair matches itself)")
    m = matches.to(logits.dtype)
    rows = -(m / m.sum(1, keepdim=True) * logits.log_softmax(dim=1)).sum(1).mean()
    cols = -(m / m.sum(0, keepdim=True) * logits.log_softmax(dim=0)).sum(0).mean()
    return (rows + cols) / 2


def caption_matches(captions: list[str] | tuple[str, ...]) -> torch.Tensor:
    """(B, B) bool: True where captions i and j are the same text (the diagonal included)."""
    index: dict[str, int] = {}
    ids = torch.tensor([index.setdefault(c, len(index)) for c in captions])
    return ids[:, None] == ids[None, :]


def recall_at_k(sim: torch.Tensor, k: int, matches: torch.Tensor | None = None) -> dict[str, float]:
    """Recall@k both ways for a square (N, N) similarity matrix of N pairs.

    ``image_to_text``: the share of images (rows) with a right text among their k most similar
    columns; ``text_to_image``: the share of texts (columns) with a right image among their k
    most similar rows. Right = the pair itself, or where ``matches`` (N, N bool) says so.
    (Exact ties are ordered as ``torch.topk`` orders them.)
    """
    if sim.dim() != 2 or sim.shape[0] != sim.shape[1]:
        raise ValueError(f"similarity must be a square (N, N) matrix, got {tuple(sim.shape)}")
    n = sim.shape[0]
    if not 1 <= k <= n:
        raise ValueError(f"k must be in 1..{n} for a gallery of {n}, got {k}")
    if matches is None:
        matches = torch.eye(n, dtype=torch.bool, device=sim.device)
    elif matches.shape != sim.shape or matches.dtype != torch.bool:
        raise ValueError(f"matches must be a {tuple(sim.shape)} bool tensor")
    top_texts = sim.topk(k, dim=1).indices  # (N, k) columns for each row
    top_images = sim.topk(k, dim=0).indices  # (k, N) rows for each column
    i2t = matches.gather(1, top_texts).any(dim=1).float().mean().item()
    t2i = matches.gather(0, top_images).any(dim=0).float().mean().item()
    return {"image_to_text": i2t, "text_to_image": t2i}
