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
