"""The HuggingFace demo: fine-tune a tiny RoBERTa with standard fine-tuning, R3F and R4F through transformers'
Trainer (R3FTrainer for R3F and R4F), on the CPU, and print one row per method, as ``make demo`` does for fairseq.

    python -m rxf.hf.demo [--max-steps N] [--methods std r3f r4f] [--output-dir DIR]

The model is built from a config (nothing is downloaded) and trained from random weights on a generated sentence
classification task: a sentence's label says which of two sets of marker tokens occurs more often in it, and 15%
of the labels are flipped (so about 85% is the best any method can score). The numbers say that each method
trains and what it costs, not how the methods compare on a pre-trained checkpoint.
"""

import argparse
import random
import statistics
import tempfile
import time
from typing import Dict, List

import torch
from transformers import RobertaConfig, RobertaForSequenceClassification, Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_callback import PrinterCallback

from rxf.hf import R3FTrainer, R3FTrainingArguments, apply_r4f

PAD, BOS, EOS = 1, 0, 2
# token ids: 0-3 RoBERTa's specials, then 6 + 6 marker tokens of the two classes, then 40 neutral tokens
POSITIVE = list(range(4, 10))
NEGATIVE = list(range(10, 16))
NEUTRAL = list(range(16, 56))
VOCAB = 56

METHODS = ("std", "r3f", "r4f")
R3F_SETTINGS = {"r3f_lambda": 1.0, "r3f_eps": 1e-5, "r3f_noise_type": "uniform"}


def toy_examples(n: int, seed: int, label_noise: float = 0.15) -> List[Dict[str, object]]:
    """``n`` sentences of token ids (<s> ... </s>, 10 to 28 tokens) with their labels."""
    rng = random.Random(seed)
    examples = []
    while len(examples) < n:
        n_pos, n_neg = rng.randint(0, 4), rng.randint(0, 4)
        if n_pos == n_neg:
            continue
        tokens = [rng.choice(NEUTRAL) for _ in range(rng.randint(8, 20))]
        for token in [rng.choice(POSITIVE) for _ in range(n_pos)] + [rng.choice(NEGATIVE) for _ in range(n_neg)]:
            tokens.insert(rng.randint(0, len(tokens)), token)
        label = int(n_pos > n_neg)
        if rng.random() < label_noise:
            label = 1 - label
        examples.append({"input_ids": [BOS, *tokens, EOS], "labels": label})
    return examples


def collate(examples: List[Dict[str, object]]) -> Dict[str, torch.Tensor]:
    """Right-padded input ids, their attention mask and the labels."""
    length = max(len(e["input_ids"]) for e in examples)
    input_ids = torch.full((len(examples), length), PAD)
    for row, example in enumerate(examples):
        input_ids[row, : len(example["input_ids"])] = torch.tensor(example["input_ids"])
    return {"input_ids": input_ids, "attention_mask": input_ids.ne(PAD).long(),
            "labels": torch.tensor([e["labels"] for e in examples])}


def tiny_roberta(seed: int) -> RobertaForSequenceClassification:
    torch.manual_seed(seed)
    config = RobertaConfig(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                           intermediate_size=128, max_position_embeddings=66, type_vocab_size=1, layer_norm_eps=1e-5,
                           pad_token_id=PAD, bos_token_id=BOS, eos_token_id=EOS, num_labels=2)
    return RobertaForSequenceClassification(config)


def accuracy(prediction) -> Dict[str, float]:
    logits, labels = prediction.predictions, prediction.label_ids
    return {"accuracy": 100.0 * float((logits.argmax(-1) == labels).mean())}


class StepTimes(TrainerCallback):
    """Wall time of each optimizer step (forward, backward and update; evaluation not included)."""

    def __init__(self):
        self.times: List[float] = []
        self._start = 0.0

    def on_step_begin(self, args, state, control, **kwargs):
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.times.append(time.perf_counter() - self._start)


def train(method: str, train_set, valid_set, output_dir: str, max_steps: int, seed: int) -> dict:
    model = tiny_roberta(seed)  # the same initial weights for every method
    settings = dict(
        output_dir=output_dir, max_steps=max_steps, per_device_train_batch_size=32, per_device_eval_batch_size=128,
        learning_rate=1e-3, lr_scheduler_type="linear", warmup_steps=max(1, max_steps // 10), weight_decay=0.01,
        adam_beta2=0.98, adam_epsilon=1e-6, eval_strategy="steps", eval_steps=max(10, max_steps // 5),
        logging_steps=10, save_strategy="no", report_to="none", use_cpu=True, seed=seed, disable_tqdm=True,
        dataloader_num_workers=0,
    )
    if method == "std":
        trainer_class, args = Trainer, TrainingArguments(**settings)
    else:
        if method == "r4f":
            model = apply_r4f(model)
        trainer_class, args = R3FTrainer, R3FTrainingArguments(**settings, **R3F_SETTINGS)
    times = StepTimes()
    trainer = trainer_class(model=model, args=args, train_dataset=train_set, eval_dataset=valid_set,
                            data_collator=collate, compute_metrics=accuracy, callbacks=[times])
    trainer.remove_callback(PrinterCallback)  # the log records stay in trainer.state.log_history, off the terminal
    trainer.train()
    history = trainer.state.log_history
    kls = [record["symm_kl"] for record in history if "symm_kl" in record]
    kept = [record["noise_kept"] for record in history if "noise_kept" in record]
    return {
        "method": method,
        "valid_accuracy": max(record["eval_accuracy"] for record in history if "eval_accuracy" in record),
        "symm_kl": statistics.mean(kls) if kls else None,
        "noise_kept": statistics.mean(kept) if kept else None,
        "sec_per_update": statistics.median(times.times),
    }


def format_table(rows) -> str:
    lines = [f"{'method':<8}{'valid acc (%)':>15}{'mean symm_kl':>15}{'noise_kept (%)':>16}{'s / update':>12}"]
    for row in rows:
        kl = f"{row['symm_kl']:.3e}" if row["symm_kl"] is not None else "-"
        kept = f"{row['noise_kept']:.1f}" if row["noise_kept"] is not None else "-"
        lines.append(f"{row['method'].upper():<8}{row['valid_accuracy']:>15.1f}{kl:>15}{kept:>16}"
                     f"{row['sec_per_update']:>12.4f}")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m rxf.hf.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output-dir", help="the Trainer's output folder (default: a temporary folder)")
    parser.add_argument("--max-steps", type=int, default=150, help="updates per method (default 150)")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    if args.max_steps < 10:
        parser.error(f"--max-steps must be at least 10 (got {args.max_steps})")

    output_dir = args.output_dir or tempfile.mkdtemp(prefix="rxf_hf_demo_")
    train_set, valid_set = toy_examples(2000, args.seed), toy_examples(400, args.seed + 1000)
    rows = []
    for method in args.methods:
        print(f"demo: fine-tuning with {method.upper()} for {args.max_steps} updates", flush=True)
        rows.append(train(method, train_set, valid_set, f"{output_dir}/{method}", args.max_steps, args.seed))
    print()
    print(format_table(rows))
    return rows


if __name__ == "__main__":
    main()
