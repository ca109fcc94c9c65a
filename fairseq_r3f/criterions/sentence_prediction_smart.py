"""SMART's smoothness-inducing adversarial regulariser (Jiang et al., 2020) for sentence prediction, the
baseline R3F removes the ascent steps from (the paper's Eq. 2):

    loss = CE(g.f(x)) + lambda x KL_S(g.f(x) || g.f(x + delta)),  delta ~ argmax_{||delta|| <= eps} KL_S(...)

Two variants, chosen with ``--smart-variant``:

``paper`` (the default): Algorithm 1 of the SMART paper. delta lives on the raw token embeddings (the point
where R3F adds its noise, via perturb.py): a random start N(0, sigma^2), then K ascent steps on the symmetric
KL, each a gradient step normalised in the ball's norm followed by a projection back onto the eps-ball. The
ball, its start and its ascent step are perturb.EmbeddingBall, shared with FreeLB.

``released``: what the authors' code (namisan/mt-dnn: ``mt_dnn/perturbation.py``, ``mt_dnn/loss.py``,
``train.py``) ran between its commits 682b9fb (2020-12) and 1f43b6e (2021-02). (From 1f43b6e on, mt-dnn feeds
embedding output + noise through the whole HuggingFace model as ``inputs_embeds``, so positions, type
embeddings, the layer norm and dropout are applied a second time; its mid-2020 code, 99d1b20, used step 1e-3 and
no start noise. docs/baselines.md.) The noise is added to the embedding layer's output (after positions, the embedding
layer norm and dropout; one embedding output, hence one dropout mask, shared by the ascent and the final forward). It
starts at N(0, sigma^2); each of the K steps ascends mt-dnn's one-sided ``stable_kl`` of the perturbed
against the detached clean logits (squared error for regression) and sets the noise to ``noise + step x
grad`` divided, token by token, by its largest absolute entry plus a stabiliser (1e-6): nothing else bounds it,
so it ends with entries of size about 1. The regulariser is mt-dnn's ``SymKlCriterion``: KL(sg(q) || p) +
KL(sg(p) || q), p the clean and q the perturbed distribution, each term differentiated through its second
argument only (the squared error, undetached, for regression). Its defaults are mt-dnn's: step 1e-5,
sigma 1e-5, stabiliser 1e-6 (``--adv_step_size``, ``--adv_noise_var``, ``--adv_epsilon`` of ``train.py``).

Only SMART's smoothness term is here; its Bregman proximal-point half was never released and is not part of
the R3F paper's comparison.
"""

from dataclasses import dataclass, field
from typing import Optional

import torch
import torch.nn.functional as F
from fairseq.criterions import register_criterion
from fairseq.criterions.sentence_prediction import SentencePredictionConfig, SentencePredictionCriterion
from fairseq.dataclass import ChoiceEnum

from fairseq_r3f.criterions.r3f import classification_head, recorded_outputs, reduce_r3f_metrics
from fairseq_r3f.options import check_options
from fairseq_r3f.perturb import (
    NORMS, embedding_ball, fixed, per_token_normalised, perturbed_embedding_output, perturbed_token_embeddings,
)
from rxf.divergence import squared_difference, symmetric_kl

VARIANTS = ("paper", "released")
# each variant's defaults for the options left unset: the SMART paper's Section 5 / mt-dnn's train.py
DEFAULTS = {
    "paper": {"smart_step_size": 1e-3, "smart_eps": 1e-5, "smart_init": 1e-5},
    "released": {"smart_step_size": 1e-5, "smart_eps": 1e-6, "smart_init": 1e-5},
}


def stable_kl(logits: torch.Tensor, target: torch.Tensor, epsilon: float = 1e-6) -> torch.Tensor:
    """mt-dnn's ``stable_kl`` (``mt_dnn/loss.py``), summed over the batch: 2 x sum_i p_i (l(p_i) - l(y_i)) with
    p = softmax(logits), y = softmax(target) and l(u) = -log(1 / (u + epsilon) - 1 + epsilon), about the
    log-odds log(u / (1 - u)). The log-odds are constants: the gradient reaches ``logits`` through p only."""
    p = F.softmax(logits.float(), dim=-1)
    y = F.softmax(target.float(), dim=-1)

    def log_odds(u):
        return -(1.0 / (u + epsilon) - 1 + epsilon).detach().log()

    return (p * (log_odds(p) - log_odds(y)) * 2).sum()


def stop_gradient_symmetric_kl(clean_logits: torch.Tensor, perturbed_logits: torch.Tensor) -> torch.Tensor:
    """mt-dnn's ``SymKlCriterion(clean, perturbed)`` summed over the batch: KL(sg(q) || p) + KL(sg(p) || q), p the
    clean and q the perturbed distribution. Its value is the symmetric KL; each term's gradient goes only
    through the distribution inside its log."""
    log_p = F.log_softmax(clean_logits.float(), dim=-1)
    log_q = F.log_softmax(perturbed_logits.float(), dim=-1)
    return (F.kl_div(log_p, log_q.detach().exp(), reduction="sum")
            + F.kl_div(log_q, log_p.detach().exp(), reduction="sum"))


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
    smart_step_size: Optional[float] = field(
        default=None,
        metadata={"help": "ascent step size eta; paper: on the normalised gradient (default 1e-3), released: on "
                          "the raw gradient before the per-token normalisation (default 1e-5)"},
    )
    smart_eps: Optional[float] = field(
        default=None,
        metadata={"help": "paper: radius of the ball delta is projected onto, per sentence (default 1e-5; 0 turns "
                          "SMART off); released: the stabiliser added to each token's norm (default 1e-6)"},
    )
    smart_init: Optional[float] = field(
        default=None, metadata={"help": "standard deviation of the random start of delta (default 1e-5)"}
    )
    smart_norm: ChoiceEnum(NORMS) = field(
        default="linf", metadata={"help": "paper: norm of the eps-ball and of the gradient normalisation; "
                                          "released: norm of the per-token normalisation"}
    )
    smart_variant: ChoiceEnum(VARIANTS) = field(
        default="paper",
        metadata={"help": "paper: the SMART paper's Algorithm 1 on the token embeddings; released: the authors' "
                          "mt-dnn code as of its commits 682b9fb..1f43b6e (2020-12 to 2021-02: noise on the "
                          "embedding layer's output, per-token normalisation, one-sided stable KL ascent, mt-dnn's "
                          "defaults; from 1f43b6e mt-dnn passes embedding output + noise as inputs_embeds through "
                          "the embeddings again, its mid-2020 99d1b20 used step 1e-3 and no start noise); "
                          "docs/baselines.md"},
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
        self.variant = str(cfg.smart_variant)
        if self.variant not in VARIANTS:
            raise ValueError(f"--smart-variant {self.variant}: choose one of {', '.join(VARIANTS)}")

        def setting(name):
            value = getattr(cfg, name)
            return DEFAULTS[self.variant][name] if value is None else value

        self.smart_lambda = cfg.smart_lambda
        self.steps = cfg.smart_steps
        self.step_size = setting("smart_step_size")
        self.radius = setting("smart_eps")  # released: the stabiliser of the per-token normalisation
        self.init_scale = setting("smart_init")
        self.norm = str(cfg.smart_norm)

    @property
    def enabled(self) -> bool:
        if self.variant == "released":
            return self.smart_lambda > 0 and self.steps > 0
        return self.smart_lambda > 0 and self.steps > 0 and self.radius > 0

    def forward(self, model, sample, reduce=True):
        if not (model.training and self.enabled):
            return super().forward(model, sample, reduce)
        head = classification_head(model, self.classification_head_name, "sentence_prediction_smart")
        with recorded_outputs(head) as clean_outputs:
            loss, sample_size, logging_output = super().forward(model, sample, reduce)
        (clean_logits,) = clean_outputs

        if self.variant == "released":
            reuse = {}  # one embedding output for the ascent and the final forward, as mt-dnn
            noise = self.released_perturbation(model, sample, clean_logits.detach(), reuse)
            term = self.released_divergence(clean_logits, self.released_logits(model, sample, noise, reuse))
        else:
            delta = self.adversarial_perturbation(model, sample, clean_logits.detach())
            term = self.divergence(clean_logits, self.perturbed_logits(model, sample, delta))
        loss = loss + self.smart_lambda * term
        logging_output.update(loss=loss.data, symm_kl=term.data)
        return loss, sample_size, logging_output

    def logits(self, model, sample):
        return model(
            **sample["net_input"], features_only=True, classification_head_name=self.classification_head_name
        )[0]

    def perturbed_logits(self, model, sample, delta):
        with perturbed_token_embeddings(model, fixed(delta)):
            return self.logits(model, sample)

    def divergence(self, clean_logits, perturbed_logits):
        if self.regression_target:
            return squared_difference(clean_logits.view(-1), perturbed_logits.view(-1))
        return symmetric_kl(clean_logits, perturbed_logits)

    def adversarial_perturbation(self, model, sample, clean_logits):
        """The paper's variant: K ascent steps on KL_S(clean || perturbed) from a random start, within the
        eps-ball; the clean logits are a constant here. Returns delta (B x T x C, fp32, no graph)."""
        ball, shape = embedding_ball(model, sample, self.norm, self.radius)
        delta = ball.normal_start(shape, clean_logits.device, self.init_scale)
        for _ in range(self.steps):
            delta.requires_grad_(True)
            divergence = self.divergence(clean_logits, self.perturbed_logits(model, sample, delta))
            (grad,) = torch.autograd.grad(divergence, delta)
            delta = ball.ascent_step(delta.detach(), grad, self.step_size)
        return delta.detach()

    # -- the released variant (mt-dnn) --

    def released_logits(self, model, sample, noise, reuse=None):
        with perturbed_embedding_output(model, fixed(noise), reuse):
            return self.logits(model, sample)

    def released_ascent_loss(self, clean_logits, perturbed_logits):
        """What mt-dnn's ascent differentiates: its one-sided stable KL of the perturbed against the (detached)
        clean logits, or the summed squared error for regression."""
        if self.regression_target:
            return F.mse_loss(perturbed_logits.float().view(-1), clean_logits.float().view(-1), reduction="sum")
        return stable_kl(perturbed_logits, clean_logits)

    def released_divergence(self, clean_logits, perturbed_logits):
        if self.regression_target:
            return squared_difference(clean_logits.view(-1), perturbed_logits.view(-1))
        return stop_gradient_symmetric_kl(clean_logits, perturbed_logits)

    def released_step(self, noise, grad):
        """One step of mt-dnn's ascent: noise + step x grad, divided token by token by its norm plus the
        stabiliser. Where the gradient is not finite (an fp16 overflow) the noise stays put (mt-dnn drops the
        whole term for that batch instead)."""
        stepped = per_token_normalised(noise + self.step_size * grad.float(), self.norm, self.radius)
        return torch.where(torch.isfinite(stepped), stepped, noise)

    def released_perturbation(self, model, sample, clean_logits, reuse=None):
        """The released variant's noise on the embedding output (B x T x C, fp32, no graph): N(0, sigma^2),
        then K steps of :meth:`released_step`. Padding rows are zeroed (the encoder zeroes them anyway)."""
        ball, shape = embedding_ball(model, sample, self.norm, float("inf"), point="embedding_output")
        noise = torch.randn(shape, device=clean_logits.device) * self.init_scale * ball.keep
        for _ in range(self.steps):
            noise.requires_grad_(True)
            ascent = self.released_ascent_loss(clean_logits, self.released_logits(model, sample, noise, reuse))
            (grad,) = torch.autograd.grad(ascent, noise)
            noise = self.released_step(noise.detach(), grad) * ball.keep
        return noise.detach()

    @staticmethod
    def reduce_metrics(logging_outputs) -> None:
        SentencePredictionCriterion.reduce_metrics(logging_outputs)
        reduce_r3f_metrics(logging_outputs)
