"""The R3F term: the divergence between a model's outputs on clean and on noised token embeddings, summed over
the rows that count (a classification batch's sentences, a generation batch's non-padding target positions).

Summed, not averaged: each adapter divides it by the number of items its task loss averages over (fairseq's
``sample_size``, Trainer's ``num_items_in_batch``), so that lambda weighs it per item exactly as the
cross-entropy is weighed.
"""

from typing import Optional

import torch

from rxf.divergence import squared_difference, symmetric_kl


def r3f_term(clean_logits: torch.Tensor, noised_logits: torch.Tensor, mask: Optional[torch.Tensor] = None,
             regression: bool = False) -> torch.Tensor:
    """Summed symmetric KL between the distributions of ``clean_logits`` and ``noised_logits`` (... x V) over the
    rows where ``mask`` (their leading shape, True = counted) holds, or over all rows without a mask.

    ``regression``: the outputs are regression values (... x 1 or ...), not logits; the term is then their
    summed squared difference over the kept rows, the symmetric KL between N(y, 1) and N(y', 1)."""
    if clean_logits.shape != noised_logits.shape:
        raise ValueError(f"the clean and the noised outputs must have one shape, got {tuple(clean_logits.shape)} "
                         f"and {tuple(noised_logits.shape)}")
    if not regression:
        return symmetric_kl(clean_logits, noised_logits, mask=mask)
    if mask is not None:
        if mask.shape != clean_logits.shape[: mask.dim()]:
            raise ValueError(f"the mask must have the outputs' leading shape, got {tuple(mask.shape)} for outputs "
                             f"of shape {tuple(clean_logits.shape)}")
        keep = mask.to(torch.bool)
        clean_logits, noised_logits = clean_logits[keep], noised_logits[keep]
    return squared_difference(clean_logits.reshape(-1), noised_logits.reshape(-1))
