"""R4F's 1-Lipschitz classification head for fairseq: every weight matrix of the head spectrally normalised
(the layer itself, :class:`rxf.spectral_norm.SpectralNormLinear`, is the framework-free core's).

A RoBERTa/BART head is dense -> tanh -> out_proj (dropout around them, the identity at evaluation).
tanh is 1-Lipschitz, so dividing both matrices by their largest singular value makes the whole head
1-Lipschitz, as the paper's Eq. 5 asks. fairseq's --spectral-norm-classification-head only wraps out_proj.

:class:`SpectralNormLinear` keeps the raw matrix under the usual key ``weight`` and the power-iteration
vector in a buffer ``u``. torch's spectral_norm renames the matrix to ``weight_orig``; RoBERTa's and BART's
``upgrade_state_dict_named`` then find no ``out_proj.weight`` and every reload (resume, fairseq-validate,
the hub) fails with a KeyError. With ``weight`` kept, checkpoints load everywhere, and a checkpoint of a
plain head loads into a normalised one (``u`` is then computed from the loaded matrix, see
:func:`add_missing_power_iteration_vectors`).
"""

from torch import nn

import torch.nn.functional as F

from rxf.spectral_norm import SpectralNormLinear, TorchSpectralNormLinear, converged_u


HEAD_LAYERS = ("dense", "out_proj")


def convert_torch_spectral_norm(state_dict, prefix: str, keep_v: bool = False) -> None:
    """Renames what torch's spectral_norm (fairseq's --spectral-norm-classification-head) saved for a head
    matrix -- ``weight_orig``, ``weight_u``, ``weight_v`` -- to this module's ``weight``, ``u`` and, with
    ``keep_v`` (a :class:`TorchSpectralNormLinear`, which evaluates with torch's stored ``v``), ``v`` (without,
    ``v`` is recomputed from them), so that such checkpoints, which RoBERTa and BART cannot reload themselves,
    load."""
    heads = prefix + "classification_heads."
    for key in list(state_dict):
        if key.startswith(heads) and key.endswith(".weight_orig"):
            layer = key[: -len("weight_orig")]
            state_dict[layer + "weight"] = state_dict.pop(key)
            if layer + "weight_u" in state_dict:
                state_dict[layer + "u"] = state_dict.pop(layer + "weight_u")
            v = state_dict.pop(layer + "weight_v", None)
            if keep_v and v is not None:
                state_dict[layer + "v"] = v


def add_missing_power_iteration_vectors(state_dict, prefix: str, layers=HEAD_LAYERS, with_v: bool = False) -> None:
    """Gives every normalised head matrix (``layers``) of a checkpoint without ``u`` (a plain, non-R4F head)
    the converged vector of its own matrix; ``with_v`` (a :class:`TorchSpectralNormLinear`) also a ``v`` where
    there is none, normalize(W^T u), with which its evaluation is what a layer without ``v`` computed. Must run
    before RoBERTa's/BART's upgrade, which would otherwise fill in the vectors of the freshly initialised head,
    vectors for another matrix."""
    heads = prefix + "classification_heads."
    for key in list(state_dict):
        if key.startswith(heads) and key.endswith(tuple(f".{layer}.weight" for layer in layers)):
            u_key, v_key = key[: -len("weight")] + "u", key[: -len("weight")] + "v"
            if u_key not in state_dict:
                state_dict[u_key] = converged_u(state_dict[key]).to(state_dict[key])
            if with_v and v_key not in state_dict:
                weight, u = state_dict[key], state_dict[u_key]
                state_dict[v_key] = F.normalize(weight.float().t() @ u.float(), dim=0).to(weight)


def spectrally_normalise_head(head: nn.Module, layers=HEAD_LAYERS, layer_class=SpectralNormLinear) -> nn.Module:
    """Replaces the head's ``layers`` (of ``dense`` and ``out_proj``, RoBERTa and BART heads) by normalised
    layers of ``layer_class``."""
    for layer in layers:
        linear = getattr(head, layer)
        if hasattr(linear, "weight_orig"):  # torch's spectral_norm, from fairseq's own flag
            raise ValueError(
                "--spectral-norm-classification-head cannot be combined with the *_sn_* architectures, which "
                "normalise the head themselves (roberta_sn_outproj_* / bart_sn_outproj_* normalise out_proj only, "
                "as the flag does): drop the flag"
            )
        setattr(head, layer, layer_class.from_linear(linear))
    return head


class SpectrallyNormalisedHeads:
    """Mixin for a fairseq model with ``classification_heads`` (RoBERTa, BART): every head it registers is
    spectrally normalised (the matrices named in ``normalised_layers``: all of them, as R4F asks), and
    checkpoints of plain heads, or of fairseq's own spectral-norm flag, load into it."""

    normalised_layers = HEAD_LAYERS
    layer_class = SpectralNormLinear  # u converged for the matrix at construction
    keeps_v = False

    def register_classification_head(self, name, num_classes=None, inner_dim=None, **kwargs):
        super().register_classification_head(name, num_classes, inner_dim, **kwargs)
        spectrally_normalise_head(self.classification_heads[name], self.normalised_layers, self.layer_class)

    def upgrade_state_dict_named(self, state_dict, name):
        prefix = name + "." if name else ""
        convert_torch_spectral_norm(state_dict, prefix, keep_v=self.keeps_v)
        stray = [key for key in state_dict if key.startswith(prefix + "classification_heads.")
                 and key.endswith(".u") and key.split(".")[-2] not in self.normalised_layers]
        if stray:
            raise ValueError(
                f"the checkpoint's head normalises {', '.join(sorted({k.split('.')[-2] for k in stray}))}, which "
                f"this architecture ({type(self).__name__}) leaves plain: load it with the architecture it was "
                f"trained with (roberta_sn_* / bart_sn_* normalise every head matrix)"
            )
        add_missing_power_iteration_vectors(state_dict, prefix, self.normalised_layers, with_v=self.keeps_v)
        super().upgrade_state_dict_named(state_dict, name)


class OutProjNormalisedHeads(SpectrallyNormalisedHeads):
    """R4F as its authors released it: fairseq's --spectral-norm-classification-head normalises ``out_proj``
    only (the head's ``dense`` matrix stays plain, so the head is not 1-Lipschitz), with torch's spectral_norm,
    which :class:`TorchSpectralNormLinear` computes (random start, torch's power iteration, its stored ``v``).
    Stored under ``weight``/``u``/``v`` so that its checkpoints resume, validate and export."""

    normalised_layers = ("out_proj",)
    layer_class = TorchSpectralNormLinear
    keeps_v = True
