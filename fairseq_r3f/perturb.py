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

The noise, how it is added (in fp32, cast back once) and its ``noise_kept`` count are the framework-free core's
(:mod:`rxf.noise`); this module only knows where a fairseq encoder takes them.

What is added is a :data:`Perturbation`: R3F's fresh noise for each forward (:func:`random_noise`), or a given
tensor (:func:`fixed`), which SMART and FreeLB take from an :class:`EmbeddingBall`, their ball around the
clean embeddings (random start, normalised ascent step, projection).

A second point serves SMART as its authors released it (namisan/mt-dnn): :func:`perturbed_embedding_output`
adds the perturbation to what ``forward_embedding`` returns -- the embedding layer's output, after scaling,
positions, the embedding layer norm and dropout, i.e. the input of the first layer -- and
:func:`per_token_normalised` is that code's ascent step (each token's vector divided by its own maximum).
"""

import contextlib
import math
from typing import Callable, Iterator, Optional

import torch
from torch import nn

from fairseq.models.transformer import TransformerEncoderBase
from rxf.noise import PerturbationStats, add_noise, sample_noise

NORMS = ("l2", "linf")
# where a perturbation is added: the raw token embeddings (R3F, FreeLB, SMART as its paper writes it) or the
# embedding layer's output (SMART's released code)
POINTS = ("token_embeddings", "embedding_output")

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


@contextlib.contextmanager
def perturbed_token_embeddings(
    model: nn.Module, perturbation: Perturbation, stats: Optional[PerturbationStats] = None, count_from: int = 0
) -> Iterator[None]:
    """Within the block, every forward of ``model``'s encoder adds ``perturbation(E[tokens])`` to its raw
    token embeddings. The sum is formed in fp32 and cast back to the embeddings' dtype once. ``stats`` counts
    the sentences from row ``count_from`` on (a doubled batch whose first copy stays clean)."""
    encoder = find_token_encoder(model)
    original = encoder.forward_embedding

    def forward_embedding(src_tokens, token_embedding=None):
        if token_embedding is None:
            token_embedding = encoder.embed_tokens(src_tokens)
        perturbed = add_noise(token_embedding, perturbation(token_embedding))
        if stats is not None:  # real tokens only, so counts of sub-batches add up
            stats.count(token_embedding[count_from:], perturbed[count_from:],
                        src_tokens[count_from:].ne(encoder.padding_idx))
        return original(src_tokens, perturbed)

    encoder.forward_embedding = forward_embedding
    try:
        yield
    finally:
        del encoder.forward_embedding  # the class's method shows through again


@contextlib.contextmanager
def perturbed_embedding_output(model: nn.Module, perturbation: Perturbation, reuse: Optional[dict] = None
                               ) -> Iterator[None]:
    """Within the block, every forward of ``model``'s encoder adds ``perturbation(x)`` to the output ``x`` of
    its embedding layer (B x T x C: scaled token embeddings plus positions, through the embedding layer norm
    and dropout), the input of the first layer, where mt-dnn's SMART adds its noise. The sum is formed in fp32
    and cast back once. The encoder zeroes padding rows right after, as without a perturbation.

    ``reuse``: a dict, empty on entry, in which the first forward leaves its embedding output; every later
    forward of the block starts from that same tensor (graph included) instead of embedding again. mt-dnn
    embeds once and feeds that one tensor, hence one embedding-dropout mask, to its ascent and final forwards.
    """
    encoder = find_token_encoder(model)
    original = encoder.forward_embedding

    def forward_embedding(src_tokens, token_embedding=None):
        if reuse is not None and "x" in reuse:
            if reuse["x"].shape[:2] != src_tokens.shape:
                raise ValueError(f"the kept embedding output has shape {tuple(reuse['x'].shape)}, but this forward "
                                 f"embeds tokens of shape {tuple(src_tokens.shape)}: one reuse dict per batch")
            x, embed = reuse["x"], reuse["embed"]
        else:
            x, embed = original(src_tokens, token_embedding)
            if reuse is not None:
                reuse.update(x=x, embed=embed)
        return (x.float() + perturbation(x)).to(x.dtype), embed

    encoder.forward_embedding = forward_embedding
    try:
        yield
    finally:
        del encoder.forward_embedding


def per_token_normalised(x: torch.Tensor, norm: str, stabiliser: float) -> torch.Tensor:
    """``x`` (B x T x C) with each token's vector divided by its own norm plus ``stabiliser``: its largest
    absolute entry (linf) or its L2 norm (l2). The result has norm just under 1 per token whatever the size of
    ``x``; this is how mt-dnn's SMART turns ``noise + step x grad`` into the next noise (there is no other
    bound on the perturbation)."""
    if norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r}: choose one of {', '.join(NORMS)}")
    scale = x.abs().amax(dim=-1, keepdim=True) if norm == "linf" else x.norm(dim=-1, keepdim=True)
    return x / (scale + stabiliser)


def random_noise(noise_type: str, eps: float) -> Perturbation:
    """The R3F perturbation: fresh noise for each forward, sampled on the model's device."""
    return lambda token_embedding: sample_noise(token_embedding, noise_type, eps)


class EmbeddingBall:
    """Perturbations of a batch of token embeddings (B x T x C) kept, sentence by sentence, inside a ball of
    radius ``radius`` in L2 (over all of the sentence's real-token entries) or L-infinity (each entry);
    padding positions are always 0. ``radius`` may be ``inf`` (no constraint)."""

    def __init__(self, norm: str, radius: float, keep: torch.Tensor):
        if norm not in NORMS:
            raise ValueError(f"unknown norm {norm!r}: choose one of {', '.join(NORMS)}")
        self.norm = norm
        self.radius = radius
        self.keep = keep.unsqueeze(-1).float()  # B x T x 1, 1 = real token

    def sentence_norms(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(1)
        norms = flat.norm(dim=1) if self.norm == "l2" else flat.abs().amax(dim=1)
        return norms.view(-1, 1, 1)  # B x 1 x 1

    def project(self, delta: torch.Tensor) -> torch.Tensor:
        delta = delta * self.keep
        if math.isinf(self.radius):
            return delta
        if self.norm == "linf":
            return delta.clamp(-self.radius, self.radius)
        return delta * (self.radius / self.sentence_norms(delta).clamp_min(1e-20)).clamp(max=1.0)

    def ascent_step(self, delta: torch.Tensor, grad: torch.Tensor, step_size: float) -> torch.Tensor:
        """delta + step_size x grad / ||grad|| (per sentence, in the ball's norm), projected. Where the
        gradient is not finite (an fp16 overflow; the trainer then skips the update) delta stays put."""
        grad = grad.float() * self.keep
        stepped = self.project(delta + step_size * grad / self.sentence_norms(grad).clamp_min(1e-20))
        return torch.where(torch.isfinite(stepped), stepped, delta)

    def normal_start(self, shape, device, scale: float) -> torch.Tensor:
        """SMART's start: N(0, scale^2) on every real-token entry, projected."""
        return self.project(torch.randn(shape, device=device) * scale)

    def uniform_start(self, shape, device, magnitude: float) -> torch.Tensor:
        """FreeLB's start as its published code draws it: U(-1, 1) on every real-token entry, times
        ``magnitude / sqrt(L x d)`` for a sentence of L real tokens and embeddings of size d (L2), whose norm
        is about magnitude / sqrt(3) and never above magnitude; or U(-magnitude, magnitude) per entry
        (L-infinity). Projected onto the ball (which changes nothing when magnitude <= radius). A magnitude
        of 0 draws nothing, so the random stream (dropout's) moves as without a start."""
        if magnitude == 0:
            return torch.zeros(shape, device=device)
        delta = torch.empty(shape, device=device).uniform_(-1, 1) * self.keep
        if self.norm == "l2":
            entries = self.keep.sum(dim=(1, 2), keepdim=True) * shape[-1]  # B x 1 x 1: L x d
            delta = delta * (magnitude / entries.clamp_min(1).sqrt())
        else:
            delta = delta * magnitude
        return self.project(delta)


def embedding_ball(model, sample, norm: str, radius: float, point: str = "token_embeddings"):
    """The ball for this batch, and the shape (B x T x C) of its perturbations at ``point`` (one of
    :data:`POINTS`)."""
    if point not in POINTS:
        raise ValueError(f"unknown perturbation point {point!r}: choose one of {', '.join(POINTS)}")
    encoder = find_token_encoder(model)
    tokens = sample["net_input"]["src_tokens"]
    width = encoder.embed_tokens.embedding_dim if point == "token_embeddings" else encoder.cfg.encoder.embed_dim
    shape = (*tokens.shape, width)
    return EmbeddingBall(norm, radius, tokens.ne(encoder.padding_idx)), shape


def fixed(delta: torch.Tensor):
    """A perturbation for perturb.perturbed_token_embeddings that adds the given delta."""

    def perturbation(token_embedding):
        if token_embedding.shape != delta.shape:
            raise ValueError(
                f"the encoder embedded a batch of shape {tuple(token_embedding.shape)}, but the perturbation "
                f"was built for {tuple(delta.shape)} from sample['net_input']['src_tokens']"
            )
        return delta

    return perturbation
