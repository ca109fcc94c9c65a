"""Linear probing of a fine-tuned encoder (Section 4 of the paper): ``--task sentence_prediction_probe``.

    fairseq-train DATA --user-dir fairseq_r3f --task sentence_prediction_probe \\
        --probe-checkpoint FINETUNED/checkpoint_best.pt --arch roberta_large --criterion sentence_prediction ...

The task is fairseq's ``sentence_prediction`` (same data layout: input0/, input1/, label/) with one
difference in ``build_model``: the model's weights come from ``--probe-checkpoint`` (every classification
head in it is dropped), every parameter is frozen, every dropout and LayerDrop probability is set to 0
(appendix A.2: "the encoder is frozen, and the encoder dropout is removed"), and a new *linear* head is the
only thing that trains. fairseq's trainer gives the optimizer only parameters with ``requires_grad``, so
the frozen weights get no update, no weight decay and no optimizer state.
"""

import logging
import os
from dataclasses import dataclass, field
from typing import Optional

import torch
from fairseq import checkpoint_utils
from fairseq.modules import FairseqDropout, LayerDropModuleList
from fairseq.tasks import register_task
from fairseq.tasks.sentence_prediction import SentencePredictionConfig, SentencePredictionTask
from torch import nn

logger = logging.getLogger(__name__)

HEADS_PREFIX = "classification_heads."


@dataclass
class SentencePredictionProbeConfig(SentencePredictionConfig):
    """A linear probe on a frozen model: fairseq's sentence_prediction task (same data and flags) whose model
    is the --probe-checkpoint model with every weight frozen and dropout removed, under a new linear head."""

    probe_checkpoint: Optional[str] = field(
        default=None,
        metadata={
            "help": "checkpoint whose model is probed (a fine-tuned checkpoint_best.pt, or a pre-trained "
            "model.pt): its weights are loaded and frozen, its classification heads dropped, its dropout "
            "removed; only a new linear head trains. --arch and the model sizes must match it"
        },
    )


class LinearProbeHead(nn.Module):
    """A linear classifier on the sentence representation: ``out_proj(x)``, nothing else.

    RoBERTa passes B x T x C features (the <s> token is used), BART passes the B x C representation of its
    final </s>. ``dense`` is a frozen identity kept only so the head has the layout that RoBERTa's and
    BART's ``upgrade_state_dict_named`` read from checkpoints (``dense.weight``, ``out_proj.weight``):
    without it, resuming or validating a probe checkpoint would fail with a KeyError.
    """

    def __init__(self, input_dim: int, num_classes: int):
        super().__init__()
        self.dense = nn.Linear(input_dim, input_dim)
        with torch.no_grad():
            self.dense.weight.copy_(torch.eye(input_dim))
            self.dense.bias.zero_()
        self.dense.requires_grad_(False)
        self.out_proj = nn.Linear(input_dim, num_classes)

    def forward(self, features, **kwargs):
        x = features[:, 0, :] if features.dim() == 3 else features  # B x C
        return self.out_proj(x)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        weight = state_dict.get(prefix + "dense.weight")
        if weight is not None and not torch.equal(weight.float(), torch.eye(weight.size(0))):
            raise ValueError(
                f"the checkpoint being loaded has a non-linear head named {prefix[len(HEADS_PREFIX):-1]!r} "
                f"with the probe's dimensions, so it would replace the new linear probe; load the model to "
                f"probe with --probe-checkpoint only, not with --restore-file or --finetune-from-model"
            )
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


@register_task("sentence_prediction_probe", dataclass=SentencePredictionProbeConfig)
class SentencePredictionProbeTask(SentencePredictionTask):
    def build_model(self, cfg, from_checkpoint=False):
        model = super().build_model(cfg, from_checkpoint)  # with sentence_prediction's head, replaced below
        if not from_checkpoint:  # a saved probe checkpoint (fairseq-validate, hub) brings its own weights
            if not self.cfg.probe_checkpoint:
                raise ValueError(
                    "--task sentence_prediction_probe needs --probe-checkpoint PATH: the fine-tuned (or "
                    "pre-trained) checkpoint whose frozen representations are probed"
                )
            load_encoder_weights(model, self.cfg.probe_checkpoint)
        freeze_and_remove_dropout(model)

        input_dim = getattr(getattr(model, "args", None), "encoder_embed_dim", None) or cfg.encoder_embed_dim
        model.classification_heads[self.cfg.classification_head_name] = LinearProbeHead(
            input_dim, self.cfg.num_classes
        )
        trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
        logger.info(
            f"probing {self.cfg.probe_checkpoint}: every weight frozen and dropout removed; training a linear "
            f"head {self.cfg.classification_head_name!r} of {trained} parameters"
        )
        return model


def load_encoder_weights(model: nn.Module, path: str) -> None:
    """Loads every weight of the checkpoint at ``path`` into ``model`` except its classification heads;
    the architecture must match exactly (no missing or unexpected tensor)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--probe-checkpoint {path} does not exist")
    state = checkpoint_utils.load_checkpoint_to_cpu(path)
    weights = {k: v for k, v in state["model"].items() if not k.startswith(HEADS_PREFIX)}
    heads = model.classification_heads
    model.classification_heads = nn.ModuleDict()  # so the upgrade and the strict check see the body only
    try:
        model.upgrade_state_dict(weights)  # old key names of published checkpoints (decoder -> encoder)
        missing, unexpected = nn.Module.load_state_dict(model, weights, strict=False)
    except (RuntimeError, KeyError) as error:  # tensors of other shapes (fairseq 0.12.2's upgrade: a KeyError)
        raise ValueError(f"--probe-checkpoint {path} does not fit the model built from --arch and its size "
                         f"flags ({str(error)[:500]}); pass the architecture flags it was trained with") from error
    finally:
        model.classification_heads = heads
    if missing or unexpected:
        raise ValueError(
            f"--probe-checkpoint {path} does not fit the model built from --arch and its size flags: "
            f"{len(missing)} missing tensors (e.g. {missing[:3]}), {len(unexpected)} unexpected "
            f"(e.g. {unexpected[:3]}); pass the architecture flags the checkpoint was trained with"
        )
    logger.info(f"probing: loaded {len(weights)} tensors from {path} (its classification heads dropped)")


def freeze_and_remove_dropout(model: nn.Module) -> None:
    """requires_grad False on every parameter; every dropout and LayerDrop probability set to 0."""
    model.requires_grad_(False)
    for module in model.modules():
        if isinstance(module, (nn.Dropout, FairseqDropout, LayerDropModuleList)):
            module.p = 0.0
