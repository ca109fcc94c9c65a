"""``--task sentence_prediction_freelb``: fairseq's sentence_prediction, except that a criterion with an
``adversarial_train_step`` (sentence_prediction_freelb) runs the whole training step itself -- FreeLB needs
several backward passes per update. With any other criterion, or FreeLB switched off, the training step is
fairseq's own, unchanged."""

from dataclasses import dataclass

from fairseq.optim.amp_optimizer import AMPOptimizer
from fairseq.tasks import register_task
from fairseq.tasks.sentence_prediction import SentencePredictionConfig, SentencePredictionTask

from fairseq_r3f.options import check_options


@dataclass
class SentencePredictionFreeLBTaskConfig(SentencePredictionConfig):
    pass


@register_task("sentence_prediction_freelb", dataclass=SentencePredictionFreeLBTaskConfig)
class SentencePredictionFreeLBTask(SentencePredictionTask):
    def __init__(self, cfg, data_dictionary, label_dictionary):
        check_options(cfg, SentencePredictionFreeLBTaskConfig)
        super().__init__(cfg, data_dictionary, label_dictionary)

    def train_step(self, sample, model, criterion, optimizer, update_num, ignore_grad=False):
        adversarial = getattr(criterion, "adversarial_train_step", None)
        if adversarial is None or not criterion.enabled:
            return super().train_step(sample, model, criterion, optimizer, update_num, ignore_grad)
        model.train()
        model.set_num_updates(update_num)
        return adversarial(
            model, sample, optimizer, ignore_grad=ignore_grad, autocast=isinstance(optimizer, AMPOptimizer)
        )
