"""R3F as a Trainer switch: :class:`R3FMixin` overrides ``compute_loss`` and ``log``; :class:`R3FTrainer` and
:class:`R3FSeq2SeqTrainer` are it on transformers' two trainers, switched on by the ``r3f_*`` fields of
:class:`R3FTrainingArguments` / :class:`R3FSeq2SeqTrainingArguments`, in the style of ``neftune_noise_alpha``.

With ``r3f_lambda`` 0 (the default) the trainer is transformers' own, unchanged. Otherwise each training step runs
:func:`rxf.hf.loss.r3f_loss` (the clean forward, the noised forward, the term; its module docstring gives the
scaling rule) and returns a loss already normalised over the whole accumulated batch, so Trainer does not divide
it again (``loss_is_scaled_for_ga``): the same effective batch gives the same gradient at any gradient
accumulation, whether or not the model honours ``num_items_in_batch`` (transformers#47688: RoBERTa's
classification head accepts it and ignores it). Evaluation and ``prediction_step`` compute no term.

The logs (so ``report_to`` shows them) get ``symm_kl``, the symmetric KL per item (sentence, or target token)
averaged over the steps since the last log, and ``noise_kept``, the percent of the real tokens'
embedding entries the noise still changed after the cast to the model's dtype (under bf16 most of a 1e-5 noise
rounds away: raise ``r3f_eps`` or train the embeddings in fp32).

With TRL's ``SFTTrainer`` (and any other Trainer subclass) the mixin goes first, its arguments get the fields::

    @dataclass
    class R3FSFTConfig(SFTConfig, R3FTrainingArguments):
        pass

    class R3FSFTTrainer(R3FMixin, SFTTrainer):
        pass
"""

import logging
import math
from dataclasses import dataclass, field
from typing import Any, Dict, Optional

import torch
from transformers import Seq2SeqTrainer, Seq2SeqTrainingArguments, Trainer, TrainingArguments
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

from rxf.hf.embeddings import unwrap_model
from rxf.hf.loss import r3f_loss
from rxf.noise import NOISE_KEPT_WARNING_BELOW, NOISE_TYPES, check_noise_type

logger = logging.getLogger(__name__)

FIELDS = ("r3f_lambda", "r3f_eps", "r3f_noise_type", "r3f_batched_forward")


@dataclass
class _R3FFields:
    r3f_lambda: float = field(
        default=0.0,
        metadata={"help": "weight lambda of the symmetric KL between the outputs on clean and on noised token "
                          "embeddings (R3F), per item as the task loss; 0 (the default) switches R3F off"},
    )
    r3f_eps: float = field(
        default=1e-5,
        metadata={"help": "noise scale: U(-eps, eps) for r3f_noise_type uniform, N(0, eps^2) for normal"},
    )
    r3f_noise_type: str = field(
        default="uniform",
        metadata={"help": "distribution of the noise on the raw token embeddings; 'none' keeps the second forward "
                          "without noise (a dropout-only consistency ablation)", "choices": list(NOISE_TYPES)},
    )
    r3f_batched_forward: bool = field(
        default=False,
        metadata={"help": "run the clean and the noised copy of the batch as one forward of twice the batch size "
                          "instead of two forwards (the same loss; usually faster on a GPU, more peak memory)"},
    )

    def _check_r3f_fields(self) -> None:
        for name in ("r3f_lambda", "r3f_eps"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        check_noise_type(self.r3f_noise_type)
        if self.r3f_lambda > 0 and getattr(self, "neftune_noise_alpha", None):
            raise ValueError("r3f_lambda and neftune_noise_alpha are both set: NEFTune would noise R3F's clean "
                             "forward too; use one of them")


@dataclass
class R3FTrainingArguments(TrainingArguments, _R3FFields):
    """transformers' TrainingArguments with R3F's fields (``r3f_lambda`` > 0 switches it on)."""

    def __post_init__(self):
        super().__post_init__()
        self._check_r3f_fields()


@dataclass
class R3FSeq2SeqTrainingArguments(Seq2SeqTrainingArguments, _R3FFields):
    """transformers' Seq2SeqTrainingArguments with R3F's fields (``r3f_lambda`` > 0 switches it on)."""

    def __post_init__(self):
        super().__post_init__()
        self._check_r3f_fields()


class R3FMixin:
    """R3F for a transformers Trainer (or a subclass such as TRL's SFTTrainer): put it first in the bases.

    ``r3f_noise_sampler``: None (the noise of ``r3f_noise_type`` and ``r3f_eps``), or a callable
    ``(token_embeddings) -> noise of the same shape`` used instead (to reproduce a given noise)."""

    r3f_noise_sampler = None

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        missing = [name for name in FIELDS if not hasattr(self.args, name)]
        if missing:
            raise TypeError(
                f"{type(self).__name__} reads R3F's settings from its arguments, but {type(self.args).__name__} has "
                f"no {', '.join(missing)}: use R3FTrainingArguments or R3FSeq2SeqTrainingArguments (or add their "
                f"fields to your arguments class)"
            )
        self._r3f_check_args()
        self._r3f_reset_log()
        self._r3f_warned_rounding = False

    def _r3f_check_args(self) -> None:
        check = getattr(self.args, "_check_r3f_fields", None)
        if check is not None:
            check()

    @property
    def r3f_enabled(self) -> bool:
        return float(self.args.r3f_lambda) > 0

    # Trainer divides a loss that is not "scaled for gradient accumulation" by the accumulation steps; R3F's loss is
    # normalised over the accumulated batch already (or divided here where Trainer gives no num_items_in_batch).
    @property
    def loss_is_scaled_for_ga(self) -> Optional[bool]:
        return True if self.r3f_enabled else self.__dict__.get("_loss_is_scaled_for_ga")

    @loss_is_scaled_for_ga.setter
    def loss_is_scaled_for_ga(self, value: Optional[bool]) -> None:
        self.__dict__["_loss_is_scaled_for_ga"] = value

    def _r3f_task_loss_func(self, model):
        """Trainer's own replacement of the model's loss, if any, as ``f(outputs, labels, num_items_in_batch)``."""
        if self.compute_loss_func is not None:
            return self.compute_loss_func
        if self.label_smoother is not None:
            causal = unwrap_model(model)._get_name() in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values()
            return lambda outputs, labels, num_items_in_batch: self.label_smoother(
                outputs, labels, shift_labels=causal, num_items_in_batch=num_items_in_batch)
        return None

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if not (model.training and self.r3f_enabled):
            return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                        num_items_in_batch=num_items_in_batch)
        result = r3f_loss(
            model, inputs, r3f_lambda=float(self.args.r3f_lambda), eps=float(self.args.r3f_eps),
            noise_type=self.args.r3f_noise_type, num_items_in_batch=num_items_in_batch,
            batched_forward=bool(self.args.r3f_batched_forward), loss_func=self._r3f_task_loss_func(model),
            noise_sampler=self.r3f_noise_sampler,
        )
        loss = result.loss
        if num_items_in_batch is None:  # a mean over this batch: Trainer's own division, done here
            loss = loss / self.current_gradient_accumulation_steps
        elif self.args.average_tokens_across_devices:
            # num_items_in_batch counts every process's items, and DDP averages the gradients: as Trainer does
            scale = self.accelerator.num_processes // self.get_tp_size()
            loss = loss * (scale if self.args.n_gpu <= 1 else self.args.n_gpu)
        self._r3f_record(result)
        return (loss, result.outputs) if return_outputs else loss

    def _r3f_reset_log(self) -> None:
        self._r3f_sums: Dict[str, Any] = {}

    def _r3f_record(self, result) -> None:
        sums = self._r3f_sums
        for key, value in (("symm_kl", result.symm_kl.float()), ("items", result.items.float()),
                           ("changed", result.stats.changed), ("total", result.stats.total)):
            value = torch.as_tensor(value, dtype=torch.float32, device=result.symm_kl.device).detach()
            sums[key] = sums[key] + value if key in sums else value

    def log(self, logs: Dict[str, float], *args, **kwargs) -> None:
        if "loss" in logs and self._r3f_sums:
            sums = torch.stack([self._r3f_sums[k] for k in ("symm_kl", "items", "changed", "total")])
            if self.args.world_size > 1:
                sums = self.accelerator.reduce(sums, reduction="sum")
            symm_kl, items, changed, total = sums.tolist()
            logs["symm_kl"] = symm_kl / max(items, 1.0)
            if total > 0:
                logs["noise_kept"] = 100.0 * changed / total
                self._r3f_check_rounding(changed / total)
            self._r3f_reset_log()
        super().log(logs, *args, **kwargs)

    def _r3f_check_rounding(self, kept: float) -> None:
        if self._r3f_warned_rounding or self.args.r3f_noise_type == "none" or self.args.r3f_eps == 0:
            return
        self._r3f_warned_rounding = True
        if kept < NOISE_KEPT_WARNING_BELOW:
            logger.warning(
                f"only {100 * kept:.0f}% of the token-embedding entries changed after adding R3F's noise of scale "
                f"{self.args.r3f_eps} in the model's dtype (logged as noise_kept): raise r3f_eps, or keep the "
                f"embeddings in fp32 (bf16 rounds away more of it than fp16)"
            )


class R3FTrainer(R3FMixin, Trainer):
    """transformers' Trainer with R3F (``R3FTrainingArguments.r3f_lambda`` > 0)."""


class R3FSeq2SeqTrainer(R3FMixin, Seq2SeqTrainer):
    """transformers' Seq2SeqTrainer with R3F (``R3FSeq2SeqTrainingArguments.r3f_lambda`` > 0)."""
