"""The divergences between a model's outputs on clean and on perturbed inputs. Always computed in fp32."""

from typing import Optional

import torch
import torch.nn.functional as F


def symmetric_kl(logits_p: torch.Tensor, logits_q: torch.Tensor, mask: Optional[torch.Tensor] = None):
    """KL(p || q) + KL(q || p) between the categorical distributions given by two logit tensors (... x V),
    summed over all rows; ``mask`` (the leading dims, True = keep) leaves rows out, e.g. padding targets.

    Written as sum_v (p_v - q_v)(log p_v - log q_v): every term is >= 0, so the result is never negative
    (a difference of two ``kl_div`` calls can come out at -1e-9). Gradients flow into both arguments.
    """
    log_p = F.log_softmax(logits_p, dim=-1, dtype=torch.float32)
    log_q = F.log_softmax(logits_q, dim=-1, dtype=torch.float32)
    per_row = ((log_p.exp() - log_q.exp()) * (log_p - log_q)).sum(dim=-1)
    if mask is not None:
        per_row = per_row.masked_fill(~mask, 0.0)
    return per_row.sum()


def squared_difference(outputs_p: torch.Tensor, outputs_q: torch.Tensor):
    """The regression counterpart of :func:`symmetric_kl`, summed over all entries.

    A regression output y is read as the mean of N(y, 1); between two such Gaussians the symmetric KL is
    (y_p - y_q)^2 (each direction contributes half), so this term is the same quantity on the same scale.
    """
    return (outputs_p.float() - outputs_q.float()).pow(2).sum()
