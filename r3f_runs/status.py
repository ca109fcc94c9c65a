"""A run's status and the one way every table reads run folders (``labelled_runs``).

``run_status``: finished (its done file, a checkpoint at the planned end, a log that agrees), unfinished,
truncated (the log and the checkpoint disagree), failed, or foreign (another recipe's run, which a table skips
and never writes into). Only finished runs enter a table. ``read_plans`` lists every planned run of a sweep, so
that a table names the runs that are missing.
"""

import json
import os
from typing import Dict, List, Optional, Tuple

from r3f_runs.configuration import configuration_differences
from r3f_runs.folder import CHECKPOINT, DONE_FILE, IDENTITY_FILE, LABEL_FILE, LOG_FILE, PLAN_FILE, RunError, read_json
from r3f_runs.identity import file_stat, identity, label_mismatches
from r3f_runs.train_log import final_trajectory, log_order_problem, record_updates


# run_status's answers; only "finished" runs enter a table.
STATUSES = ("finished", "unfinished", "truncated", "failed", "foreign")


def run_identity(run_dir: str) -> Optional[Dict]:
    """What ran in RUN_DIR: its identity.json while it describes the current checkpoint_last.pt (or the
    checkpoint was deleted), else read from checkpoint_last.pt; None when there is neither. Nothing is
    written into the folder."""
    path, checkpoint = os.path.join(run_dir, IDENTITY_FILE), os.path.join(run_dir, CHECKPOINT)
    recorded = read_json(path) if os.path.isfile(path) else None
    if not os.path.isfile(checkpoint):
        return recorded
    if recorded is not None and "configuration" in recorded and \
            recorded.get("checkpoint_stat") == file_stat(checkpoint):
        return recorded
    return identity(checkpoint)


def log_last_update(run_dir: str) -> Optional[int]:
    """The last update train.log reports on the trajectory of the final checkpoint (None: no update record)."""
    path = os.path.join(run_dir, LOG_FILE)
    if not os.path.isfile(path):
        return None
    with open(path, errors="replace") as f:
        records = final_trajectory(f.read())
    updates = [record_updates(tag, r) for tag, rs in records.items() for r in rs]
    updates = [u for u in updates if u is not None]
    return int(max(updates)) if updates else None


def log_problem(run_dir: str) -> Optional[str]:
    """Why train.log cannot be one training's record (its update numbers repeat or interleave), or None."""
    path = os.path.join(run_dir, LOG_FILE)
    if not os.path.isfile(path):
        return None
    with open(path, errors="replace") as f:
        return log_order_problem(f.read())


def planned_end(run_dir: str) -> Optional[int]:
    """The update the launcher recorded in ``done`` as the run's planned end (None: an older, empty done)."""
    path = os.path.join(run_dir, DONE_FILE)
    with open(path) as f:
        text = f.read().strip()
    if not text:
        return None
    try:
        value = json.loads(text).get("num_updates")
    except (json.JSONDecodeError, AttributeError):
        raise RunError(f"{path} is damaged (not the launcher's JSON): delete it and run the same command again "
                       f"to finish the run") from None
    return None if value is None else int(value)


def run_status(run_dir: str, accepts=None) -> Tuple[str, str]:
    """(status, reason) of a run folder, status one of STATUSES. ``accepts(label) -> bool`` says which runs a
    table reads (the others are "foreign"). "finished": ``done`` exists, and the checkpoint's update equals the
    last update train.log reports and the planned end recorded in ``done``; "unfinished": no ``done`` (still
    running, stopped or killed); "truncated": the log and the checkpoint disagree on the last update (a log cut
    short, a checkpoint replaced); "failed": what ran contradicts the label or the plan, it stopped at another
    update than planned, or its log's update numbers repeat or interleave (two trainings wrote the folder)."""
    if not os.path.isfile(os.path.join(run_dir, LABEL_FILE)):
        raise RunError(f"{run_dir} has no {LABEL_FILE}: not a run folder (give the folder of one run)")
    label = read_json(os.path.join(run_dir, LABEL_FILE))
    if accepts is not None and not accepts(label):
        what = label.get("recipe") or ("summarization" if "dataset" in label else None)
        return "foreign", f"a run of {label.get('task') or label.get('dataset')}" + (f" ({what})" if what else "")
    if not os.path.isfile(os.path.join(run_dir, DONE_FILE)):
        return "unfinished", "no done file: not finished (running, stopped or killed; the same command resumes it)"
    ident = run_identity(run_dir)
    if ident is None:
        return "failed", f"done, but neither {CHECKPOINT} nor {IDENTITY_FILE}: what ran is unknown"
    mismatches = label_mismatches(label, ident)
    if mismatches:
        return "failed", "run.json contradicts its checkpoint: " + "; ".join(mismatches)
    planned = label.get("planned_configuration")
    if planned and ident.get("configuration"):
        differ = configuration_differences(planned, ident["configuration"])
        if differ:
            return "failed", "the checkpoint's configuration differs from the plan in " + ", ".join(differ)
    problem = log_problem(run_dir)
    if problem:
        return "failed", f"{LOG_FILE}: {problem}"
    checkpoint_updates = ident.get("num_updates")
    logged = log_last_update(run_dir)
    if logged is None:
        return "truncated", f"{LOG_FILE} reports no update (missing or cut short); the checkpoint is at update " \
                            f"{checkpoint_updates}"
    if checkpoint_updates is None or int(checkpoint_updates) != logged:
        side = "cut short" if checkpoint_updates is not None and logged < int(checkpoint_updates) else \
            "ahead of the checkpoint"
        return "truncated", f"{LOG_FILE} ends at update {logged}, the checkpoint is at update {checkpoint_updates} " \
                            f"(the log is {side})"
    end = planned_end(run_dir)
    if end is not None and end != logged:
        return "failed", f"stopped at update {logged}, the planned end recorded in done is {end}"
    return "finished", f"update {logged}"


def identity_if_readable(folder: str, status: str) -> Optional[Dict]:
    """run_identity; for a run that has not finished (it may be writing its checkpoint right now) None when the
    checkpoint cannot be read, instead of an error."""
    try:
        return run_identity(folder)
    except RunError:
        if status == "finished":
            raise
        return None


def read_plans(root: str) -> List[Dict]:
    """Every planned run of the plan.json files under ``root``: {"dir" (absolute), "config", "seed", "plan",
    "configuration" (its planned configuration; None in a plan.json written before the launcher recorded it)}."""
    planned = []
    for folder, _dirs, files in sorted(os.walk(root)):
        if PLAN_FILE in files:
            path = os.path.join(folder, PLAN_FILE)
            try:
                plan = read_json(path)
                entries = [{"dir": os.path.normpath(os.path.join(folder, entry["dir"])), "config": entry["config"],
                            "seed": entry["seed"], "plan": path, "configuration": entry.get("configuration")}
                           for entry in plan["runs"]]
            except (KeyError, TypeError) as error:
                raise RunError(f"{path} is not a plan (expected {{\"runs\": [{{\"dir\", \"config\", \"seed\"}}, "
                               f"...]}}, missing {error}): restore it or launch the sweep again") from None
            planned += entries
    return planned


def labelled_runs(root: str, accepts) -> Tuple[List[Dict], List[str]]:
    """Every run folder under ``root`` (a folder with run.json), as every table reads them: (the runs whose label
    ``accepts`` takes, each its label with "folder", "status" and "reason" (run_status) and "identity"
    (identity_if_readable); the folders of the other runs, never read further). A damaged file raises RunError
    naming the folder."""
    found, foreign = [], []
    for folder, _dirs, files in sorted(os.walk(root)):
        if LABEL_FILE not in files:
            continue
        try:
            label = read_json(os.path.join(folder, LABEL_FILE))
            status, reason = run_status(folder, accepts)
            ident = None if status == "foreign" else identity_if_readable(folder, status)
        except RunError as error:
            raise RunError(f"{folder}: {error}" if folder not in str(error) else str(error)) from None
        if status == "foreign":
            foreign.append(folder)
            continue
        found.append({**label, "folder": folder, "status": status, "reason": reason, "identity": ident})
    return found, foreign
