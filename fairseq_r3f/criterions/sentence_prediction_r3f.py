"""R3F for sentence classification and regression (GLUE, XNLI): fairseq's ``sentence_prediction`` plus
lambda x the symmetric KL between the head's outputs on clean and on noised token embeddings.

With R4F's spectrally normalised head this is the same criterion on a ``*_sn_*`` architecture.
"""

from dataclasses import dataclass

from fairseq.criterions import register_criterion
from fairseq.criterions.sentence_prediction import SentencePredictionConfig, SentencePredictionCriterion

from fairseq_r3f.criterions.r3f import (
    DoubledBatchModel,
    NoisedForward,
    R3FConfig,
    classification_head,
    recorded_outputs,
    reduce_r3f_metrics,
)
from fairseq_r3f.options import check_options
from rxf.r3f import r3f_term


@dataclass
class SentencePredictionR3FConfig(SentencePredictionConfig, R3FConfig):
    pass


@register_criterion("sentence_prediction_r3f", dataclass=SentencePredictionR3FConfig)
class SentencePredictionR3FCriterion(SentencePredictionCriterion):
    """Loss = summed cross-entropy + r3f_lambda x symmetric KL summed over the batch, as in the paper's
    code, so its lambda grid keeps its meaning. For regression targets (STS-B), where KL is undefined, the
    term is the squared difference of the clean and noised outputs (see rxf.divergence.squared_difference)."""

    def __init__(self, cfg: SentencePredictionR3FConfig, task):
        if not hasattr(task, "label_dictionary"):
            raise ValueError(
                f"--criterion sentence_prediction_r3f needs a sentence classification task such as "
                f"--task sentence_prediction; {type(task).__name__} has no label dictionary"
            )
        check_options(cfg, SentencePredictionR3FConfig)
        super().__init__(cfg, task)
        self.noised_forward = NoisedForward(cfg)

    def forward(self, model, sample, reduce=True):
        head = classification_head(model, self.classification_head_name, "sentence_prediction_r3f")
        if not (model.training and self.noised_forward.enabled):
            return super().forward(model, sample, reduce)

        if self.noised_forward.batched:  # --r3f-batched-forward: both copies in one forward of 2B
            stand_in = DoubledBatchModel(model, self.noised_forward)
            loss, sample_size, logging_output = super().forward(stand_in, sample, reduce)
            clean_logits, noised_logits = stand_in.clean_output[0], stand_in.noised_output[0]
            return self.add_r3f_term(loss, sample_size, logging_output, clean_logits, noised_logits,
                                     stand_in.noise_log)

        # The parent computes the task loss and every metric; only its logits are needed besides.
        with recorded_outputs(head) as clean_outputs:
            loss, sample_size, logging_output = super().forward(model, sample, reduce)
        (clean_logits,) = clean_outputs

        noised_logits, noise_log = self.noised_forward(
            model,
            lambda: model(
                **sample["net_input"],
                features_only=True,
                classification_head_name=self.classification_head_name,
            )[0],
        )
        return self.add_r3f_term(loss, sample_size, logging_output, clean_logits, noised_logits, noise_log)

    def add_r3f_term(self, loss, sample_size, logging_output, clean_logits, noised_logits, noise_log):
        term = r3f_term(clean_logits, noised_logits, regression=self.regression_target)
        loss = loss + self.noised_forward.r3f_lambda * term
        logging_output.update(noise_log, loss=loss.data, symm_kl=term.data)
        return loss, sample_size, logging_output

    @staticmethod
    def reduce_metrics(logging_outputs) -> None:
        SentencePredictionCriterion.reduce_metrics(logging_outputs)
        reduce_r3f_metrics(logging_outputs)
