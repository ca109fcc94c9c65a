"""FreeLB (Zhu et al., ICLR 2020) for sentence prediction: adversarial training on the token embeddings with
the weight gradients of every ascent step accumulated, "for free", into the update.

One update with K ascent steps runs K + 1 forward-backward passes. Pass t computes the task loss at
x + delta_t and back-propagates loss / (K + 1) into the weights and into delta_t; delta_{t+1} is delta_t plus
a normalised step along that gradient, projected onto the max-norm ball. The update therefore uses the
average gradient over K + 1 points of the adversarial path.

As in both published FreeLB codes (fairseq-RoBERTa fork and HuggingFace script): delta_0 is U(-1, 1) per
real-token entry times init_mag / sqrt(L x d) (perturb.EmbeddingBall.uniform_start), and every pass reuses
the dropout masks of the first (``--freelb-fresh-dropout`` draws new ones for each pass, as the paper's
algorithm reads). The masks are shared by replaying the random stream: dropout draws its masks from torch's
CPU and CUDA generators in the order the forward reaches each module, and the passes differ only in delta,
which draws nothing and changes no shape, so a pass started from the first pass's generator state draws
exactly the first pass's masks (LayerDrop's choices too).

Because FreeLB calls backward itself (K + 1 times, each through fairseq's optimizer so fp16 loss scaling
applies), it needs the task to hand it the training step: use it with ``--task sentence_prediction_freelb``
(fairseq_r3f/tasks/freelb.py), which is ``sentence_prediction`` otherwise.

Counting: K counts ascent steps, as in Table 1 of the R3F paper (1 + S forward and backward passes) and as
the fork's ``--adv-steps K`` does; the HuggingFace script's ``--adv-steps N`` counts passes, i.e. K = N - 1.
"""

import contextlib
import math
from dataclasses import dataclass, field

import torch
from fairseq.criterions import register_criterion
from fairseq.criterions.sentence_prediction import SentencePredictionConfig, SentencePredictionCriterion
from fairseq.dataclass import ChoiceEnum
from fairseq.logging import metrics

from fairseq_r3f.options import check_options
from fairseq_r3f.perturb import NORMS, embedding_ball, fixed, perturbed_token_embeddings
from fairseq_r3f.tasks.freelb import SentencePredictionFreeLBTask


@dataclass
class SentencePredictionFreeLBConfig(SentencePredictionConfig):
    freelb_steps: int = field(
        default=2,
        metadata={
            "help": "K, adversarial ascent steps per update: K + 1 forward-backward passes (the FreeLB "
            "fairseq fork's --adv-steps K; the HuggingFace script's --adv-steps K+1); 0 is standard fine-tuning"
        },
    )
    freelb_step_size: float = field(
        default=1e-1, metadata={"help": "adversarial step size (the fork's --adv-lr), on the normalised gradient"}
    )
    freelb_init_mag: float = field(
        default=1e-1,
        metadata={
            "help": "magnitude of the random start delta_0: U(-1, 1) x mag / sqrt(L x d) per sentence of L tokens "
            "(the fork's --rand-init-mag, the HuggingFace script's --adv-init-mag); 0 starts from the clean input"
        },
    )
    freelb_max_norm: float = field(
        default=math.inf,
        metadata={
            "help": "radius of the ball delta is projected onto, per sentence (the fork's --max-norm, the "
            "HuggingFace script's --adv-max-norm); inf = unconstrained (their 0), and 0 here means no "
            "perturbation: standard fine-tuning"
        },
    )
    freelb_norm: ChoiceEnum(NORMS) = field(
        default="l2", metadata={"help": "norm of the ball, the random start and the gradient normalisation"}
    )
    freelb_fresh_dropout: bool = field(
        default=False,
        metadata={
            "help": "draw new dropout masks on each of the K + 1 passes; by default every pass reuses the first "
            "pass's masks, as both published FreeLB codes do"
        },
    )


class RandomStreams:
    """Torch's CPU generator and the CUDA generator of ``device``, saved at construction; :meth:`replay`
    sets them back, so that what runs next draws the same random numbers again."""

    def __init__(self, device: torch.device):
        self.device = device
        self.cpu = torch.get_rng_state()
        self.cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None

    def replay(self) -> None:
        torch.set_rng_state(self.cpu)
        if self.cuda is not None:
            torch.cuda.set_rng_state(self.cuda, self.device)


@register_criterion("sentence_prediction_freelb", dataclass=SentencePredictionFreeLBConfig)
class SentencePredictionFreeLBCriterion(SentencePredictionCriterion):
    """The task loss is fairseq's sentence_prediction loss; validation is unchanged. In training the task
    calls :meth:`adversarial_train_step` instead of forward + backward."""

    def __init__(self, cfg: SentencePredictionFreeLBConfig, task):
        if not isinstance(task, SentencePredictionFreeLBTask):
            raise ValueError(
                f"--criterion sentence_prediction_freelb runs several backward passes per update, so the "
                f"task must hand it the training step: use --task sentence_prediction_freelb instead of "
                f"--task {getattr(cfg, '_task_name', None) or type(task).__name__} (same data and options)"
            )
        check_options(cfg, SentencePredictionFreeLBConfig, counts=("freelb_steps",), inf_allowed=("freelb_max_norm",))
        super().__init__(cfg, task)
        self.steps = cfg.freelb_steps
        self.step_size = cfg.freelb_step_size
        self.init_mag = cfg.freelb_init_mag
        self.max_norm = cfg.freelb_max_norm
        self.norm = str(cfg.freelb_norm)
        self.fresh_dropout = cfg.freelb_fresh_dropout

    @property
    def enabled(self) -> bool:
        return self.steps > 0 and self.max_norm > 0

    def adversarial_train_step(self, model, sample, optimizer, ignore_grad=False, autocast=False):
        """K + 1 forward-backward passes; returns what FairseqTask.train_step returns. The logged accuracy
        is that of the first pass (at the random start); the logged loss is the mean over the passes (what
        the update descends), ``adv_loss`` the loss of the last pass."""
        device = sample["net_input"]["src_tokens"].device
        ball, shape = embedding_ball(model, sample, self.norm, self.max_norm)
        delta = ball.uniform_start(shape, device, self.init_mag)
        first_pass_randomness = None if self.fresh_dropout else RandomStreams(device)
        passes = self.steps + 1
        total, logging_output = 0.0, None
        for t in range(passes):
            if t > 0 and first_pass_randomness is not None:
                first_pass_randomness.replay()  # the first pass's dropout masks
            delta.requires_grad_(True)
            # under DDP, gradients are all-reduced once, after the last pass
            last = t == passes - 1
            no_sync = model.no_sync() if (not last and hasattr(model, "no_sync")) else contextlib.nullcontext()
            with no_sync:
                with torch.autograd.profiler.record_function("forward"):
                    with torch.autocast("cuda", enabled=autocast):
                        with perturbed_token_embeddings(model, fixed(delta)):
                            loss, sample_size, log = super().forward(model, sample)
                if ignore_grad:
                    loss = loss * 0
                with torch.autograd.profiler.record_function("backward"):
                    optimizer.backward(loss / passes)
            total = total + loss.detach()
            if logging_output is None:
                logging_output = log
            if not last:
                delta = ball.ascent_step(delta.detach(), delta.grad, self.step_size)
        mean_loss = total / passes
        logging_output.update(loss=mean_loss, adv_loss=loss.detach())
        return mean_loss, sample_size, logging_output

    @staticmethod
    def reduce_metrics(logging_outputs) -> None:
        SentencePredictionCriterion.reduce_metrics(logging_outputs)
        if any("adv_loss" in log for log in logging_outputs):
            adv_loss = sum(log.get("adv_loss", 0) for log in logging_outputs)
            sample_size = sum(log.get("sample_size", 0) for log in logging_outputs)
            metrics.log_scalar("adv_loss", float(adv_loss) / max(sample_size, 1) / math.log(2), sample_size, round=3)
