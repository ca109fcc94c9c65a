"""Launching, recording and verifying the planned runs, one by one.

*launch*: the folder is locked (r3f_runs.folder); a run whose folder has a ``checkpoint_last.pt`` resumes from
it (``--finetune-from-model`` loads the pretrained model only for a fresh run); a run whose checkpoint already
reached its planned end is not launched again (fairseq would train one update more). A folder whose recorded plan
differs from the new one (another flag, another value) is refused with the difference named: it is never resumed
or skipped as done under another plan.

*record*: ``run.json`` (the label the tables read, plus the complete planned command, the settings given after
METHOD and the planned effective configuration), ``versions.json``, ``command.sh``, and one ``# TIME start``
line per launch in ``train.log``. The sweep folder's ``plan.json`` lists every planned (configuration, seed).

*verify*: the checkpoint's saved configuration against the plan, field by field; ``identity.json``; then
``done`` ({"num_updates": N, "finished": TIME}), written last.
"""

import fcntl
import importlib.util
import os
import signal
import subprocess
import sys
import time
from typing import Callable, Dict, List, Mapping, Optional, Sequence

from fairseq_r3f.checkpoints import UnsafeCheckpoint, load_checkpoint

from r3f_runs.configuration import configuration_differences, configuration_from_args, effective_configuration
from r3f_runs.folder import (
    CHECKPOINT, DONE_FILE, LABEL_FILE, LOG_FILE, PLAN_FILE, RunError, read_json_file, run_lock, write_json_atomic,
    write_text_atomic,
)
from r3f_runs.identity import saved_config, identify, versions
from r3f_runs.plan import Plan, Run
from r3f_runs.tables import USER_DIR
from r3f_runs.values import Stop, clock_text, fail, flag_value, now_iso, quoted, same_value


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
    try:
        return effective_configuration(configuration_from_args(command))
    except RunError as error:
        fail(f"{error}: fix the flags after the recipe's arguments")


def verify(run_dir: str, planned: Dict) -> Dict:
    """The checkpoint's saved configuration against the plan, field by field; writes identity.json."""
    try:
        ident = identify(run_dir)
    except RunError as error:
        fail(str(error))
    if ident.get("mismatches"):
        fail(f"{run_dir}: run.json contradicts its checkpoint: {'; '.join(ident['mismatches'])}; the run did not "
             f"train what its label says: delete the folder and launch it again")
    saved = ident.get("configuration")
    if saved is None:
        saved = effective_configuration(saved_config(os.path.join(run_dir, CHECKPOINT))["cfg"])
    differences = configuration_differences(planned, saved)
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
    eta = clock_text(elapsed * (total - k + 1) / (k - 1)) if k > 1 else "unknown"
    print(f"run {k} of {total}: {run.dir} (elapsed {clock_text(elapsed)}, ETA {eta})", file=sys.stderr)
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

                differing = configuration_differences(recorded["planned_configuration"], planned)
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

        label = {**run.label, "recipe": plan.recipe, "command": run.command, "overrides": plan.overrides,
                 "swept": plan.swept if run.label.get("search", {}).get("sweep") or plan.recipe == "translation"
                 else [], "planned_configuration": planned,
                 "plan": os.path.relpath(os.path.join(run.sweep_dir, PLAN_FILE), run_dir)}
        write_json_atomic(label_path, label)
        write_text_atomic(os.path.join(run_dir, "command.sh"), quoted(plan.launch + run.command) + "\n")
        write_json_atomic(os.path.join(run_dir, "versions.json"), versions())

        def train() -> None:
            log_path = os.path.join(run_dir, LOG_FILE)
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
    checkpoint = os.path.join(run_dir, CHECKPOINT)
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
    checkpoint = os.path.join(run_dir, CHECKPOINT)
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


def check_importable(plan: Plan) -> None:
    """Stops before anything is written when a module the planned runs import is missing here (the interpreter
    beside fairseq-train, which the recipes run this launcher with): a missing scikit-learn would otherwise end
    the first run at its first validation."""
    # by its file, not as fairseq_r3f.requirements: the package's __init__ imports fairseq, which may be what is
    # missing (requirements.py itself imports only the standard library)
    spec = importlib.util.spec_from_file_location("fairseq_r3f_requirements", os.path.join(USER_DIR, "requirements.py"))
    requirements = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(requirements)
    message = requirements.missing_message([run.command for run in plan.runs])
    if message:
        fail(message)
