"""What the probing drivers run: the fine-tuning methods as fairseq-train flag sets, and the GLUE values.

The per-task and shared GLUE values are read from ``fairseq_r3f/hparams`` (``glue_tasks.tsv``, ``glue.tsv``),
the tables recipes/glue.sh reads too: appendix A.2 says probing uses the fine-tuning values. The methods are
defined here only, and every driver can replace or add one with ``--method NAME=FLAGS``.
"""

import os
import shlex
from dataclasses import dataclass, field
from typing import Dict, List, Optional

from fairseq_r3f.tools import USER_DIR, read_table  # noqa: F401  (USER_DIR: used by the drivers)


# fairseq-train flags a sentence_prediction criterion needs to log a task's metric.
METRIC_FLAGS = {
    "accuracy": [],
    "mcc": ["--report-mcc"],
    "f1": ["--report-acc-and-f1"],
    "acc_and_f1": ["--report-acc-and-f1"],
    "pearson": ["--regression-target", "--report-pearson-and-spearman"],
    "spearman": ["--regression-target", "--report-pearson-and-spearman"],
}


@dataclass
class Method:
    """A fine-tuning method: its criterion flags, and whether it needs the spectrally normalised head
    (R4F), which the drivers express as the ``*_sn_*`` variant of ``--arch``."""

    name: str
    flags: List[str] = field(default_factory=list)
    spectral_norm_head: bool = False

    def train_flags(self, arch: str) -> List[str]:
        return self.flags + (["--arch", sn_arch(arch)] if self.spectral_norm_head else [])


def sn_arch(arch: str) -> str:
    """roberta_large -> roberta_sn_large, bart_base -> bart_sn_base (the plugin's R4F architectures)."""
    if "_sn_" in arch:
        return arch
    for family in ("roberta", "bart"):
        if arch.startswith(family + "_"):
            return family + "_sn_" + arch[len(family) + 1:]
    raise ValueError(
        f"R4F needs the spectrally normalised variant of --arch {arch}, and the plugin has roberta_sn_* and "
        f"bart_sn_* only: use a RoBERTa/XLM-R or BART architecture"
    )


def builtin_methods(shared: Dict[str, str]) -> Dict[str, Method]:
    """The paper's methods. STD++ is the paper's budget and optimiser with the plain cross-entropy; R3F and
    R4F take lambda, noise type and eps from fairseq_r3f/hparams/glue.tsv; SMART its criterion's defaults."""
    r3f = [
        "--criterion", "sentence_prediction_r3f", "--r3f-lambda", shared["r3f_lambda"],
        "--noise-type", shared["noise_type"], "--eps", shared["eps"],
    ]
    return {
        "std++": Method("std++", ["--criterion", "sentence_prediction"]),
        "smart": Method("smart", ["--criterion", "sentence_prediction_smart"]),
        "r3f": Method("r3f", r3f),
        "r4f": Method("r4f", r3f, spectral_norm_head=True),
    }


def parse_method_overrides(overrides: List[str], methods: Dict[str, Method]) -> Dict[str, Method]:
    """Applies ``NAME=FLAGS`` overrides: a built-in keeps whether its head is spectrally normalised (r4f),
    a new name runs on the plain --arch unless its FLAGS give one."""
    methods = dict(methods)
    for item in overrides:
        name, sep, flags = item.partition("=")
        if not sep or not name.strip():
            raise ValueError(
                f"--method {item!r}: write NAME=FLAGS, e.g. r3f='--criterion sentence_prediction_r3f --r3f-lambda 0.5'"
            )
        name = name.strip()
        if "/" in name or name.startswith("."):
            raise ValueError(f"--method {item!r}: a method name is used as a folder name; drop the '/' or leading '.'")
        previous = methods.get(name)
        methods[name] = Method(name, shlex.split(flags), previous.spectral_norm_head if previous else False)
    return methods


@dataclass
class GlueHparams:
    shared: Dict[str, str]
    tasks: Dict[str, Dict[str, str]]

    @classmethod
    def load(cls, folder: Optional[str] = None) -> "GlueHparams":
        def table(name):
            return read_table(os.path.join(folder, name) if folder else name)

        shared = {name: row["value"] for name, row in table("glue.tsv").items()}
        return cls(shared, table("glue_tasks.tsv"))

    def task(self, name: str) -> Dict[str, str]:
        if name not in self.tasks:
            raise ValueError(
                f"task {name} has no row in glue_tasks.tsv (it has {', '.join(self.tasks)}): use one of those "
                f"names for DATA_ROOT/<TASK>-bin, or pass --hparams with a table that has {name}"
            )
        return self.tasks[name]

    def metric(self, task: str) -> str:
        metric = self.task(task)["metric"]
        if metric not in METRIC_FLAGS:
            raise ValueError(f"glue_tasks.tsv: metric {metric!r} of {task} is not one of {', '.join(METRIC_FLAGS)}")
        return metric

    def training_flags(self, task: str, arch: str) -> List[str]:
        """Model, optimiser, schedule and batch of one GLUE run (appendix Tables 5 and 6), for fine-tuning
        and probing alike; the caller adds the task, criterion, seed and output flags."""
        row, s = self.task(task), self.shared
        max_update = int(row["max_update"])
        warmup = int(float(s["warmup_ratio"]) * max_update)
        return [
            "--num-classes", row["num_classes"], "--init-token", "0", "--separator-token", "2",
            "--max-positions", s["max_positions"], "--shorten-method", "truncate", "--arch", arch,
            "--dropout", s["dropout"], "--attention-dropout", s["attention_dropout"],
            "--weight-decay", s["weight_decay"], "--optimizer", "adam", "--adam-betas", s["adam_betas"],
            "--adam-eps", s["adam_eps"], "--clip-norm", s["clip_norm"], "--lr-scheduler", s["lr_scheduler"],
            "--lr", row["lr"], "--total-num-update", str(max_update), "--warmup-updates", str(warmup),
            "--max-update", str(max_update), "--batch-size", row["batch_size"], "--max-tokens", s["max_tokens"],
            "--required-batch-size-multiple", "1",  # or validation drops len % 8 examples
            "--valid-subset", "valid", "--best-checkpoint-metric", self.metric(task),
            "--maximize-best-checkpoint-metric", *METRIC_FLAGS[self.metric(task)],
        ]
