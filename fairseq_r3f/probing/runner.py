"""The machinery the three probing drivers share: their command line, the fine-tuning and probing runs as
fairseq-train commands, and a state file that makes a chain resumable.

Every run is a *step* with a key (``r4f/seed1/2-QNLI/finetune``). When a step finishes, its record (the
exact fairseq-train arguments, the run folder, the validation metric) goes into ``WORK_DIR/state.json``,
written atomically. A driver started again skips every recorded step and reruns the one that stopped: a
fine-tuning run continues from its own ``checkpoint_last.pt`` (its starting model is given with
``--finetune-from-model``, which fairseq applies only on a first launch), a probe (``--no-save``) restarts.
A recorded step whose arguments differ from what the driver would run now is an error, not a silent mix.

Before anything runs, a driver goes through its steps once without running them: every command is built and
checked (finite numbers; flags that would turn one method into another refused), and the count gives the
"run k of N" progress lines. After each fine-tuning the method that actually ran is read back from the
checkpoint's saved configuration (r3f_runs.identity) and checked against the method's name.
"""

import argparse
import json
import logging
import os
import shlex
import sys
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple, TypeVar

import torch

from fairseq_r3f.checkpoints import UnsafeCheckpoint, load_checkpoint
from fairseq_r3f.logs import read_json_log
from fairseq_r3f.probing import methods as method_defs
from fairseq_r3f.probing.methods import GlueHparams, Method
from fairseq_r3f.tools import USER_DIR, CommandFailed, fairseq_command, run_logged

from r3f_runs import values as run_values
from r3f_runs.identity import identity as checkpoint_identity
from r3f_runs.identity import label_mismatches, versions
from r3f_runs.tables import tiny_model_flags
from r3f_runs.values import Stop, flag_value
from r3f_runs.vocabulary import is_outproj_sn_arch, is_sn_arch, plain_arch, sn_arch

logger = logging.getLogger("fairseq_r3f.probing")

STATE_VERSION = 1

# --tiny: the tiny RoBERTa of the tests and of the recipes' TINY=1, on the CPU, for a few updates per run.
TINY_MODEL = [*tiny_model_flags("roberta"), "--max-positions", "64"]

T = TypeVar("T")


class StepFailed(RuntimeError):
    pass


def head_name(task: str) -> str:
    """A classification head per task (sst2_head), so every fine-tuning step starts with a fresh head:
    fairseq drops the previous task's head from the checkpoint because the model has no head of that name."""
    return "".join(c for c in task.lower() if c.isalnum()) + "_head"


def split_extra(argv: Sequence[str]) -> Tuple[List[str], List[str]]:
    """Driver arguments, and the fairseq-train flags after ``--`` (appended last to every run)."""
    argv = list(argv)
    if "--" in argv:
        cut = argv.index("--")
        return argv[:cut], argv[cut + 1:]
    return argv, []


def add_common_arguments(parser: argparse.ArgumentParser, default_methods: List[str]) -> None:
    parser.add_argument("--data-root", required=True,
                        help="folder with one binarised folder per GLUE task, DATA_ROOT/<TASK>-bin (input0/, "
                        "input1/, label/), as preprocess/glue.py writes them")
    parser.add_argument("--work-dir", required=True,
                        help="where runs, state.json, results.json, results.md and the figure go; running the "
                        "same command again resumes there")
    parser.add_argument("--pretrained",
                        help="checkpoint the first fine-tuning starts from (RoBERTa's model.pt); without it the "
                        "model starts from a random initialisation (only sensible for tests)")
    parser.add_argument("--arch", default="roberta_large",
                        help="model architecture; R4F runs its *_sn_* variant (default: roberta_large)")
    parser.add_argument("--methods", nargs="+", default=default_methods,
                        help=f"fine-tuning methods to compare (default: {' '.join(default_methods)})")
    parser.add_argument("--method", action="append", default=[], metavar="NAME=FLAGS",
                        help="replace or add a method's fairseq-train flags, e.g. "
                        "--method r3f='--criterion sentence_prediction_r3f --r3f-lambda 0.5 --noise-type normal "
                        "--eps 1e-5'")
    parser.add_argument("--seeds", nargs="+", type=int, default=[1], help="one chain per seed (default: 1)")
    parser.add_argument("--probe-flags", default="",
                        help="fairseq-train flags for the probing runs only, after all others (e.g. '--lr 1e-3')")
    parser.add_argument("--hparams",
                        help="folder with glue.tsv and glue_tasks.tsv (default: the shipped fairseq_r3f/hparams)")
    parser.add_argument("--fairseq-train", default=None,
                        help="command that runs fairseq-train (default: the one of this Python environment)")
    parser.add_argument("--keep-full-checkpoints", action="store_true",
                        help="keep checkpoint_last.pt and the optimizer state of finished fine-tuning runs; by "
                        "default only the model of checkpoint_best.pt, which later steps read, is kept (about a "
                        "third of the disk with Adam)")
    parser.add_argument("--tiny", action="store_true",
                        help="a tiny RoBERTa (2 layers of 32, 64 positions) on the CPU, --tiny-updates updates per "
                        "run: tries the whole driver in about ten seconds per run (tests; the metrics mean nothing)")
    parser.add_argument("--tiny-updates", type=int, default=4, help="updates per run with --tiny (default: 4)")
    parser.add_argument("--dry-run", action="store_true", help="print the fairseq-train commands, run nothing")
    parser.epilog = ("Flags after '--' go to every fairseq-train run, last, so they override the recipe's "
                     "(e.g. -- --fp16 --update-freq 2).")


@dataclass
class Experiment:
    """One driver's settings and runs."""

    name: str
    args: argparse.Namespace
    extra: List[str]

    def __post_init__(self):
        args = self.args
        self.work_dir = os.path.abspath(args.work_dir)
        self.data_root = os.path.abspath(args.data_root)
        if not os.path.isdir(self.data_root):
            raise SystemExit(f"error: --data-root {args.data_root} is not a folder")
        if args.pretrained and not os.path.isfile(args.pretrained):
            raise SystemExit(f"error: --pretrained {args.pretrained}: no such file")
        self.pretrained = os.path.abspath(args.pretrained) if args.pretrained else None
        if self.pretrained is None:
            logger.warning("no --pretrained: the first fine-tuning starts from a random initialisation")
        try:
            self.hparams = GlueHparams.load(args.hparams)
            methods = method_defs.parse_method_overrides(args.method, method_defs.builtin_methods(self.hparams.shared))
        except (OSError, ValueError) as error:
            raise SystemExit(f"error: {error}")
        unknown = [m for m in args.methods if m not in methods]
        if unknown:
            raise SystemExit(
                f"error: unknown method(s) {', '.join(unknown)}: choose from {', '.join(methods)} or define one "
                f"with --method NAME=FLAGS"
            )
        self.methods: Dict[str, Method] = {m: methods[m] for m in args.methods}
        self.train_command = shlex.split(args.fairseq_train) if args.fairseq_train else _default_train_command()
        self.probe_extra = shlex.split(args.probe_flags)
        if is_sn_arch(args.arch) or is_outproj_sn_arch(args.arch):
            raise SystemExit(
                f"error: --arch {args.arch}: give the plain architecture ({plain_arch(args.arch)}); r4f "
                f"runs its spectrally normalised variant, the other methods need the plain head"
            )
        if args.tiny_updates < 1:
            raise SystemExit(f"error: --tiny-updates {args.tiny_updates}: give at least 1")
        try:
            for method in self.methods.values():
                method_defs.check_overrides(method, args.arch, self.extra)
        except ValueError as error:
            raise SystemExit(f"error: {error}")
        if not args.dry_run and any(flag in ("--fp16", "--bf16", "--memory-efficient-fp16") for flag in self.extra) \
                and not torch.cuda.is_available():
            raise SystemExit("error: -- --fp16 (or --bf16) needs a CUDA GPU and torch sees none here: drop it to "
                             "train in fp32 on this machine, or run on a GPU (--dry-run prints the commands)")
        self.tiny = tiny_flags(args.tiny_updates) if args.tiny else []
        self.env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")} if args.tiny else None
        self.state_path = os.path.join(self.work_dir, "state.json")
        self.state = self._load_state()
        self.counting = False  # True while the steps are only counted (see run_steps)
        self.planned_keys: List[str] = []
        self.planned = 0
        self.done_now = 0
        self.started = time.monotonic()
        self.seconds_running = 0.0

    # -- inputs -----------------------------------------------------------------------------------------
    def check_tasks(self, tasks: Sequence[str]) -> None:
        """Every task has a row in the hyper-parameter table and a binarised folder."""
        problems = []
        for task in dict.fromkeys(tasks):
            try:
                self.hparams.metric(task)
            except ValueError as error:
                problems.append(str(error))
                continue
            folder = self.data_dir(task)
            label = os.path.join(folder, "label")
            if not os.path.isfile(os.path.join(folder, "input0", "dict.txt")):
                problems.append(f"{folder}/input0/dict.txt not found: binarise {task} first (preprocess/glue.py)")
            elif not any(os.path.isfile(os.path.join(label, name)) for name in ("dict.txt", "train.label")):
                problems.append(f"{label} has neither dict.txt nor train.label: binarise {task}'s labels first")
        if problems:
            raise SystemExit("error: " + "\n       ".join(problems))

    def data_dir(self, task: str) -> str:
        return os.path.join(self.data_root, f"{task}-bin")

    def run_dir(self, *parts: str) -> str:
        return os.path.join(self.work_dir, "runs", *parts)

    # -- commands -------------------------------------------------------------------------------------------
    def finetune_args(self, task: str, method: str, seed: int, init: Optional[str], save_dir: str) -> List[str]:
        """A fine-tuning step: the recipes' GLUE command (r3f_runs.plan) with the method's criterion and
        flags, R4F's spectrally normalised --arch, a head per task and the starting model."""
        chosen = self.methods[method]
        arch = sn_arch(self.args.arch) if chosen.spectral_norm_head else self.args.arch
        criterion = chosen.criterion or flag_value(chosen.flags, "--criterion") or "sentence_prediction"
        start = ["--finetune-from-model", init] if init else []
        return self.hparams.command(
            self.data_dir(task), task, arch, "sentence_prediction", criterion, chosen.flags, seed, save_dir,
            ["--user-dir", USER_DIR, "--classification-head-name", head_name(task), *start, "--no-epoch-checkpoints",
             "--log-format", "json", *self.tiny, *self.extra])

    def probe_args(self, task: str, checkpoint: str, seed: int, save_dir: str) -> List[str]:
        return self.hparams.command(
            self.data_dir(task), task, self.args.arch, "sentence_prediction_probe", "sentence_prediction", [], seed,
            save_dir, ["--user-dir", USER_DIR, "--probe-checkpoint", checkpoint, "--no-save", "--log-format", "json",
                       *self.tiny, *self.extra, *self.probe_extra])

    # -- steps ------------------------------------------------------------------------------------------
    def finetune(self, key: str, task: str, method: str, seed: int, init: Optional[str]) -> Dict:
        """Fine-tunes ``task`` from ``init`` (None: random initialisation); the record's ``checkpoint`` is
        the run's checkpoint_best.pt."""
        save_dir = self.run_dir(*key.split("/"))
        args = self.finetune_args(task, method, seed, init, save_dir)
        checkpoint = os.path.join(save_dir, "checkpoint_best.pt")
        fresh = key not in self.state["steps"]
        record = self._step(key, "finetune", task, args, save_dir, checkpoint=checkpoint, method=method)
        if fresh and not self.counting and not self.args.dry_run and not self.args.keep_full_checkpoints:
            last = os.path.join(save_dir, "checkpoint_last.pt")
            if os.path.exists(last):  # only a cut-off run resumes from it
                os.remove(last)
            _drop_optimizer_state(checkpoint)
        return record

    def probe(self, key: str, task: str, checkpoint: str, seed: int) -> Dict:
        save_dir = self.run_dir(*key.split("/"))
        return self._step(key, "probe", task, self.probe_args(task, checkpoint, seed, save_dir), save_dir)

    def run_steps(self, steps: Callable[[], T]) -> T:
        """Calls ``steps`` (a driver's loop over finetune() and probe()) twice: first only counting and checking
        its steps, so that a bad flag stops the driver before anything runs and progress can say "k of N",
        then for real."""
        self.counting = True
        try:
            steps()
        finally:
            self.counting = False
        self.planned = 0
        return steps()

    def _progress(self, key: str) -> str:
        """``run k of N KEY (elapsed, ETA)``: the ETA assumes the runs left take as long as those run now."""
        position, total = self.planned, len(self.planned_keys)
        left = sum(1 for k in self.planned_keys[position - 1:] if k not in self.state["steps"])
        eta = _clock(self.seconds_running / self.done_now * left) if self.done_now else "after the first run"
        return f"run {position} of {total} {key} (elapsed {_clock(time.monotonic() - self.started)}, ETA {eta})"

    def _step(self, key: str, kind: str, task: str, args: List[str], run_dir: str,
              checkpoint: Optional[str] = None, method: Optional[str] = None) -> Dict:
        metric = self.hparams.metric(task)
        if self.counting:
            check_finite(args, key)
            self.planned_keys.append(key)
            return {"key": key, "checkpoint": checkpoint, "metric": None}
        self.planned += 1
        if self.args.dry_run:
            print(f"# {key}\n" + " ".join(shlex.quote(a) for a in self.train_command + args))
            return {"key": key, "checkpoint": checkpoint, "metric": None}
        record = self.state["steps"].get(key)
        if record is not None:
            if record["args"] != args:
                raise SystemExit(
                    f"error: {self.state_path} records step {key} run with other fairseq-train arguments than "
                    f"this command gives now (changed flags, methods or paths). Resume with the same command, "
                    f"or use a new --work-dir.\n  recorded: {shlex.join(record['args'])}\n  now:      "
                    f"{shlex.join(args)}"
                )
            logger.info(f"{self._progress(key)}: done before ({metric} {record['metric']})")
            return record

        log_path = os.path.join(run_dir, "train.log")
        last = _saved_progress(os.path.join(run_dir, "checkpoint_last.pt")) if checkpoint is not None else None
        began = time.monotonic()
        if last is not None and last["num_updates"] >= int(flag_value(args, "--max-update")):
            # fairseq-train finished but the step was not recorded: launched again, fairseq would train one
            # update more than --max-update and could replace checkpoint_best.pt.
            logger.info(f"{self._progress(key)}: its run finished before (update {last['num_updates']}); recording it")
            value, history = None, []  # the value is read from checkpoint_best.pt below
        else:
            resuming = f": resuming its checkpoint_last.pt (update {last['num_updates']})" if last else ""
            logger.info(f"{self._progress(key)}{resuming}; log {log_path}")
            try:
                output = run_logged(self.train_command + args, log_path, append=True, env=self.env).stdout
            except CommandFailed as error:
                raise StepFailed(f"step {key} failed: {error}\nFix the cause and run the same command again: "
                                 f"finished steps are not redone.") from error
            value, history = _best_metric(output, metric)
        if checkpoint is not None:
            if not os.path.isfile(checkpoint):
                raise StepFailed(f"step {key} finished without writing {checkpoint} (was --no-save passed?)")
            value = _saved_progress(checkpoint)["best"]  # fairseq's best so far, whether or not the run resumed
        if checkpoint is None and value is None:
            raise StepFailed(
                f"step {key}: the log {log_path} has no validation '{metric}' record, so there is no probe "
                f"result (fairseq validates at the end of each epoch and with --validate-interval-updates)"
            )
        record = {"key": key, "kind": kind, "task": task, "metric_name": metric, "metric": value,
                  "valid_history": history, "checkpoint": checkpoint, "run_dir": run_dir, "args": args}
        if checkpoint is not None:
            record["identity"] = self._identify(key, method, checkpoint, args)
        self.state["steps"][key] = record
        self._save_state()
        self.done_now += 1
        self.seconds_running += time.monotonic() - began
        logger.info(f"done {key} in {_clock(time.monotonic() - began)}: best valid {metric} {value}")
        return record

    def _identify(self, key: str, method: str, checkpoint: str, args: List[str]) -> Dict:
        """What trained ``checkpoint``, read from its saved configuration; a built-in method's name must agree."""
        identity = checkpoint_identity(checkpoint)
        if self.methods[method].builtin:
            label = {"method": method, "seed": int(flag_value(args, "--seed"))}
            settings = {flag[2:].split("=")[0] for flag in args if flag.startswith(("--smart-", "--freelb-"))}
            for name in sorted(settings | {"r3f-lambda", "noise-type", "eps"}):
                value = flag_value(args, "--" + name)
                if value is not None:
                    label[name.replace("-", "_")] = value
            problems = label_mismatches(label, identity)
            if problems:
                raise StepFailed(f"step {key} did not run method {method}: {'; '.join(problems)} (its checkpoint "
                                 f"is {checkpoint}); fix the flags and use a new --work-dir")
        return identity

    # -- state and outputs ----------------------------------------------------------------------------------
    def _load_state(self) -> Dict:
        if os.path.exists(self.state_path):
            with open(self.state_path) as f:
                state = json.load(f)
            if state.get("experiment") != self.name or state.get("version") != STATE_VERSION:
                raise SystemExit(
                    f"error: {self.state_path} belongs to the experiment {state.get('experiment')!r} (state "
                    f"version {state.get('version')}), not {self.name!r}: use another --work-dir"
                )
            return state
        return {"experiment": self.name, "version": STATE_VERSION, "steps": {}}

    def _save_state(self) -> None:
        write_json_atomic(self.state_path, self.state)

    def publish(self, results: Dict, lines: List[str], plot: Callable[[Dict, List[str], str], None]) -> Dict:
        """Writes results.json, results.md (the table ``lines``) and the figure ``<experiment>.png`` drawn by
        ``plot(results, methods, path)``, prints the table, and returns the results as written."""
        identities = {k: r["identity"] for k, r in self.state["steps"].items() if "identity" in r}
        results = {"experiment": self.name, "methods": list(self.methods), "seeds": self.args.seeds,
                   "arch": self.args.arch, "pretrained": self.pretrained, "tiny": self.args.tiny,
                   "versions": versions(), **results, "identities": identities}
        json_path = os.path.join(self.work_dir, "results.json")
        md_path = os.path.join(self.work_dir, "results.md")
        figure = os.path.join(self.work_dir, f"{self.name}.png")
        write_json_atomic(json_path, results)
        table = "\n".join(lines)
        with open(md_path, "w") as f:
            f.write(table + "\n")
        plot(results, list(self.methods), figure)
        print(table)
        logger.info(f"{self.done_now} runs done now, {self.planned - self.done_now} found done; "
                    f"results: {json_path}, {md_path}, {figure}")
        return results


def tiny_flags(updates: int) -> List[str]:
    return [*TINY_MODEL, "--max-update", str(updates), "--total-num-update", str(updates), "--warmup-updates", "1",
            "--cpu", "--num-workers", "0", "--log-interval", "1"]


def check_finite(args: Sequence[str], key: str) -> None:
    """Stops on a fairseq-train flag whose value is NaN or infinite (``--lr nan``, ``--r3f-lambda=inf``): fairseq
    takes most of them and trains on them. The run layer's check (r3f_runs.values.check_finite), which the
    recipes use too; it stops before the first run."""
    try:
        run_values.check_finite(args, f"in the flags of step {key}")
    except Stop as stop:
        raise SystemExit(f"error: {stop}") from None


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _saved_progress(path: str) -> Optional[Dict]:
    """The updates a checkpoint was saved at and fairseq's best validation value so far, or None if no file."""
    if not os.path.isfile(path):
        return None
    try:
        state = load_checkpoint(path)
    except UnsafeCheckpoint as error:
        raise StepFailed(str(error)) from None
    except Exception as error:  # fairseq copies checkpoint_last.pt in place: a kill can cut the copy short
        raise StepFailed(f"{path} cannot be read ({type(error).__name__}: {str(error)[:200]}); if the run was "
                         f"killed while saving, delete it (the run then starts again from its start model) or put "
                         f"the run's last good checkpoint in its place") from error
    best = (state.get("extra_state") or {}).get("best")
    return {"num_updates": state["optimizer_history"][-1]["num_updates"],
            "best": None if best is None else float(best)}


def _drop_optimizer_state(path: str) -> None:
    """Rewrites a finished run's checkpoint without its optimizer state: the next steps start from it with
    --finetune-from-model (which resets the optimizer) or --probe-checkpoint, and read only the model."""
    # not fairseq's loader: that one upgrades the state (cfg becomes an omegaconf object), and the file written
    # back would no longer load weights-only
    state = load_checkpoint(path)
    if state.get("last_optimizer_state") is None:
        return
    del state["last_optimizer_state"]
    torch.save(state, path + ".tmp")
    os.replace(path + ".tmp", path)


def _default_train_command() -> List[str]:
    return fairseq_command("fairseq-train")


def _best_metric(output: str, metric: str) -> Tuple[Optional[float], List[float]]:
    """The run's best validation value of ``metric`` -- fairseq's own ``best_<metric>`` (which a resumed run
    carries over from its checkpoint) when logged, else the best of this attempt's values -- and the
    values per validation."""
    records = read_json_log(output).get("valid", [])
    history = [r[f"valid_{metric}"] for r in records if isinstance(r.get(f"valid_{metric}"), float)]
    best = [r[f"valid_best_{metric}"] for r in records if isinstance(r.get(f"valid_best_{metric}"), float)]
    if best:
        return best[-1], history
    return (max(history) if history else None), history


def write_json_atomic(path: str, data) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1)
        f.write("\n")
    os.replace(tmp, path)


def summarise(values: List[Optional[float]]) -> Dict:
    """mean, min, max and n of the values that exist."""
    present = [v for v in values if v is not None]
    if not present:
        return {"mean": None, "min": None, "max": None, "n": 0}
    return {"mean": sum(present) / len(present), "min": min(present), "max": max(present), "n": len(present)}


def fmt(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.2f}"


def cell(summary: Dict) -> str:
    """A table cell: the mean over seeds, with (min-max) when there are several."""
    return fmt(summary["mean"]) + (f" ({fmt(summary['min'])}-{fmt(summary['max'])})" if summary["n"] > 1 else "")


def main_wrapper(run, argv=None) -> int:
    """Runs a driver's ``run(argv)`` with logging set up; a failed step ends with its message, status 1."""
    logging.basicConfig(format="%(asctime)s | %(levelname)s | %(name)s | %(message)s", level=logging.INFO,
                        stream=sys.stderr, force=True)  # fairseq's import has configured the root logger
    logging.getLogger("matplotlib").setLevel(logging.WARNING)
    try:
        run(sys.argv[1:] if argv is None else argv)
    except StepFailed as error:
        logger.error(str(error))
        return 1
    return 0
