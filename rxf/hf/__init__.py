"""rxf.hf: R3F and R4F for HuggingFace transformers (an adapter over the torch-only core :mod:`rxf`; it imports
transformers, never fairseq). Needs transformers 5.x (Python >= 3.10): ``pip install 'fairseq-r3f[hf]'``.

    from rxf.hf import R3FTrainer, R3FTrainingArguments, apply_r4f, fold_r4f

    args = R3FTrainingArguments(output_dir="out", r3f_lambda=1.0, r3f_eps=1e-5, r3f_noise_type="uniform")
    trainer = R3FTrainer(model=apply_r4f(model), args=args, train_dataset=train)   # apply_r4f: R4F, optional

- :class:`R3FTrainer`, :class:`R3FSeq2SeqTrainer`, :class:`R3FMixin` (for other Trainer subclasses, e.g. TRL's
  SFTTrainer), :class:`R3FTrainingArguments`, :class:`R3FSeq2SeqTrainingArguments`: :mod:`rxf.hf.trainer`.
- :func:`r3f_loss`, the loss of one batch that ``R3FMixin.compute_loss`` computes: :mod:`rxf.hf.loss`.
- :func:`apply_r4f`, :func:`fold_r4f`: :mod:`rxf.hf.r4f`.

The scaling rule: loss = (task loss summed over the items) / N + lambda x (symmetric KL summed over the kept rows)
/ N, with N the number of items the task loss averages over (Trainer's ``num_items_in_batch`` when it gives it):
sentences for classification and regression, target tokens (``labels != -100``; a causal LM's shifted ones) for
seq2seq, token classification and causal LMs. That is the fairseq plugin's per-item scaling: fairseq sums the
cross-entropy and lambda x the summed KL and divides by its sample_size (for seq2seq with
``--r3f-kl-normalization token``). The noise goes on the raw token embeddings of the module the encoder calls
(:mod:`rxf.hf.embeddings`).
"""

from rxf.hf.loss import R3FLossResult, r3f_loss
from rxf.hf.r4f import apply_r4f, fold_r4f
from rxf.hf.trainer import (
    R3FMixin,
    R3FSeq2SeqTrainer,
    R3FSeq2SeqTrainingArguments,
    R3FTrainer,
    R3FTrainingArguments,
)

__all__ = [
    "R3FLossResult",
    "R3FMixin",
    "R3FSeq2SeqTrainer",
    "R3FSeq2SeqTrainingArguments",
    "R3FTrainer",
    "R3FTrainingArguments",
    "apply_r4f",
    "fold_r4f",
    "r3f_loss",
]
