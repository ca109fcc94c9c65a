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

from fairseq_r3f.perturb import NOISE_TYPES, PerturbationStats, perturbed_token_embeddings, random_noise

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


class NoisedForward:
    """Runs a model forward with noise on the encoder's token embeddings, and counts how much noise
    survived the cast to the model's dtype (under fp16 most of a 1e-5 perturbation can round away)."""

    def __init__(self, cfg: R3FConfig):
        if str(cfg.noise_type) not in NOISE_TYPES:
            raise ValueError(f"--noise-type {cfg.noise_type!r} is unknown: choose one of {', '.join(NOISE_TYPES)}")
        self.r3f_lambda = cfg.r3f_lambda
        self.noise_scale = cfg.eps
        self.noise_type = str(cfg.noise_type)
        self._warned_rounding = False

    @property
    def enabled(self) -> bool:
        return self.r3f_lambda > 0

    def __call__(self, model, forward: Callable[[], torch.Tensor]):
        """``forward()`` under noise; returns its output and the logging entries of the noise."""
        stats = PerturbationStats()
        with perturbed_token_embeddings(model, random_noise(self.noise_type, self.noise_scale), stats):
            output = forward()
        if not self._warned_rounding and self.noise_type != "none" and self.noise_scale > 0:
            self._warned_rounding = True  # one host sync, on the first update only
            kept = float(stats.changed) / max(float(stats.total), 1.0)
            if kept < 0.9:
                logger.warning(
                    f"only {100 * kept:.0f}% of token-embedding entries changed after adding noise of "
                    f"scale {self.noise_scale} in the model's dtype; the logged noise_kept tracks this "
                    f"(raise --eps, or train in fp32; bf16 rounds away more of it than fp16)"
                )
        return output, {"noise_changed": stats.changed, "noise_total": stats.total}


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
