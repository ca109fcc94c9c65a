"""The one loader of fairseq checkpoints: weights-only, with an allow-list of the classes fairseq checkpoints hold.

Every checkpoint the plugin reads (the run layer's relaunch, identify and status, the tables, export, probing,
ROUGE) goes through :func:`load_checkpoint`, and so do fairseq's own loads once the plugin is imported
(:func:`route_fairseq_loads`: resuming inside fairseq-train, --restore-file, --finetune-from-model,
fairseq-validate and fairseq-generate's --path, the hub). A weights-only load unpickles tensors, containers and
the allow-listed classes only, so a crafted checkpoint cannot run code: it is refused, unread, with
:class:`UnsafeCheckpoint`. The load asks for weights-only explicitly, so torch's TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD
(which turns off only torch's default) does not turn it off. torch < 2.4 has no allow-list: there the loads are
torch's default (full unpickling before torch 2.6), as fairseq's own.
"""

import argparse
import os
import pickle

import numpy
import torch

# Found in the checkpoints fairseq writes, and in the published RoBERTa, XLM-R and BART model.pt files
# (their training arguments are an argparse.Namespace under "args"). A regression task's best score (STS-B's
# Pearson, from scipy) is a numpy float64: it pickles as a numpy scalar of its dtype. A translation run with
# --eval-bleu (fairseq's IWSLT'14 command, the recipe's comparable path) keeps its validation BLEU counts in its
# meters as int64 arrays (_bleu_counts, _bleu_totals): numpy's array reconstruction and the int64 dtype.
_NUMPY_CORE = numpy._core if hasattr(numpy, "_core") else numpy.core  # numpy 2 renamed numpy.core
FAIRSEQ_CHECKPOINT_GLOBALS = [argparse.Namespace, _NUMPY_CORE.multiarray.scalar, numpy.dtype,
                              type(numpy.dtype(numpy.float64)), _NUMPY_CORE.multiarray._reconstruct, numpy.ndarray,
                              type(numpy.dtype(numpy.int64))]
# torch >= 2.4 can extend its weights-only allow-list; older torch cannot load fairseq checkpoints weights-only.
HAS_ALLOW_LIST = hasattr(torch.serialization, "add_safe_globals")


class UnsafeCheckpoint(pickle.UnpicklingError):
    """A checkpoint holding an object that is none of tensors, containers and FAIRSEQ_CHECKPOINT_GLOBALS."""


def allow_fairseq_checkpoints() -> None:
    if HAS_ALLOW_LIST:
        torch.serialization.add_safe_globals(FAIRSEQ_CHECKPOINT_GLOBALS)


def _torch_load_has(option: str) -> bool:
    import inspect

    try:
        return option in inspect.signature(torch.load).parameters
    except (TypeError, ValueError):  # no signature to read: assume the oldest torch
        return False


# torch >= 2.1 can memory-map a checkpoint, so reading its configuration or progress leaves the weights on disk;
# older torch reads the whole file (correct, only slower and heavier for a large model).
TORCH_LOAD_MMAP = _torch_load_has("mmap")


def load_checkpoint(source, map_location="cpu", mmap=True):
    """``torch.load(source)`` weights-only (where torch has the allow-list), onto ``map_location`` (the CPU by
    default); a path is memory-mapped (``mmap``) where torch supports it (a checkpoint in torch's legacy, not zip,
    format cannot be: it is read whole). A checkpoint the weights-only load refuses raises UnsafeCheckpoint naming
    it; a damaged one raises what torch raises."""
    allow_fairseq_checkpoints()
    kwargs = {"map_location": map_location}
    if HAS_ALLOW_LIST:
        kwargs["weights_only"] = True
    try:
        if mmap and TORCH_LOAD_MMAP and isinstance(source, (str, os.PathLike)):
            try:
                return torch.load(source, mmap=True, **kwargs)
            except (RuntimeError, ValueError) as error:
                if "mmap" not in str(error) and "zipfile" not in str(error):
                    raise
        return torch.load(source, **kwargs)
    except UnsafeCheckpoint:
        raise
    except pickle.UnpicklingError as error:
        # an object the allow-list lacks is named by its GLOBAL; anything else (a damaged file) is torch's error
        reason = next((line.strip().rstrip(".") for line in str(error).splitlines() if "GLOBAL" in line), None)
        if reason is None:
            raise
        name = source if isinstance(source, (str, os.PathLike)) else getattr(source, "name", "the checkpoint")
        raise UnsafeCheckpoint(
            f"{name}: not loaded: the weights-only load refuses it ({reason}). A checkpoint fairseq wrote holds "
            f"tensors, containers and {', '.join(c.__name__ for c in FAIRSEQ_CHECKPOINT_GLOBALS)} only; this one "
            f"holds more, which could run code when unpickled: delete it, or put back a checkpoint you trust"
        ) from None


class _TorchLoadingWeightsOnly:
    """torch as fairseq.checkpoint_utils sees it: its ``torch.load`` is :func:`load_checkpoint`, everything else
    is torch's."""

    def __getattr__(self, name):
        return getattr(torch, name)

    @staticmethod
    def load(f, map_location=None, **_ignored):
        # read whole, as fairseq's own torch.load did: fairseq uses every tensor it loads, so a map saves nothing
        return load_checkpoint(f, map_location=map_location, mmap=False)


def route_fairseq_loads() -> None:
    """fairseq's checkpoint_utils loads every checkpoint fairseq reads (load_checkpoint_to_cpu, the EMA loader)
    with ``torch.load`` and no weights_only; from here on those calls are :func:`load_checkpoint`'s."""
    allow_fairseq_checkpoints()
    from fairseq import checkpoint_utils

    if not isinstance(checkpoint_utils.torch, _TorchLoadingWeightsOnly):
        checkpoint_utils.torch = _TorchLoadingWeightsOnly()
