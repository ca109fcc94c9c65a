"""What both R3F criterions share: their three options, the noised forward and the metrics they log (their
numbers are checked by fairseq_r3f.options.check_options). The criterions themselves only say which outputs
to compare."""

import logging
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Dict, List

import torch
from fairseq.dataclass import ChoiceEnum, FairseqDataclass
from fairseq.logging import metrics

from fairseq_r3f.perturb import perturbed_token_embeddings, random_noise
from rxf.noise import NOISE_KEPT_WARNING_BELOW, NOISE_TYPES, PerturbationStats

logger = logging.getLogger(__name__)


@dataclass
class R3FConfig(FairseqDataclass):
    r3f_lambda: float = field(
        default=1.0,
        metadata={
            "help": "weight lambda of the symmetric KL between outputs on clean and on noised token "
            "embeddings (R3F); 0 turns the term off and skips the noised forward entirely"
        },
    )
    eps: float = field(
        default=1e-5,
        metadata={
            "help": "noise scale sigma: U(-eps, eps) for --noise-type uniform, N(0, eps^2) for normal; "
            "0 is allowed (the term then measures dropout alone)"
        },
    )
    noise_type: ChoiceEnum(NOISE_TYPES) = field(
        default="uniform",
        metadata={
            "help": "distribution of the noise added to the raw token embeddings; 'none' keeps the "
            "second forward but adds no noise (a dropout-only consistency ablation)"
        },
    )
    r3f_batched_forward: bool = field(
        default=False,
        metadata={
            "help": "run the clean and the noised copy of the batch as one forward of twice the batch size "
            "instead of two forwards: the same loss and gradients (each copy still gets its own dropout "
            "masks), usually faster on a GPU, at the cost of the larger peak memory of one doubled batch"
        },
    )


class NoisedForward:
    """Runs a model forward with noise on the encoder's token embeddings, and counts how much noise
    survived the cast to the model's dtype (under fp16 most of a 1e-5 perturbation can round away)."""

    def __init__(self, cfg: R3FConfig):
        if str(cfg.noise_type) not in NOISE_TYPES:
            raise ValueError(f"--noise-type {cfg.noise_type!r} is unknown: choose one of {', '.join(NOISE_TYPES)}")
        self.r3f_lambda = cfg.r3f_lambda
        self.noise_scale = cfg.eps
        self.noise_type = str(cfg.noise_type)
        self.batched = bool(getattr(cfg, "r3f_batched_forward", False))
        self._warned_rounding = False

    @property
    def enabled(self) -> bool:
        return self.r3f_lambda > 0

    def __call__(self, model, forward: Callable[[], torch.Tensor]):
        """``forward()`` under noise; returns its output and the logging entries of the noise."""
        stats = PerturbationStats()
        with perturbed_token_embeddings(model, random_noise(self.noise_type, self.noise_scale), stats):
            output = forward()
        self._check_rounding(stats)
        return output, {"noise_changed": stats.changed, "noise_total": stats.total}

    def doubled(self, model, forward: Callable[[], torch.Tensor], batch: int):
        """``forward()`` on a doubled batch (the batch twice, 2B x T) with noise on the second copy only;
        returns its output and the logging entries of the noise, counted on that copy."""
        stats = PerturbationStats()
        sample = random_noise(self.noise_type, self.noise_scale)

        def perturbation(token_embedding):  # 2B x T x C
            noise = sample(token_embedding[batch:])
            return torch.cat([noise.new_zeros(token_embedding[:batch].shape), noise])

        with perturbed_token_embeddings(model, perturbation, stats, count_from=batch):
            output = forward()
        self._check_rounding(stats)
        return output, {"noise_changed": stats.changed, "noise_total": stats.total}

    def _check_rounding(self, stats: PerturbationStats) -> None:
        if not self._warned_rounding and self.noise_type != "none" and self.noise_scale > 0:
            self._warned_rounding = True  # one host sync, on the first update only
            kept = stats.kept_fraction()
            if kept < NOISE_KEPT_WARNING_BELOW:
                logger.warning(
                    f"only {100 * kept:.0f}% of token-embedding entries changed after adding noise of "
                    f"scale {self.noise_scale} in the model's dtype; the logged noise_kept tracks this "
                    f"(raise --eps, or train in fp32; bf16 rounds away more of it than fp16)"
                )


class DoubledBatchModel:
    """Stands in for the model in a fairseq criterion's own ``forward`` (``--r3f-batched-forward``): each call
    runs the clean and the noised copy of the batch as one batch of 2B and hands the criterion the clean
    half, so it computes its loss and metrics as ever; the noised half waits in ``noised_output``. Every
    other attribute is the model's."""

    def __init__(self, model, noised_forward: NoisedForward):
        self._model, self._noised_forward = model, noised_forward
        self.clean_output = self.noised_output = self.noise_log = None

    def __getattr__(self, name):
        return getattr(self._model, name)

    def __call__(self, **net_input):
        batch = net_input["src_tokens"].size(0)
        # every per-sentence input (tokens, lengths, the decoder's previous tokens) twice
        doubled = {key: torch.cat([value, value]) if torch.is_tensor(value) and value.dim() > 0
                   and value.size(0) == batch else value for key, value in net_input.items()}
        output, self.noise_log = self._noised_forward.doubled(
            self._model, lambda: self._model(**doubled), batch
        )
        first, *rest = output  # logits first; the rest (attention, inner states) stays doubled
        self.clean_output, self.noised_output = (first[:batch], *rest), (first[batch:], *rest)
        return self.clean_output


def reduce_r3f_metrics(logging_outputs: List[Dict]) -> None:
    """symm_kl per sentence, and noise_kept: percent of token-embedding entries the noise changed."""
    if not any("symm_kl" in log for log in logging_outputs):
        return
    symm_kl = sum(log.get("symm_kl", 0) for log in logging_outputs)
    nsentences = sum(log.get("nsentences", 0) for log in logging_outputs)
    metrics.log_scalar("symm_kl", float(symm_kl) / max(nsentences, 1), nsentences)
    total = float(sum(log.get("noise_total", 0) for log in logging_outputs))
    if total > 0:
        changed = sum(log.get("noise_changed", 0) for log in logging_outputs)
        metrics.log_scalar("noise_kept", 100.0 * float(changed) / total, total, round=1)


@contextmanager
def recorded_outputs(module):
    """Collects what ``module`` returns while the block runs: the criterions let their fairseq parent compute
    the loss and metrics, and take the clean outputs they compare against from here."""
    outputs = []
    handle = module.register_forward_hook(lambda _module, _inputs, output: outputs.append(output))
    try:
        yield outputs
    finally:
        handle.remove()


def classification_head(model, name: str, criterion: str):
    """The head ``name`` of a sentence classification model, or an error naming the heads it has."""
    heads = getattr(model, "classification_heads", None)
    if heads is None:
        raise ValueError(
            f"--criterion {criterion} needs a model with classification heads (RoBERTa, XLM-R or BART under "
            f"--task sentence_prediction); {type(model).__name__} has none"
        )
    if name not in heads:
        raise ValueError(
            f"the model has no classification head {name!r} (it has: {', '.join(heads) or 'none'}); pass "
            f"--classification-head-name with one of those, the same name to the task and the criterion"
        )
    return heads[name]
