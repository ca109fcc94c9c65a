"""One R3F training loss for a transformers model: the task loss on the clean forward plus lambda x the
symmetric KL between the clean and the noised forward's output distributions, per item.

The scaling rule (the fairseq plugin's, per item): fairseq sums the cross-entropy and lambda x the summed
symmetric KL, and divides both by ``sample_size``. Here

    loss = task loss summed over the batch's items / N  +  lambda x (symmetric KL summed over the kept rows) / N

with N the number of items the task loss averages over: Trainer's ``num_items_in_batch`` when it is given (the
items of the whole accumulated batch, over every process with ``average_tokens_across_devices``), else this
batch's own. An item is what the model's loss averages over: a sentence for sequence classification and
regression (fairseq's ``sentence_prediction``, whose sample_size is the sentences), a target token
(``labels != -100``) for seq2seq, token classification and causal LMs (the causal LM's shifted labels). For
seq2seq that is fairseq's ``--r3f-kl-normalization token``, not its default ``sentence``: a per-sentence
denominator is not known across accumulated batches, a per-token one is (``num_items_in_batch``).

The task loss is the model's own mean over this batch (the model is called without ``num_items_in_batch``, so a
model that accepts the argument and ignores it cannot change the scale) times this batch's items / N; or the
given ``loss_func(outputs, labels, num_items_in_batch=N)`` (Trainer's label smoother, a ``compute_loss_func``).
"""

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Optional

import torch
import torch.nn.functional as F
from torch import nn

from rxf.hf.embeddings import NoiseHook, NoiseSampler, is_encoder_decoder, noised_token_embeddings, unwrap_model
from rxf.noise import PerturbationStats, check_noise_type, sample_noise
from rxf.r3f import r3f_term

IGNORE_INDEX = -100  # what transformers' losses and collators use for rows that are not targets


@dataclass
class R3FLossResult:
    """``loss``: the training loss (the rule above); ``outputs``: the clean forward's outputs; ``symm_kl``: the
    symmetric KL summed over the kept rows (detached); ``items``: this batch's number of items; ``noise_kept``:
    the entries of real tokens the noise changed in the model's dtype, as a fraction (a tensor: no host sync);
    ``stats``: the counts behind it."""

    loss: torch.Tensor
    outputs: Any
    symm_kl: torch.Tensor
    items: torch.Tensor
    noise_kept: torch.Tensor
    stats: PerturbationStats = field(repr=False, default_factory=PerturbationStats)


def _logits(outputs) -> torch.Tensor:
    return outputs["logits"] if isinstance(outputs, dict) else outputs[0]


def _kind(model: nn.Module, logits: torch.Tensor) -> str:
    """How the outputs are compared: "sentence" (B x C), "regression" (B x 1), "seq2seq", "causal" or "token"
    (B x T x V)."""
    model = unwrap_model(model)
    config = getattr(model, "config", None)
    if logits.dim() == 2:
        problem = getattr(config, "problem_type", None)
        if problem == "multi_label_classification":
            raise ValueError(
                "R3F compares categorical output distributions, but this model's problem_type is "
                "multi_label_classification (independent sigmoids): use single_label_classification or regression"
            )
        if problem == "regression" or (problem is None and getattr(config, "num_labels", 0) == 1):
            return "regression"
        return "sentence"  # single-label classification (a float label tensor is refused in _rows)
    if logits.dim() != 3:
        raise ValueError(f"rxf.hf compares logits of B x C or B x T x V, got shape {tuple(logits.shape)}")
    if is_encoder_decoder(model):
        return "seq2seq"
    can_generate = getattr(model, "can_generate", None)
    return "causal" if callable(can_generate) and can_generate() else "token"


def _rows(kind: str, logits: torch.Tensor, labels: torch.Tensor):
    """The logits to compare (shifted for a causal LM), the mask of kept rows (None: all) and the number of items
    the model's loss averages over in this batch."""
    if kind == "regression":
        return logits, None, torch.tensor(labels.numel(), device=logits.device)
    if labels.is_floating_point():
        raise ValueError(
            "R3F compares categorical output distributions, but the labels are floats (transformers then trains a "
            "multi-label classification: independent sigmoids): give integer class labels, or set the config's "
            "problem_type to regression"
        )
    if kind == "causal":  # position t predicts label t + 1, as the model's own loss shifts
        logits, labels = logits[:, :-1], labels[:, 1:]
    if labels.shape != logits.shape[:-1]:
        raise ValueError(f"labels of shape {tuple(labels.shape)} do not match the logits' rows "
                         f"{tuple(logits.shape[:-1])} ({kind} outputs)")
    mask = labels.ne(IGNORE_INDEX)
    return logits, mask, mask.sum()


def _doubled(inputs: Dict[str, Any], batch: int) -> Dict[str, Any]:
    """Every per-example tensor of ``inputs`` twice (2B), the rest as it is."""
    return {key: torch.cat([value, value]) if torch.is_tensor(value) and value.dim() > 0 and value.size(0) == batch
            else value for key, value in inputs.items()}


def _task_loss_from_logits(kind: str, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The mean loss transformers' heads compute, for the batched forward (which runs without labels)."""
    if kind == "regression":
        return F.mse_loss(logits.squeeze(-1).float(), labels.squeeze(-1).to(torch.float32)) if logits.size(-1) == 1 \
            else F.mse_loss(logits.float(), labels.float())
    if kind == "causal":
        logits, labels = logits[:, :-1], labels[:, 1:]
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), labels.reshape(-1).to(logits.device),
                           ignore_index=IGNORE_INDEX)


def r3f_loss(model: nn.Module, inputs: Dict[str, Any], *, r3f_lambda: float, eps: float, noise_type: str,
             num_items_in_batch=None, noise_sampler: Optional[NoiseSampler] = None, batched_forward: bool = False,
             loss_func: Optional[Callable] = None) -> R3FLossResult:
    """The R3F loss of one batch (``inputs`` as Trainer hands them to the model, ``labels`` included).

    ``noise_sampler(token_embeddings) -> noise`` replaces :func:`rxf.noise.sample_noise` (U(-eps, eps) or
    N(0, eps^2) by ``noise_type``); ``batched_forward`` runs the clean and the noised copy as one forward of 2B
    (the task loss is then computed from the clean half's logits as transformers' heads compute it);
    ``loss_func(outputs, labels, num_items_in_batch=N)`` replaces the model's own loss. Raises when the hook on
    the token embeddings did not fire (e.g. a batch given as ``inputs_embeds``)."""
    noise_type = check_noise_type(noise_type)
    if r3f_lambda < 0 or eps < 0:
        raise ValueError(f"r3f_lambda and r3f_eps must be >= 0, got {r3f_lambda} and {eps}")
    if "labels" not in inputs or inputs["labels"] is None:
        raise ValueError("R3F needs the batch's labels (the rows it compares are the labelled ones): the batch has "
                         "no 'labels'")
    labels = inputs["labels"]
    sampler = noise_sampler or (lambda embeddings: sample_noise(embeddings, noise_type, eps))
    unwrapped = unwrap_model(model)
    clean_inputs = {k: v for k, v in inputs.items() if k != "labels"} if loss_func is not None else dict(inputs)
    noised_inputs = {k: v for k, v in inputs.items() if k != "labels"}
    if is_encoder_decoder(unwrapped) and noised_inputs.get("decoder_input_ids") is None \
            and noised_inputs.get("decoder_inputs_embeds") is None:
        # a generation model derives its decoder inputs from the labels: both forwards get those (the noised one
        # runs without labels); a classifier (BartForSequenceClassification) derives them from input_ids itself
        prepare = getattr(unwrapped, "prepare_decoder_input_ids_from_labels", None)
        if prepare is not None:
            noised_inputs["decoder_input_ids"] = clean_inputs["decoder_input_ids"] = prepare(labels=labels)
    stats = PerturbationStats()
    real = inputs.get("attention_mask")
    real = real.bool() if torch.is_tensor(real) else None

    if batched_forward:
        batch = labels.size(0)
        hook = NoiseHook(sampler, stats, None if real is None else torch.cat([real, real]), noise_from_row=batch)
        with noised_token_embeddings(model, hook):
            doubled = model(**_doubled(noised_inputs, batch))
        both = _logits(doubled)
        clean_logits, noised_logits = both[:batch], both[batch:]
        outputs = type(doubled)(logits=clean_logits) if isinstance(doubled, dict) else (clean_logits,)
    else:
        outputs = model(**clean_inputs)
        clean_logits = _logits(outputs)
        hook = NoiseHook(sampler, stats, real)
        with noised_token_embeddings(model, hook):
            noised_logits = _logits(model(**noised_inputs))
    if hook.calls == 0:
        raise RuntimeError(
            f"R3F's noise hook on {type(unwrapped).__name__}'s token embeddings did not fire during the noised "
            f"forward: the model never called that module (a batch given as inputs_embeds, or a model that "
            f"embeds its tokens elsewhere), so the R3F term would compare two clean forwards. Give input_ids"
        )

    kind = _kind(unwrapped, clean_logits)
    compared_clean, mask, items = _rows(kind, clean_logits, labels)
    compared_noised, _, _ = _rows(kind, noised_logits, labels)
    denominator = num_items_in_batch if num_items_in_batch is not None else items
    if torch.is_tensor(denominator):
        denominator = denominator.to(clean_logits.device)
    if loss_func is not None:
        task = loss_func(outputs, labels, num_items_in_batch=denominator)
    else:
        mean = _task_loss_from_logits(kind, clean_logits, labels) if batched_forward else outputs["loss"] \
            if isinstance(outputs, dict) else outputs[0]
        task = mean * items / denominator
    symm_kl = r3f_term(compared_clean, compared_noised, mask, regression=kind == "regression")
    loss = task + r3f_lambda * symm_kl / denominator
    kept = (torch.as_tensor(stats.changed, dtype=torch.float32)
            / torch.as_tensor(stats.total, dtype=torch.float32).clamp_min(1.0))
    return R3FLossResult(loss=loss, outputs=outputs, symm_kl=symm_kl.detach(), items=items, noise_kept=kept,
                         stats=stats)
