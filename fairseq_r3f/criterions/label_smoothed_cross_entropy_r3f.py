"""R3F for sequence generation (summarization, translation): fairseq's ``label_smoothed_cross_entropy``
plus lambda x the symmetric KL between the decoder's output distributions on clean and on noised encoder
token embeddings, over the non-padding target positions only.

Scaling. fairseq divides the returned loss by ``sample_size`` (target tokens, or sentences with
``--sentence-avg``) before the update. The authors' code added ``KL_sum / B x sample_size``, so per update

    loss / sample_size = CE per token + lambda x KL_sum / B

where KL_sum is summed over the target positions of the batch and B is its number of sentences: lambda
weighs the KL summed over a sentence. ``--r3f-kl-normalization sentence`` (the default) keeps that
weighting, so the paper's grid {0.001, 0.01, 0.1} means what it meant there; the one difference is that
KL_sum leaves out padding positions, which the authors' code summed as well (their decoder still emits
distributions there). ``token`` adds ``KL_sum / ntokens x sample_size`` instead, so that lambda weighs the
mean KL per target token, the same unit as the cross-entropy, comparable across datasets of different
summary lengths (as a rule of thumb, lambda_token ~ lambda_sentence x mean target length).
"""

import argparse
from dataclasses import dataclass, field

from fairseq.criterions import register_criterion
from fairseq.criterions.label_smoothed_cross_entropy import (
    LabelSmoothedCrossEntropyCriterion,
    LabelSmoothedCrossEntropyCriterionConfig,
)
from fairseq.dataclass import ChoiceEnum
from fairseq.logging import metrics

from fairseq_r3f.criterions.r3f import (
    DoubledBatchModel,
    NoisedForward,
    R3FConfig,
    recorded_outputs,
    reduce_r3f_metrics,
)
from fairseq_r3f.options import check_options
from rxf.r3f import r3f_term

KL_NORMALIZATIONS = ("sentence", "token")


@dataclass
class LabelSmoothedCrossEntropyR3FConfig(LabelSmoothedCrossEntropyCriterionConfig, R3FConfig):
    r3f_lambda: float = field(
        default=0.01,
        metadata={
            "help": "weight lambda of the symmetric KL between the decoder's outputs on clean and on noised "
            "encoder token embeddings (R3F); the paper's summarization grid is 0.001, 0.01, 0.1; 0 turns the "
            "term off and skips the noised forward entirely"
        },
    )
    r3f_kl_normalization: ChoiceEnum(KL_NORMALIZATIONS) = field(
        default="sentence",
        metadata={
            "help": "what lambda weighs: 'sentence' = the KL summed over each target sentence, averaged over "
            "the batch (the authors' released scaling; we assume the paper's lambda grid 0.001/0.01/0.1 was tuned "
            "with it: the paper does not say); "
            "'token' = the mean KL per non-padding target token (comparable across datasets)"
        },
    )
    # Unused. fairseq's sentence_prediction task reads these two from the criterion's config while the
    # configuration is composed, before any criterion is built; without them a user who picks this criterion
    # for a classification task gets an omegaconf InterpolationKeyError instead of the message in __init__.
    classification_head_name: str = field(default="sentence_classification_head", metadata={"help": argparse.SUPPRESS})
    regression_target: bool = field(default=False, metadata={"help": argparse.SUPPRESS})


@register_criterion("label_smoothed_cross_entropy_r3f", dataclass=LabelSmoothedCrossEntropyR3FConfig)
class LabelSmoothedCrossEntropyR3FCriterion(LabelSmoothedCrossEntropyCriterion):
    """The parent's loss and metrics, plus the R3F term while training. ``self.eps`` stays the parent's
    label smoothing; the noise scale (``--eps``) lives in ``self.noised_forward.noise_scale``."""

    divergence = staticmethod(r3f_term)  # the fused KL; the benchmark swaps in plain autograd to compare

    def __init__(
        self,
        task,
        sentence_avg,
        label_smoothing,
        ignore_prefix_size=0,
        report_accuracy=False,
        r3f_lambda=0.01,
        eps=1e-5,
        noise_type="uniform",
        r3f_kl_normalization="sentence",
        r3f_batched_forward=False,
    ):
        if hasattr(task, "label_dictionary"):
            raise ValueError(
                f"--criterion label_smoothed_cross_entropy_r3f is for sequence-to-sequence tasks (translation, "
                f"summarization); for {type(task).__name__}, a sentence classification task, use --criterion "
                f"sentence_prediction_r3f"
            )
        check_options(
            LabelSmoothedCrossEntropyR3FConfig(
                sentence_avg=sentence_avg, label_smoothing=label_smoothing, ignore_prefix_size=ignore_prefix_size,
                report_accuracy=report_accuracy, r3f_lambda=r3f_lambda, eps=eps, noise_type=noise_type,
                r3f_kl_normalization=r3f_kl_normalization,
            ),
            LabelSmoothedCrossEntropyR3FConfig,
            counts=("ignore_prefix_size",),
        )
        super().__init__(task, sentence_avg, label_smoothing, ignore_prefix_size, report_accuracy)
        self.noised_forward = NoisedForward(R3FConfig(r3f_lambda=r3f_lambda, eps=eps, noise_type=noise_type,
                                                      r3f_batched_forward=r3f_batched_forward))
        if str(r3f_kl_normalization) not in KL_NORMALIZATIONS:
            raise ValueError(
                f"--r3f-kl-normalization {r3f_kl_normalization!r} is unknown: choose one of "
                f"{', '.join(KL_NORMALIZATIONS)}"
            )
        self.kl_normalization = str(r3f_kl_normalization)

    def forward(self, model, sample, reduce=True):
        if not (model.training and self.noised_forward.enabled):
            return super().forward(model, sample, reduce)

        if self.noised_forward.batched:  # --r3f-batched-forward: both copies in one forward of 2B
            stand_in = DoubledBatchModel(model, self.noised_forward)
            loss, sample_size, logging_output = super().forward(stand_in, sample, reduce)
            clean_output, noised_output, noise_log = stand_in.clean_output, stand_in.noised_output, stand_in.noise_log
        else:
            # The parent computes the loss and every metric; only its decoder output is needed besides.
            with recorded_outputs(model) as clean_outputs:
                loss, sample_size, logging_output = super().forward(model, sample, reduce)
            (clean_output,) = clean_outputs
            noised_output, noise_log = self.noised_forward(model, lambda: model(**sample["net_input"]))
        symm_kl = self.symm_kl(model, clean_output, noised_output, sample)

        batch_size = sample["target"].size(0)
        denominator = batch_size if self.kl_normalization == "sentence" else sample["ntokens"]
        loss = loss + self.noised_forward.r3f_lambda * symm_kl * (sample_size / max(denominator, 1))
        logging_output.update(noise_log, loss=loss.data, symm_kl=symm_kl.data)
        return loss, sample_size, logging_output

    def symm_kl(self, model, clean_output, noised_output, sample):
        """Symmetric KL in fp32 between the two decoders' distributions, summed over the target positions
        that are not padding (and not in the ignored prefix)."""
        target = model.get_targets(sample, clean_output)  # B x T
        clean_logits, noised_logits = clean_output[0], noised_output[0]  # B x T x V
        if self.ignore_prefix_size > 0:
            target = target[:, self.ignore_prefix_size :]
            clean_logits = clean_logits[:, self.ignore_prefix_size :]
            noised_logits = noised_logits[:, self.ignore_prefix_size :]
        return self.divergence(clean_logits, noised_logits, mask=target.ne(self.padding_idx))

    @classmethod
    def reduce_metrics(cls, logging_outputs) -> None:
        super().reduce_metrics(logging_outputs)
        reduce_r3f_metrics(logging_outputs)  # symm_kl per sentence, noise_kept
        if any("symm_kl" in log for log in logging_outputs):
            symm_kl = sum(log.get("symm_kl", 0) for log in logging_outputs)
            ntokens = sum(log.get("ntokens", 0) for log in logging_outputs)
            metrics.log_scalar("symm_kl_per_token", float(symm_kl) / max(ntokens, 1), ntokens)
