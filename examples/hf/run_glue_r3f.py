#!/usr/bin/env python
"""Fine-tune a transformers model for sequence classification (GLUE, or your own csv/json files) with R3F or R4F,
in the style of transformers' examples/pytorch/text-classification/run_glue.py.

    # RTE with R3F (lambda 1, uniform noise of 1e-5: the paper's settings), from the hub
    python examples/hf/run_glue_r3f.py --model_name_or_path FacebookAI/roberta-large --task_name rte \
        --do_train --do_eval --output_dir out/rte_r3f --r3f_lambda 1.0 --r3f_eps 1e-5 --r3f_noise_type uniform \
        --learning_rate 1e-5 --per_device_train_batch_size 8 --num_train_epochs 10 --warmup_steps 187

    # R4F (the classification head spectrally normalised after loading, folded before saving), local files
    python examples/hf/run_glue_r3f.py --model_name_or_path path/to/model --train_file train.csv \
        --validation_file dev.csv --do_train --do_eval --output_dir out/r4f --r3f_lambda 1.0 --r4f

Every argument of R3FTrainingArguments (transformers' TrainingArguments plus r3f_lambda, r3f_eps, r3f_noise_type,
r3f_batched_forward) is a flag; ``--r3f_lambda 0`` (the default) is standard fine-tuning with the same script.
Files: csv or json with a ``label`` column and one or two text columns (``sentence1``/``sentence2``, else the
first one or two other columns); integer or string labels make a classification, float labels a regression.
With ``--r4f`` the saved model is folded (W / sigma in plain matrices): a stock ``from_pretrained`` loads it and
gives the R4F model's logits. The Trainer logs ``symm_kl`` and ``noise_kept`` next to the loss.
"""

import json
import logging
import os
import sys
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch
from datasets import load_dataset
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    HfArgumentParser,
    set_seed,
)

from rxf.hf import R3FTrainer, R3FTrainingArguments, apply_r4f, fold_r4f

logger = logging.getLogger("run_glue_r3f")

# GLUE's tasks and their text columns (the nyu-mll/glue dataset on the hub)
TASK_TO_KEYS = {
    "cola": ("sentence", None), "mnli": ("premise", "hypothesis"), "mrpc": ("sentence1", "sentence2"),
    "qnli": ("question", "sentence"), "qqp": ("question1", "question2"), "rte": ("sentence1", "sentence2"),
    "sst2": ("sentence", None), "stsb": ("sentence1", "sentence2"), "wnli": ("sentence1", "sentence2"),
}


@dataclass
class ModelArguments:
    model_name_or_path: str = field(metadata={"help": "a model name on the hub, or a local folder"})
    tokenizer_name: Optional[str] = field(default=None, metadata={"help": "the tokenizer, if not the model's"})
    cache_dir: Optional[str] = field(default=None, metadata={"help": "where downloads are cached"})
    ignore_mismatched_sizes: bool = field(default=False, metadata={
        "help": "load a checkpoint whose head has another number of labels (the head is then initialised anew)"})
    r4f: bool = field(default=False, metadata={"help": "R4F: spectrally normalise the classification head after "
                                                       "loading (rxf.hf.apply_r4f); the saved model is folded"})


@dataclass
class DataTrainingArguments:
    task_name: Optional[str] = field(default=None, metadata={"help": "a GLUE task: " + ", ".join(TASK_TO_KEYS)})
    train_file: Optional[str] = field(default=None, metadata={"help": "training data, csv or json"})
    validation_file: Optional[str] = field(default=None, metadata={"help": "validation data, csv or json"})
    max_seq_length: int = field(default=128, metadata={"help": "longer inputs are truncated"})
    max_train_samples: Optional[int] = field(default=None, metadata={"help": "use only the first N training examples"})
    max_eval_samples: Optional[int] = field(default=None, metadata={"help": "use only the first N validation examples"})

    def __post_init__(self):
        if self.task_name is not None:
            self.task_name = self.task_name.lower()
            if self.task_name not in TASK_TO_KEYS:
                raise ValueError(f"unknown GLUE task {self.task_name!r}: choose one of {', '.join(TASK_TO_KEYS)}")
        elif self.train_file is None and self.validation_file is None:
            raise ValueError("give a GLUE --task_name, or --train_file / --validation_file (csv or json)")
        for path in (self.train_file, self.validation_file):
            if path is not None and path.rsplit(".", 1)[-1] not in ("csv", "json", "jsonl"):
                raise ValueError(f"{path}: the data files must be csv or json")


def load_raw_datasets(data: DataTrainingArguments, cache_dir: Optional[str]):
    if data.task_name is not None:
        return load_dataset("nyu-mll/glue", data.task_name, cache_dir=cache_dir)
    files = {split: path for split, path in (("train", data.train_file), ("validation", data.validation_file))
             if path is not None}
    extension = next(iter(files.values())).rsplit(".", 1)[-1]
    return load_dataset("csv" if extension == "csv" else "json", data_files=files, cache_dir=cache_dir)


def text_columns(data: DataTrainingArguments, columns):
    if data.task_name is not None:
        return TASK_TO_KEYS[data.task_name]
    if "sentence1" in columns:
        return "sentence1", "sentence2" if "sentence2" in columns else None
    others = [name for name in columns if name != "label"]
    if not others:
        raise ValueError("the data files have no text column besides 'label'")
    return others[0], others[1] if len(others) > 1 else None


def metric_function(task_name: Optional[str], regression: bool):
    def compute(prediction):
        logits, labels = prediction.predictions, prediction.label_ids
        if regression:
            from scipy.stats import pearsonr, spearmanr

            predicted = np.squeeze(logits, axis=-1) if logits.ndim > 1 else logits
            return {"pearson": float(pearsonr(predicted, labels)[0]),
                    "spearmanr": float(spearmanr(predicted, labels)[0]),
                    "mse": float(((predicted - labels) ** 2).mean())}
        predicted = logits.argmax(-1)
        metrics = {"accuracy": float((predicted == labels).mean())}
        if task_name == "cola":
            from sklearn.metrics import matthews_corrcoef

            metrics["matthews_correlation"] = float(matthews_corrcoef(labels, predicted))
        if task_name in ("mrpc", "qqp"):
            from sklearn.metrics import f1_score

            metrics["f1"] = float(f1_score(labels, predicted))
        return metrics

    return compute


def main(argv=None):
    parser = HfArgumentParser((ModelArguments, DataTrainingArguments, R3FTrainingArguments))
    if argv is None and len(sys.argv) == 2 and sys.argv[1].endswith(".json"):
        model_args, data_args, training_args = parser.parse_json_file(json_file=os.path.abspath(sys.argv[1]))
    else:
        model_args, data_args, training_args = parser.parse_args_into_dataclasses(args=argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO,
                        handlers=[logging.StreamHandler(sys.stdout)])
    method = "STD" if training_args.r3f_lambda == 0 else ("R4F" if model_args.r4f else "R3F")
    if model_args.r4f and training_args.r3f_lambda == 0:
        logger.warning("--r4f without --r3f_lambda: the head is spectrally normalised, but no R3F term is added")
    logger.info(f"method: {method} (r3f_lambda {training_args.r3f_lambda}, r3f_eps {training_args.r3f_eps}, "
                f"r3f_noise_type {training_args.r3f_noise_type}, r4f {model_args.r4f})")
    set_seed(training_args.seed)

    raw = load_raw_datasets(data_args, model_args.cache_dir)
    reference = raw["train"] if "train" in raw else raw["validation"]
    if data_args.task_name is not None:
        regression = data_args.task_name == "stsb"
        label_list = None if regression else reference.features["label"].names
    else:
        regression = reference.features["label"].dtype in ("float32", "float64")
        label_list = None if regression else sorted(set(raw["train" if "train" in raw else "validation"]["label"]))
    num_labels = 1 if regression else len(label_list)

    config = AutoConfig.from_pretrained(model_args.model_name_or_path, num_labels=num_labels,
                                        finetuning_task=data_args.task_name, cache_dir=model_args.cache_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_args.tokenizer_name or model_args.model_name_or_path,
                                              cache_dir=model_args.cache_dir)
    model = AutoModelForSequenceClassification.from_pretrained(
        model_args.model_name_or_path, config=config, cache_dir=model_args.cache_dir,
        ignore_mismatched_sizes=model_args.ignore_mismatched_sizes)
    if label_list is not None:
        label_to_id = {label: i for i, label in enumerate(label_list)}
        if data_args.task_name is None:  # names from the files; GLUE's labels are ids already
            model.config.label2id = {str(label): i for label, i in label_to_id.items()}
            model.config.id2label = {i: str(label) for label, i in label_to_id.items()}
    if model_args.r4f:
        model = apply_r4f(model)

    first, second = text_columns(data_args, reference.column_names)

    def preprocess(examples):
        texts = (examples[first],) if second is None else (examples[first], examples[second])
        encoded = tokenizer(*texts, truncation=True, max_length=data_args.max_seq_length)
        if data_args.task_name is None and label_list is not None:
            encoded["labels"] = [label_to_id[label] for label in examples["label"]]
        else:  # GLUE's class ids, or regression targets
            encoded["labels"] = examples["label"]
        return encoded

    # a new "labels" column: the files' own "label" column keeps its type (a string label would stay a string)
    datasets = raw.map(preprocess, batched=True, remove_columns=reference.column_names)
    train_set = eval_set = None
    if training_args.do_train:
        if "train" not in datasets:
            raise ValueError("--do_train needs a training split: give --train_file (or a --task_name)")
        train_set = datasets["train"]
        if data_args.max_train_samples is not None:
            train_set = train_set.select(range(min(data_args.max_train_samples, len(train_set))))
    if training_args.do_eval:
        split = "validation_matched" if data_args.task_name == "mnli" else "validation"
        if split not in datasets:
            raise ValueError("--do_eval needs a validation split: give --validation_file (or a --task_name)")
        eval_set = datasets[split]
        if data_args.max_eval_samples is not None:
            eval_set = eval_set.select(range(min(data_args.max_eval_samples, len(eval_set))))

    trainer = R3FTrainer(model=model, args=training_args, train_dataset=train_set, eval_dataset=eval_set,
                         processing_class=tokenizer, data_collator=DataCollatorWithPadding(tokenizer),
                         compute_metrics=metric_function(data_args.task_name, regression))
    results = {"method": method}
    if training_args.do_train:
        train_result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
        results.update({f"train_{k}" if not k.startswith("train_") else k: v
                        for k, v in train_result.metrics.items()})
        if model_args.r4f:  # plain matrices W / sigma: a stock from_pretrained gives the R4F model's logits
            trainer.model = fold_r4f(trainer.model)
        trainer.save_model()
        trainer.save_state()
    if training_args.do_eval:
        results.update(trainer.evaluate())
    if training_args.should_save:
        os.makedirs(training_args.output_dir, exist_ok=True)
        with open(os.path.join(training_args.output_dir, "all_results.json"), "w") as f:
            json.dump(results, f, indent=1)
    logger.info(f"results: {results}")
    return results


if __name__ == "__main__":
    try:
        main()
    finally:  # torch's shutdown rule under torchrun: a rank that exits with its gloo group alive can abort
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
