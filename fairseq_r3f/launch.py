"""The run layer under every recipe: plan -> launch -> record -> verify -> done.

    python -m fairseq_r3f.launch glue TASK METHOD [fairseq-train flags]    (recipes/glue.sh hands over to this)
    python -m fairseq_r3f.launch xnli METHOD [flags]
    python -m fairseq_r3f.launch summarization DATASET [flags]
    python -m fairseq_r3f.launch translation CONFIG [flags]

*plan*: each run's complete fairseq-train argument list, from the hyper-parameter tables
(``fairseq_r3f/hparams/*.tsv``), the environment (SEEDS, SWEEP, NGPUS, ...; see the recipes' headers) and the
flags after METHOD, which go last. Flags that would make a run another method are refused; every numeric
setting, given as a flag or an environment variable, must be a finite number. With DRY_RUN=1 the plan is
printed and nothing else happens.

*launch*: a run folder is locked (``flock`` on the folder itself) by the launcher and by the fairseq-train it
starts, which inherits the lock and holds it while it lives, also when the launcher is killed; ``lock`` records
the holders, and a second launch is refused naming those still alive (pid, host, start time). Deleting ``lock``
releases nothing. Flags that cannot train here (half precision on the CPU) and non-finite values are refused,
and every run's configuration is built, before any folder is made. A run whose folder has a ``checkpoint_last.pt``
resumes from it (``--finetune-from-model`` loads the pretrained model only for a fresh run); a run whose checkpoint
already reached its planned end is not launched again (fairseq would train one update more).

*record*: ``run.json`` (the label the tables read, plus the complete planned command, the settings given after
METHOD and the planned effective configuration), ``versions.json``, ``command.sh``, and one ``# TIME start``
line per launch in ``train.log``. The sweep folder's ``plan.json`` lists every planned (configuration, seed).

*verify*: the checkpoint's saved configuration against the plan, field by field; ``identity.json``; then
``done`` ({"num_updates": N, "finished": TIME}), written last. A folder whose recorded plan differs from the
new one (another flag, another value) is refused with the difference named: it is never resumed or skipped as
done under another plan.
"""

import os
import sys

if __name__ == "__main__" and sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    # run as a script (the recipes do, to plan without importing fairseq): the package folder is no top-level
    # import root (its models/, tasks/, logs.py would shadow other modules)
    sys.path.pop(0)

import contextlib  # noqa: E402
import datetime  # noqa: E402
import errno  # noqa: E402
import fcntl  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from typing import Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple  # noqa: E402


RECIPES = ("glue", "xnli", "summarization", "translation")
# The package folder (fairseq's --user-dir) and its tables; computed here, not imported, so that planning a
# run does not import the package (which imports fairseq: seconds per recipe call).
USER_DIR = os.path.dirname(os.path.abspath(__file__))
HPARAMS = os.path.join(USER_DIR, "hparams")
GLUE_TASKS_ORDER = "MNLI QNLI QQP SST-2 RTE MRPC CoLA STS-B"
# The authors' released command (fairseq examples/rxf/README.md, hparams/glue_released.tsv) in its two computations:
# *-readme its flags with the noise reaching the encoder, *-released as the released code computed it (the noise
# dropped: RoBERTa's encoder never received it).
RXF_METHODS = ("r3f-readme", "r4f-readme", "r3f-released", "r4f-released")
GLUE_METHODS = ("std", "std++", "r3f", "r4f", "smart", "freelb", *RXF_METHODS, "smart-released")
# The authors' released configurations (those and glue.tsv's smart_released_*): never the paper's r3f / r4f / smart,
# whose names they carry with "-readme" or "-released" in every label and table.
RELEASED_METHODS = (*RXF_METHODS, "smart-released")
XNLI_LANGUAGES = "en fr es de el bg ru tr ar vi th zh hi sw ur"

# method -> (criterion, fairseq task or None: the recipe's, spectrally normalised head: True for R4F's (every
# head matrix, the plugin's *_sn_* architectures), OUTPROJ_HEAD for fairseq's released one (--spectral-norm-
# classification-head: out_proj only, the plugin's *_sn_outproj_* architectures), False for a plain head)
OUTPROJ_HEAD = "outproj"
SENTENCE_METHODS = {
    "std": ("sentence_prediction", None, False),
    "std++": ("sentence_prediction", None, False),
    "r3f": ("sentence_prediction_r3f", None, False),
    "r4f": ("sentence_prediction_r3f", None, True),
    "smart": ("sentence_prediction_smart", None, False),
    "freelb": ("sentence_prediction_freelb", "sentence_prediction_freelb", False),
    "r3f-readme": ("sentence_prediction_r3f", None, False),
    "r4f-readme": ("sentence_prediction_r3f", None, OUTPROJ_HEAD),
    "r3f-released": ("sentence_prediction_r3f", None, False),
    "r4f-released": ("sentence_prediction_r3f", None, OUTPROJ_HEAD),
    "smart-released": ("sentence_prediction_smart", None, False),
}
SEQ2SEQ_CRITERION = "label_smoothed_cross_entropy_r3f"
# Flags where inf has a documented meaning (an unconstrained FreeLB ball).
INF_ALLOWED = ("--freelb-max-norm",)
LOCK_FILE, DONE_FILE, LABEL_FILE, PLAN_FILE = "lock", "done", "run.json", "plan.json"


class Stop(Exception):
    """Stops the launcher: ``message`` on stderr, exit ``status``; ``usage`` adds the recipe's usage (a wrong
    invocation)."""

    def __init__(self, message: str, status: int = 2, usage: bool = False):
        super().__init__(message)
        self.status = status
        self.usage = usage


def die(message: str):
    raise Stop(message, usage=True)


def fail(message: str):
    raise Stop(message)


# ------------------------------------------------------------------------------------------ values

NUMBER = re.compile(r"^([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?$")


def is_number(text: str) -> bool:
    """A finite non-negative decimal number (no sign, nan, inf, 1e400 or garbage)."""
    return bool(NUMBER.match(text)) and math.isfinite(float(text))


def is_int(text: str) -> bool:
    return bool(re.match(r"^[1-9][0-9]*$", text))


def same_value(a: str, b: str) -> bool:
    """The same word, or the same finite number (1.0 and 1, 1e-5 and 0.00001)."""
    return a == b or (is_number(a) and is_number(b) and float(a) == float(b))


def json_value(text: str):
    """A table or environment value as run.json records it: a number when it is one, inf as Infinity."""
    if re.match(r"^-?(0|[1-9][0-9]*)$", text):
        return int(text)
    if text == "inf" or re.match(r"^-?[0-9]*\.?[0-9]+([eE][-+]?[0-9]+)?$", text) or NUMBER.match(text):
        return float(text)
    return text


def words(text: str) -> List[str]:
    """ "a,b c" -> ["a", "b", "c"] (lists are accepted with commas, spaces or both)."""
    return text.replace(",", " ").split()


def flag_value(flags: Sequence[str], name: str) -> Optional[str]:
    """The value the last ``name VALUE`` or ``name=VALUE`` in ``flags`` gives (what argparse keeps), or None."""
    value = None
    for i, item in enumerate(flags):
        if item == name and i + 1 < len(flags):
            value = flags[i + 1]
        elif item.startswith(name + "="):
            value = item[len(name) + 1:]
    return value


def has_flag(flags: Sequence[str], name: str) -> bool:
    return any(item == name or item.startswith(name + "=") for item in flags)


def is_sn_arch(arch: str) -> bool:
    """R4F's head (the plugin's roberta_sn_* / bart_sn_*); fairseq's released out_proj-only head is not it."""
    return "_sn_" in arch and not is_outproj_sn_arch(arch)


def is_outproj_sn_arch(arch: str) -> bool:
    """The released head of fairseq's --spectral-norm-classification-head (roberta_sn_outproj_* /
    bart_sn_outproj_*): R4F-released's, never R4F's."""
    return "_sn_outproj_" in arch


def head_of_arch(arch: str):
    """The head an architecture has, as SENTENCE_METHODS names it: True (R4F's), OUTPROJ_HEAD or False."""
    return OUTPROJ_HEAD if is_outproj_sn_arch(arch) else is_sn_arch(arch)


def sn_arch(arch: str) -> str:
    """roberta_large -> roberta_sn_large, bart_base -> bart_sn_base (the plugin's R4F architectures)."""
    if is_sn_arch(arch):
        return arch
    arch = plain_arch(arch)
    for family in ("roberta", "bart"):
        if arch.startswith(family + "_"):
            return family + "_sn_" + arch[len(family) + 1:]
    raise ValueError(
        f"R4F needs the spectrally normalised variant of --arch {arch}, and the plugin has roberta_sn_* and "
        f"bart_sn_* only: use a RoBERTa/XLM-R or BART architecture"
    )


def plain_arch(arch: str) -> str:
    """roberta_sn_large and roberta_sn_outproj_large -> roberta_large."""
    return arch.replace("_sn_outproj_", "_", 1).replace("_sn_", "_", 1)


def check_finite(flags: Sequence[str], where: str) -> None:
    """Refuses a flag whose value, or an item of whose list or tuple, is NaN or infinite (``--lr nan``,
    ``--r3f-lambda=inf``, ``--lr 1e400``, ``--adam-betas "(0.9,nan)"``): fairseq takes most of them and trains on
    them (a tuple it evaluates as Python, where nan is a NameError)."""
    for i, item in enumerate(flags):
        if not item.startswith("--"):
            continue
        name, sep, value = item.partition("=")
        if not sep:
            if i + 1 >= len(flags):
                continue
            value = flags[i + 1]
        for part in value.strip().strip("()[]").split(","):
            try:
                number = float(part)
            except ValueError:
                continue
            if math.isnan(number) or (math.isinf(number) and name not in INF_ALLOWED):
                fail(f"{name} {value} ({where}): give " + ("a finite number" if part.strip() == value.strip() else
                                                           "finite numbers"))


_BASH_SPECIAL = set(" \t\n'\"\\|&;()<>!{}*[]?^$`,")


def bash_quote(text: str) -> str:
    """``printf %q`` of bash: how the recipes have always printed a dry run's commands."""
    if text == "":
        return "''"
    if any(not c.isprintable() and c not in "\t\n" for c in text) or "\n" in text or "\t" in text:
        return "$'" + text.encode("unicode_escape").decode().replace("'", "\\'") + "'"
    out = []
    for i, c in enumerate(text):
        if c in _BASH_SPECIAL or (c == "~" and (i == 0 or text[i - 1] in "=:")) or (c == "#" and i == 0):
            out.append("\\")
        out.append(c)
    return "".join(out)


def quoted(command: Sequence[str]) -> str:
    return "".join(bash_quote(part) + " " for part in command)


def now_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# ----------------------------------------------------------------------------------------- tables

def read_table_file(path: str) -> Tuple[List[str], Dict[str, Dict[str, str]]]:
    """(header, {first cell: {column: value}}) of a hyper-parameter table: tab-separated, ``#`` comment lines and
    blank lines skipped, then a header. The one reader of the tables (``fairseq_r3f.tools.read_table`` uses it);
    stdlib only, so that the recipes plan without importing fairseq.

    A row with another number of cells than the header, or a second row with a first cell already seen, is
    refused (ValueError naming the file and the lines): either would make a value silently come from the wrong
    cell or the wrong row. A missing file is a FileNotFoundError naming it."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such hyper-parameter table")
    header: Optional[List[str]] = None
    rows: Dict[str, Dict[str, str]] = {}
    first_line: Dict[str, int] = {}
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            line = line.rstrip("\r\n")
            if not line.strip() or line.startswith("#"):
                continue
            cells = line.split("\t")
            if header is None:
                header, header_line = cells, number
                continue
            if len(cells) != len(header):
                raise ValueError(f"{path}:{number}: {len(cells)} tab-separated cells, but the header (line "
                                 f"{header_line}) has {len(header)} columns: give every row one cell per column")
            key = cells[0]
            if key in rows:
                raise ValueError(f"{path}:{number}: a second row {key!r} (the first is line {first_line[key]}): "
                                 f"keep one of lines {first_line[key]} and {number}")
            rows[key], first_line[key] = dict(zip(header, cells)), number
    return header or [], rows


class Tables:
    """The hyper-parameter tables (:func:`read_table_file`): one value by row and column; a missing or malformed
    table, or a missing value, stops the launcher naming the file."""

    def __init__(self, folder: str = HPARAMS):
        self.folder = folder
        self._cache: Dict[str, Tuple[List[str], Dict[str, Dict[str, str]]]] = {}

    def path(self, name: str) -> str:
        return os.path.join(self.folder, name)

    def rows(self, name: str) -> Tuple[List[str], Dict[str, Dict[str, str]]]:
        if name not in self._cache:
            try:
                self._cache[name] = read_table_file(self.path(name))
            except (OSError, ValueError) as error:
                fail(str(error))
        return self._cache[name]

    def get(self, name: str, row: str, column: str) -> str:
        value = self.rows(name)[1].get(row, {}).get(column)
        if value is None:
            fail(f"{self.path(name)} has no value for {row} / {column}")
        return value


# -------------------------------------------------------------------------------------- the plan

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


@dataclass
class Run:
    dir: str
    command: List[str]          # fairseq-train's arguments, without the launcher
    label: Dict                 # run.json's label keys
    sweep_dir: str
    config: str
    seed: int


@dataclass
class Plan:
    recipe: str
    launch: List[str]
    runs: List[Run] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)   # lines for stderr, in order
    overrides: List[str] = field(default_factory=list)
    swept: List[str] = field(default_factory=list)
    env: Dict[str, str] = field(default_factory=dict)


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


def method_of_criterion(criterion: str) -> str:
    """The GLUE/XNLI method that trains with ``criterion``."""
    return {
        "sentence_prediction": "std++ (or std)",
        "sentence_prediction_r3f": "r3f (r4f with the SN head)",
        "sentence_prediction_smart": "smart",
        "sentence_prediction_freelb": "freelb (with --task sentence_prediction_freelb)",
        SEQ2SEQ_CRITERION: "recipes/summarization.sh",
    }.get(criterion, "one whose criterion it is")


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


@dataclass
class Axis:
    key: str
    flag: str
    name: str
    values: List[str]


def search_grid(settings: Settings, method: str, axes: List[Axis], args: Sequence[str], notes: List[str]):
    """The configurations of ``axes``: [(name, flags, labels)] and the search record. A setting the flags after
    METHOD give another value becomes that value, in the label and in the folder name, so that the label says
    what runs; a swept setting cannot be overridden. With SWEEP=1 a grid larger than SWEEP_SIZE keeps SWEEP_SIZE
    configurations evenly spaced over its list (configuration floor(k x size / SWEEP_SIZE))."""
    configs: List[Tuple[str, List[str], Dict]] = [("", [], {})]
    grid: Dict[str, List] = {}
    swept: List[str] = []
    for axis in axes:
        values, name = list(axis.values), axis.name
        if axis.flag:
            given = flag_value(args, axis.flag)
            if given is not None and not same_value(given, " ".join(values)):
                if len(values) > 1:
                    fail(f"{axis.flag} {given} overrides a setting SWEEP=1 searches ({axis.key}: {' '.join(values)}): "
                         f"drop it, or run without SWEEP=1")
                values = [given]
                if name == "!":
                    name = axis.flag[2:]
        if len(values) > 1:
            swept.append(axis.key)
        grid[axis.key] = [json_value(v) for v in values]
        new = []
        for config_name, flags, labels in configs:
            for value in values:
                new_name = config_name if name == "!" else (config_name + "_" if config_name else "") + name + value
                new_flags = flags + [axis.flag, value] if axis.flag else flags
                new.append((new_name, new_flags, {**labels, axis.key: json_value(value)}))
        configs = new
    size = len(configs)
    sweep_size = int(settings.sweep_size)
    if settings.sweep and size > sweep_size:
        configs = [configs[k * size // sweep_size] for k in range(sweep_size)]
        notes.append(f"# SWEEP_SIZE={sweep_size}: {sweep_size} of the {size} configurations of {method}'s grid, "
                     f"evenly spaced")
    configs = [(name or "default", flags, labels) for name, flags, labels in configs]
    search = {"configurations": len(configs), "grid": grid, "grid_size": size, "sweep": settings.sweep}
    return configs, search, swept


def _epochs(updates: int, batch: int, size: int, cap: int = 0) -> str:
    e = updates * batch / size
    if cap > 0 and e > cap:
        e = cap
    return f"{e:.2f}"


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


def plan_glue(args: List[str], settings: Settings, tables: Tables) -> Plan:
    if len(args) < 2:
        die("give a TASK and a METHOD")
    task, method, args = args[0], args[1], args[2:]
    tasks_tsv, glue_tsv = "glue_tasks.tsv", "glue.tsv"
    if task not in tables.rows(tasks_tsv)[1]:
        die(f"unknown TASK {task}: choose {GLUE_TASKS_ORDER}")
    if method not in GLUE_METHODS:
        die(f"unknown METHOD {method}: choose std, std++, r3f, r4f, smart, freelb, or the authors' released "
            f"r3f-readme, r4f-readme, r3f-released, r4f-released (RTE), smart-released")
    data_dir = settings.env.get("DATA_DIR", "")
    data = f"{data_dir}/{task}-bin"
    require_dir("DATA_DIR", data_dir, "the output folder of preprocess/glue.py")
    require_file("DATA_DIR", f"{data}/input0/dict.txt", f"run preprocess/glue.py --tasks {task} first")
    require_file("DATA_DIR", f"{data}/label/{'train.label' if task == 'STS-B' else 'dict.txt'}",
                 f"run preprocess/glue.py --tasks {task} first")
    if not settings.tiny:
        require_file("ROBERTA_PATH", settings.env.get("ROBERTA_PATH", ""),
                     "the RoBERTa-large checkpoint, model.pt of roberta.large.tar.gz")
    if method in RXF_METHODS:
        return plan_glue_rxf_released(task, method, args, settings, tables, data)

    def task_value(column):
        return tables.get(tasks_tsv, task, column)

    def glue_value(row):
        return tables.get(glue_tsv, row, "value")

    seeds = seeds_of(settings, int(glue_value("seeds")))
    settings.sweep_size = settings.sweep_size or glue_value("sweep_size")
    uses_r3f = method in ("r3f", "r4f")
    r3f = r3f_settings(settings, uses_r3f, glue_value)
    settings.check_launch()
    notes = settings.notes
    settings.fp16_note(notes)
    criterion, fairseq_task, needs_sn = SENTENCE_METHODS[method]
    fairseq_task = fairseq_task or "sentence_prediction"
    arch = "roberta_sn_large" if needs_sn else "roberta_large"
    sweeping = "S" if settings.sweep else ""
    check_overrides(settings, method, criterion, fairseq_task, uses_r3f, {
        "--r3f-lambda": ("LAMBDAS" if sweeping else "R3F_LAMBDA", r3f.lambdas),
        "--noise-type": ("NOISE_TYPES" if sweeping else "NOISE_TYPE", r3f.noise_types),
        "--eps": ("R3F_EPS", [r3f.eps])}, args)
    launch, dist = settings.launch_prefix()
    shared = settings.shared_flags()
    num_classes, metric, train_size = task_value("num_classes"), task_value("metric"), int(task_value("train_size"))
    max_epoch = 0
    if method == "std":
        lr, max_update = task_value("std_lr"), int(task_value("std_max_update"))
        batch = int(task_value("std_batch_size"))
        warmup = int(task_value("std_warmup_updates"))
        weight_decay = glue_value("std_weight_decay")
        max_epoch = int(glue_value("std_max_epoch"))
        method_flags = ["--max-epoch", str(max_epoch)]
    else:
        lr, max_update, batch = task_value("lr"), int(task_value("max_update")), int(task_value("batch_size"))
        warmup = int(float(glue_value("warmup_ratio")) * max_update)
        weight_decay = glue_value("weight_decay")
        method_flags = []
    valid = task_value("valid_subsets")
    metric_flags = task_value("metric_flags")
    task_flags = [] if metric_flags == "-" else metric_flags_supported(metric_flags.split(), settings)
    per_gpu, effective = split_batch(settings, batch)
    max_positions = glue_value("max_positions")
    model, max_update, warmup, max_positions = sentence_model(settings, tables, arch, "ROBERTA_PATH", max_update,
                                                              warmup, max_positions)
    save_root = settings.text("SAVE_ROOT", "runs/glue")
    notes.append(f"# {task} {method}: lr {lr}, {max_update} updates ({warmup} warm-up), effective batch {effective} = "
                 f"{settings.world_size} GPU(s) x {per_gpu} x update-freq {settings.update_freq} "
                 f"(BATCH_READING={settings.batch_reading}): at most "
                 f"{_epochs(max_update, effective, train_size, max_epoch)} epochs of {train_size}")
    values = {name: glue_value(name) for name in ("dropout", "attention_dropout", "adam_betas", "adam_eps", "clip_norm",
                                                   "lr_scheduler", "max_tokens")}

    def grid(key, flag, name, single, grid_row):
        if settings.sweep:
            return Axis(key, flag, name, words(glue_value(grid_row)))
        return Axis(key, flag, "!", [single])

    axes: List[Axis] = []
    if method in ("std", "std++"):
        axes.append(grid("lr", "--lr", "lr", lr, "std_lr_grid"))
    elif uses_r3f:
        axes += r3f_axes(r3f) + [Axis("lr", "--lr", "!", [lr])]
    elif method in ("smart", "smart-released"):
        # smart-released: glue.tsv's smart_released_* (mt-dnn's train.py defaults), the same budget and grid
        row = "smart_released_" if method == "smart-released" else "smart_"
        if method == "smart-released":
            axes.append(Axis("smart_variant", "--smart-variant", "!", [glue_value("smart_released_variant")]))
        axes.append(grid("smart_lambda", "--smart-lambda", "lambda", glue_value(row + "lambda"), "smart_lambda_grid"))
        axes.append(grid("lr", "--lr", "lr", lr, "smart_lr_grid"))
        for name in ("steps", "step_size", "eps", "init", "norm"):
            axes.append(Axis(f"smart_{name}", f"--smart-{name.replace('_', '-')}", "!", [glue_value(row + name)]))
    else:
        # single runs: the task's published FreeLB settings (freelb_tasks.tsv); SWEEP=1: glue.tsv's grids
        published = {"steps": "adv_steps", "step_size": "adv_lr", "init_mag": "init_mag", "max_norm": "max_norm"}
        for name in ("steps", "step_size", "init_mag", "max_norm"):
            axes.append(grid(f"freelb_{name}", f"--freelb-{name.replace('_', '-')}", name.replace("_", ""),
                             tables.get("freelb_tasks.tsv", task, published[name]), f"freelb_{name}_grid"))
        axes.append(Axis("freelb_norm", "--freelb-norm", "!", [glue_value("freelb_norm")]))
        axes.append(Axis("lr", "--lr", "!", [lr]))
    if not uses_r3f:  # labels without a flag: no R3F term
        axes += [Axis("r3f_lambda", "", "!", ["0"]), Axis("noise_type", "", "!", ["none"])]
    configs, search, swept = search_grid(settings, method, axes, args, notes)
    label = {"task": task, "method": method, "metric": metric, "valid_subsets": valid,
             "batch_reading": settings.batch_reading, "effective_batch": effective}

    def command(config_flags, seed, run_dir):
        return sentence_prediction_command(
            data, fairseq_task, num_classes, max_positions, model, criterion,
            [*config_flags, *task_flags], {**values, "weight_decay": weight_decay}, max_update, warmup, method_flags,
            per_gpu, valid, metric, seed, run_dir, [*shared, *dist, *args])

    plan = Plan("glue", launch, notes=notes, overrides=list(args), swept=swept)
    sentence_runs(plan, f"{save_root}/{task}/{method}", configs, seeds, label, search, command)
    return plan


def plan_glue_rxf_released(task: str, method: str, args: List[str], settings: Settings, tables: Tables,
                           data: str) -> Plan:
    """METHOD r3f-readme / r4f-readme / r3f-released / r4f-released: the command of fairseq's
    examples/rxf/README.md, every value from hparams/glue_released.tsv (r4f-* on fairseq's out_proj-only head;
    *-released with --noise-type none, the computation of the released code, whose noise never reached RoBERTa's
    encoder). It exists for RTE only; flags the README leaves out are left out (no --max-update: the run ends at
    --max-epoch; no --shorten-method, except on TINY=1's 64 positions)."""
    tsv = "glue_released.tsv"

    def value(row):
        return tables.get(tsv, row, method)

    paper = method[:3]
    if task != value("task"):
        die(f"{method} is the authors' released command for {value('task')} only (fairseq examples/rxf/README.md); "
            f"none was released for {task}: run METHOD {paper} (the paper's tables) there")
    if settings.sweep:
        die(f"SWEEP=1: {method} is one released configuration, not a search; run it without SWEEP=1 (or search "
            f"with METHOD {paper})")
    for variable in ("R3F_LAMBDA", "NOISE_TYPE", "R3F_EPS", "LAMBDAS", "NOISE_TYPES"):
        if settings.env.get(variable):
            die(f"{variable}={settings.env[variable]} would change {method}'s released command ({tables.path(tsv)}): "
                f"unset it, or run METHOD {paper}")
    seeds = seeds_of(settings, int(value("seeds")))
    settings.sweep_size = settings.sweep_size or "1"
    settings.check_launch()
    notes = settings.notes
    settings.fp16_note(notes)
    criterion, _, head = SENTENCE_METHODS[method]
    r3f = R3FSettings([value("r3f_lambda")], [value("noise_type")], value("eps"), value("eps"))
    for name, released in (("--r3f-lambda", value("r3f_lambda")), ("--noise-type", value("noise_type")),
                           ("--eps", value("eps"))):
        given = flag_value(args, name)
        if given is not None and not same_value(given, released):
            fail(f"{name} {given} changes {method}'s released command ({name} {released}, {tables.path(tsv)}): drop "
                 f"it, or run METHOD {paper} with that setting")
    check_overrides(settings, method, criterion, "sentence_prediction", True, {
        "--r3f-lambda": ("R3F_LAMBDA", r3f.lambdas), "--noise-type": ("NOISE_TYPE", r3f.noise_types),
        "--eps": ("R3F_EPS", [r3f.eps])}, args)
    launch, dist = settings.launch_prefix()
    shared = settings.shared_flags()
    per_gpu, effective = split_batch(settings, int(value("batch_size")))
    total, max_epoch = value("total_num_update"), value("max_epoch")
    # max_update 0: none, the README's run ends at --max-epoch
    model, max_update, warmup, max_positions = sentence_model(settings, tables, value("arch"), "ROBERTA_PATH", 0,
                                                              int(value("warmup_updates")), value("max_positions"))
    if settings.tiny:
        total = settings.tiny_updates
    train_size = int(tables.get("glue_tasks.tsv", task, "train_size"))
    notes.append(f"# {task} {method} (fairseq examples/rxf/README.md, {value('computation')}; not the paper's "
                 f"{paper}): --noise-type {value('noise_type')}, lr {value('lr')}, "
                 f"{total} updates planned by the schedule ({warmup} warm-up), ending at {max_epoch} epochs; "
                 f"effective batch {effective} = {settings.world_size} GPU(s) x {per_gpu} x update-freq "
                 f"{settings.update_freq} (BATCH_READING={settings.batch_reading}): "
                 f"{_epochs(int(total), effective, train_size)} epochs of {train_size} at {total} updates")
    axes = r3f_axes(r3f) + [Axis("lr", "--lr", "!", [value("lr")])]
    configs, search, swept = search_grid(settings, method, axes, args, notes)
    metric = value("metric")
    label = {"task": task, "method": method, "metric": metric, "valid_subsets": "valid",
             "batch_reading": settings.batch_reading, "effective_batch": effective,
             "released": f"fairseq examples/rxf/README.md, {value('computation')} ({tables.path(tsv)})"}

    values = {name: value(name) for name in ("dropout", "attention_dropout", "weight_decay", "adam_betas",
                                              "adam_eps", "clip_norm", "lr_scheduler", "max_tokens")}

    def command(config_flags, seed, run_dir):
        return sentence_prediction_command(
            data, "sentence_prediction", value("num_classes"), max_positions, model, criterion,
            config_flags, values, max_update, warmup, ["--max-epoch", max_epoch, *value("flags").split()],
            per_gpu, "valid", metric, seed, run_dir, [*shared, *dist, *args], shorten=settings.tiny,
            total_num_update=int(total))

    plan = Plan("glue", launch, notes=notes, overrides=list(args), swept=swept)
    sentence_runs(plan, f"{settings.text('SAVE_ROOT', 'runs/glue')}/{task}/{method}", configs, seeds, label, search,
                  command)
    return plan


def r3f_axes(r3f: R3FSettings) -> List[Axis]:
    eps_name = "!" if float(r3f.eps) == float(r3f.table_eps) else "eps"
    return [Axis("r3f_lambda", "--r3f-lambda", "lambda", r3f.lambdas), Axis("noise_type", "--noise-type", "",
                                                                             r3f.noise_types),
            Axis("eps", "--eps", eps_name, [r3f.eps])]


def sentence_model(settings: Settings, tables: Tables, arch: str, checkpoint_variable: str, max_update: int,
                   warmup: int, max_positions: str) -> Tuple[List[str], int, int, str]:
    """(--arch's value and the model flags after it, max update, warm-up updates, max positions) of a GLUE or
    XNLI run: the table's large model fine-tuned from the checkpoint that ``checkpoint_variable`` names
    (ROBERTA_PATH, XLMR_PATH) on the table's schedule; with TINY=1 the base-shaped tiny model of tiny.tsv,
    randomly initialised, for TINY_UPDATES updates (one of them warm-up) on 64 positions."""
    if not settings.tiny:
        return [arch, "--finetune-from-model", settings.env.get(checkpoint_variable, "")], max_update, warmup, \
            max_positions
    tiny = tables.get("tiny.tsv", "roberta", "flags").split()
    return [arch.replace("large", "base", 1), *tiny], int(settings.tiny_updates), 1, "64"


def split_batch(settings: Settings, batch: int) -> Tuple[int, int]:
    """(per-GPU batch, effective batch) of a table's sentence batch under BATCH_READING."""
    if settings.batch_reading == "per_gpu":
        return batch, batch * settings.world_size * int(settings.update_freq)
    return settings.per_gpu_batch(batch), batch


def sentence_prediction_command(data: str, task: str, num_classes: str, max_positions: str, model: List[str],
                                criterion: str, method_flags: List[str], values: Dict[str, str], max_update: int,
                                warmup: int, budget_flags: List[str], batch: int, valid: str, metric: str, seed: str,
                                run_dir: str, last: List[str], shorten: bool = True,
                                total_num_update: Optional[int] = None) -> List[str]:
    """One GLUE or XNLI fine-tuning run's fairseq-train arguments (``model``: --arch's value and the flags
    after it; ``method_flags``: the configuration's and the task's metric flags; ``last``: the shared,
    distributed and user flags). The released configurations give ``max_update`` 0 (no --max-update: the run
    ends at its --max-epoch), their own ``total_num_update`` and no --shorten-method."""
    return [data, "--task", task, "--num-classes", num_classes, "--init-token", "0", "--separator-token", "2",
            "--max-positions", max_positions, *(["--shorten-method", "truncate"] if shorten else []), "--arch",
            *model, "--criterion",
            criterion, *method_flags, "--dropout", values["dropout"], "--attention-dropout",
            values["attention_dropout"], "--weight-decay", values["weight_decay"], "--optimizer", "adam",
            "--adam-betas", values["adam_betas"], "--adam-eps", values["adam_eps"], "--clip-norm", values["clip_norm"],
            "--lr-scheduler", values["lr_scheduler"], "--total-num-update", str(total_num_update or max_update),
            "--warmup-updates", str(warmup), *(["--max-update", str(max_update)] if max_update else []),
            *budget_flags, "--batch-size", str(batch), "--max-tokens",
            values["max_tokens"], "--valid-subset", valid, "--best-checkpoint-metric", metric,
            "--maximize-best-checkpoint-metric", "--seed", seed, "--save-dir", run_dir, *last]


def sentence_runs(plan: Plan, prefix: str, configs, seeds: List[str], label: Dict, search: Dict, command) -> None:
    for name, config_flags, labels in configs:
        for seed in seeds:
            run_dir = f"{prefix}/{name}/seed{seed}"
            meta = {**label, "config": name, "seed": int(seed), **labels, "search": search}
            plan.runs.append(Run(run_dir, command(config_flags, seed, run_dir), meta, prefix, name, int(seed)))


def plan_xnli(args: List[str], settings: Settings, tables: Tables) -> Plan:
    if len(args) < 1:
        die("give a METHOD")
    method, args = args[0], args[1:]
    if method not in ("std", "r3f", "r4f"):
        die(f"unknown METHOD {method}: choose std, r3f or r4f")

    def value(row):
        return tables.get("xnli.tsv", row, "value")

    languages = words(settings.env.get("LANGUAGES") or XNLI_LANGUAGES)
    data_dir = settings.env.get("DATA_DIR", "")
    require_dir("DATA_DIR", data_dir, "the output folder of preprocess/xnli.py")
    require_file("DATA_DIR", f"{data_dir}/input0/dict.txt", "run preprocess/xnli.py first")
    require_file("DATA_DIR", f"{data_dir}/label/dict.txt", "run preprocess/xnli.py first")
    for lang in languages:
        require_file("DATA_DIR", f"{data_dir}/input0/valid_{lang}.bin",
                     f"no valid_{lang} subset: run preprocess/xnli.py with this language")
    valid = ",".join(f"valid_{lang}" for lang in languages)
    if not valid:
        die("LANGUAGES is empty: give the validation languages, English first")
    if not settings.tiny:
        require_file("XLMR_PATH", settings.env.get("XLMR_PATH", ""),
                     "the XLM-R large checkpoint, model.pt of xlmr.large.tar.gz")
    seeds = seeds_of(settings, int(value("seeds")))
    settings.sweep_size = settings.sweep_size or value("sweep_size")
    uses_r3f = method != "std"
    r3f = r3f_settings(settings, uses_r3f, value)
    settings.check_launch()
    notes = settings.notes
    settings.fp16_note(notes)
    criterion, _, needs_sn = SENTENCE_METHODS[method]
    arch = "roberta_sn_large" if needs_sn else "roberta_large"  # XLM-R large has RoBERTa-large's shape
    sweeping = settings.sweep
    check_overrides(settings, method, criterion, "sentence_prediction", uses_r3f, {
        "--r3f-lambda": ("LAMBDAS" if sweeping else "R3F_LAMBDA", r3f.lambdas),
        "--noise-type": ("NOISE_TYPES" if sweeping else "NOISE_TYPE", r3f.noise_types),
        "--eps": ("R3F_EPS", [r3f.eps])}, args)
    launch, dist = settings.launch_prefix()
    shared = settings.shared_flags()
    per_gpu, effective = split_batch(settings, int(value("batch_size")))
    max_update = int(value("max_update"))
    warmup = int(float(value("warmup_ratio")) * max_update)
    max_positions, train_size = value("max_positions"), int(value("train_size"))
    model, max_update, warmup, max_positions = sentence_model(settings, tables, arch, "XLMR_PATH", max_update,
                                                              warmup, max_positions)
    save_root = settings.text("SAVE_ROOT", "runs/xnli")
    notes.append(f"# XNLI {method}: {max_update} updates ({warmup} warm-up), effective batch {effective} = "
                 f"{settings.world_size} GPU(s) x {per_gpu} x update-freq {settings.update_freq} "
                 f"(BATCH_READING={settings.batch_reading}): at most {_epochs(max_update, effective, train_size)} "
                 f"MNLI epochs; checkpoint chosen on {valid.split(',')[0]}")
    v = {name: value(name) for name in ("num_classes", "dropout", "attention_dropout", "weight_decay", "adam_betas",
                                        "adam_eps", "clip_norm", "lr_scheduler", "lr", "max_tokens")}
    if method == "std":
        lr_axis = Axis("lr", "--lr", "lr", words(value("std_lr_grid"))) if settings.sweep else \
            Axis("lr", "--lr", "!", [v["lr"]])
        axes = [lr_axis, Axis("r3f_lambda", "", "!", ["0"]), Axis("noise_type", "", "!", ["none"])]
    else:
        axes = r3f_axes(r3f) + [Axis("lr", "--lr", "!", [v["lr"]])]
    configs, search, swept = search_grid(settings, method, axes, args, notes)
    label = {"task": "XNLI", "method": method, "metric": "accuracy", "valid_subsets": valid,
             "batch_reading": settings.batch_reading, "effective_batch": effective}

    def command(config_flags, seed, run_dir):
        return sentence_prediction_command(
            data_dir, "sentence_prediction", v["num_classes"], max_positions, model, criterion, config_flags, v,
            max_update, warmup, [], per_gpu, valid, "accuracy", seed, run_dir, [*shared, *dist, *args])

    plan = Plan("xnli", launch, notes=notes, overrides=list(args), swept=swept)
    sentence_runs(plan, f"{save_root}/{method}", configs, seeds, label, search, command)
    return plan


def plan_summarization(args: List[str], settings: Settings, tables: Tables) -> Plan:
    if len(args) < 1:
        die("give a DATASET")
    dataset, args = args[0], args[1:]
    tsv = "summarization.tsv"
    header = tables.rows(tsv)[0]
    if dataset not in header[1:-1]:
        die(f"unknown DATASET {dataset}: choose cnn_dm, gigaword or reddit_tifu")
    data_bin = settings.env.get("DATA_BIN", "")
    require_dir("DATA_BIN", data_bin, "the bin/ folder written by preprocess/summarization.py")
    require_file("DATA_BIN", f"{data_bin}/train.source-target.source.bin",
                 f"not a binarised summarization set: run preprocess/summarization.py --dataset {dataset} first")
    if not settings.tiny:
        require_file("BART_PATH", settings.env.get("BART_PATH", ""),
                     "the BART-large checkpoint, model.pt of bart.large.tar.gz")
    settings.check_launch()
    notes = settings.notes
    settings.fp16_note(notes)
    launch, dist = settings.launch_prefix()
    shared = settings.shared_flags()
    names = ("arch max_tokens total_updates warmup_updates lr lr_scheduler optimizer adam_betas adam_eps dropout "
             "attention_dropout weight_decay clip_norm label_smoothing r3f_lambda r3f_lambda_grid r3f_kl_normalization "
             "noise_type noise_type_grid eps reference_gpus reference_update_freq").split()
    hp = {name: tables.get(tsv, name, dataset) for name in names}
    max_update, warmup = int(hp["total_updates"]), int(hp["warmup_updates"])
    tokens = int(hp["max_tokens"]) * int(hp["reference_gpus"]) * int(hp["reference_update_freq"])
    per_gpu = settings.per_gpu_batch(tokens)
    model = ["--arch", hp["arch"], "--finetune-from-model", settings.env.get("BART_PATH", "")]
    if settings.tiny:
        model = ["--arch", "bart_base", *tables.get("tiny.tsv", "seq2seq", "flags").split()]
        max_update, warmup, per_gpu = int(settings.tiny_updates), 1, 512
    elif per_gpu < 1024:
        die(f"{per_gpu} tokens per GPU step cannot hold a 1024-token article: lower UPDATE_FREQ (the effective batch "
            f"is {tokens} tokens)")
    normalization = settings.env.get("R3F_KL_NORMALIZATION") or hp["r3f_kl_normalization"]
    seeds = seeds_of(settings, 1)
    save_root = settings.text("SAVE_ROOT", "runs/summarization")
    r3f = r3f_settings(settings, True, hp.__getitem__)
    if normalization not in ("sentence", "token"):
        die(f"R3F_KL_NORMALIZATION={normalization}: choose sentence or token")
    sweeping = settings.sweep
    check_overrides(settings, "r3f", SEQ2SEQ_CRITERION, "translation", True, {
        "--r3f-lambda": ("LAMBDAS" if sweeping else "R3F_LAMBDA", r3f.lambdas),
        "--noise-type": ("NOISE_TYPES" if sweeping else "NOISE_TYPE", r3f.noise_types),
        "--eps": ("R3F_EPS", [r3f.eps])}, args, seq2seq=True)
    value = flag_value(args, "--r3f-kl-normalization")
    if value is not None and value != normalization:
        fail(f"--r3f-kl-normalization {value} contradicts the run's label ({normalization}): set "
             f"R3F_KL_NORMALIZATION={value} instead")
    configurations = len(r3f.lambdas) * len(r3f.noise_types)
    search = {"configurations": configurations, "sweep": settings.sweep}
    notes.append(f"# {dataset}: lr {hp['lr']}, {max_update} updates ({warmup} warm-up), {tokens} tokens per update = "
                 f"{settings.world_size} GPU(s) x {per_gpu} x update-freq {settings.update_freq}")
    plan = Plan("summarization", launch, notes=notes, overrides=list(args),
                swept=[k for k, v in (("r3f_lambda", r3f.lambdas), ("noise_type", r3f.noise_types)) if len(v) > 1])
    eps_named = float(r3f.eps) != float(r3f.table_eps)
    for noise in r3f.noise_types:
        for lam in r3f.lambdas:
            config = f"lambda{lam}_{noise}" + (f"_eps{r3f.eps}" if eps_named else "")
            if normalization != "sentence":
                config += f"_per_{normalization}"
            for seed in seeds:
                run_dir = f"{save_root}/{dataset}/{config}/seed{seed}"
                meta = {"dataset": dataset, "config": config, "seed": int(seed), "r3f_lambda": json_value(lam),
                        "noise_type": noise, "eps": json_value(r3f.eps), "r3f_kl_normalization": normalization,
                        "search": search}
                command = [
                    data_bin, "--task", "translation", "--source-lang", "source", "--target-lang", "target",
                    "--truncate-source", *model, "--layernorm-embedding", "--share-all-embeddings",
                    "--share-decoder-input-output-embed", "--criterion", SEQ2SEQ_CRITERION, "--label-smoothing",
                    hp["label_smoothing"], "--r3f-lambda", lam, "--noise-type", noise, "--eps", r3f.eps,
                    "--r3f-kl-normalization", normalization, "--dropout", hp["dropout"], "--attention-dropout",
                    hp["attention_dropout"], "--weight-decay", hp["weight_decay"], "--optimizer", hp["optimizer"],
                    "--adam-betas", hp["adam_betas"], "--adam-eps", hp["adam_eps"], "--clip-norm", hp["clip_norm"],
                    "--lr-scheduler", hp["lr_scheduler"], "--lr", hp["lr"], "--total-num-update", str(max_update),
                    "--max-update", str(max_update), "--warmup-updates", str(warmup), "--max-tokens", str(per_gpu),
                    "--skip-invalid-size-inputs-valid-test", "--seed", seed, "--save-dir", run_dir, *shared, *dist,
                    *args]
                plan.runs.append(Run(run_dir, command, meta, f"{save_root}/{dataset}", config, int(seed)))
    return plan


def plan_translation(args: List[str], settings: Settings, tables: Tables) -> Plan:
    if len(args) < 1:
        die("give a CONFIG")
    config, args = args[0], args[1:]
    tsv = "translation.tsv"
    if config not in ("iwslt14_de_en", "mbart_en_ro"):
        die(f"unknown CONFIG {config}: choose iwslt14_de_en or mbart_en_ro")
    names = ("arch task source_lang target_lang model_flags moses_model_flags langs optimizer adam_betas adam_eps "
             "clip_norm lr "
             "lr_scheduler warmup_updates max_update dropout attention_dropout weight_decay label_smoothing max_tokens "
             "reference_gpus reference_update_freq r3f_kl_normalization r3f_lambda noise_type eps drop_lambda "
             "comparable_validation_flags").split()
    hp = {name: tables.get(tsv, name, config) for name in names}
    data_bin = settings.env.get("DATA_BIN", "")
    src, tgt = hp["source_lang"], hp["target_lang"]
    require_dir("DATA_BIN", data_bin, "the bin/ folder written by preprocess/translation.py")
    require_file("DATA_BIN", f"{data_bin}/train.{src}-{tgt}.{src}.bin",
                 f"not a binarised {src}-{tgt} set: run preprocess/translation.py first (docs/translation.md)")
    settings.check_launch()
    if settings.sweep:
        die("SWEEP=1: recipes/translation.sh has no grid; list the values to run in R3F_LAMBDA / DROP_LAMBDA")
    notes = settings.notes
    settings.fp16_note(notes)
    launch, dist = settings.launch_prefix()
    shared = settings.shared_flags()
    pretrained: List[str] = []
    if config == "mbart_en_ro" and not settings.tiny:
        require_file("MBART_PATH", settings.env.get("MBART_PATH", ""),
                     "the mbart.cc25 checkpoint, model.pt of mbart.cc25.v2.tar.gz")
        pretrained = ["--finetune-from-model", settings.env["MBART_PATH"]]
    tokens = int(hp["max_tokens"]) * int(hp["reference_gpus"]) * int(hp["reference_update_freq"])
    per_gpu = settings.per_gpu_batch(tokens)
    max_update, warmup = int(hp["max_update"]), int(hp["warmup_updates"])
    tokenization = translation_tokenization(settings, data_bin, config, hp["moses_model_flags"])
    model_flags = hp["moses_model_flags"] if tokenization == "moses" else hp["model_flags"]
    model = ["--arch", hp["arch"], *model_flags.split()]
    # IWSLT'14's comparable path keeps checkpoint_best.pt by validation BLEU, as the published commands do
    validation = hp["comparable_validation_flags"].split() if tokenization == "moses" else []
    if settings.tiny:
        model += tables.get("tiny.tsv", "seq2seq", "flags").split()
        max_update, warmup, per_gpu = int(settings.tiny_updates), 1, 512
    task_flags = ["--task", hp["task"], "--source-lang", src, "--target-lang", tgt]
    if hp["langs"] != "-":
        task_flags += ["--langs", hp["langs"]]
    schedule = ["--lr-scheduler", hp["lr_scheduler"], "--lr", hp["lr"], "--warmup-updates", str(warmup),
                "--max-update", str(max_update)]
    if hp["lr_scheduler"] == "polynomial_decay":
        schedule += ["--total-num-update", str(max_update)]
    methods = words(settings.env.get("METHODS") or "std r3f drop")
    seeds = seeds_of(settings, 1)
    save_root = settings.text("SAVE_ROOT", "runs/translation")
    value = flag_value(args, "--r3f-kl-normalization")
    if value is not None and value != hp["r3f_kl_normalization"]:
        fail(f"--r3f-kl-normalization {value} contradicts the table's {hp['r3f_kl_normalization']}, for which lambda "
             f"was chosen: change it in {tables.path(tsv)}")
    notes.append(f"# {config}: lr {hp['lr']}, {max_update} updates ({warmup} warm-up), {tokens} tokens per update = "
                 f"{settings.world_size} GPU(s) x {per_gpu} x update-freq {settings.update_freq}")
    for method in methods:
        if method not in ("std", "r3f", "drop"):
            die(f'unknown method {method}: choose std, r3f or drop (METHODS="std r3f drop")')
    plan = Plan("translation", launch, notes=notes, overrides=list(args))
    swept = set()
    for method in methods:
        if method == "std":
            r3f = r3f_settings(settings, False, hp.__getitem__)
            uses_r3f = False
        elif method == "r3f":
            r3f = r3f_settings(settings, True, hp.__getitem__)
            uses_r3f = True
        else:
            r3f = r3f_settings(settings, True, hp.__getitem__, lambda_variable="DROP_LAMBDA",
                               lambda_env=settings.env.get("DROP_LAMBDA") or hp["drop_lambda"], noise_env="none")
            uses_r3f = True
        lambda_variable = "DROP_LAMBDA" if method == "drop" else "R3F_LAMBDA"
        check_overrides(settings, method, SEQ2SEQ_CRITERION, hp["task"], uses_r3f, {
            "--r3f-lambda": (lambda_variable, r3f.lambdas), "--noise-type": ("NOISE_TYPE", r3f.noise_types),
            "--eps": ("R3F_EPS", [r3f.eps])}, args, seq2seq=True)
        if len(r3f.lambdas) > 1:
            swept.add("r3f_lambda")
        search = {"configurations": len(r3f.lambdas) * len(r3f.noise_types), "sweep": False}
        eps_named = float(r3f.eps) != float(r3f.table_eps)
        for noise in r3f.noise_types:
            for lam in r3f.lambdas:
                name = f"lambda{lam}_{noise}" + (f"_eps{r3f.eps}" if eps_named else "")
                for seed in seeds:
                    run_dir = f"{save_root}/{config}/{method}/{name}/seed{seed}"
                    meta = {"task": config, "dataset": config, "method": method, "config": name, "seed": int(seed),
                            "metric": "bleu", "valid_subsets": "valid", "r3f_lambda": json_value(lam),
                            "noise_type": noise, "eps": json_value(r3f.eps),
                            "r3f_kl_normalization": hp["r3f_kl_normalization"], "tokenization": tokenization,
                            "search": search}
                    command = [
                        data_bin, *task_flags, *model, *pretrained, "--criterion", SEQ2SEQ_CRITERION,
                        "--label-smoothing", hp["label_smoothing"], "--r3f-lambda", lam, "--noise-type", noise, "--eps",
                        r3f.eps, "--r3f-kl-normalization", hp["r3f_kl_normalization"], "--dropout", hp["dropout"],
                        "--attention-dropout", hp["attention_dropout"], "--weight-decay", hp["weight_decay"],
                        "--optimizer", hp["optimizer"], "--adam-betas", hp["adam_betas"], "--adam-eps", hp["adam_eps"],
                        "--clip-norm", hp["clip_norm"], *schedule, "--max-tokens", str(per_gpu),
                        "--skip-invalid-size-inputs-valid-test", *validation, "--seed", seed, "--save-dir", run_dir,
                        *shared, *dist, *args]
                    plan.runs.append(Run(run_dir, command, meta, f"{save_root}/{config}/{method}", name, int(seed)))
    plan.swept = sorted(swept)
    return plan


def translation_tokenization(settings: Settings, data_bin: str, config: str, moses_flags: str) -> str:
    """TOKENIZATION (sentencepiece | moses), else what DATA_BIN holds: preprocess/translation.py --tokenization
    moses leaves its BPE codes (``code``) and no sentencepiece.model there."""
    found = "moses" if os.path.isfile(os.path.join(data_bin, "code")) and not os.path.isfile(
        os.path.join(data_bin, "sentencepiece.model")) else "sentencepiece"
    given = settings.env.get("TOKENIZATION") or found
    if given not in ("sentencepiece", "moses"):
        die(f"TOKENIZATION={given}: choose sentencepiece or moses (or leave it unset: DATA_BIN tells)")
    if given != found:
        die(f"TOKENIZATION={given}, but DATA_BIN={data_bin} holds {found} data: preprocess with "
            f"--tokenization {given}, or leave TOKENIZATION unset")
    if given == "moses" and moses_flags == "-":
        die(f"TOKENIZATION=moses is IWSLT'14's comparable path (preprocess/translation.py --tokenization moses); "
            f"{config} has none")
    return given


PLANNERS = {"glue": plan_glue, "xnli": plan_xnli, "summarization": plan_summarization,
            "translation": plan_translation}

# run.json's "swept" names effective-configuration keys
SWEPT_KEYS = {"lr": "optimization.lr", "r3f_lambda": "criterion.r3f_lambda", "noise_type": "criterion.noise_type",
              "eps": "criterion.eps"}


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


def make_plan(recipe: str, args: Sequence[str], env: Mapping[str, str], hparams: Optional[str] = None,
              notes: Optional[List[str]] = None) -> Plan:
    """The plan of one recipe invocation: every run's fairseq-train arguments (raises Stop on a wrong input).
    ``notes`` receives the lines for stderr as they come (also those before a Stop)."""
    if recipe not in PLANNERS:
        die(f"unknown recipe {recipe}: choose {', '.join(RECIPES)}")
    settings = Settings(env)
    if notes is not None:
        settings.notes = notes
    plan = PLANNERS[recipe](list(args), settings, Tables(hparams or HPARAMS))
    check_finite(plan.overrides, "a flag after the recipe's arguments")
    check_precision(settings, plan.overrides)
    plan.swept = [SWEPT_KEYS.get(k, "criterion." + k) for k in plan.swept]
    if settings.tiny:
        plan.env["OMP_NUM_THREADS"] = env.get("OMP_NUM_THREADS") or "1"
    return plan


def dry_run_text(plan: Plan) -> str:
    """What DRY_RUN=1 prints on stdout: every run's folder and command."""
    return "".join(f"# run: {run.dir}\n{quoted(plan.launch + run.command)}\n" for run in plan.runs)


# ------------------------------------------------------------------------------------ the launch

def read_json_file(path: str, what: str):
    """A JSON file the launcher wrote; a damaged one stops with its name and what to do."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        fail(f"{path} is damaged (not JSON: {error}); it records {what}: delete the run folder "
             f"{os.path.dirname(path) or '.'} to run it again from the start")


def write_json_atomic(path: str, data) -> None:
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1, sort_keys=False)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_text_atomic(path: str, text: str) -> None:
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


class RunLock:
    """A run folder held by this process (``run_lock``): ``fd`` is the locked folder, which a training process
    inherits to hold it too; ``add_holder`` names such a process in the folder's holder record."""

    def __init__(self, run_dir: str, fd: int, holders: List[Dict]):
        self.run_dir, self.fd, self.holders = run_dir, fd, holders

    def add_holder(self, program: str, pid: int) -> None:
        self.holders.append(_holder(program, pid))
        write_text_atomic(os.path.join(self.run_dir, LOCK_FILE), json.dumps({"holders": self.holders}) + "\n")


def _holder(program: str, pid: int) -> Dict:
    return {"program": program, "pid": pid, "host": socket.gethostname(), "started": now_iso()}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def lock_holders_text(run_dir: str) -> str:
    """The processes that hold RUN_DIR, from its holder record: those still alive on this host (a holder on
    another host cannot be checked: named as recorded)."""
    path = os.path.join(run_dir, LOCK_FILE)
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
    except FileNotFoundError:
        return f"a process whose record {path} was deleted"
    try:
        holders = json.loads(text)["holders"]
        described = [f"{h['program']} pid {h['pid']} host {h['host']} started {h['started']}" for h in holders
                     if h["host"] != socket.gethostname() or _alive(int(h["pid"]))]
    except (ValueError, KeyError, TypeError):  # not the launcher's record: shown as it is
        return " ".join(text.split()) or "another launch"
    return " and ".join(described) or f"a process not in its record {path}"


@contextlib.contextmanager
def run_lock(run_dir: str, program: str = "launcher") -> Iterator[RunLock]:
    """Holds the run folder itself locked (``flock`` on the folder) while the block runs; a second launch is
    refused naming the processes that hold it (RUN_DIR/lock, the holder record: ``program`` and this pid, then
    each process ``add_holder`` names). The lock is the folder's, not a file's: deleting RUN_DIR/lock releases
    nothing. A training process inherits the locked descriptor (``RunLock.fd``), so the folder stays locked
    while it lives, also after the launcher itself was killed."""
    fd = os.open(run_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            if error.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise
            fail(f"{run_dir} is in use by {lock_holders_text(run_dir)} (the folder is locked; "
                 f"{os.path.join(run_dir, LOCK_FILE)} names who holds it): wait until that ends, or stop it; two "
                 f"launches on one run folder would train it twice")
        lock = RunLock(run_dir, fd, [])
        lock.add_holder(program, os.getpid())
        yield lock
    finally:
        os.close(fd)  # releases the lock, unless a training process that inherited it still lives


def parse_flags(command: Sequence[str]) -> Dict[str, object]:
    """{flag: last value (or True for a switch)}, and "<data>" for the positional data folder."""
    flags: Dict[str, object] = {}
    i = 0
    while i < len(command):
        item = command[i]
        if item.startswith("--"):
            name, sep, value = item.partition("=")
            if sep:
                flags[name] = value
            elif i + 1 < len(command) and not command[i + 1].startswith("--"):
                flags[name] = command[i + 1]
                i += 1
            else:
                flags[name] = True
        else:
            flags.setdefault("<data>", item)
        i += 1
    return flags


def plan_difference(recorded: Sequence[str], planned: Sequence[str]) -> Optional[str]:
    """The first flag whose value differs between two fairseq-train argument lists, described; None if equal."""
    if list(recorded) == list(planned):
        return None
    old, new = parse_flags(recorded), parse_flags(planned)
    for name in list(new) + [n for n in old if n not in new]:
        a, b = old.get(name), new.get(name)
        if a != b and not (isinstance(a, str) and isinstance(b, str) and same_value(a, b)):
            def show(v):
                return "absent" if v is None else ("given" if v is True else str(v))
            return f"{name}: {show(a)} recorded, {show(b)} now"
    return None  # the same settings in another order


def checkpoint_progress(path: str) -> Optional[Dict]:
    """num_updates and epoch state of a checkpoint, or None when there is none."""
    if not os.path.isfile(path):
        return None
    from fairseq_r3f.checkpoints import UnsafeCheckpoint, load_checkpoint

    try:
        state = load_checkpoint(path)
    except UnsafeCheckpoint as error:
        fail(f"{error}; nothing was trained")
    except Exception as error:  # a kill while fairseq copies checkpoint_last.pt can cut it short
        fail(f"{path} cannot be read ({type(error).__name__}: {str(error)[:200]}); if the run was killed while "
             f"saving, delete it (the run then starts again from its start model)")
    history = state.get("optimizer_history") or [{}]
    iterator = (state.get("extra_state") or {}).get("train_iterator") or {}
    return {"num_updates": history[-1].get("num_updates"), "epoch": iterator.get("epoch"),
            "end_of_epoch": iterator.get("end_of_epoch"), "iterations_in_epoch": iterator.get("iterations_in_epoch")}


def reached_end(progress: Optional[Dict], command: Sequence[str], trained: Optional[Dict]) -> bool:
    """The checkpoint is at the run's planned end: --max-update reached, or fairseq-train ended normally at
    exactly this checkpoint (the ``trained`` record, which also covers a --max-epoch end)."""
    if not progress or progress["num_updates"] is None:
        return False
    max_update = flag_value(command, "--max-update")
    if max_update is not None and int(max_update) > 0 and progress["num_updates"] >= int(max_update):
        return True
    return bool(trained) and trained.get("num_updates") == progress["num_updates"]


def record_plan(sweep_dir: str, runs: List[Run], planned: Optional[Mapping[str, Dict]] = None) -> None:
    """Adds these runs to SWEEP_DIR/plan.json (the union over every launch), under a lock; each with its planned
    configuration (``planned``: run folder -> planned_configuration) where given, by which the tables count a
    configuration's seeds out of the seeds planned for it."""
    os.makedirs(sweep_dir, exist_ok=True)
    path = os.path.join(sweep_dir, PLAN_FILE)
    folder = os.open(sweep_dir, os.O_RDONLY)  # the folder itself is the lock: no extra file beside the runs
    try:
        fcntl.flock(folder, fcntl.LOCK_EX)
        plan = read_json_file(path, "the runs this sweep planned") if os.path.exists(path) else {"runs": []}
        known = {entry["dir"] for entry in plan.get("runs", [])}
        for run in runs:
            entry = os.path.relpath(run.dir, sweep_dir)
            if entry not in known:
                plan["runs"].append({"dir": entry, "config": run.config, "seed": run.seed,
                                     **({"configuration": planned[run.dir]} if planned else {})})
                known.add(entry)
        write_json_atomic(path, plan)
    finally:
        os.close(folder)


def planned_configuration(command: Sequence[str]) -> Dict:
    """The effective configuration fairseq-train would build from the planned command."""
    from fairseq_r3f import runs

    try:
        return runs.effective_configuration(runs.configuration_from_args(command))
    except runs.RunError as error:
        fail(f"{error}: fix the flags after the recipe's arguments")


def verify(run_dir: str, planned: Dict) -> Dict:
    """The checkpoint's saved configuration against the plan, field by field; writes identity.json."""
    from fairseq_r3f import runs

    try:
        ident = runs.identify(run_dir)
    except runs.RunError as error:
        fail(str(error))
    if ident.get("mismatches"):
        fail(f"{run_dir}: run.json contradicts its checkpoint: {'; '.join(ident['mismatches'])}; the run did not "
             f"train what its label says: delete the folder and launch it again")
    saved = ident.get("configuration")
    if saved is None:
        saved = runs.effective_configuration(runs._saved_config(os.path.join(run_dir, runs.CHECKPOINT))["cfg"])
    differences = runs.configuration_differences(planned, saved)
    if differences:
        key = differences[0]
        fail(f"{run_dir}/checkpoint_last.pt was not trained as planned: {key} is {saved.get(key)!r} in the "
             f"checkpoint, {planned.get(key)!r} in the plan" + (f" (and {len(differences) - 1} more field(s))"
                                                             if len(differences) > 1 else "")
             + "; the folder holds another run: delete it and launch again")
    return ident


def launch_run(plan: Plan, run: Run, env: Mapping[str, str], k: int, total: int, started: float,
               planned: Optional[Dict] = None) -> None:
    elapsed = time.monotonic() - started
    eta = _clock(elapsed * (total - k + 1) / (k - 1)) if k > 1 else "unknown"
    print(f"run {k} of {total}: {run.dir} (elapsed {_clock(elapsed)}, ETA {eta})", file=sys.stderr)
    run_dir = run.dir
    label_path = os.path.join(run_dir, LABEL_FILE)
    done_path = os.path.join(run_dir, DONE_FILE)
    os.makedirs(run_dir, exist_ok=True)
    with run_lock(run_dir) as lock:
        planned = planned or planned_configuration(run.command)
        if os.path.exists(label_path):
            recorded = read_json_file(label_path, "what the run is")
            recorded = recorded if isinstance(recorded, dict) else {}
            difference = None
            if recorded.get("planned_configuration"):
                from fairseq_r3f import runs

                differing = runs.configuration_differences(recorded["planned_configuration"], planned)
                if differing:
                    key = differing[0]
                    difference = (f"{key}: {recorded['planned_configuration'].get(key)!r} recorded, "
                                  f"{planned.get(key)!r} now")
            elif recorded.get("command") is not None:
                difference = plan_difference(recorded["command"], run.command)
            elif os.path.exists(done_path):
                fail(f"{label_path} records no command (a run of an older version): its plan cannot be compared "
                     f"with this one; delete {run_dir} to run it again, or launch into another SAVE_ROOT")
            if difference:
                fail(f"{run_dir} holds a run of another plan ({difference}; see {label_path}): launch with the "
                     f"settings it was started with, or use another SAVE_ROOT (or delete the folder)")
        if os.path.exists(done_path):
            print(f"skip {run_dir}: already done (delete the folder to run it again)", file=sys.stderr)
            return
        from fairseq_r3f import runs

        label = {**run.label, "recipe": plan.recipe, "command": run.command, "overrides": plan.overrides,
                 "swept": plan.swept if run.label.get("search", {}).get("sweep") or plan.recipe == "translation"
                 else [], "planned_configuration": planned,
                 "plan": os.path.relpath(os.path.join(run.sweep_dir, PLAN_FILE), run_dir)}
        write_json_atomic(label_path, label)
        write_text_atomic(os.path.join(run_dir, "command.sh"), quoted(plan.launch + run.command) + "\n")
        write_json_atomic(os.path.join(run_dir, "versions.json"), runs.versions())

        def train() -> None:
            log_path = os.path.join(run_dir, runs.LOG_FILE)
            with open(log_path, "a", encoding="utf-8") as log:
                log.write(f"# {now_iso()} start\n")
                log.flush()
                # the training inherits the locked folder: it holds the folder while it lives, launcher or not
                training = subprocess.Popen(plan.launch + run.command, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, env={**env, **plan.env}, pass_fds=(lock.fd,))
                try:
                    lock.add_holder(os.path.basename(plan.launch[0]), training.pid)
                    status = training.wait()
                except BaseException:  # as subprocess.run: the launcher stops, so does its training
                    training.kill()
                    training.wait()
                    raise
            if status != 0:
                with open(log_path, encoding="utf-8", errors="replace") as log:
                    sys.stderr.write("".join(log.readlines()[-20:]))
                raise Stop(training_failure(run_dir, status, log_path), status=1)

        train_verify_and_finish(run_dir, planned, run.command, train)


def training_failure(run_dir: str, status: int, log_path: str) -> str:
    """What to do about a training that ended with ``status`` (negative: killed by that signal). Only an
    interruption is advised to be launched again: a failure fairseq-train reports fails the same way again."""
    from fairseq_r3f import runs

    checkpoint = os.path.join(run_dir, runs.CHECKPOINT)
    if status < 0 or status in (128 + 9, 128 + 15):  # a signal (or a launcher reporting one: 137, 143)
        number = -status if status < 0 else status - 128
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = f"signal {number}"
        return (f"the run in {run_dir} was killed ({name}); its log is {log_path}. The same command resumes it "
                + ("from its checkpoint_last.pt" if os.path.isfile(checkpoint) else
                   "from its start (it saved no checkpoint)"))
    kept = ("it saved no checkpoint: delete the folder to launch it with other settings"
            if not os.path.isfile(checkpoint) else "its checkpoint_last.pt is kept")
    return (f"the run in {run_dir} failed (exit status {status}); its log is {log_path}. Fix what its last lines "
            f"above say (launched again as it is, it fails the same way); {kept}")


def train_verify_and_finish(run_dir: str, planned: Dict, command: Sequence[str], train: Callable[[], object]):
    """The steps of a launch after its record (under the run folder's lock): ``train()`` unless the checkpoint
    already reached the planned end (``command``'s --max-update, or where an earlier training ended: the
    ``trained`` record), then the checkpoint verified against ``planned`` (identity.json), then ``done``.
    Returns what ``train`` returned (None when nothing trained)."""
    from fairseq_r3f import runs

    checkpoint = os.path.join(run_dir, runs.CHECKPOINT)
    trained_path = os.path.join(run_dir, "trained")
    trained = read_json_file(trained_path, "where fairseq-train ended") if os.path.exists(trained_path) else None
    progress = checkpoint_progress(checkpoint)
    result = None
    if reached_end(progress, command, trained):
        print(f"{run_dir}: its checkpoint already reached the planned end (update {progress['num_updates']}): "
              f"checking and recording it without training", file=sys.stderr)
    else:
        result = train()
        progress = checkpoint_progress(checkpoint)
        if progress is not None:
            write_json_atomic(trained_path, {"num_updates": progress["num_updates"], "ended": now_iso()})
    if progress is None:
        print(f"note: {run_dir} saved no checkpoint: no identity.json (the tables cannot check what it was)",
              file=sys.stderr)
    else:
        verify(run_dir, planned)
    write_json_atomic(os.path.join(run_dir, DONE_FILE),
                      {"num_updates": None if progress is None else progress["num_updates"], "finished": now_iso()})
    return result


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m{seconds % 60:02d}s"


# ------------------------------------------------------------------- fairseq-hydra-train's runs
#
# fairseq-hydra-train composes a config and trains it in one process: there is no argument list to plan. The
# plugin's hydra module (hydra_plugins/fairseq_r3f_plugin) hands the composed config of one of the plugin's
# configs to launch_composed, which runs the steps above on it: the run folder is checkpoint.save_dir, the
# planned configuration is the composed config's, and the label comes from what the config composed to.

HYDRA_SUMMARIZATION_DATASETS = ("cnn_dm", "gigaword", "reddit_tifu")
HYDRA_CONFIG_METHODS = {"stdpp": "std++", "std": "std", "r3f": "r3f", "r4f": "r4f"}
# fairseq's own log format, which the tables read train.log in (fairseq_cli/train.py, fairseq.utils.reset_logging)
FAIRSEQ_LOG_FORMAT = "%(asctime)s | %(levelname)s | %(name)s | %(message)s"


def hydra_config_family(config_name: str) -> Optional[Tuple[str, str]]:
    """(family, method of the name) for the name of one of the plugin's configs (fairseq_r3f/config/*/NAME.yaml:
    rte_r3f -> ("rte", "r3f"), xnli_std, cnn_dm_r3f); None for any other config name."""
    family, _, method = (config_name or "").rpartition("_")
    if not family or method not in HYDRA_CONFIG_METHODS or "/" in config_name or not any(
            os.path.isfile(os.path.join(USER_DIR, "config", folder, config_name + ".yaml"))
            for folder in ("glue", "xnli", "summarization")):
        return None
    return family, method


def _first(value):
    """A one-item list's item (an OmegaConf ListConfig too); anything else as it is."""
    if value is not None and not isinstance(value, (str, bytes)) and hasattr(value, "__len__"):
        return value[0] if len(value) == 1 else list(value)
    return value


def hydra_label(cfg, config_name: str, tables: Optional[Tables] = None) -> Dict:
    """run.json's label of a fairseq-hydra-train run of the plugin's config ``config_name``, from the composed
    config ``cfg`` (what will run): the method from its criterion and head, checked against the config's name;
    the GLUE task from the name, checked against the composed number of classes and the data folder's name."""
    tables = tables or Tables()
    family, name_method = hydra_config_family(config_name) or ("", "")
    criterion = str(cfg.criterion._name)
    arch = str(cfg.model._name)
    common = {"config": config_name, "seed": int(cfg.common.seed),
              "search": {"configurations": 1, "grid": {}, "grid_size": 1, "sweep": False}}
    r3f_values = {key: cfg.criterion[key] for key in ("r3f_lambda", "noise_type", "eps") if key in cfg.criterion}
    if family in HYDRA_SUMMARIZATION_DATASETS:
        if criterion != SEQ2SEQ_CRITERION:
            fail(f"criterion._name={criterion}: {config_name} trains {SEQ2SEQ_CRITERION}; drop the override")
        return {"dataset": family, **common, **r3f_values,
                "r3f_kl_normalization": cfg.criterion.get("r3f_kl_normalization")}
    head = head_of_arch(arch)
    if head == OUTPROJ_HEAD:
        fail(f"model._name={arch} is fairseq's released out_proj-only head, not {config_name}'s: drop it")
    method = {"sentence_prediction": "std" if family == "xnli" else "std++",
              "sentence_prediction_r3f": "r4f" if head else "r3f"}.get(criterion)
    if method is None or (head and method != "r4f"):
        fail(f"criterion._name={criterion} with model._name={arch} is none of the methods of the plugin's configs "
             f"(std/std++: sentence_prediction; r3f: sentence_prediction_r3f; r4f: the same on an *_sn_* model): "
             f"run {config_name} as it is, or the recipes for other methods")
    if method != HYDRA_CONFIG_METHODS[name_method]:
        fail(f"{config_name} composed to {method} (criterion._name={criterion}, model._name={arch}), not "
             f"{HYDRA_CONFIG_METHODS[name_method]}: drop the overrides that change the method, or run the config of "
             f"the method you mean")
    if family == "xnli":
        task = "XNLI"
    else:
        known = {t.lower().replace("-", "_"): t for t in tables.rows("glue_tasks.tsv")[1]}
        if family not in known:
            fail(f"{config_name}: no GLUE task {family!r} in {tables.path('glue_tasks.tsv')}")
        task = known[family]
        classes = tables.get("glue_tasks.tsv", task, "num_classes")
        if int(cfg.task.num_classes) != int(classes):
            fail(f"task.num_classes={cfg.task.num_classes}: {task} has {classes} classes; drop the override (the "
                 f"tables would list the run as {task})")
        data = os.path.basename(os.path.normpath(str(cfg.task.data)))
        other = {f"{t}-bin": t for t in known.values()}.get(data)
        if other is not None and other != task:
            fail(f"task.data={cfg.task.data} holds {other}, and {config_name} is {task}: give {task}'s data, or "
                 f"run {other.lower().replace('-', '_')}_{name_method}")
    batch = cfg.dataset.batch_size
    world = int(cfg.distributed_training.distributed_world_size or 1)
    update_freq = int(_first(cfg.optimization.update_freq) or 1)
    if not r3f_values:  # as the recipes label a method without the R3F term
        r3f_values = {"r3f_lambda": 0, "noise_type": "none"}
    return {"task": task, "method": method, "metric": str(cfg.checkpoint.best_checkpoint_metric),
            "valid_subsets": str(cfg.dataset.valid_subset), "batch_reading": "effective",
            "effective_batch": None if batch is None else int(batch) * world * update_freq,
            **common, **r3f_values, "lr": _first(cfg.optimization.lr)}


def _trained_config(cfg):
    """The config fairseq-hydra-train's _hydra_main hands to fairseq-train: the composed one with fairseq's
    defaults added (add_defaults) and every interpolation resolved. ``cfg`` itself is left as it is."""
    import copy

    from fairseq.dataclass.initialize import add_defaults
    from omegaconf import OmegaConf, open_dict

    cfg = copy.deepcopy(cfg)
    add_defaults(cfg)
    cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True, enum_to_str=True))
    if str(cfg.task.get("_name")).startswith("sentence_prediction") and "max_positions" in cfg.task:
        cfg.model.max_positions = cfg.task.max_positions  # as the task's build_model does before the model is built
    from fairseq.models import ARCH_CONFIG_REGISTRY

    arch = cfg.model.get("_name")
    if arch in ARCH_CONFIG_REGISTRY:  # as fairseq's models.build_model completes a legacy architecture's section
        with open_dict(cfg.model):
            ARCH_CONFIG_REGISTRY[arch](cfg.model)
    return cfg


TRAIN_LOG_HANDLER = "fairseq_r3f_train_log"


def _add_to_hydra_job_logging(path: str) -> Callable[[], None]:
    """Adds a handler of ``path`` on fairseq's loggers to Hydra's job logging config, and returns what undoes it.
    fairseq-hydra-train hands that config to fairseq-train (cfg.job_logging_cfg), which applies it in its first
    worker: with distributed_training.distributed_world_size > 1 a spawned process, which only logs what that
    config says. (With common.reset_logging=true fairseq hands no config over.)"""
    try:
        from hydra.core.hydra_config import HydraConfig
        from omegaconf import OmegaConf, open_dict, read_write
    except ImportError:
        return lambda: None
    if not HydraConfig.initialized() or HydraConfig.get().get("job_logging") is None:
        return lambda: None
    node = HydraConfig.get().job_logging
    previous = {key: OmegaConf.to_container(node[key]) if key in node else None
                for key in ("formatters", "handlers", "loggers")}
    with read_write(node), open_dict(node):
        node.formatters = {**(previous["formatters"] or {}),
                           TRAIN_LOG_HANDLER: {"format": FAIRSEQ_LOG_FORMAT, "datefmt": "%Y-%m-%d %H:%M:%S"}}
        node.handlers = {**(previous["handlers"] or {}), TRAIN_LOG_HANDLER: {
            "class": "logging.FileHandler", "formatter": TRAIN_LOG_HANDLER, "filename": path, "encoding": "utf-8"}}
        loggers = dict(previous["loggers"] or {})
        for name in ("fairseq", "fairseq_cli"):
            entry = dict(loggers.get(name) or {})
            entry["handlers"] = [*(entry.get("handlers") or []), TRAIN_LOG_HANDLER]
            loggers[name] = entry
        node.loggers = loggers

    def undo():
        with read_write(node), open_dict(node):
            for key, value in previous.items():
                if value is None:
                    node.pop(key, None)
                else:
                    node[key] = value

    return undo


@contextlib.contextmanager
def _train_log(path: str) -> Iterator[None]:
    """Appends fairseq's log lines (its json records and checkpoint messages) to ``path`` in fairseq-train's format,
    whatever Hydra does with the console: a handler on fairseq's loggers, which Hydra's logging setup and fairseq's
    reset_logging (both of the root logger only) leave alone, and the same handler in Hydra's job logging config,
    which fairseq-train applies in its first worker."""
    import logging

    path = os.path.abspath(path)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter(FAIRSEQ_LOG_FORMAT, datefmt="%Y-%m-%d %H:%M:%S"))
    loggers = [logging.getLogger(name) for name in ("fairseq", "fairseq_cli")]
    for logger in loggers:
        logger.addHandler(handler)
    undo = _add_to_hydra_job_logging(path)
    try:
        yield
    finally:
        undo()
        for logger in loggers:  # this one, and those fairseq-train made from Hydra's config
            for found in list(logger.handlers):
                if found is handler or getattr(found, "baseFilename", None) == path:
                    logger.removeHandler(found)
                    found.close()
        handler.close()


def _job_overrides(argv: Sequence[str]) -> List[str]:
    """This job's overrides as Hydra records them (under --multirun, the job's values, not the sweep's lists);
    the command line's when Hydra has none."""
    try:
        from hydra.core.hydra_config import HydraConfig

        if HydraConfig.initialized():
            return [str(item) for item in HydraConfig.get().overrides.task]
    except (ImportError, AttributeError, KeyError):
        pass
    return [arg for arg in argv if "=" in arg and not arg.startswith("-")]


def launch_composed(cfg, train: Callable, config_name: str, argv: Sequence[str], env: Optional[Mapping] = None):
    """One fairseq-hydra-train run of the plugin's config ``config_name`` through the run layer; ``train(cfg)``
    is fairseq-hydra-train's own training (its _hydra_main). The run folder checkpoint.save_dir is locked for
    the whole launch; run.json (label, the command line, the planned configuration), versions.json and
    command.sh are written before training, train.log gets a ``# TIME start`` line and fairseq's records; after
    training the checkpoint is verified against the plan, identity.json written, then ``done``. A folder whose
    recorded plan differs is refused naming the field; a done run is not trained again; a checkpoint at its
    planned end is not trained one update further. Returns what ``train`` returns (None when nothing trained)."""
    from fairseq_r3f import runs

    env = os.environ if env is None else env
    if int(env.get("WORLD_SIZE") or 1) > 1 or int(env.get("SLURM_NTASKS") or 1) > 1:
        fail("fairseq-hydra-train of the plugin's configs runs as one process (its run folder is locked and "
             "recorded by it): set distributed_training.distributed_world_size=N for N GPUs of one machine, or use "
             "the recipes (LAUNCHER=torchrun / slurm) for several processes or machines")
    label = hydra_label(cfg, config_name)
    planned = runs.effective_configuration(_trained_config(cfg))
    if int(cfg.distributed_training.distributed_world_size or 1) > 1 and cfg.common.reset_logging:
        print("note: with common.reset_logging=true fairseq's workers (one per GPU) log to the console only: this "
              "run's train.log gets no records, and the tables will list it as truncated; drop the override",
              file=sys.stderr)
    run_dir = os.path.abspath(str(cfg.checkpoint.save_dir))
    label_path, done_path = os.path.join(run_dir, LABEL_FILE), os.path.join(run_dir, DONE_FILE)
    os.makedirs(run_dir, exist_ok=True)
    with run_lock(run_dir, "fairseq-hydra-train"):
        if os.path.exists(label_path):
            recorded = read_json_file(label_path, "what the run is")
            recorded = recorded if isinstance(recorded, dict) else {}
            differing = [f"{key}: {recorded.get(key)!r} recorded, {label.get(key)!r} now"
                         for key in ("task", "dataset", "method", "seed") if recorded.get(key) != label.get(key)]
            if recorded.get("recipe", "hydra") != "hydra":
                differing.insert(0, f"a run of recipes/{recorded['recipe']}.sh, not of fairseq-hydra-train")
            if not differing:
                keys = runs.configuration_differences(recorded.get("planned_configuration") or {}, planned)
                differing = [f"{key}: {(recorded.get('planned_configuration') or {}).get(key)!r} recorded, "
                             f"{planned.get(key)!r} now" for key in keys[:1]]
            if differing:
                fail(f"{run_dir} holds a run of another plan ({differing[0]}; see {label_path}): launch it with the "
                     f"overrides it was started with, or give another checkpoint.save_dir (or delete the folder)")
        if os.path.exists(done_path):
            print(f"skip {run_dir}: already done (delete the folder to run it again)", file=sys.stderr)
            return None
        command = ["fairseq-hydra-train", *argv]
        write_json_atomic(label_path, {**label, "recipe": "hydra", "command": command,
                                       "overrides": _job_overrides(argv), "swept": [],
                                       "planned_configuration": planned})
        write_text_atomic(os.path.join(run_dir, "command.sh"), quoted(command) + "\n")
        write_json_atomic(os.path.join(run_dir, "versions.json"), runs.versions())

        def train_in_this_process():
            log_path = os.path.join(run_dir, runs.LOG_FILE)
            with open(log_path, "a", encoding="utf-8") as log:
                log.write(f"# {now_iso()} start\n")
            with _train_log(log_path):
                return train(cfg)

        max_update = int(cfg.optimization.max_update or 0)
        return train_verify_and_finish(run_dir, planned, ["--max-update", str(max_update)], train_in_this_process)


def check_importable(plan: Plan) -> None:
    """Stops before anything is written when a module the planned runs import is missing here (the interpreter
    beside fairseq-train, which the recipes run this launcher with): a missing scikit-learn would otherwise end
    the first run at its first validation."""
    import importlib.util

    # by its file, not as fairseq_r3f.requirements: the package's __init__ imports fairseq, which may be what is
    # missing (requirements.py itself imports only the standard library)
    spec = importlib.util.spec_from_file_location("fairseq_r3f_requirements", os.path.join(USER_DIR, "requirements.py"))
    requirements = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(requirements)
    message = requirements.missing_message([run.command for run in plan.runs])
    if message:
        fail(message)


def usage_text(recipe_file: Optional[str]) -> str:
    """The recipe's header (from its third line to the first empty one), as its usage."""
    if recipe_file and os.path.isfile(recipe_file):
        lines = []
        with open(recipe_file, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                if number < 3:
                    continue
                line = line.rstrip("\n")
                if not line:
                    break
                if line.startswith("#"):
                    lines.append(re.sub(r"^# ?", "", line))
        return "\n".join(lines) + "\n"
    return f"usage: python -m fairseq_r3f.launch {{{','.join(RECIPES)}}} ARGS... [fairseq-train flags]\n"


def run_recipe(recipe: str, args: Sequence[str], env: Mapping[str, str], hparams: Optional[str] = None,
               usage: Optional[str] = None, stdout=None, stderr=None) -> int:
    """One recipe invocation: the plan, printed (DRY_RUN=1) or launched run by run. Returns the exit status."""
    stdout, stderr = stdout or sys.stdout, stderr or sys.stderr
    notes: List[str] = []
    try:
        try:
            plan = make_plan(recipe, args, env, hparams, notes)
        finally:
            for note in notes:
                print(note, file=stderr)
        if env.get("DRY_RUN") == "1":
            stdout.write(dry_run_text(plan))
            return 0
        check_importable(plan)
        # fairseq-train's view of every run, before any folder is made: a plan it refuses stops here
        planned = {run.dir: planned_configuration(run.command) for run in plan.runs}
        by_sweep: Dict[str, List[Run]] = {}
        for run in plan.runs:
            by_sweep.setdefault(run.sweep_dir, []).append(run)
        for sweep_dir, sweep_runs in by_sweep.items():
            record_plan(sweep_dir, sweep_runs, planned)
        started = time.monotonic()
        for k, run in enumerate(plan.runs, 1):
            launch_run(plan, run, env, k, len(plan.runs), started, planned[run.dir])
        return 0
    except ModuleNotFoundError as error:
        print(f"error: {sys.executable} cannot import {error.name} ({error}): activate the environment with fairseq "
              f"and the plugin (make install)", file=stderr)
        return 2
    except Stop as stop:
        print(f"error: {stop}", file=stderr)
        if stop.usage:
            print(file=stderr)
            stderr.write(usage if usage is not None else usage_text(None))
        return stop.status


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    hparams = usage_file = None
    while argv and argv[0] in ("--hparams", "--usage-from"):
        if len(argv) < 2:
            break
        if argv[0] == "--hparams":
            hparams = argv[1]
        else:
            usage_file = argv[1]
        argv = argv[2:]
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    return run_recipe(argv[0], argv[1:], os.environ, hparams, usage_text(usage_file))


if __name__ == "__main__":
    sys.exit(main())
