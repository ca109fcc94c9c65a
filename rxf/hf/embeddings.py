"""Where a transformers model takes R3F's noise: the token-embedding module its encoder actually calls, and a
forward hook on it that adds the noise to the raw token embeddings (before any scaling, positions and LayerNorm,
where the fairseq plugin adds it) and counts that it fired.

The module, per family:

- encoder-decoder models (BART, mBART, T5, ...): ``model.get_encoder().embed_tokens``. Not
  ``get_input_embeddings()``: for BART and T5 that is the ``shared`` module, whose weight the encoder's and the
  decoder's own modules tie to, but which neither calls (NEFTune's hook on it never fires there). The hook is
  active only while the encoder runs, so the decoder's inputs stay clean even where its module is the encoder's.
- encoder-only models (BERT, RoBERTa, XLM-R, DeBERTa, ...): ``base_model.embeddings.word_embeddings``.
- decoder-only models (GPT-2, Llama, ...): ``get_input_embeddings()``.

Where the module scales its own output (BART's and mBART's ``embed_scale`` with ``scale_embedding``), the hook
recomputes the unscaled lookup, adds the noise there and scales the sum, as fairseq's encoder does.

``noise_kept`` counts the entries the noise still changes in the model's dtype; under autocast (Trainer's
``bf16``/``fp16`` mixed precision: the embeddings stay fp32) in the dtype autocast computes the first matrix
product in, where a 1e-5 noise is rounded away.

PEFT, accelerate/DDP and ``torch.compile`` wrappers are unwrapped first: the base model's module is hooked.
"""

import contextlib
from typing import Callable, Iterator, Optional

import torch
from torch import nn

from rxf.noise import PerturbationStats, add_noise

# token_embeddings (B x T x C, unscaled) -> noise of the same shape, fp32
NoiseSampler = Callable[[torch.Tensor], torch.Tensor]


def unwrap_model(model: nn.Module) -> nn.Module:
    """The model under DDP/DataParallel (``.module``), ``torch.compile`` (``._orig_mod``) and PEFT
    (``get_base_model()``) wrappers."""
    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        elif callable(getattr(model, "get_base_model", None)) and model.get_base_model() is not model:
            model = model.get_base_model()
        else:
            return model


def is_encoder_decoder(model: nn.Module) -> bool:
    return bool(getattr(getattr(model, "config", None), "is_encoder_decoder", False))


def token_embedding_module(model: nn.Module) -> nn.Module:
    """The embedding module that turns the (encoder's) input ids into the token embeddings R3F perturbs."""
    model = unwrap_model(model)
    name = type(model).__name__
    if is_encoder_decoder(model):
        encoder = model.get_encoder() if callable(getattr(model, "get_encoder", None)) else None
        module = getattr(encoder, "embed_tokens", None)
        where = "get_encoder().embed_tokens"
    else:
        base = getattr(model, "base_model", model)
        embeddings = getattr(base, "embeddings", None)
        module = getattr(embeddings, "word_embeddings", None)
        where = "base_model.embeddings.word_embeddings"
        if module is None and callable(getattr(model, "get_input_embeddings", None)):
            module = model.get_input_embeddings()
            where = "get_input_embeddings()"
    if not isinstance(module, nn.Embedding):
        raise ValueError(
            f"rxf.hf cannot find the token embeddings of {name}: its {where} is "
            f"{type(module).__name__ if module is not None else 'missing'}, not an nn.Embedding. Supported are "
            f"encoder-decoder models with get_encoder().embed_tokens (BART, mBART, T5), encoder models with "
            f"embeddings.word_embeddings (BERT, RoBERTa, XLM-R, DeBERTa) and decoder-only models with "
            f"get_input_embeddings() (GPT-2, Llama)"
        )
    return module


def _encoder(model: nn.Module) -> Optional[nn.Module]:
    model = unwrap_model(model)
    return model.get_encoder() if is_encoder_decoder(model) else None


def _scale(module: nn.Module):
    """The factor the module multiplies its lookup by, or None where it returns the lookup itself."""
    scale = getattr(module, "embed_scale", None)
    if scale is None or type(module) is nn.Embedding:
        return None
    if not torch.is_tensor(scale) and float(scale) == 1.0:
        return None
    return scale


class NoiseHook:
    """The forward hook that perturbs a token-embedding module's output; ``calls`` counts its firings.

    ``noise_from_row``: rows before it stay clean (the clean half of a doubled batch); ``real``: B x T, True for
    real tokens, counted in ``stats`` (None: every position)."""

    def __init__(self, sampler: NoiseSampler, stats: Optional[PerturbationStats] = None,
                 real: Optional[torch.Tensor] = None, noise_from_row: int = 0):
        self.sampler, self.stats, self.real, self.noise_from_row = sampler, stats, real, noise_from_row
        self.calls = 0
        self.active = True

    def __call__(self, module: nn.Module, args, output: torch.Tensor) -> Optional[torch.Tensor]:
        if not self.active:
            return None
        self.calls += 1
        scale = _scale(module)
        raw = output if scale is None else nn.Embedding.forward(module, args[0])  # B x T x C, unscaled
        if scale is not None:
            with torch.no_grad():
                if not torch.equal(raw * _as_factor(scale, raw), output):
                    raise RuntimeError(
                        f"{type(module).__name__} does not compute its output as lookup x embed_scale: rxf.hf cannot "
                        f"add the noise before its scaling"
                    )
        start = self.noise_from_row
        noise = self.sampler(raw[start:])
        if noise.shape != raw[start:].shape:
            raise ValueError(f"the noise sampler returned shape {tuple(noise.shape)} for token embeddings of shape "
                             f"{tuple(raw[start:].shape)}")
        noise = noise.to(device=raw.device, dtype=torch.float32)
        if start:
            noise = torch.cat([noise.new_zeros(raw[:start].shape), noise])
        perturbed = add_noise(raw, noise)
        if self.stats is not None:
            real = self.real
            if real is not None and real.shape != raw.shape[:2]:
                real = None
            # under autocast the embeddings stay fp32 and the first matrix product casts them: count what survives
            # that cast (the same relative rounding, at the entries' own scale), not the fp32 sum
            dtype = _autocast_dtype(raw)
            self.stats.count(raw[start:].to(dtype), perturbed[start:].to(dtype),
                             None if real is None else real[start:])
        return perturbed if scale is None else perturbed * _as_factor(scale, perturbed)


def _autocast_dtype(like: torch.Tensor) -> torch.dtype:
    """The dtype autocast casts ``like`` to in a matrix product (``like``'s own outside autocast)."""
    device = like.device.type
    if like.is_floating_point() and torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return like.dtype


def _as_factor(scale, like: torch.Tensor):
    return scale.to(like.dtype) if torch.is_tensor(scale) else scale


@contextlib.contextmanager
def noised_token_embeddings(model: nn.Module, hook: NoiseHook) -> Iterator[NoiseHook]:
    """Within the block, ``model``'s token embeddings get ``hook``'s noise; for an encoder-decoder only while its
    encoder runs. Nothing stays attached afterwards."""
    module = token_embedding_module(model)
    handles = [module.register_forward_hook(hook)]
    encoder = _encoder(model)
    if encoder is not None:  # scope the hook to the encoder's forward
        hook.active = False

        def enter(*_):
            hook.active = True

        def leave(*_):
            hook.active = False

        handles.append(encoder.register_forward_pre_hook(enter))
        handles.append(encoder.register_forward_hook(leave))
    try:
        yield hook
    finally:
        for handle in handles:
            handle.remove()
