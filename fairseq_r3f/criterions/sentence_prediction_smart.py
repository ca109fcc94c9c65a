"""SMART's smoothness-inducing adversarial regulariser (Jiang et al., 2020) for sentence prediction, the
baseline R3F removes the ascent steps from (the paper's Eq. 2):

    loss = CE(g.f(x)) + lambda x KL_S(g.f(x) || g.f(x + delta)),  delta ~ argmax_{||delta|| <= eps} KL_S(...)

delta lives on the raw token embeddings (the same point where R3F adds its noise, via perturb.py): a small
random start, then K ascent steps on the symmetric KL, each a normalised gradient step followed by a
projection back onto the eps-ball. Only SMART's smoothness term is here; its Bregman proximal-point half was
never released and is not part of the R3F paper's comparison. The ball, its start and its ascent step are
perturb.EmbeddingBall, shared with FreeLB.
"""

from dataclasses import dataclass, field

import torch
from fairseq.criterions import register_criterion
from fairseq.criterions.sentence_prediction import SentencePredictionConfig, SentencePredictionCriterion
from fairseq.dataclass import ChoiceEnum

from fairseq_r3f.criterions.r3f import classification_head, recorded_outputs, reduce_r3f_metrics
from fairseq_r3f.divergence import squared_difference, symmetric_kl
from fairseq_r3f.options import check_options
from fairseq_r3f.perturb import NORMS, embedding_ball, fixed, perturbed_token_embeddings


@dataclass
class SentencePredictionSMARTConfig(SentencePredictionConfig):
    smart_lambda: float = field(
        default=1.0,
        metadata={"help": "weight lambda of the adversarial symmetric KL (SMART's lambda_s); 0 turns SMART off"},
    )
    smart_steps: int = field(
        default=1,
        metadata={"help": "K, ascent steps on the symmetric KL per update (SMART uses 1); 0 turns SMART off"},
    )
    smart_step_size: float = field(
        default=1e-3, metadata={"help": "ascent step size eta, applied to the normalised gradient"}
    )
    smart_eps: float = field(
        default=1e-5,
        metadata={"help": "radius of the ball delta is projected onto, per sentence; 0 turns SMART off"},
    )
    smart_init: float = field(
        default=1e-5, metadata={"help": "standard deviation of the random start of delta"}
    )
    smart_norm: ChoiceEnum(NORMS) = field(
        default="linf", metadata={"help": "norm of the eps-ball and of the gradient normalisation"}
    )


@register_criterion("sentence_prediction_smart", dataclass=SentencePredictionSMARTConfig)
class SentencePredictionSMARTCriterion(SentencePredictionCriterion):
    """Loss = summed cross-entropy + smart_lambda x symmetric KL summed over the batch (the same scale as
    sentence_prediction_r3f, so the two lambdas compare). Regression targets use the squared difference of
    the outputs, as R3F does. Passes per update: K + 2 forwards, K + 1 backwards (the K ascent backwards
    reach only delta, not the weights)."""

    def __init__(self, cfg: SentencePredictionSMARTConfig, task):
        if not hasattr(task, "label_dictionary"):
            raise ValueError(
                f"--criterion sentence_prediction_smart needs a sentence classification task such as "
                f"--task sentence_prediction; {type(task).__name__} has no label dictionary"
            )
        check_options(cfg, SentencePredictionSMARTConfig, counts=("smart_steps",))
        super().__init__(cfg, task)
        self.smart_lambda = cfg.smart_lambda
        self.steps = cfg.smart_steps
        self.step_size = cfg.smart_step_size
        self.radius = cfg.smart_eps
        self.init_scale = cfg.smart_init
        self.norm = str(cfg.smart_norm)

    @property
    def enabled(self) -> bool:
        return self.smart_lambda > 0 and self.steps > 0 and self.radius > 0

    def forward(self, model, sample, reduce=True):
        if not (model.training and self.enabled):
            return super().forward(model, sample, reduce)
        head = classification_head(model, self.classification_head_name, "sentence_prediction_smart")
        with recorded_outputs(head) as clean_outputs:
            loss, sample_size, logging_output = super().forward(model, sample, reduce)
        (clean_logits,) = clean_outputs

        delta = self.adversarial_perturbation(model, sample, clean_logits.detach())
        term = self.divergence(clean_logits, self.perturbed_logits(model, sample, delta))
        loss = loss + self.smart_lambda * term
        logging_output.update(loss=loss.data, symm_kl=term.data)
        return loss, sample_size, logging_output

    def perturbed_logits(self, model, sample, delta):
        with perturbed_token_embeddings(model, fixed(delta)):
            return model(
                **sample["net_input"], features_only=True, classification_head_name=self.classification_head_name
            )[0]

    def divergence(self, clean_logits, perturbed_logits):
        if self.regression_target:
            return squared_difference(clean_logits.view(-1), perturbed_logits.view(-1))
        return symmetric_kl(clean_logits, perturbed_logits)

    def adversarial_perturbation(self, model, sample, clean_logits):
        """K ascent steps on KL_S(clean || perturbed) from a random start, within the eps-ball; the clean
        logits are a constant here. Returns delta (B x T x C, fp32, no graph)."""
        ball, shape = embedding_ball(model, sample, self.norm, self.radius)
        delta = ball.normal_start(shape, clean_logits.device, self.init_scale)
        for _ in range(self.steps):
            delta.requires_grad_(True)
            divergence = self.divergence(clean_logits, self.perturbed_logits(model, sample, delta))
            (grad,) = torch.autograd.grad(divergence, delta)
            delta = ball.ascent_step(delta.detach(), grad, self.step_size)
        return delta.detach()

    @staticmethod
    def reduce_metrics(logging_outputs) -> None:
        SentencePredictionCriterion.reduce_metrics(logging_outputs)
        reduce_r3f_metrics(logging_outputs)
