"""Settings from the environment (NGPUS, SEEDS, SWEEP, FP16, TINY, ...) and the checks every planner makes.

``Settings`` reads each variable like an option and names it when it is wrong; ``check_overrides`` refuses flags
after METHOD that would make a run another method (another criterion, the other head, the R3F term on a method
without it); ``check_precision`` refuses half precision where torch sees no GPU. Importing torch (for the GPU
question) and the plugin's compat module (for the metric flags of the installed fairseq) waits until a launch
asks: a dry run needs neither.
"""

import os
import re
import shutil
from dataclasses import dataclass
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from r3f_runs.tables import USER_DIR
from r3f_runs.values import die, fail, flag_value, has_flag, is_int, is_number, same_value, words
from r3f_runs.vocabulary import (
    OUTPROJ_HEAD, SENTENCE_METHODS, head_of_arch, is_outproj_sn_arch, method_of_criterion, plain_arch,
)


@dataclass
class Settings:
    """The environment of a launch, checked: every value like an option, naming the variable."""

    env: Mapping[str, str]

    def __post_init__(self):
        self.ngpus = self.text("NGPUS", "1")
        self.nnodes = self.text("NNODES", "1")
        self.update_freq = self.text("UPDATE_FREQ", "1")
        self.batch_reading = self.text("BATCH_READING", "effective")
        self.launcher = self.text("LAUNCHER", "local")
        self.master_port = self.text("MASTER_PORT", "29500")
        self.fp16 = self.flag("FP16", "1")
        self.dry_run = self.flag("DRY_RUN", "0")
        self.tiny = self.flag("TINY", "0")
        self.tiny_updates = self.text("TINY_UPDATES", "4")
        self.sweep = self.flag("SWEEP", "0")
        self.sweep_size = self.text("SWEEP_SIZE", "")
        self.world_size = 1
        self.notes: List[str] = []  # lines for stderr, in order; printed even when the plan stops

    def which(self, program: str) -> Optional[str]:
        return shutil.which(program, path=self.env.get("PATH"))

    def text(self, name: str, default: str = "") -> str:
        """VAR's value, or ``default`` when unset or empty (as ${VAR:-default})."""
        return self.env.get(name) or default

    def flag(self, name: str, default: str) -> bool:
        value = self.text(name, default)
        if value not in ("0", "1"):
            die(f"{name}={value}: give 1 (on) or 0 (off)")
        return value == "1"

    def check_launch(self, tiny_python_check: bool = True) -> None:
        for name, value in (("NGPUS", self.ngpus), ("NNODES", self.nnodes), ("UPDATE_FREQ", self.update_freq),
                            ("TINY_UPDATES", self.tiny_updates), ("MASTER_PORT", self.master_port)):
            if not is_int(value):
                die(f"{name}={value} must be a positive integer")
        if self.sweep_size and not is_int(self.sweep_size):
            die(f"SWEEP_SIZE={self.sweep_size} must be a positive integer")
        if self.launcher not in ("local", "torchrun", "slurm"):
            die(f"LAUNCHER={self.launcher}: choose local, torchrun or slurm")
        if self.batch_reading not in ("effective", "per_gpu"):
            die(f"BATCH_READING={self.batch_reading}: choose effective or per_gpu")
        nnodes, ngpus = int(self.nnodes), int(self.ngpus)
        self.world_size = ngpus * nnodes
        if self.launcher == "local" and nnodes > 1:
            die(f"NNODES={nnodes} needs LAUNCHER=slurm or LAUNCHER=torchrun (the local launcher starts one node)")
        if self.launcher == "torchrun" and nnodes > 1 and not self.env.get("MASTER_ADDR"):
            die(f"LAUNCHER=torchrun with NNODES={nnodes} needs MASTER_ADDR (the host name of the first node)")
        if self.tiny and (self.world_size > 1 or self.launcher != "local"):
            die("TINY=1 runs one CPU process: use NGPUS=1 NNODES=1 LAUNCHER=local (check launch lines with DRY_RUN=1)")
        if not self.dry_run and self.which("fairseq-train") is None:
            die("fairseq-train not found: activate the environment with fairseq and the plugin")

    def fp16_note(self, notes: List[str]) -> None:
        if self.fp16 and not self.tiny and not cuda_available():
            if self.dry_run:
                notes.append("# note: FP16=1 needs a CUDA GPU, which this machine lacks: these commands run on a "
                             "GPU machine (or use FP16=0)")
            else:
                fail("FP16=1 (the default) needs a CUDA GPU and torch sees none here: use FP16=0 for fp32, or run "
                     "on a GPU")

    def per_gpu_batch(self, effective: int) -> int:
        split = self.world_size * int(self.update_freq)
        if effective % split:
            die(f"the effective batch {effective} (the paper's) is not divisible by NGPUS x NNODES x UPDATE_FREQ = "
                f"{split}; choose GPUs and UPDATE_FREQ whose product divides {effective}")
        return effective // split

    def launch_prefix(self) -> Tuple[List[str], List[str]]:
        """The command that starts fairseq-train, and the distributed flags."""
        dist: List[str] = []
        if self.world_size > 1:
            # fairseq's default c10d DDP; RoBERTa's LM head takes no part in sentence prediction, hence
            # --find-unused-parameters (tests/test_distributed.py: R3F's two forwards per backward are fine).
            dist = ["--distributed-world-size", str(self.world_size), "--find-unused-parameters"]
        if self.launcher == "local":
            return ["fairseq-train"], dist
        if self.launcher == "torchrun":
            launch = ["torchrun", "--nnodes", self.nnodes, "--nproc-per-node", self.ngpus]
            if int(self.nnodes) > 1:
                launch += ["--rdzv-backend", "c10d", "--rdzv-endpoint", f"{self.env['MASTER_ADDR']}:{self.master_port}",
                           "--rdzv-id", self.text("RDZV_ID", "r3f")]
            else:
                launch += ["--master-port", self.master_port]
            return launch + [self.which("fairseq-train") or "fairseq-train"], dist
        return (["srun", "--nodes", self.nnodes, "--ntasks-per-node", self.ngpus, "--gpus-per-node", self.ngpus,
                 "fairseq-train"], dist + ["--distributed-port", self.master_port])

    def shared_flags(self) -> List[str]:
        flags = ["--user-dir", USER_DIR, "--log-format", "json", "--required-batch-size-multiple", "1",
                 "--no-epoch-checkpoints", "--update-freq", self.update_freq]
        if self.tiny:
            return flags + ["--cpu", "--num-workers", "0", "--log-interval", "1"]
        flags += ["--log-interval", "100"]
        if self.fp16:
            flags += ["--fp16", "--fp16-init-scale", "4", "--threshold-loss-scale", "1", "--fp16-scale-window", "128"]
        return flags


_CUDA: Optional[bool] = None


def cuda_available() -> bool:
    global _CUDA
    if _CUDA is None:
        try:
            import torch

            _CUDA = bool(torch.cuda.is_available())
        except ImportError:
            _CUDA = False
    return _CUDA


def require_dir(variable: str, path: str, what: str) -> None:
    if not path:
        die(f"{variable} is not set: {what}")
    if not os.path.isdir(path):
        die(f"{variable}={path}: no such folder ({what})")


def require_file(variable: str, path: str, what: str) -> None:
    if not path:
        die(f"{variable} is not set: {what}")
    if not os.path.isfile(path):
        die(f"{variable}={path}: no such file ({what})")


def seeds_of(settings: Settings, default: int) -> List[str]:
    value = settings.env.get("SEEDS") or " ".join(str(s) for s in range(1, default + 1))
    seeds = words(value)
    for seed in seeds:
        if not re.match(r"^[0-9]+$", seed):
            die(f'SEEDS="{" ".join(seeds)}": seeds must be integers (got {seed})')
    if not seeds:
        die("SEEDS is empty: give at least one seed")
    return seeds


@dataclass
class R3FSettings:
    lambdas: List[str]
    noise_types: List[str]
    eps: str
    table_eps: str


def r3f_settings(settings: Settings, uses_r3f: bool, lookup: Callable[[str], str],
                 lambda_variable: str = "R3F_LAMBDA", lambda_env: Optional[str] = None,
                 noise_env: Optional[str] = None) -> R3FSettings:
    """The R3F settings a recipe runs: with SWEEP=1 the table's grid (LAMBDAS / NOISE_TYPES narrow it), else
    R3F_LAMBDA / NOISE_TYPE or the table's single-run default; a method without R3F runs with lambda 0."""
    env = settings.env
    table_eps = lookup("eps")
    eps = env.get("R3F_EPS") or table_eps
    if not uses_r3f:
        lambdas, noises = ["0"], ["none"]
        variable = lambda_variable
    elif settings.sweep:
        lambdas = words(env.get("LAMBDAS") or lookup("r3f_lambda_grid"))
        noises = words(env.get("NOISE_TYPES") or lookup("noise_type_grid"))
        variable = "LAMBDAS"
    else:
        lambdas = words((env.get("R3F_LAMBDA") if lambda_env is None else lambda_env) or lookup("r3f_lambda"))
        noises = words((env.get("NOISE_TYPE") if noise_env is None else noise_env) or lookup("noise_type"))
        variable = lambda_variable
    for noise in noises:
        if noise not in ("uniform", "normal", "none"):
            die(f"noise type {noise}: choose uniform or normal (or none)")
    for value in lambdas:
        if not is_number(value):
            die(f"{variable}: lambda {value} is not a non-negative number (finite, e.g. 1.0)")
    if not is_number(eps):
        die(f"R3F_EPS: eps {eps} is not a finite non-negative number (e.g. 1e-5)")
    return R3FSettings(lambdas, noises, eps, table_eps)


def check_overrides(settings: Settings, method: str, criterion: str, task: str, uses_r3f: bool,
                    configured: Dict[str, Tuple[str, List[str]]], args: Sequence[str], seq2seq: bool = False) -> None:
    """Refuses flags after METHOD that would make a run something else than its label says: another
    architecture family (with or without R4F's spectrally normalised head), criterion or task, or R3F settings
    that contradict the configuration (their environment variable sets them). ``configured``: flag ->
    (variable, values)."""
    value = flag_value(args, "--arch")
    head = SENTENCE_METHODS.get(method, (None, None, False))[2]
    if value is not None and head_of_arch(value) != head:
        if is_outproj_sn_arch(value):
            fail(f"--arch {value} is fairseq's released head (out_proj only), not {method}'s: use --arch "
                 f"{plain_arch(value)}, or METHOD r4f-readme or r4f-released (which run it)")
        if head == OUTPROJ_HEAD:
            fail(f"--arch {value} drops {method}'s released head (out_proj only): use --arch "
                 f"{plain_arch(value).replace('_', '_sn_outproj_', 1)}, or METHOD {method.replace('r4f', 'r3f', 1)}")
        if head and "_sn_" not in value:
            fail(f"--arch {value} drops R4F's spectrally normalised head: use --arch {value.replace('_', '_sn_', 1)}, "
                 f"or METHOD r3f")
        fail(f"--arch {value} adds R4F's spectrally normalised head to {method}: use --arch "
             f"{value.replace('_sn_', '_', 1)}, or METHOD r4f")
    if has_flag(args, "--spectral-norm-classification-head"):
        fail(f"--spectral-norm-classification-head (fairseq's: out_proj only) is not {method}: use METHOD r4f, "
             f"whose architecture normalises every head matrix, or METHOD r4f-readme or r4f-released (fairseq's "
             f"out_proj-only head, as roberta_sn_outproj_large)")
    value = flag_value(args, "--criterion")
    if value is not None and value != criterion:
        if seq2seq:
            fail(f"--criterion {value} is not {method}'s ({criterion}, which at lambda 0 is fairseq's "
                 f"label_smoothed_cross_entropy): drop it; the run without the R3F term is METHODS=std")
        fail(f"--criterion {value} is not {method}'s ({criterion}): use METHOD {method_of_criterion(value)} instead")
    value = flag_value(args, "--task")
    if value is not None and value != task:
        if seq2seq:
            fail(f"--task {value} is not this recipe's ({task}): drop it")
        fail(f"--task {value} is not {method}'s ({task}): drop it (METHOD freelb uses sentence_prediction_freelb)")
    for name in ("--r3f-lambda", "--noise-type", "--eps"):
        value = flag_value(args, name)
        if value is None:
            continue
        variable, values = configured[name]
        if name != "--noise-type" and not is_number(value):
            fail(f"{name} {value} is not a finite non-negative number: set {variable} to one (e.g. "
                 f"{'1e-5' if name == '--eps' else '1.0'}) instead of the flag")
        if not uses_r3f:
            fail(f"{name} {value} is R3F's and {method} has no R3F term: use METHOD r3f (or r4f) with "
                 f"{variable}={value}")
        for c in values:
            if not same_value(c, value):
                fail(f"{name} {value} contradicts the run's label ({variable}: {' '.join(values)}): set "
                     f"{variable}={value} instead")


def metric_flags_supported(flags: List[str], settings: Optional["Settings"] = None) -> List[str]:
    """The GLUE metric flags the installed fairseq's sentence_prediction criterion takes
    (fairseq_r3f.compat.supported_metric_flags; with the plugin loaded, all of them on every supported fairseq).
    A dry run prints the table's flags without asking (that imports fairseq: seconds); a launch asks, and a flag
    it drops is named in a note."""
    if not flags or (settings is not None and settings.dry_run):
        return list(flags)
    from fairseq_r3f.compat import supported_metric_flags

    kept = list(supported_metric_flags(flags))
    dropped = [flag for flag in flags if flag not in kept]
    if dropped and settings is not None:
        settings.notes.append(f"# note: the installed fairseq's sentence_prediction has no {' '.join(dropped)}: "
                              f"its metric is not logged (update fairseq, or the plugin)")
    return kept


# fairseq-train's half-precision switches (fairseq's option parsing turns --bf16 into --bf16 --tpu)
HALF_PRECISION_FLAGS = ("--fp16", "--memory-efficient-fp16", "--bf16", "--memory-efficient-bf16", "--amp")


def check_precision(settings: Settings, flags: Sequence[str]) -> None:
    """Refuses a half-precision flag after the recipe's arguments where it cannot train as it says: under TINY=1
    (one CPU process, whatever the machine), on a launch where torch sees no CUDA GPU (a dry run gets a note, as
    FP16=1 does), and --bf16 without torch_xla (fairseq-train's --bf16 is its TPU path). Each would die in
    fairseq-train after the run folder was made, or (--amp on the CPU) train in fp32 recorded as amp."""
    for flag in HALF_PRECISION_FLAGS:
        if not has_flag(flags, flag):
            continue
        consequence = ("trains in fp32 and records amp: true for it" if flag == "--amp" else
                       "stops at start-up (Torch not compiled with CUDA enabled)")
        if settings.tiny:
            fail(f"{flag} cannot run under TINY=1, which trains on the CPU (there fairseq-train {consequence}): "
                 f"drop it")
        if "bf16" in flag and not module_available("torch_xla"):
            fail(f"{flag}: fairseq-train's bf16 is its TPU path (its option parsing adds --tpu, which needs "
                 f"torch_xla, also on a GPU): drop it, and train in fp16 (FP16=1) or fp32 (FP16=0)")
        if not cuda_available():
            if settings.dry_run:
                settings.notes.append(f"# note: {flag} needs a CUDA GPU, which this machine lacks: these commands "
                                      f"run on a GPU machine")
            else:
                fail(f"{flag} needs a CUDA GPU and torch sees none here (on the CPU fairseq-train {consequence}): "
                     f"drop it, or run on a GPU")


def module_available(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None
