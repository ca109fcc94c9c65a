"""R4F for transformers models: the classification head's matrices spectrally normalised after loading
(:func:`apply_r4f`), and folded back into plain ones for export (:func:`fold_r4f`).

Apply it after ``from_pretrained``: ``u`` is then converged for the loaded matrices. (A spectral norm built in the
model's ``__init__`` is built for the initialisation, and transformers' loading leaves its renamed matrices
uninitialised.) The head's matrices, per family: RoBERTa / XLM-R / DeBERTa-style heads ``classifier.dense`` and
``classifier.out_proj``, BART / mBART ``classification_head.dense`` and ``classification_head.out_proj``, BERT
``classifier``.

Checkpoints. A normalised layer saves three tensors: ``weight``, the matrix it applies at evaluation (W / sigma,
folded with the stored ``u``), ``raw_weight``, the trained matrix W, and ``u``. So both loads are right:

- ``load_state_dict`` into an R4F model (Trainer's ``resume_from_checkpoint``) restores W and ``u`` exactly;
- a stock ``from_pretrained`` of an R4F checkpoint loads ``weight`` into its plain Linear and computes the R4F
  model's evaluation logits; it reports ``raw_weight`` and ``u`` as unexpected keys, which it may ignore.
  (``apply_r4f`` on such a model normalises the folded matrices again: the same function, sigma 1.)

:func:`fold_r4f` replaces the layers by plain Linear layers holding W / sigma: a checkpoint without any R4F keys.

With PEFT, apply R4F before ``get_peft_model``: the head's normalised layers are then the ones PEFT trains and saves
(``modules_to_save``), and :func:`fold_r4f` folds them in the merged model (``merge_and_unload()``).
"""

from typing import List

from torch import nn

from rxf.hf.embeddings import unwrap_model
from rxf.spectral_norm import SpectralNormLinear, converged_u, folded_linear, folded_weight

RAW_WEIGHT = "raw_weight"


class R4FLinear(SpectralNormLinear):
    """:class:`rxf.spectral_norm.SpectralNormLinear` with the checkpoint layout above."""

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        super()._save_to_state_dict(destination, prefix, keep_vars)
        raw = destination[prefix + "weight"]
        destination[prefix + RAW_WEIGHT] = raw
        destination[prefix + "weight"] = folded_weight(raw.detach(), self.u)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        if prefix + RAW_WEIGHT in state_dict:  # this layout: ``weight`` is the fold, ``raw_weight`` the matrix
            state_dict[prefix + "weight"] = state_dict.pop(prefix + RAW_WEIGHT)
        elif prefix + "weight" in state_dict and prefix + "u" not in state_dict:  # a plain Linear's checkpoint
            state_dict[prefix + "u"] = converged_u(state_dict[prefix + "weight"]).to(self.u)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)


def head_layer_names(model: nn.Module) -> List[str]:
    """The dotted names of the classification head's linear layers in ``model`` (unwrapped)."""
    model = unwrap_model(model)
    for head_name in ("classifier", "classification_head"):
        head = getattr(model, head_name, None)
        if isinstance(head, nn.Linear):
            return [head_name]
        if head is not None and isinstance(getattr(head, "dense", None), nn.Linear) \
                and isinstance(getattr(head, "out_proj", None), nn.Linear):
            return [f"{head_name}.dense", f"{head_name}.out_proj"]
    raise ValueError(
        f"apply_r4f finds no classification head on {type(model).__name__}: it normalises classifier (BERT), "
        f"classifier.dense / classifier.out_proj (RoBERTa, XLM-R) or classification_head.dense / .out_proj (BART, "
        f"mBART) of a *ForSequenceClassification model"
    )


def _replace(model: nn.Module, name: str, layer: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, layer)


def apply_r4f(model: nn.Module) -> nn.Module:
    """Spectrally normalises the classification head's matrices of a loaded model in place (u converged from the
    loaded weights); returns the model. Applying it twice is refused."""
    base = unwrap_model(model)
    for name in head_layer_names(base):
        linear = base.get_submodule(name)
        if isinstance(linear, SpectralNormLinear):
            raise ValueError(f"{name} of {type(base).__name__} is spectrally normalised already: apply_r4f once")
        layer = R4FLinear.from_linear(linear)
        layer.train(linear.training)
        _replace(base, name, layer)
    return model


def fold_r4f(model: nn.Module) -> nn.Module:
    """Replaces every normalised layer by a plain Linear computing what it computes at evaluation (W / sigma);
    returns the model, which a stock ``from_pretrained`` then loads with identical logits."""
    base = unwrap_model(model)
    names = [name for name, module in base.named_modules() if isinstance(module, SpectralNormLinear)]
    if not names:
        raise ValueError(f"fold_r4f finds no spectrally normalised layer in {type(base).__name__}: nothing to fold "
                         f"(apply_r4f normalises the head)")
    for name in names:
        _replace(base, name, folded_linear(base.get_submodule(name)))
    return model
