"""The one place that knows how to perturb a fairseq model's input token embeddings.

Every fairseq encoder the plugin supports -- RoBERTa and XLM-R (``model.encoder.sentence_encoder``), BART,
mBART and the plain ``transformer`` (``model.encoder``) -- is a :class:`TransformerEncoderBase`, and all of
them turn token ids into vectors in ``forward_embedding(src_tokens, token_embedding=None)``::

    token_embedding = embed_tokens(src_tokens)        # <- the perturbation is added here
    x = embed_scale * token_embedding + positions
    x = layernorm_embedding(x); x = dropout(x)

:func:`perturbed_token_embeddings` temporarily wraps that method on the encoder instance, so the perturbation
is added to the raw token embeddings (before scaling, positions and the embedding layer norm, where the
paper's code adds it) whatever arguments the model's ``forward`` passes down. The authors' code instead
handed ``token_embeddings=`` to ``model(...)``, which RoBERTa's encoder silently drops, so its noise never
reached RoBERTa or XLM-R. Wrapping the encoder itself cannot be dropped on the way, and it leaves the
decoder's embeddings alone even where BART shares the embedding matrix between encoder and decoder.

Gradients flow through the perturbed branch into the embedding matrix (nothing is detached): the R3F term
is KL_S(g.f(x) || g.f(x + z)) with x = E[tokens], and its gradient with respect to every parameter,
E included, is what the paper's objective (Eq. 3) asks for. Both criterions use this one policy.
"""

import contextlib
from dataclasses import dataclass
from typing import Callable, Iterator, Optional, Union

import torch
from torch import nn

from fairseq.models.transformer import TransformerEncoderBase

NOISE_TYPES = ("uniform", "normal", "none")

# delta(token_embedding) -> perturbation of the same shape (B x T x C), in fp32
Perturbation = Callable[[torch.Tensor], torch.Tensor]


def find_token_encoder(model: nn.Module) -> TransformerEncoderBase:
    """The single encoder of ``model`` whose token embeddings are perturbed."""
    encoders = [m for m in model.modules() if isinstance(m, TransformerEncoderBase)]
    if len(encoders) != 1:
        raise ValueError(
            f"fairseq_r3f perturbs the token embeddings of exactly one TransformerEncoder, but "
            f"{type(model).__name__} has {len(encoders)}; use a RoBERTa, XLM-R, BART, mBART or transformer "
            f"model."
        )
    return encoders[0]


def sample_noise(like: torch.Tensor, noise_type: str, eps: float) -> torch.Tensor:
    """Noise shaped like ``like``, in fp32, on its device: U(-eps, eps), N(0, eps^2) or zeros ("none")."""
    noise = torch.zeros(like.shape, dtype=torch.float32, device=like.device)
    if eps == 0 or noise_type == "none":
        return noise
    if noise_type == "uniform":
        return noise.uniform_(-eps, eps)
    if noise_type == "normal":
        return noise.normal_(0.0, eps)
    raise ValueError(f"unknown noise type {noise_type!r}: choose one of {', '.join(NOISE_TYPES)}")


@dataclass
class PerturbationStats:
    """What the last perturbed forward did, for logging.

    ``changed`` counts the token-embedding entries of real (non-padding) tokens whose value differs after
    the perturbation was added and the sum was cast back to the model's dtype, out of ``total``. In fp32 that is every entry; in fp16
    a perturbation of 1e-5 on entries of magnitude 0.05 is mostly rounded away, and this says how much.
    """

    # tensors once counted: reading them on every training step would stall the GPU
    changed: Union[int, torch.Tensor] = 0
    total: Union[int, torch.Tensor] = 0


@contextlib.contextmanager
def perturbed_token_embeddings(
    model: nn.Module, perturbation: Perturbation, stats: Optional[PerturbationStats] = None
) -> Iterator[None]:
    """Within the block, every forward of ``model``'s encoder adds ``perturbation(E[tokens])`` to its raw
    token embeddings. The sum is formed in fp32 and cast back to the embeddings' dtype once."""
    encoder = find_token_encoder(model)
    original = encoder.forward_embedding

    def forward_embedding(src_tokens, token_embedding=None):
        if token_embedding is None:
            token_embedding = encoder.embed_tokens(src_tokens)
        delta = perturbation(token_embedding)
        perturbed = (token_embedding.float() + delta).to(token_embedding.dtype)
        if stats is not None:
            with torch.no_grad():  # count real tokens only, so counts of sub-batches add up
                real = src_tokens.ne(encoder.padding_idx).unsqueeze(-1)
                stats.changed = stats.changed + ((perturbed != token_embedding) & real).sum()
                stats.total = stats.total + real.sum() * perturbed.size(-1)
        return original(src_tokens, perturbed)

    encoder.forward_embedding = forward_embedding
    try:
        yield
    finally:
        del encoder.forward_embedding  # the class's method shows through again


def random_noise(noise_type: str, eps: float) -> Perturbation:
    """The R3F perturbation: fresh noise for each forward, sampled on the model's device."""
    return lambda token_embedding: sample_noise(token_embedding, noise_type, eps)
