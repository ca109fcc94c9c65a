"""R3F's noise on the raw token embeddings: the samplers, how the noise is added, and how much of it survives.

The noise is sampled in fp32 and added to the token embeddings in fp32; the sum is cast back to the embeddings'
dtype once. Under fp16 and even more under bf16 a perturbation of 1e-5 on entries of magnitude ~0.05 rounds
away for most entries, so :class:`PerturbationStats` counts, over the real (non-padding) tokens, the entries
that still differ after the cast: the ``noise_kept`` both adapters log.
"""

from dataclasses import dataclass
from typing import Optional, Union

import torch

NOISE_TYPES = ("uniform", "normal", "none")

# below this fraction of changed entries, the adapters warn once that the noise mostly rounds away
NOISE_KEPT_WARNING_BELOW = 0.9


def check_noise_type(noise_type: str) -> str:
    """``noise_type`` as a str, or a ValueError naming the choices."""
    if str(noise_type) not in NOISE_TYPES:
        raise ValueError(f"unknown noise type {noise_type!r}: choose one of {', '.join(NOISE_TYPES)}")
    return str(noise_type)


def sample_noise(like: torch.Tensor, noise_type: str, eps: float) -> torch.Tensor:
    """Noise shaped like ``like``, in fp32, on its device: U(-eps, eps), N(0, eps^2) or zeros ("none")."""
    noise_type = check_noise_type(noise_type)
    noise = torch.zeros(like.shape, dtype=torch.float32, device=like.device)
    if eps == 0 or noise_type == "none":
        return noise
    if noise_type == "uniform":
        return noise.uniform_(-eps, eps)
    return noise.normal_(0.0, eps)


def add_noise(token_embedding: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """``token_embedding + noise`` formed in fp32 and cast back to the embeddings' dtype once; gradients flow
    into both."""
    if noise.shape != token_embedding.shape:
        raise ValueError(f"the noise has shape {tuple(noise.shape)}, but the token embeddings it is added to have "
                         f"shape {tuple(token_embedding.shape)}")
    return (token_embedding.float() + noise).to(token_embedding.dtype)


@dataclass
class PerturbationStats:
    """What the perturbed forwards did, for logging.

    ``changed`` counts the token-embedding entries of real (non-padding) tokens whose value differs after
    the perturbation was added and the sum was cast back to the model's dtype, out of ``total``. In fp32 that
    is every entry; in fp16 a perturbation of 1e-5 on entries of magnitude 0.05 is mostly rounded away, and
    this says how much.
    """

    # tensors once counted: reading them on every training step would stall the GPU
    changed: Union[int, torch.Tensor] = 0
    total: Union[int, torch.Tensor] = 0

    def count(self, clean: torch.Tensor, perturbed: torch.Tensor, real: Optional[torch.Tensor] = None) -> None:
        """Adds the entries of ``perturbed`` (B x T x C) that differ from ``clean``, over the tokens where
        ``real`` (B x T, True = a real token; None = all) holds."""
        with torch.no_grad():
            changed = perturbed != clean
            if real is None:
                self.changed = self.changed + changed.sum()
                self.total = self.total + changed.numel()
                return
            real = real.to(torch.bool).unsqueeze(-1)
            self.changed = self.changed + (changed & real).sum()
            self.total = self.total + real.sum() * perturbed.size(-1)

    def kept_fraction(self) -> float:
        """changed / total (a host sync); 0 when nothing was counted."""
        return float(self.changed) / max(float(self.total), 1.0)
