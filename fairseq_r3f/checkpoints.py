"""Loading fairseq checkpoints under torch >= 2.6, where torch.load defaults to weights_only=True.

fairseq's checkpoint_utils calls torch.load without weights_only, so on torch >= 2.6 resuming, --restore-file
of published checkpoints, fairseq-validate and the hub all stop at "Unsupported global". The safety stays on:
we add to torch's allow-list exactly the classes fairseq checkpoints hold besides tensors and containers.
"""

import argparse

import numpy
import torch

# Found in the checkpoints fairseq writes, and in the published RoBERTa, XLM-R and BART model.pt files
# (their training arguments are an argparse.Namespace under "args"). A regression task's best score (STS-B's
# Pearson, from scipy) is a numpy float64: it pickles as a numpy scalar of its dtype.
_NUMPY_CORE = numpy._core if hasattr(numpy, "_core") else numpy.core  # numpy 2 renamed numpy.core
FAIRSEQ_CHECKPOINT_GLOBALS = [argparse.Namespace, _NUMPY_CORE.multiarray.scalar, numpy.dtype,
                              type(numpy.dtype(numpy.float64))]


def allow_fairseq_checkpoints() -> None:
    add_safe_globals = getattr(torch.serialization, "add_safe_globals", None)
    if add_safe_globals is not None:  # torch < 2.4 has no allow-list (and loads everything anyway)
        add_safe_globals(FAIRSEQ_CHECKPOINT_GLOBALS)


def _torch_load_has(option: str) -> bool:
    import inspect

    try:
        return option in inspect.signature(torch.load).parameters
    except (TypeError, ValueError):  # no signature to read: assume the oldest torch
        return False


# torch >= 2.1 can memory-map a checkpoint, so reading its configuration or progress leaves the weights on disk;
# older torch reads the whole file (correct, only slower and heavier for a large model).
TORCH_LOAD_MMAP = _torch_load_has("mmap")


def load_to_cpu(path: str, weights_only=None):
    """``torch.load(path)`` onto the CPU, memory-mapped where torch supports it.

    ``weights_only`` is passed only when given (None: torch's default, with the allow-list above on torch >= 2.6).
    A checkpoint in torch's legacy (not zip) format cannot be memory-mapped: it is read whole instead.
    """
    kwargs = {"map_location": "cpu"}
    if weights_only is not None:
        kwargs["weights_only"] = weights_only
    if TORCH_LOAD_MMAP:
        try:
            return torch.load(path, mmap=True, **kwargs)
        except (RuntimeError, ValueError) as error:
            if "mmap" not in str(error) and "zipfile" not in str(error):
                raise
    return torch.load(path, **kwargs)
