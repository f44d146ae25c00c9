"""BERT's masked-language-model corruption: hide 15 % of the tokens, with the 80/10/10 rule.

Each position that is not a special token (``[CLS]``, ``[SEP]``, ``[PAD]``) is *selected* with
probability ``rate`` (0.15), independently. The model must predict the original token at the
selected positions only; its input there is

* ``[MASK]`` with probability 0.8,
* a random token of the vocabulary with probability 0.1,
* the original token, unchanged, with probability 0.1.

Why not always ``[MASK]``? ``[MASK]`` never appears when the model is fine-tuned or used, so a
model that only ever predicted at ``[MASK]`` would learn nothing useful about the other
positions. With the random and unchanged 20 %, every input token may be one to check, and the
model has to keep a good representation of each of them.

The labels are the original ids at the selected positions and -100 (``ignore_index`` of
``torch.nn.functional.cross_entropy``) everywhere else.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

IGNORE_INDEX = -100
"""The label of a position the loss skips."""


def mask_tokens(
    input_ids: torch.Tensor,
    *,
    vocab_size: int,
    mask_id: int,
    special_ids: Iterable[int],
    rate: float = 0.15,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(masked_ids, labels)`` for a LongTensor of token ids of any shape.

    The random draws come from ``generator`` (on its own device) when one is given, so the same
    generator state gives the same masks.
    """
    if input_ids.dtype != torch.long:
        raise ValueError(f"input_ids must be a LongTensor, got {input_ids.dtype}")
    if not 0.0 < rate <= 1.0:
        raise ValueError(f"rate must be in (0, 1], got {rate}")
    if not 0 <= mask_id < vocab_size:
        raise ValueError(f"mask_id {mask_id} is not an id of a vocabulary of {vocab_size}")
    draw_on = generator.device if generator is not None else input_ids.device

    def uniform() -> torch.Tensor:
        u = torch.rand(input_ids.shape, generator=generator, device=draw_on)
        return u.to(input_ids.device)

    special = torch.tensor(sorted(set(special_ids)), dtype=torch.long, device=input_ids.device)
    selected = (uniform() < rate) & ~torch.isin(input_ids, special)
    action = uniform()  # < 0.8: [MASK]; 0.8 .. 0.9: random token; >= 0.9: unchanged
    random_ids = torch.randint(vocab_size, input_ids.shape, generator=generator, device=draw_on).to(
        input_ids.device
    )
    masked = torch.where(selected & (action < 0.8), mask_id, input_ids)
    masked = torch.where(selected & (action >= 0.8) & (action < 0.9), random_ids, masked)
    labels = torch.where(selected, input_ids, IGNORE_INDEX)
    return masked, labels
