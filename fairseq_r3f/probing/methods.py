"""What the probing drivers run: the fine-tuning methods as fairseq-train flag sets, and the GLUE values.

The per-task and shared GLUE values are read from ``fairseq_r3f/hparams`` (``glue_tasks.tsv``, ``glue.tsv``),
the tables recipes/glue.sh reads too (appendix A.2: probing uses the fine-tuning values); the run layer's
``r3f_runs.plan.sentence_prediction_command``, which builds the recipes' GLUE runs, turns them into a
command (``GlueHparams.command``), and the method -> criterion map, ``flag_value`` and ``sn_arch`` are the run
layer's too. The methods are defined here only; every driver can
replace a built-in method's settings or add a method with ``--method NAME=FLAGS``, and flags that would make
a built-in method another one (another criterion, the other kind of classification head) are refused.
"""

import os
import shlex
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

from r3f_runs.plan import sentence_prediction_command
from r3f_runs.settings import metric_flags_supported
from r3f_runs.tables import read_table
from r3f_runs.values import flag_value
from r3f_runs.vocabulary import SENTENCE_METHODS, is_outproj_sn_arch, is_sn_arch, sn_arch

# The metrics a sentence_prediction criterion logs (with glue_tasks.tsv's metric_flags).
METRICS = ("accuracy", "mcc", "f1", "acc_and_f1", "pearson", "spearman")


@dataclass
class Method:
    """A fine-tuning method: its criterion, its other fairseq-train flags, and whether it needs the spectrally
    normalised head (R4F), which the drivers express as the ``*_sn_*`` variant of ``--arch``."""

    name: str
    criterion: Optional[str]
    flags: List[str] = field(default_factory=list)
    spectral_norm_head: bool = False
    builtin: bool = False

    def train_flags(self, arch: str) -> List[str]:
        criterion = ["--criterion", self.criterion] if self.criterion else []
        return criterion + self.flags + (["--arch", sn_arch(arch)] if self.spectral_norm_head else [])


# SMART's options whose single-run values glue.tsv gives (smart_lambda, ...), as recipes/glue.sh passes them.
SMART_OPTIONS = ("lambda", "steps", "step_size", "eps", "init", "norm")


def builtin_methods(shared: Dict[str, str]) -> Dict[str, Method]:
    """The paper's methods. STD++ is the paper's budget and optimiser with the plain cross-entropy; R3F and
    R4F take lambda, noise type and eps from fairseq_r3f/hparams/glue.tsv, SMART its smart_* values (a
    --hparams table without them leaves the criterion's defaults)."""
    r3f = ["--r3f-lambda", shared["r3f_lambda"], "--noise-type", shared["noise_type"], "--eps", shared["eps"]]
    smart = [item for name in SMART_OPTIONS if f"smart_{name}" in shared
             for item in (f"--smart-{name.replace('_', '-')}", shared[f"smart_{name}"])]
    flags = {"std++": [], "smart": smart, "r3f": r3f, "r4f": r3f}
    return {name: Method(name, SENTENCE_METHODS[name][0], method_flags,
                         spectral_norm_head=SENTENCE_METHODS[name][2], builtin=True)
            for name, method_flags in flags.items()}


def without_flag(flags: Sequence[str], name: str) -> List[str]:
    """``flags`` without any ``name VALUE`` or ``name=VALUE``."""
    kept, skip = [], False
    for flag in flags:
        if skip:
            skip = False
        elif flag == name:
            skip = True
        elif not flag.startswith(name + "="):
            kept.append(flag)
    return kept


def parse_method_overrides(overrides: List[str], methods: Dict[str, Method]) -> Dict[str, Method]:
    """Applies ``NAME=FLAGS`` overrides. A built-in method keeps its criterion and whether its head is
    spectrally normalised (r4f): FLAGS replace its other flags, and FLAGS that name another criterion or
    architecture are refused, since the run would no longer be that method. A new name runs FLAGS as given,
    on the plain --arch unless FLAGS give one."""
    methods = dict(methods)
    for item in overrides:
        name, sep, text = item.partition("=")
        if not sep or not name.strip():
            raise ValueError(
                f"--method {item!r}: write NAME=FLAGS, e.g. r3f='--r3f-lambda 0.5 --noise-type normal'"
            )
        name, flags = name.strip(), shlex.split(text)
        if "/" in name or name.startswith("."):
            raise ValueError(f"--method {item!r}: a method name is used as a folder name; drop the '/' or leading '.'")
        previous = methods.get(name)
        if previous is None or not previous.builtin:
            methods[name] = Method(name, None, flags)
            continue
        criterion = flag_value(flags, "--criterion")
        if criterion not in (None, previous.criterion):
            raise ValueError(
                f"--method {item!r}: {name} runs --criterion {previous.criterion}, these flags give {criterion}; "
                f"leave --criterion out, or give the method a new name (--method mine='...')"
            )
        if flag_value(flags, "--arch") is not None:
            raise ValueError(
                f"--method {item!r}: the architecture comes from the driver's --arch ({name} runs "
                f"{'its *_sn_* variant' if previous.spectral_norm_head else 'it as given'}); drop --arch here, "
                f"or give the method a new name"
            )
        flags = without_flag(flags, "--criterion")
        methods[name] = Method(name, previous.criterion, flags, previous.spectral_norm_head, builtin=True)
    return methods


def check_overrides(method: Method, arch: str, extra: Sequence[str]) -> None:
    """Refuses flags after ``--`` that would turn a built-in method into another one: an architecture with the
    other kind of head (r4f on a plain head is R3F, r3f on an SN head is R4F), another criterion, or fairseq's
    own spectral norm of the head's output projection."""
    if not method.builtin:
        return
    given = flag_value(extra, "--arch")
    if given is not None and is_outproj_sn_arch(given):
        raise ValueError(f"'--arch {given}' after -- is fairseq's released out_proj-only head, which is none of the "
                         f"probing methods (recipes/glue.sh RTE r4f-released runs it): drop it")
    if given is not None and is_sn_arch(given) != method.spectral_norm_head:
        plain = given.replace("_sn_", "_")
        head = "a plain classification head, which is R3F" if method.spectral_norm_head else \
            "the spectrally normalised head, which is R4F"
        raise ValueError(
            f"'--arch {given}' after -- gives {method.name} {head}: drop it and pass the driver --arch {plain} "
            f"(r4f then runs {sn_arch(plain)}, the other methods {plain}), or run method "
            f"{'r3f' if method.spectral_norm_head else 'r4f'}"
        )
    criterion = flag_value(extra, "--criterion")
    if criterion is not None and criterion != method.criterion:
        raise ValueError(
            f"'--criterion {criterion}' after -- replaces {method.name}'s {method.criterion}: drop it and choose "
            f"the methods with --methods, or define one with --method NAME='--criterion {criterion} ...'"
        )
    if "--spectral-norm-classification-head" in [*method.flags, *extra]:
        raise ValueError(
            f"'--spectral-norm-classification-head' is fairseq's spectral norm of the head's output projection "
            f"only, which is not {method.name}: drop it (method r4f normalises the whole head)"
        )


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
        if metric not in METRICS:
            raise ValueError(f"glue_tasks.tsv: metric {metric!r} of {task} is not one of {', '.join(METRICS)}")
        return metric

    def metric_flags(self, task: str) -> List[str]:
        """The sentence_prediction flags that log the task's metrics (glue_tasks.tsv's metric_flags)."""
        row = self.task(task)
        if "metric_flags" not in row:
            raise ValueError(f"glue_tasks.tsv has no metric_flags column (the flags that log {task}'s "
                             f"{row['metric']}): copy it from fairseq_r3f/hparams/glue_tasks.tsv")
        return [flag for flag in row["metric_flags"].split() if flag != "-"]

    def command(self, data: str, task: str, arch: str, fairseq_task: str, criterion: str, method_flags: List[str],
                seed: int, save_dir: str, last: List[str]) -> List[str]:
        """One GLUE fine-tuning or probing run (appendix Tables 5 and 6) as fairseq-train arguments, built as the
        recipes build theirs (r3f_runs.plan.sentence_prediction_command); ``method_flags`` follow the
        criterion, ``last`` (the driver's own flags) ends the list. Validation on the task's first subset."""
        row, s = self.task(task), self.shared
        max_update = int(row["max_update"])
        warmup = int(float(s["warmup_ratio"]) * max_update)
        values = {**s, "weight_decay": s["weight_decay"]}
        return sentence_prediction_command(
            data, fairseq_task, row["num_classes"], s["max_positions"], [arch], criterion,
            ["--lr", row["lr"], *metric_flags_supported(self.metric_flags(task)), *method_flags], values,
            max_update, warmup, [], int(row["batch_size"]), "valid", self.metric(task), str(seed), save_dir,
            ["--required-batch-size-multiple", "1", *last])  # or validation drops len % 8 examples
