"""Writes the hydra configs in fairseq_r3f/config/ from the hyper-parameter tables in fairseq_r3f/hparams/.

    python -m fairseq_r3f.config.generate           # rewrite every YAML
    python -m fairseq_r3f.config.generate --check   # exit 1 if a YAML differs from what the tables give

Each config sets what the matching recipe (recipes/glue.sh, xnli.sh, summarization.sh) passes to fairseq-train
on one GPU: the effective batch is dataset.batch_size (GLUE, XNLI) or max_tokens x update_freq tokens
(summarization). The pretrained checkpoint and the data are left as ``???``, to be given on the command line.
"""

import argparse
import json
import os
import re
import sys
from typing import Dict, List, Tuple

import yaml

from r3f_runs.vocabulary import SENTENCE_METHODS
from r3f_runs.tables import read_table

CONFIG_DIR = os.path.dirname(os.path.abspath(__file__))

# The metric each GLUE task reports and is selected on comes from glue_tasks.tsv; these are the criterion flags
# that make the criterion log it (as recipes/glue.sh passes them).
def _method(name: str, text: str):
    """(description, criterion, architecture) of a method, its criterion and head from the run layer's map."""
    criterion, _, spectral_norm_head = SENTENCE_METHODS[name]
    return text, criterion, "roberta_sn_large" if spectral_norm_head else "roberta_large"


GLUE_METHODS = {
    "stdpp": _method("std++", "STD++: the paper's budget and optimiser with the plain cross-entropy"),
    "r3f": _method("r3f", "R3F: STD++ plus lambda x symmetric KL under noise"),
    "r4f": _method("r4f", "R4F: R3F on a spectrally normalised classification head"),
}
XNLI_METHODS = {
    "std": _method("std", "the plain cross-entropy (the baseline)"),
    "r3f": _method("r3f", "R3F: lambda x symmetric KL under noise"),
    "r4f": _method("r4f", "R4F: R3F on a spectrally normalised classification head"),
}
SUMMARIZATION_DATASETS = ("cnn_dm", "gigaword", "reddit_tifu")

Config = Dict[str, Dict[str, object]]


def file_stem(task: str) -> str:
    """fairseq's file names for GLUE tasks: SST-2 -> sst_2."""
    return task.lower().replace("-", "_")


def number(text: str):
    """A table cell as an int when it is one, else a float."""
    return int(text) if re.fullmatch(r"-?\d+", text) else float(text)


def warmup_updates(ratio: str, max_update: int) -> int:
    return int(float(ratio) * max_update)  # truncated, as the recipes' awk printf "%d"


def single_run_choice(criterion: str) -> str:
    """For R3F/R4F configs, the header's note that lambda and the noise type are a choice (the paper gives grids)."""
    if criterion != "sentence_prediction_r3f":
        return ""
    return ";\nlambda and noise type: our single-run choice (the paper gives their grids)"


def fp16_common(log_interval: int = 100) -> Dict[str, object]:
    """recipes/common.sh's FP16=1 flags (the authors' loss-scale settings) and logging."""
    return {"fp16": True, "fp16_init_scale": 4, "threshold_loss_scale": 1, "fp16_scale_window": 128,
            "log_format": "json", "log_interval": log_interval}


def sentence_prediction_config(shared: Dict[str, str], num_classes: int, metric: str, valid: str, criterion: str,
                               arch: str, lr: str, max_update: int, batch_size: int, warmup: int,
                               criterion_flags: Dict[str, object]) -> Config:
    """A GLUE or XNLI run; ``shared`` holds the values of glue.tsv or xnli.tsv."""
    criterion_block: Dict[str, object] = {"_name": criterion, **criterion_flags}
    if criterion == "sentence_prediction_r3f":
        criterion_block.update(r3f_lambda=number(shared["r3f_lambda"]), noise_type=shared["noise_type"],
                               eps=number(shared["eps"]))
    return {
        "common": fp16_common(),
        "task": {"_name": "sentence_prediction", "data": "???", "init_token": 0, "separator_token": 2,
                 "num_classes": num_classes, "max_positions": number(shared["max_positions"]),
                 "shorten_method": "truncate"},
        # finetune_from_model, not restore_file + reset_*: fairseq loads the pretrained model only while the run
        # has no checkpoint_last.pt of its own, so the same command resumes a stopped run
        "checkpoint": {"finetune_from_model": "???", "best_checkpoint_metric": metric,
                       "maximize_best_checkpoint_metric": True, "no_epoch_checkpoints": True},
        "distributed_training": {"find_unused_parameters": True, "distributed_world_size": 1},
        "criterion": criterion_block,
        "dataset": {"batch_size": batch_size, "required_batch_size_multiple": 1,
                    "max_tokens": number(shared["max_tokens"]), "valid_subset": valid},
        "optimizer": {"_name": "adam", "weight_decay": number(shared["weight_decay"]),
                      "adam_betas": shared["adam_betas"], "adam_eps": number(shared["adam_eps"])},
        "lr_scheduler": {"_name": shared["lr_scheduler"], "warmup_updates": warmup},
        "optimization": {"clip_norm": number(shared["clip_norm"]), "lr": [number(lr)], "max_update": max_update},
        "model": {"_name": arch, "dropout": number(shared["dropout"]),
                  "attention_dropout": number(shared["attention_dropout"])},
    }


def metric_flag_fields(flags: str) -> Config:
    """glue_tasks.tsv's metric_flags (``--report-mcc``, ``-`` for none) as criterion fields (report_mcc: true)."""
    return {flag[2:].replace("-", "_"): True for flag in flags.split() if flag != "-"}


def glue_configs() -> List[Tuple[str, str, Config]]:
    shared = {name: row["value"] for name, row in read_table("glue.tsv").items()}
    configs = []
    for task, row in read_table("glue_tasks.tsv").items():
        max_update = number(row["max_update"])
        for method, (what, criterion, arch) in GLUE_METHODS.items():
            header = (f"GLUE {task}, {what}.\nlr, updates, batch: paper Table 5 (fairseq_r3f/hparams/glue_tasks.tsv);"
                      f"\nthe rest: Table 6 and RoBERTa's GLUE configs (fairseq examples/roberta/config/finetuning)"
                      f"{single_run_choice(criterion)}.\nEach value's source: fairseq_r3f/hparams/glue.tsv.")
            config = sentence_prediction_config(
                shared, number(row["num_classes"]), row["metric"], row["valid_subsets"], criterion,
                arch, row["lr"], max_update, number(row["batch_size"]), warmup_updates(shared["warmup_ratio"],
                                                                                      max_update),
                metric_flag_fields(row["metric_flags"]))
            name = os.path.join("glue", f"{file_stem(task)}_{method}.yaml")
            configs.append((name, header + usage(name, f"GLUE_BIN/{task}-bin"), config))
    return configs


def xnli_configs() -> List[Tuple[str, str, Config]]:
    from fairseq_r3f.preprocess.xnli import LANGUAGES

    shared = {name: row["value"] for name, row in read_table("xnli.tsv").items()}
    max_update = number(shared["max_update"])
    valid = ",".join(f"valid_{language}" for language in LANGUAGES)  # English first: it chooses the checkpoint
    configs = []
    for method, (what, criterion, arch) in XNLI_METHODS.items():
        header = (f"Zero-shot XNLI with XLM-R large, {what}:\ntrain on English MNLI, validate on the 15 languages of "
                  f"Table 3.\nValues: paper Table 9; warm-up, attention dropout and clip norm: our choices"
                  f"{single_run_choice(criterion)}.\nEach value's source: fairseq_r3f/hparams/xnli.tsv.")
        config = sentence_prediction_config(
            shared, number(shared["num_classes"]), "accuracy", valid, criterion, arch, shared["lr"], max_update,
            number(shared["batch_size"]), warmup_updates(shared["warmup_ratio"], max_update), {})
        name = os.path.join("xnli", f"xnli_{method}.yaml")
        configs.append((name, header + usage(name, "XNLI_BIN"), config))
    return configs


def summarization_configs() -> List[Tuple[str, str, Config]]:
    table = read_table("summarization.tsv")
    configs = []
    for dataset in SUMMARIZATION_DATASETS:
        value = {name: row[dataset] for name, row in table.items()}
        update_freq = number(value["reference_gpus"]) * number(value["reference_update_freq"])
        header = (f"{dataset} summarization: BART-large fine-tuned with R3F (label-smoothed cross-entropy plus "
                  f"lambda x symmetric KL).\nValues: paper Tables 7 and 8; attention dropout and label smoothing: "
                  f"BART's CNN/DM recipe\n(each value's source: fairseq_r3f/hparams/summarization.tsv).\n"
                  f"Tokens per update = max_tokens x update_freq x GPUs = {number(value['max_tokens']) * update_freq}"
                  f" (the table assumes {value['reference_gpus']} GPUs;\nthe paper gives no GPU count); on N GPUs set "
                  f"optimization.update_freq=[{update_freq}/N].")
        config: Config = {
            "common": fp16_common(),
            "task": {"_name": "translation", "data": "???", "source_lang": "source", "target_lang": "target",
                     "truncate_source": True},
            "checkpoint": {"finetune_from_model": "???", "no_epoch_checkpoints": True},
            "distributed_training": {"find_unused_parameters": True, "distributed_world_size": 1},
            "criterion": {"_name": "label_smoothed_cross_entropy_r3f",
                          "label_smoothing": number(value["label_smoothing"]),
                          "r3f_lambda": number(value["r3f_lambda"]), "noise_type": value["noise_type"],
                          "eps": number(value["eps"]), "r3f_kl_normalization": value["r3f_kl_normalization"]},
            "dataset": {"max_tokens": number(value["max_tokens"]), "required_batch_size_multiple": 1,
                        "skip_invalid_size_inputs_valid_test": True},
            "optimizer": {"_name": value["optimizer"], "weight_decay": number(value["weight_decay"]),
                          "adam_betas": value["adam_betas"], "adam_eps": number(value["adam_eps"])},
            "lr_scheduler": {"_name": value["lr_scheduler"], "warmup_updates": number(value["warmup_updates"])},
            "optimization": {"clip_norm": number(value["clip_norm"]), "lr": [number(value["lr"])],
                             "max_update": number(value["total_updates"]), "update_freq": [update_freq]},
            "model": {"_name": value["arch"], "dropout": number(value["dropout"]),
                      "attention_dropout": number(value["attention_dropout"]), "layernorm_embedding": True,
                      "share_all_embeddings": True, "share_decoder_input_output_embed": True},
        }
        name = os.path.join("summarization", f"{dataset}_r3f.yaml")
        configs.append((name, header + usage(name, f"{dataset.upper()}_BIN", "checkpoint.finetune_from_model"),
                        config))
    return configs


def scalar(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(scalar(v) for v in value) + "]"
    text = str(value)
    plain = re.fullmatch(r"[\w.,()?+ -]+", text) and not text.startswith((" ", "-")) and yaml.safe_load(text) == text
    return text if plain else json.dumps(text)


def usage(name: str, data: str, model: str = "checkpoint.finetune_from_model") -> str:
    """The header lines that show how the config is run."""
    folder, stem = os.path.dirname(name), os.path.splitext(os.path.basename(name))[0]
    return (f"\n\n  fairseq-hydra-train --config-dir CONFIG_DIR/{folder} --config-name {stem} \\\n"
            f"    task.data={data} {model}=model.pt common.user_dir=USER_DIR")


def render(header: str, config: Config) -> str:
    lines = ["# @package _global_"]
    lines += [("# " + line).rstrip() for line in header.split("\n")]
    lines += [
        "#",
        "# CONFIG_DIR: python -c 'import fairseq_r3f.config as c; print(c.CONFIG_DIR)'; USER_DIR: its parent folder.",
        "# Written by python -m fairseq_r3f.config.generate from fairseq_r3f/hparams: edit the tables, not this file.",
    ]
    for group, fields in config.items():
        lines += ["", f"{group}:"] + [f"  {key}: {scalar(value)}" for key, value in fields.items()]
    return "\n".join(lines) + "\n"


def all_configs() -> Dict[str, str]:
    """{path relative to fairseq_r3f/config: YAML text} for every config."""
    return {name: render(header, config)
            for name, header, config in glue_configs() + xnli_configs() + summarization_configs()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 when a file is stale")
    args = parser.parse_args(argv)
    stale = []
    for name, text in all_configs().items():
        path = os.path.join(CONFIG_DIR, name)
        current = open(path, encoding="utf-8").read() if os.path.exists(path) else None
        if current == text:
            continue
        stale.append(name)
        if not args.check:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
    if args.check and stale:
        print(f"{len(stale)} config(s) differ from the tables ({', '.join(stale)}): run python -m "
              f"fairseq_r3f.config.generate", file=sys.stderr)
        return 1
    if not args.check:
        print(f"wrote {len(stale)} of {len(all_configs())} configs in {CONFIG_DIR}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
