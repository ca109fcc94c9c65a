"""rxf: the R3F and R4F method (Aghajanyan et al., "Better Fine-Tuning by Reducing Representational Collapse",
ICLR 2021) in plain torch, for any training framework.

Layout, top to bottom (a module imports only from below it):

- adapters: ``fairseq_r3f`` (the fairseq plugin: criterions, architectures, recipes) and ``rxf.hf``
  (HuggingFace transformers: ``R3FTrainer``, ``R3FSeq2SeqTrainer``, ``R3FMixin``, ``apply_r4f``, ``fold_r4f``).
  Each finds the embedding module to perturb, the rows to compare and the number its trainer divides the loss
  by, and calls the core.
- the core, this package: torch only; it imports neither fairseq nor transformers.

  - :mod:`rxf.divergence`: ``symmetric_kl`` (fused, fp32), ``symmetric_kl_autograd`` (its reference),
    ``squared_difference`` (the regression counterpart).
  - :mod:`rxf.noise`: ``NOISE_TYPES``, ``sample_noise``, ``add_noise`` and ``PerturbationStats`` (the entries
    the noise still changes after the cast to the model's dtype: ``noise_kept``).
  - :mod:`rxf.r3f`: ``r3f_term``, the summed divergence over the kept rows.
  - :mod:`rxf.spectral_norm`: ``SpectralNormLinear``, ``converged_u``, and the fold ``folded_weight`` /
    ``folded_linear``.
"""

from rxf.divergence import squared_difference, symmetric_kl, symmetric_kl_autograd
from rxf.noise import NOISE_TYPES, PerturbationStats, add_noise, sample_noise
from rxf.r3f import r3f_term
from rxf.spectral_norm import SpectralNormLinear, converged_u, folded_linear, folded_weight

__all__ = [
    "NOISE_TYPES",
    "PerturbationStats",
    "SpectralNormLinear",
    "add_noise",
    "converged_u",
    "folded_linear",
    "folded_weight",
    "r3f_term",
    "sample_noise",
    "squared_difference",
    "symmetric_kl",
    "symmetric_kl_autograd",
]
