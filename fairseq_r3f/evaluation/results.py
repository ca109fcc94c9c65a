"""Result tables for the GLUE and XNLI recipes, in the layout of the paper's Tables 2 and 3, and Figures 1 and 2.

    python -m fairseq_r3f.evaluation.results glue RUNS_DIR [--out OUT_DIR] [--select-on-half {first,second}]
    python -m fairseq_r3f.evaluation.results split-dev DATA_BIN [--subset valid]
    python -m fairseq_r3f.evaluation.results xnli --data XNLI_BIN --checkpoint CKPT [--checkpoint CKPT ...]
    python -m fairseq_r3f.evaluation.results xnli --data XNLI_BIN --runs SAVE_ROOT

glue
    Reads every run folder under RUNS_DIR written by recipes/glue.sh: run.json (the recipe's label), train.log
    (fairseq's ``--log-format json`` records, one block per launch, each after a ``# <time> start`` line) and
    identity.json (what ran, written by ``python -m fairseq_r3f.runs identify``).

    What enters a table. A run's log may hold several launches: a launch that resumed says fairseq's
    ``Loaded checkpoint ... (epoch E @ U updates)``, and then only the earlier launch's records up to update U
    belong to the run's final checkpoint (the rest were computed by an attempt whose later checkpoints were
    overwritten); a launch from 0 updates (the pretrained model, or no checkpoint) discards every earlier
    launch. Before a run enters a table its label is checked against what ran (identity.json, or the
    configuration saved in checkpoint_last.pt when identity.json is missing): a run whose label is wrong (an
    r4f label on a plain head, another lambda, ...) stops the tables with an error naming the folders and the
    disagreements. Runs without a checkpoint or identity, and runs without a validation record, are left out
    and counted on stderr.

    What is reported. Each run's best validation round by the task's metric (MNLI matched accuracy, QQP and
    the rest accuracy, CoLA MCC, STS-B Pearson; the second number of a cell, MNLI mismatched or QQP F1, comes
    from that same round, i.e. the kept checkpoint). For each task and method, a method searched over several
    configurations (lambda x noise type, a learning-rate grid, ...) is shown with the configuration of best
    median over seeds; the table gives the max and the median over that configuration's seeds (Table 2's two
    halves). table2.md also says per cell how many configurations were searched (``n``, or ``n/N`` when
    run.json's ``"search": {"configurations": N}`` planned more than have results, with a warning), and the
    mean ``noise_kept`` (the percentage of embedding entries the R3F noise changed after the cast to the
    model's precision, averaged over each run's logged updates and then over the seeds; ``-`` for methods
    without noise): under FP16 it shows how much of the noise survived.

    Selection and report on different data (``--select-on-half``). By default the configuration, the seed of
    the "max" half and each run's best round are chosen on the same dev set that is reported, as the paper
    does. ``--select-on-half first`` chooses all three on the first half of the dev set (subset ``valid_a``)
    and reports the second half (``valid_b``) at the chosen round; ``second`` the other way round. MNLI's
    mismatched number is reported on the whole of ``valid1`` (it is never used for selection). To have the
    halves, split the dev set once with ``split-dev`` and let fairseq-train validate on them too: pass
    ``--valid-subset valid,valid_a,valid_b`` (MNLI: ``valid,valid1,valid_a,valid_b``) to recipes/glue.sh after
    METHOD; fairseq keeps checkpoint_best.pt by the first subset, so the default tables are unchanged.

    Figure 1 (figure1.md, figure1.png): per task and method, the wall-clock seconds to each run's best
    checkpoint (the paper's definition), over the runs of the configuration shown in Table 2: from the first
    line fairseq logged to the best round's validation record, by the time stamps of fairseq's log lines
    (whole seconds), start-up included; for a resumed run each earlier launch counts up to its last record
    at or before the update the next launch resumed from. fairseq's own ``wall`` meter is not used: it does
    not survive a resume (it reads 0 for the whole launch after a mid-epoch resume).

    Also written: runs.tsv (every run, with its noise_kept and seconds to best), results.json, figure2.png
    (the distribution over seeds per method, as Figure 2).

split-dev
    Splits the binarised subset (default ``valid``) of a fairseq sentence-prediction data folder into two
    halves ``valid_a`` and ``valid_b`` (every input and the labels, a fixed seeded shuffle; which example went
    where is written to ``valid_halves.json``), for ``glue --select-on-half``.

xnli
    Runs fairseq-validate on each checkpoint over the per-language subsets of preprocess/xnli.py (every example
    scored) and prints accuracy per language and the average in Table 3's layout, with the mean over
    checkpoints (the paper averages 5 runs) when several are given. ``--runs SAVE_ROOT`` takes the
    checkpoint_best.pt of every finished run of recipes/xnli.sh under SAVE_ROOT instead, under the rules of the
    GLUE tables (only finished runs; cells by effective configuration; a run found twice once; the runs not in
    the table named under it; n/N seeds on each configuration's mean; runs of other recipes skipped with a
    note), and keeps each run's scores in RUN/xnli-SPLIT/xnli.json. A checkpoint given with --checkpoint whose
    run folder is not finished is named in a note. Scores are reused (with --out for --checkpoint) only under
    the same key: the checkpoint's fingerprint (size, modification time, inode, sha256 of its first and last
    MB), the sha256 of every file of the subsets, the batch size, the device and the versions.
    ``--languages`` takes commas or spaces (``en,fr`` or ``"en fr"``). A progress bar per checkpoint goes to
    stderr; fairseq-validate's own output goes to a log file in --out (a temporary folder without --out), named
    in the error when it fails.
"""

import argparse
import datetime
import json
import logging
import math
import os
import random
import re
import statistics
import sys
import tempfile
from collections import defaultdict
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from fairseq_r3f.logs import read_json_log

# Table 2's columns (STS-B last: the paper does not report it), each: header, [(valid subset, metric)].
GLUE_COLUMNS: Dict[str, Tuple[str, List[Tuple[str, str]]]] = {
    "MNLI": ("Acc-m/mm", [("valid", "accuracy"), ("valid1", "accuracy")]),
    "QQP": ("Acc/F1", [("valid", "accuracy"), ("valid", "f1")]),
    "RTE": ("Acc", [("valid", "accuracy")]),
    "QNLI": ("Acc", [("valid", "accuracy")]),
    "MRPC": ("Acc", [("valid", "accuracy")]),
    "CoLA": ("Mcc", [("valid", "mcc")]),
    "SST-2": ("Acc", [("valid", "accuracy")]),
    "STS-B": ("Pearson", [("valid", "pearson")]),
}
METHOD_NAMES = {"std": "STD", "std++": "STD++", "smart": "SMART", "freelb": "FreeLB", "r3f": "R3F", "r4f": "R4F",
                "smart-released": "SMART-released (mt-dnn 682b9fb..1f43b6e)",
                "r3f-readme": "R3F-readme (rxf README flags, noise reaching the encoder)",
                "r4f-readme": "R4F-readme (rxf README flags, noise reaching the encoder, out_proj-only SN head)",
                "r3f-released": "R3F-released (as released: rxf README flags, no noise reached the encoder)",
                "r4f-released": "R4F-released (as released: rxf README flags, no noise reached the encoder, "
                                "out_proj-only SN head)"}
# Under a table that holds any of them: what the released rows are (they are never the paper's methods).
RELEASED_NOTE = ("*-readme and *-released rows: the authors' released configurations (recipes/glue.sh METHOD "
                 "r3f-readme, r4f-readme: fairseq's examples/rxf/README.md command with the noise reaching the "
                 "encoder; r3f-released, r4f-released: the same as the released code computed it, the noise dropped "
                 "(--noise-type none: its RoBERTa encoder dropped token_embeddings=, so lambda weighed a symmetric KL "
                 "between two dropout samples); smart-released: mt-dnn's code between 682b9fb and 1f43b6e; "
                 "docs/glue_xnli.md), not the paper's R3F/R4F/SMART.")
XNLI_LANGUAGES = ("en", "fr", "es", "de", "el", "bg", "ru", "tr", "ar", "vi", "th", "zh", "hi", "sw", "ur")
HALVES = {"first": ("a", "b"), "second": ("b", "a")}  # --select-on-half: (selected on, reported on)

LAUNCH_LINE = re.compile(r"^# \S+ start\s*$")
RESUMED_LINE = re.compile(r"Loaded checkpoint .* \(epoch \d+ @ (\d+) updates\)")
FRESH_LINE = "No existing checkpoint found"
# fairseq's log lines start with the local time, "%Y-%m-%d %H:%M:%S" (fairseq_cli/train.py).
LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) \| ")
# The key each record gets: seconds since the start of the run, over the launches of its final trajectory.
ELAPSED = "elapsed"


class ResultsError(Exception):
    pass


# ---------------------------------------------------------------- one run's log

def record_updates(tag: str, record: Dict) -> Optional[float]:
    """The update a record was logged at (None for records that do not say)."""
    value = record.get("num_updates", record.get(f"{tag}_num_updates"))
    return value if isinstance(value, float) else None


def launches(text: str) -> List[Tuple[Optional[int], Dict[str, List[Dict]]]]:
    """A train.log split at its ``# <time> start`` lines: per launch, the update it started from (fairseq's
    "Loaded checkpoint ... @ U updates", 0 for "No existing checkpoint found", None if it says neither) and its
    records by tag, each with ELAPSED: seconds since the launch's first timestamped line. Text before the first
    start line (a log without them) is a launch too."""
    blocks: List[List[str]] = [[]]
    for line in text.splitlines():
        if LAUNCH_LINE.match(line):
            blocks.append([])
        else:
            blocks[-1].append(line)
    if not blocks[0]:
        blocks.pop(0)
    result = []
    for lines in blocks:
        start, first_time = None, None
        records: Dict[str, List[Dict]] = {}
        for line in lines:
            resumed = RESUMED_LINE.search(line)
            if start is None and (resumed or FRESH_LINE in line):
                start = int(resumed.group(1)) if resumed else 0
            stamp = LOG_TIME.match(line)
            when = datetime.datetime.strptime(stamp.group(1), "%Y-%m-%d %H:%M:%S") if stamp else None
            if first_time is None:
                first_time = when
            for tag, found in read_json_log(line).items():
                for record in found:
                    record[ELAPSED] = (when - first_time).total_seconds() if when and first_time else None
                    records.setdefault(tag, []).append(record)
        result.append((start, records))
    return result


def log_order_problem(text: str) -> Optional[str]:
    """What is wrong with a train.log whose update numbers repeat or go back within one launch (or in a resumed
    launch, do not start after the update it resumed from), or None. One fairseq-train logs each tag's records
    at increasing updates; two trainings writing one folder at once leave their records interleaved, one after
    the other repeated: numbers no table can attribute to one run."""
    for number, (start, records) in enumerate(launches(text), 1):
        for tag, found in records.items():
            last, last_said = (start, f"the resume from update {start}") if start else (None, "")
            for record in found:
                update = record_updates(tag, record)
                if update is None:
                    continue
                if last is not None and update <= last:
                    return (f"update {int(update)} is logged after {last_said} (its {tag} records, launch {number} "
                            f"of the log): two trainings wrote this folder at once, or its log was edited; delete "
                            f"the folder and run it again")
                last, last_said = update, f"update {int(update)}"
    return None


def final_trajectory(text: str) -> Dict[str, List[Dict]]:
    """The records of train.log that lead to the run's last checkpoint: the last launch, and before it each
    earlier launch up to the update the next one resumed from, back to the launch that started from 0.
    A launch that logged nothing and never reached a checkpoint (it failed at start-up) is skipped.

    Each record's ELAPSED becomes the seconds since the run started, counting each earlier launch up to its
    last kept record. (fairseq's own "wall" meter does not survive a resume: it reads 0 for the whole launch
    after a mid-epoch resume, and restarts after one at an epoch boundary.)"""
    kept = []
    limit = math.inf
    for start, records in reversed(launches(text)):
        if start is None and not records:
            continue
        kept.append({tag: [r for r in rs if (record_updates(tag, r) or 0) <= limit] for tag, rs in records.items()})
        if not start:  # 0, or unknown with records: a log from before start lines, or a launch from scratch
            break
        limit = start
    merged: Dict[str, List[Dict]] = {}
    before = 0.0  # seconds spent in the earlier launches of the trajectory
    for records in reversed(kept):
        for tag, rs in records.items():
            merged.setdefault(tag, []).extend(
                {**r, ELAPSED: None if r[ELAPSED] is None else before + r[ELAPSED]} for r in rs)
        times = [r[ELAPSED] for rs in records.values() for r in rs if r[ELAPSED] is not None]
        before += max(times, default=0.0)
    return merged


@dataclass
class Round:
    score: float  # the selection metric's value
    values: List[float]  # the reported metrics at that round (NaN where not logged)
    updates: Optional[float]
    elapsed: Optional[float]  # seconds since the run started (final_trajectory), when the round was logged


def best_round(records: Dict[str, List[Dict]], select: Tuple[str, str],
               report: Sequence[Tuple[str, str]]) -> Optional[Round]:
    """The validation round where ``select`` (subset, metric) is highest (the last of equal rounds: fairseq's
    checkpoint_best.pt is replaced by an equal score), with the ``report`` metrics logged at that same round;
    None when there is no round.

    Subset s's metric m is logged under tag s as key "s_m", with "s_num_updates" telling the round."""
    subset, metric = select
    rounds = [r for r in records.get(subset, []) if isinstance(r.get(f"{subset}_{metric}"), float)]
    if not rounds:
        return None
    best = max(reversed(rounds), key=lambda r: r[f"{subset}_{metric}"])  # the last of equal rounds
    updates = best.get(f"{subset}_num_updates")
    values = []
    for other_subset, other_metric in report:
        same_round = [r for r in records.get(other_subset, []) if r.get(f"{other_subset}_num_updates") == updates]
        value = same_round[0].get(f"{other_subset}_{other_metric}") if same_round else None
        values.append(value if isinstance(value, float) else float("nan"))
    return Round(best[f"{subset}_{metric}"], values, updates, best.get(ELAPSED))


def best_validation(records: Dict[str, List[Dict]], metrics: Sequence[Tuple[str, str]]) -> Optional[List[float]]:
    """The values of ``metrics`` at the validation round where the first one is highest (None: no round)."""
    found = best_round(records, metrics[0], metrics)
    return found.values if found else None


def columns(task: str, half: Optional[str]) -> Tuple[Tuple[str, str], List[Tuple[str, str]]]:
    """(the metric a task's runs are selected on, the metrics reported), on the whole dev set or its halves."""
    metrics = GLUE_COLUMNS[task][1]
    if half is None:
        return metrics[0], metrics
    select_on, report_on = HALVES[half]
    subset = metrics[0][0]
    return ((f"{subset}_{select_on}", metrics[0][1]),
            [(f"{s}_{report_on}" if s == subset else s, m) for s, m in metrics])


def mean_noise_kept(records: Dict[str, List[Dict]]) -> Optional[float]:
    """The mean of the logged noise_kept over the run's updates (per-interval records, else per-epoch ones)."""
    for tag, key in (("train_inner", "noise_kept"), ("train", "train_noise_kept")):
        values = [r[key] for r in records.get(tag, []) if isinstance(r.get(key), float)]
        if values:
            return statistics.mean(values)
    return None


# ---------------------------------------------------------------- the runs of a folder

def run_identity(folder: str) -> Optional[Dict]:
    """What ran in ``folder`` (runs.run_identity): identity.json, or read from checkpoint_last.pt; None if neither."""
    from fairseq_r3f import runs

    return runs.run_identity(folder)


def identity_if_readable(folder: str, status: str) -> Optional[Dict]:
    """run_identity; for a run that has not finished (it may be writing its checkpoint right now) None when the
    checkpoint cannot be read, instead of an error."""
    from fairseq_r3f import runs

    try:
        return runs.run_identity(folder)
    except runs.RunError:
        if status == "finished":
            raise
        return None


def is_glue(label: Dict) -> bool:
    return label.get("task") in GLUE_COLUMNS and label.get("recipe", "glue") in ("glue", "hydra", "probing")


def read_plans(root: str) -> List[Dict]:
    """Every planned run of the plan.json files under ``root``: {"dir" (absolute), "config", "seed", "plan",
    "configuration" (its planned configuration; None in a plan.json written before the launcher recorded it)}."""
    from fairseq_r3f import runs

    planned = []
    for folder, _dirs, files in sorted(os.walk(root)):
        if runs.PLAN_FILE in files:
            path = os.path.join(folder, runs.PLAN_FILE)
            try:
                plan = runs.read_json(path)
                entries = [{"dir": os.path.normpath(os.path.join(folder, entry["dir"])), "config": entry["config"],
                            "seed": entry["seed"], "plan": path, "configuration": entry.get("configuration")}
                           for entry in plan["runs"]]
            except runs.RunError as error:
                raise ResultsError(str(error)) from None
            except (KeyError, TypeError) as error:
                raise ResultsError(f"{path} is not a plan (expected {{\"runs\": [{{\"dir\", \"config\", \"seed\"}}, "
                                   f"...]}}, missing {error}): restore it or launch the sweep again") from None
            planned += entries
    return planned


def collect_runs(root: str, half: Optional[str] = None, accepts=is_glue) -> List[Dict]:
    """Every run under ``root`` (a folder with run.json) that ``accepts`` its label, with its status
    (runs.run_status), its effective configuration and, from the log's final trajectory, its best round:
    "values" (None without a round), "score", "noise_kept", "seconds_to_best". Runs of other tasks are counted
    in a note; a run whose checkpoint contradicts its label stops the tables."""
    from fairseq_r3f import runs

    found, other_tasks, mislabelled = [], [], []
    for folder, _dirs, files in sorted(os.walk(root)):
        if runs.LABEL_FILE not in files:
            continue
        try:
            run = runs.read_json(os.path.join(folder, runs.LABEL_FILE))
            status, reason = runs.run_status(folder, accepts)
            ident = None if status == "foreign" else identity_if_readable(folder, status)
        except runs.RunError as error:
            raise ResultsError(f"{folder}: {error}" if folder not in str(error) else str(error)) from None
        if status == "foreign":
            other_tasks.append(folder)
            continue
        if ident is not None and runs.label_mismatches(run, ident):
            mislabelled.append(f"  {folder}: " + "; ".join(runs.label_mismatches(run, ident)))
        run.update(folder=folder, identity=ident, values=None, score=None, noise_kept=None, seconds_to_best=None,
                   status=status, reason=reason, configuration=(ident or {}).get("configuration"),
                   finished=status == "finished")
        log_path = os.path.join(folder, runs.LOG_FILE)
        if os.path.exists(log_path) and run.get("task") in GLUE_COLUMNS:
            with open(log_path, errors="replace") as f:
                records = final_trajectory(f.read())
            select, report = columns(run["task"], half)
            found_round = best_round(records, select, report)
            if found_round is not None:
                run.update(values=found_round.values, score=found_round.score,
                           seconds_to_best=found_round.elapsed)
            run["noise_kept"] = mean_noise_kept(records)
        found.append(run)
    if other_tasks:
        print(f"note: {len(other_tasks)} run(s) of other tasks or recipes are not in these tables: "
              f"{other_tasks[:3]}", file=sys.stderr)
    if mislabelled:
        raise ResultsError(
            f"{len(mislabelled)} run(s) did not train what their run.json says; rerun them with the recipe's "
            f"method, or correct run.json (python -m fairseq_r3f.runs identify RUN_DIR shows what ran):\n"
            + "\n".join(mislabelled))
    if not found:
        raise ResultsError(f"no run found under {root}: expected folders with run.json and train.log (recipes/glue.sh, "
                           f"recipes/xnli.sh)")
    return found


def included(runs: List[Dict]) -> List[Dict]:
    """The runs that enter the tables: finished, with a validation record and a known configuration; every
    other one is counted on stderr with the reason (and listed in the tables' notes)."""
    reasons = {
        "not finished (listed in the notes)": [r for r in runs if r["status"] != "finished"],
        "without a checkpoint or identity.json (what ran cannot be checked; the recipe writes identity.json "
        "with python -m fairseq_r3f.runs identify RUN_DIR)": [
            r for r in runs if r["status"] == "finished" and r["identity"] is None],
        "whose identity.json has no configuration and no checkpoint to read it from (written by an older "
        "plugin: python -m fairseq_r3f.runs identify RUN_DIR needs the checkpoint)": [
            r for r in runs if r["status"] == "finished" and r["identity"] is not None and r["configuration"] is None],
        "without a validation record": [r for r in runs if r["status"] == "finished" and r["configuration"] is not None
                                        and r["values"] is None],
    }
    for reason, left_out in reasons.items():
        if left_out:
            print(f"left out: {len(left_out)} run(s) {reason}: {[r['folder'] for r in left_out][:5]}",
                  file=sys.stderr)
    return [r for r in runs if r["status"] == "finished" and r["configuration"] is not None
            and r["values"] is not None]


def planned_configurations(run: Dict) -> Optional[int]:
    search = run.get("search")
    value = search.get("configurations") if isinstance(search, dict) else None
    return int(value) if isinstance(value, (int, float)) else None


def swept_keys(run: Dict) -> List[str]:
    """The configuration keys the run's search varies: run.json's "swept", or for a run folder written before the
    launcher recorded it, the label's search grid axes with more than one value, mapped to the configuration's
    keys of the same field name (r3f_lambda -> criterion.r3f_lambda)."""
    configuration = run.get("configuration") or {}

    def matching(name: str) -> List[str]:  # a configuration key, or a field name (r3f_lambda) matched to its keys
        return [name] if name in configuration else [key for key in configuration if key.split(".", 1)[-1] == name]

    if isinstance(run.get("swept"), list):
        return [key for name in run["swept"] for key in matching(str(name))]
    grid = (run.get("search") or {}).get("grid") if isinstance(run.get("search"), dict) else None
    return [key for axis, values in (grid or {}).items() if isinstance(values, list) and len(values) > 1
            for key in matching(axis)]


def _key(value) -> str:
    return json.dumps(value, sort_keys=True)


def _setting(key: str, value, keys: Sequence[str]) -> str:
    field = key.split(".", 1)[-1]
    name = key if sum(k.split(".", 1)[-1] == field for k in keys) > 1 else field
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    return f"{name} {'(unset)' if value is None else value}"


# The most settings a cell's label names; runs that differ in more stop the tables.
MAX_NAMED_SETTINGS = 3


def cells(runs: List[Dict]) -> Tuple[Dict[Tuple[str, str, str], List[Dict]], List[str]]:
    """The runs of one table cell together: {(task, method, label suffix): runs}. A cell holds the runs of one
    (task, method) whose effective configurations agree on everything but the swept keys and the seed; when a
    (task, method) has runs of several such configurations, each cell's suffix names its values of the settings
    that differ ("dropout 0"). The same configuration and seed found twice counts once; the warnings name both."""
    by_method: Dict[Tuple[str, str], List[Dict]] = defaultdict(list)
    for run in runs:
        by_method[(run["task"], run["method"])].append(run)
    result: Dict[Tuple[str, str, str], List[Dict]] = {}
    warnings = []
    for (task, method), members in sorted(by_method.items()):
        swept = sorted({key for run in members for key in swept_keys(run)})
        seen: Dict[Tuple[str, object], Dict] = {}
        groups: Dict[str, List[Dict]] = defaultdict(list)
        bases: Dict[str, Dict] = {}
        for run in sorted(members, key=lambda r: r["folder"]):
            identity_key = (_key(run["configuration"]), run["seed"])
            if identity_key in seen:
                warnings.append(f"{run['folder']} is the same run as {seen[identity_key]['folder']} (same "
                                f"configuration and seed {run['seed']}): counted once")
                copies = seen[identity_key].setdefault("copies", [])
                copies += [run["folder"]] if run["folder"] not in copies else []
                continue
            seen[identity_key] = run
            base = {k: v for k, v in run["configuration"].items() if k not in swept}
            bases[_key(base)] = base
            groups[_key(base)].append(run)
        differing = sorted({key for a in bases.values() for b in bases.values()
                            for key in set(a) | set(b) if a.get(key, "(unset)") != b.get(key, "(unset)")})
        if len(differing) > MAX_NAMED_SETTINGS:
            folders = [group[0]["folder"] for group in groups.values()]
            raise ResultsError(
                f"{task} {METHOD_NAMES.get(method, method)}: runs of {len(groups)} configurations that differ in "
                f"{len(differing)} settings ({', '.join(differing)}), too many to name in one cell: keep the "
                f"runs of one configuration under the folder given, or read them separately (e.g. {folders[:3]})")
        for base_key, group in groups.items():
            suffix = ", ".join(_setting(key, bases[base_key].get(key), differing) for key in differing)
            result[(task, method, suffix)] = group
    return result, warnings


def _sweep_folder(folder: str) -> str:
    return os.path.dirname(os.path.dirname(folder))


def summarise(runs: List[Dict], every_run: Optional[List[Dict]] = None,
              planned: Sequence[Dict] = ()) -> Dict[Tuple[str, str, str], Dict]:
    """Per cell (task, method, label suffix; see cells): the configuration of best median selection score over
    seeds, its reported max (the seed of best selection score) and median, how many seeds it has of how many
    were planned, and how many configurations the search had of how many were planned. ``every_run`` (the runs
    of every status) and ``planned`` (read_plans) give the planned seeds and configurations."""
    every_run = runs if every_run is None else every_run
    grouped, warnings = cells(runs)
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    summary: Dict[Tuple[str, str, str], Dict] = {}
    for cell_key, members in grouped.items():
        task, method, _suffix = cell_key
        swept = sorted({key for run in members for key in swept_keys(run)})
        configurations: Dict[str, List[Dict]] = defaultdict(list)
        for run in members:
            configurations[_key({k: run["configuration"].get(k) for k in swept})].append(run)
        best = None
        for group in configurations.values():
            group = sorted(group, key=lambda m: m["seed"])
            best_run = max(group, key=lambda m: m["score"])  # the best seed, with its own second number
            noise = [m["noise_kept"] for m in group if m["noise_kept"] is not None]
            seconds = [m["seconds_to_best"] for m in group if m["seconds_to_best"] is not None]
            entry = {
                "config": ", ".join(sorted({str(m.get("config", "default")) for m in group})),
                "seeds": [m["seed"] for m in group],
                "folders": [m["folder"] for m in group],
                "selection_median": statistics.median(m["score"] for m in group),
                "selection_max": best_run["score"],
                "max": best_run["values"],
                "median": [statistics.median(c) for c in zip(*[m["values"] for m in group])],
                "per_seed": [m["values"][0] for m in group],
                "noise_kept": statistics.mean(noise) if noise else None,
                "seconds_to_best": seconds,
            }
            if best is None or (entry["selection_median"], entry["selection_max"]) > (best["selection_median"],
                                                                                      best["selection_max"]):
                best = entry
        planned_here = seeds_planned(best, members, every_run, planned)
        best["planned_seeds"] = len(planned_here)
        best["seeds_without_result"] = [{"seed": seed, "status": "finished, left out" if status == "finished"
                                         else status} for seed, status in sorted(planned_here.items())
                                        if seed not in best["seeds"]]
        best["configurations"] = len(configurations)
        best["planned"] = planned_configuration_count(members, planned)
        if best["planned"] is not None and best["configurations"] < best["planned"]:
            print(f"warning: {task} {METHOD_NAMES.get(method, method)}: {best['configurations']} of the "
                  f"{best['planned']} planned configurations have results", file=sys.stderr)
        summary[cell_key] = best
    return summary


def planned_seeds(entry: Dict, members: List[Dict], every_run: List[Dict], planned: Sequence[Dict]) -> int:
    """How many seeds the configuration shown was planned with (seeds_planned)."""
    return len(seeds_planned(entry, members, every_run, planned))


def seeds_planned(entry: Dict, members: List[Dict], every_run: List[Dict], planned: Sequence[Dict]) -> Dict[int, str]:
    """The seeds the configuration shown was planned with, each with what became of it: "finished" for the
    seeds with results, else its run folder's status, or "missing" for a planned run without a folder. They are
    the seeds with results, those of its plan entries (the sweep folders and configuration names of its runs)
    planned with this configuration, and those of the runs found there that did not finish and ran (or were
    planned with) this configuration. A configuration is compared without the swept settings; plan.json records
    each run's planned configuration (an entry of an older plan.json without one: its run folder's, and when
    that is unknown too the entry counts)."""
    from fairseq_r3f import runs

    slots = {(_sweep_folder(folder), run.get("config")) for run in members if run["folder"] in entry["folders"]
             for folder in [run["folder"], *run.get("copies", [])]}
    configuration = next(run["configuration"] for run in members if run["folder"] == entry["folders"][0])
    swept = set(swept_keys(members[0]))
    same = {k: v for k, v in configuration.items() if k not in swept}

    def planned_with_this(other: Optional[Dict]) -> bool:
        return not other or not runs.configuration_differences(same, {k: v for k, v in other.items()
                                                                     if k not in swept})

    def what_ran(run: Dict) -> Optional[Dict]:
        return run.get("configuration") or run.get("planned_configuration")

    found = {os.path.normpath(run["folder"]): run for run in every_run}
    seeds = {seed: "finished" for seed in entry["seeds"]}
    for p in planned:
        if (_sweep_folder(p["dir"]), p["config"]) not in slots or p["seed"] in seeds:
            continue
        run = found.get(os.path.normpath(p["dir"]))
        if planned_with_this(p.get("configuration") or (what_ran(run) if run else None)):
            seeds[p["seed"]] = "missing" if run is None else run["status"]
    for run in every_run:
        if (_sweep_folder(run["folder"]), run.get("config")) in slots and run["status"] != "finished" \
                and planned_with_this(what_ran(run)):
            seeds.setdefault(run["seed"], run["status"])
    return seeds


def planned_configuration_count(members: List[Dict], planned: Sequence[Dict]) -> Optional[int]:
    """How many configurations were planned: the configuration names of the plans of the cell's sweep folders,
    else the largest "search": {"configurations": N} of the labels (run folders written before plan.json)."""
    sweeps = {_sweep_folder(run["folder"]) for run in members}
    names = {p["config"] for p in planned if _sweep_folder(p["dir"]) in sweeps}
    if names:
        return len(names | {run.get("config") for run in members})
    counts = [planned_configurations(run) for run in members if planned_configurations(run) is not None]
    return max(counts) if counts else None


def not_in_tables(every_run: List[Dict], planned: Sequence[Dict]) -> List[Dict]:
    """The runs that did not finish, and the planned runs without a folder, as {"folder", "status", "reason"}."""
    found = {os.path.normpath(run["folder"]) for run in every_run}
    listed = [{"folder": run["folder"], "status": run["status"], "reason": run["reason"], "run": run}
              for run in every_run if run["status"] != "finished"]
    listed += [{"folder": p["dir"], "status": "missing", "reason": f"planned in {p['plan']}, no run folder",
                "run": {"task": None, "method": None, "config": p["config"], "seed": p["seed"]}}
               for p in planned if p["dir"] not in found]
    return listed


# ---------------------------------------------------------------- tables and figures

def _cell(values: Optional[Sequence[float]]) -> str:
    if values is None:
        return "-"
    return "/".join("-" if v != v else f"{v:.1f}" for v in values)


def _rows(summary: Dict[Tuple[str, str, str], Dict], task: Optional[str] = None) -> List[Tuple[str, str]]:
    """The table's rows, (method, label suffix): the paper's method order, a method's plain row first."""
    present = {(m, suffix) for t, m, suffix in summary if task is None or t == task}
    order = {m: i for i, m in enumerate(METHOD_NAMES)}
    return sorted(present, key=lambda row: (order.get(row[0], len(order)), row[0], row[1]))


def row_name(method: str, suffix: str = "") -> str:
    return METHOD_NAMES.get(method, method) + (f", {suffix}" if suffix else "")


def _grid(summary: Dict[Tuple[str, str, str], Dict], tasks: Sequence[str], header: Sequence[str], cell) -> List[str]:
    lines = ["| " + " | ".join(["Method"] + list(header)) + " |", "|" + "---|" * (len(header) + 1)]
    for method, suffix in _rows(summary):
        cells = [cell(summary[(t, method, suffix)]) if (t, method, suffix) in summary else "-" for t in tasks]
        lines.append("| " + " | ".join([row_name(method, suffix)] + cells) + " |")
    return lines + [""]


def _searched(entry: Dict) -> str:
    n, planned = entry["configurations"], entry["planned"]
    return f"{n}/{planned}" if planned is not None and planned != n else str(n)


def _seeds(entry: Dict) -> str:
    return f"{len(entry['seeds'])}/{entry['planned_seeds']} seeds"


def _value_cell(entry: Dict, part: str) -> str:
    """A value, with "(n/N seeds)" when fewer seeds than planned have results."""
    incomplete = len(entry["seeds"]) < entry["planned_seeds"]
    return _cell(entry[part]) + (f" ({_seeds(entry)})" if incomplete else "")


def glue_table(summary: Dict[Tuple[str, str, str], Dict], half: Optional[str] = None,
               left_out: Sequence[Dict] = (), warnings: Sequence[str] = ()) -> str:
    """Table 2's layout: methods as rows, the task columns once for the best seed and once for the median;
    then the configurations searched and the noise kept per cell; the notes name each cell's configuration and
    seeds, and every run that is not in the table (unfinished, truncated, failed, missing) with the reason."""
    tasks = [t for t in GLUE_COLUMNS if t != "STS-B" or any(k[0] == "STS-B" for k in summary)]
    header = [f"{t} {GLUE_COLUMNS[t][0]}" for t in tasks]
    lines = []
    if half is not None:
        select_on, report_on = HALVES[half]
        lines += [f"Configurations, seeds and checkpoints selected on dev half {select_on.upper()} "
                  f"(valid_{select_on}), reported on half {report_on.upper()} (valid_{report_on}); MNLI mismatched "
                  f"on all of valid1.", ""]
    for part, title in (("max", "Best of the seeds (max)"), ("median", "Median over the seeds")):
        lines += [f"{title}:", ""] + _grid(summary, tasks, header, lambda e, part=part: _value_cell(e, part))
    lines += ["Configurations searched (n/N: n of N planned have results):", ""]
    lines += _grid(summary, tasks, tasks, _searched)
    lines += ["Noise kept (% of embedding entries the noise changed, mean over each run's updates, then over the "
              "seeds; - without noise):", ""]
    lines += _grid(summary, tasks, tasks,
                   lambda e: "-" if e["noise_kept"] is None else f"{e['noise_kept']:.1f}")
    notes = [f"{t} {row_name(m, suffix)}: {e['config']}, seeds {e['seeds']} ({_seeds(e)}"
             + "".join(f"; seed {s['seed']} {s['status']}" for s in e.get("seeds_without_result", ())) + ")"
             for (t, m, suffix), e in sorted(summary.items())]
    lines += ["Configurations and seeds (only finished runs are in the tables):"] + notes
    if any(method.endswith(("-readme", "-released")) for _t, method, _s in summary):
        lines += ["", RELEASED_NOTE]
    if left_out:
        lines += ["", f"Not in the tables ({len(left_out)}):"]
        lines += [f"{item['folder']}: {item['status']} ({item['reason']})" for item in left_out]
    if warnings:
        lines += ["", "Warnings:"] + list(warnings)
    return "\n".join(lines) + "\n"


def wall_table(summary: Dict[Tuple[str, str, str], Dict]) -> str:
    """Figure 1 as a table: median (min-max) seconds to the best checkpoint, and the number of runs."""
    tasks = [t for t in GLUE_COLUMNS if any(k[0] == t for k in summary)]

    def cell(entry):
        seconds = entry["seconds_to_best"]
        if not seconds:
            return "-"
        return f"{statistics.median(seconds):.0f} ({min(seconds):.0f}-{max(seconds):.0f}, n={len(seconds)})"

    lines = ["Wall-clock seconds to the best checkpoint: median (min-max, runs) over the runs of the configuration "
             "in Table 2.", ""]
    return "\n".join(lines + _grid(summary, tasks, tasks, cell))


def per_method_figure(summary: Dict[Tuple[str, str, str], Dict], values, ylabel, path: str) -> None:
    """One panel per task: for each row the distribution of ``values(entry)`` (violin and points)."""
    logging.getLogger("matplotlib").setLevel(logging.WARNING)  # an imported library may have set DEBUG on root
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = [t for t in GLUE_COLUMNS if any(k[0] == t for k in summary)]
    fig, axes = plt.subplots(1, len(tasks), figsize=(3.2 * len(tasks), 3.4), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        rows = _rows(summary, task)
        data = [values(summary[(task, *row)]) for row in rows]
        positions = list(range(1, len(rows) + 1))
        spread = [i for i, d in enumerate(data) if len(d) > 1 and max(d) > min(d)]
        if spread:
            ax.violinplot([data[i] for i in spread], positions=[positions[i] for i in spread], showmedians=True)
        for x, points in zip(positions, data):
            ax.scatter([x] * len(points), points, s=12, color="black", zorder=3)
        ax.set_xticks(positions)
        ax.set_xticklabels([row_name(*row) for row in rows])
        ax.set_title(task)
        ax.set_ylabel(ylabel(task))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def glue_main(args) -> None:
    every_run = collect_runs(args.runs, args.select_on_half)
    planned = read_plans(args.runs)
    kept = included(every_run)
    left_out = not_in_tables(every_run, planned)
    if not kept:
        hint = ""
        if args.select_on_half:
            hint = (": --select-on-half needs the dev halves (split-dev) validated in training "
                    "(--valid-subset valid,valid_a,valid_b)")
        not_finished = "".join(f"\n  {item['folder']}: {item['status']} ({item['reason']})" for item in left_out[:10])
        raise ResultsError(f"none of the {len(every_run)} runs under {args.runs} is finished with a validation "
                           f"record{hint}{not_finished}")
    _, warnings = cells(kept)
    summary = summarise(kept, every_run, planned)
    table = glue_table(summary, args.select_on_half, left_out, warnings)
    print(table)
    out = args.out or args.runs
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "table2.md"), "w") as f:
        f.write(table)
    in_cells = {run["folder"]: (t, row_name(m, suffix)) for (t, m, suffix), members in cells(kept)[0].items()
                for run in members}
    with open(os.path.join(out, "runs.tsv"), "w") as f:
        f.write("task\tmethod\tconfig\tseed\tvalues\tnoise_kept\tseconds_to_best\tfolder\tstatus\trow\treason\n")
        for r in every_run:
            noise = "-" if r["noise_kept"] is None else f"{r['noise_kept']:.2f}"
            seconds = "-" if r["seconds_to_best"] is None else f"{r['seconds_to_best']:.0f}"
            status, reason = r["status"], r["reason"]
            duplicate = [w for w in warnings if w.startswith(r["folder"] + " is the same run as")]
            if duplicate:
                status, reason = "duplicate", duplicate[0]
            elif status == "finished" and r["folder"] not in in_cells:
                status, reason = "left out", "no validation record, or what ran is unknown"
            row = in_cells.get(r["folder"], ("", ""))[1]
            fields = [r["task"], r["method"], r.get("config"), r["seed"], _cell(r["values"]), noise, seconds,
                      r["folder"], status, row, reason]
            f.write("\t".join(map(str, fields)) + "\n")
        found = {run["folder"] for run in every_run}
        for item in left_out:
            if item["folder"] not in found:
                fields = ["-", "-", item["run"]["config"], item["run"]["seed"], "-", "-", "-", item["folder"],
                          item["status"], "", item["reason"]]
                f.write("\t".join(map(str, fields)) + "\n")
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump({"select_on_half": args.select_on_half, "runs": every_run,
                   "not_in_tables": [{k: v for k, v in item.items() if k != "run"} for item in left_out],
                   "warnings": warnings,
                   "summary": [{"task": t, "method": m, "row": row_name(m, suffix), **e}
                               for (t, m, suffix), e in summary.items()]}, f, indent=1)
    with open(os.path.join(out, "figure1.md"), "w") as f:
        f.write(wall_table(summary))
    per_method_figure(summary, lambda e: e["per_seed"], lambda t: GLUE_COLUMNS[t][1][0][1],
                      os.path.join(out, "figure2.png"))
    per_method_figure(summary, lambda e: e["seconds_to_best"], lambda t: "seconds to best checkpoint",
                      os.path.join(out, "figure1.png"))
    print(f"wrote {out}/table2.md, runs.tsv, results.json, figure1.md, figure1.png, figure2.png")


# ---------------------------------------------------------------- dev halves

def split_dev(data: str, subset: str = "valid", seed: int = 0) -> Dict[str, int]:
    """Writes SUBSET_a and SUBSET_b, the two halves of ``subset`` of every input and the labels of ``data``."""
    from fairseq.data import indexed_dataset

    folders = [d for d in ("input0", "input1", "label") if os.path.exists(os.path.join(data, d, f"{subset}.idx"))]
    text_labels = os.path.join(data, "label", f"{subset}.label")  # regression targets (STS-B) are text
    if "input0" not in folders:
        raise ResultsError(f"{data} has no binarised {subset} subset (input0/{subset}.idx): give the output folder "
                           f"of the preprocessing (e.g. GLUE_BIN/RTE-bin)")
    datasets = {}
    for folder in folders:
        prefix = os.path.join(data, folder, subset)
        if indexed_dataset.infer_dataset_impl(prefix) != "mmap":
            raise ResultsError(f"{prefix}: not an mmap indexed dataset (fairseq-preprocess --dataset-impl mmap)")
        datasets[folder] = indexed_dataset.MMapIndexedDataset(prefix)
    labels = None
    if os.path.exists(text_labels):
        with open(text_labels, encoding="utf-8") as f:
            labels = f.read().splitlines()
    sizes = {folder: len(d) for folder, d in datasets.items()}
    if labels:
        sizes["label text"] = len(labels)
    if len(set(sizes.values())) != 1:
        raise ResultsError(f"{data}: the {subset} files disagree in length: {sizes}")
    n = len(datasets["input0"])
    if n < 2:
        raise ResultsError(f"{data}: {subset} has {n} example(s), too few to split in two")
    order = list(range(n))
    random.Random(seed).shuffle(order)
    halves = {"a": sorted(order[: (n + 1) // 2]), "b": sorted(order[(n + 1) // 2:])}
    for name, indices in halves.items():
        for folder, dataset in datasets.items():
            prefix = os.path.join(data, folder, f"{subset}_{name}")
            builder = indexed_dataset.MMapIndexedDatasetBuilder(prefix + ".bin", dtype=dataset._index.dtype)
            for i in indices:
                builder.add_item(dataset[i])
            builder.finalize(prefix + ".idx")
        if labels is not None:
            with open(os.path.join(data, "label", f"{subset}_{name}.label"), "w", encoding="utf-8") as f:
                f.write("".join(labels[i] + "\n" for i in indices))
    with open(os.path.join(data, f"{subset}_halves.json"), "w") as f:
        json.dump({"subset": subset, "seed": seed, **{f"{subset}_{k}": v for k, v in halves.items()}}, f)
    return {f"{subset}_{k}": len(v) for k, v in halves.items()}


def split_dev_main(args) -> None:
    sizes = split_dev(args.data, args.subset, args.seed)
    print(f"wrote {', '.join(f'{k} ({v} examples)' for k, v in sizes.items())} in {args.data}; train with "
          f"--valid-subset {args.subset},{','.join(sizes)} and read the tables with --select-on-half first")


# ---------------------------------------------------------------- XNLI

def subset_size(data: str, subset: str) -> int:
    from fairseq.data import indexed_dataset

    return len(indexed_dataset.MMapIndexedDataset(os.path.join(data, "label", subset)))


def validate_checkpoint(checkpoint: str, data: str, subsets: List[str], batch_size: int, cpu: bool, log_path: str):
    """{subset: (accuracy in percent, examples scored)} from fairseq-validate, its output in ``log_path``; fails
    unless every example of every subset was scored."""
    from fairseq_r3f.tools import USER_DIR, CommandFailed, fairseq_command, run_logged

    command = fairseq_command("fairseq-validate") + [
        data, "--task", "sentence_prediction", "--path", checkpoint, "--user-dir", USER_DIR,
        # fairseq 0.12 needs --criterion here to resolve the task's interpolations from the checkpoint.
        "--criterion", "sentence_prediction", "--valid-subset", ",".join(subsets),
        "--batch-size", str(batch_size), "--required-batch-size-multiple", "1", "--log-format", "json",
    ] + (["--cpu"] if cpu else [])
    try:
        proc = run_logged(command, log_path)
    except CommandFailed as error:
        raise ResultsError(f"on {checkpoint}: {error}") from error
    records = read_json_log(proc.stdout)
    scores = {}
    for subset in subsets:
        found = [r for r in records.get(subset, []) if isinstance(r.get(f"{subset}_accuracy"), float)]
        if not found:
            raise ResultsError(f"fairseq-validate logged no accuracy for {subset} of {checkpoint} (see {log_path})")
        # bsz of the one aggregate over the whole subset is the number of sentences scored.
        scored, size = int(found[-1].get(f"{subset}_bsz", -1)), subset_size(data, subset)
        if scored != size:
            raise ResultsError(f"fairseq-validate scored {scored} of the {size} examples of {subset} (see {log_path})")
        scores[subset] = (found[-1][f"{subset}_accuracy"], scored)
    return scores


def validation_key(checkpoint: str, data: str, subsets: List[str], batch_size: int, cpu: bool) -> Dict:
    """Everything fairseq-validate's accuracies depend on: the checkpoint's fingerprint, the sha256 of every file
    of the subsets, the batch size, the device and the versions (generation.evaluation_key)."""
    import torch

    from fairseq_r3f.evaluation import generation

    files = {}
    for subset in subsets:
        for folder in ("input0", "input1", "label"):
            for ext in ("bin", "idx"):
                path = os.path.join(data, folder, f"{subset}.{ext}")
                if os.path.isfile(path):
                    files[f"{folder}/{subset}.{ext}"] = generation.file_sha256(path)
    return generation.evaluation_key(checkpoint, None, data=files, batch_size=batch_size,
                                     device="cpu" if cpu or not torch.cuda.is_available() else "cuda")


def validate_cached(checkpoint: str, data: str, subsets: List[str], batch_size: int, cpu: bool, log_path: str,
                    cache: Optional[str]) -> Tuple[Dict[str, Tuple[float, int]], bool]:
    """validate_checkpoint's scores, reused from ``cache`` (a json file) when they were computed under the same
    validation_key; (scores, whether they were reused)."""
    from fairseq_r3f.evaluation import generation

    key = validation_key(checkpoint, data, subsets, batch_size, cpu) if cache else None
    saved = generation.cached_result(cache, key) if cache else None
    if saved is not None:
        return {subset: tuple(value) for subset, value in saved["scores"].items()}, True
    scores = validate_checkpoint(checkpoint, data, subsets, batch_size, cpu, log_path)
    if cache:
        os.makedirs(os.path.dirname(cache), exist_ok=True)
        with open(cache, "w") as f:
            json.dump({"checkpoint": checkpoint, "scores": scores, "key": key}, f, indent=1)
    return scores, False


def is_xnli(label: Dict) -> bool:
    return label.get("task") == "XNLI" and label.get("recipe", "xnli") in ("xnli", "hydra")


def xnli_runs(root: str, split: str) -> Tuple[List[Tuple[str, str, Optional[str]]], List[Dict], List[str]]:
    """The finished XNLI runs under ``root``: ([(row name, checkpoint_best.pt, cache file)], the runs not in the
    table as not_in_tables gives them, warnings); rows of one cell (see cells) are followed by their mean."""
    every = collect_runs(root, accepts=is_xnli)
    for run in every:
        if run["status"] == "finished" and not os.path.isfile(os.path.join(run["folder"], "checkpoint_best.pt")):
            run["status"], run["reason"] = "no checkpoint", "finished, but checkpoint_best.pt is gone (deleted?)"
    planned = read_plans(root)
    kept = [run for run in every if run["status"] == "finished" and run["configuration"] is not None]
    grouped, warnings = cells(kept)
    chosen = []
    for (_task, method, suffix), members in sorted(grouped.items()):
        by_config: Dict[str, List[Dict]] = defaultdict(list)
        for run in members:
            by_config[run.get("config", "default")].append(run)
        for config, group in sorted(by_config.items()):
            name = f"{row_name(method, suffix)} {config}"
            expected = planned_seeds({"folders": [r["folder"] for r in group], "seeds": [r["seed"] for r in group]},
                                     group, every, planned)
            for run in sorted(group, key=lambda r: r["seed"]):
                chosen.append((f"{name} seed {run['seed']}", os.path.join(run["folder"], "checkpoint_best.pt"),
                               os.path.join(run["folder"], f"xnli-{split}", "xnli.json"), name, expected))
    return chosen, not_in_tables(every, planned), warnings


def xnli_table(rows: List[Tuple[str, Dict[str, float]]], languages: Sequence[str]) -> str:
    """Table 3's layout: one row per model, a column per language, then the average."""
    header = ["Model"] + list(languages) + ["Avg"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, scores in rows:
        values = [scores[lang] for lang in languages]
        cells = [f"{v:.1f}" for v in values] + [f"{sum(values) / len(values):.1f}"]
        lines.append("| " + " | ".join([name] + cells) + " |")
    return "\n".join(lines) + "\n"


def parse_languages(text: str) -> List[str]:
    """A language list given with commas, spaces or both; a repeated language is an error."""
    languages = [lang for lang in re.split(r"[,\s]+", text) if lang]
    repeated = sorted({lang for lang in languages if languages.count(lang) > 1})
    if repeated:
        raise ResultsError(f"--languages names {', '.join(repeated)} more than once: give each language once")
    if not languages:
        raise ResultsError("--languages is empty: give languages like en,fr or \"en fr\"")
    return languages


def xnli_main(args) -> None:
    from tqdm import tqdm

    from fairseq_r3f import runs as run_layer

    languages = parse_languages(args.languages)
    missing = [lang for lang in languages
               if not os.path.exists(os.path.join(args.data, "input0", f"{args.split}_{lang}.bin"))]
    if missing:
        raise ResultsError(f"{args.data} has no {args.split} subset for {missing}: run preprocess/xnli.py")
    if bool(args.checkpoint) == bool(args.runs):
        raise ResultsError("pass --checkpoint CKPT (repeatable) or --runs SAVE_ROOT")
    notes, warnings = [], []
    if args.runs:
        chosen, left_out, warnings = xnli_runs(args.runs, args.split)
        notes = [f"{item['folder']}: {item['status']} ({item['reason']})" for item in left_out]
        if not chosen:
            raise ResultsError(f"no finished XNLI run with a checkpoint_best.pt under {args.runs}"
                               + "".join(f"\n  {note}" for note in notes[:10]))
    else:
        chosen = []
        for k, checkpoint in enumerate(args.checkpoint, start=1):
            if not os.path.isfile(checkpoint):
                raise ResultsError(f"--checkpoint {checkpoint}: no such file")
            folder = os.path.dirname(os.path.abspath(checkpoint))
            if os.path.isfile(os.path.join(folder, run_layer.LABEL_FILE)):
                try:
                    status, reason = run_layer.run_status(folder)
                except run_layer.RunError as error:
                    raise ResultsError(str(error)) from None
                if status != "finished":
                    notes.append(f"{checkpoint}: its run is {status} ({reason})")
            cache = os.path.join(args.out, f"validate_{k}.json") if args.out else None
            chosen.append((checkpoint, checkpoint, cache, None, None))
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    logs = args.out or tempfile.mkdtemp(prefix="xnli_validate_")
    os.makedirs(logs, exist_ok=True)
    subsets = [f"{args.split}_{lang}" for lang in languages]
    rows, scored, groups, reused = [], {}, defaultdict(list), 0
    progress = tqdm(chosen, desc="fairseq-validate", unit="checkpoint", file=sys.stderr)
    for k, (name, checkpoint, cache, group, _expected) in enumerate(progress, start=1):
        log_path = os.path.join(logs, f"validate_{k}.log")
        scores, from_cache = validate_cached(checkpoint, args.data, subsets, args.batch_size, args.cpu, log_path,
                                             cache)
        reused += from_cache
        rows.append((name, {lang: scores[f"{args.split}_{lang}"][0] for lang in languages}))
        scored = {lang: scores[f"{args.split}_{lang}"][1] for lang in languages}
        if group is not None:
            groups[group].append(rows[-1][1])
    expected = {entry[3]: entry[4] for entry in chosen if entry[3] is not None}
    for group, members in groups.items():
        seeds = f"{len(members)}/{expected[group]} seeds" if expected[group] > len(members) else f"{len(members)} seeds"
        rows.append((f"{group}: mean of {seeds}",
                     {lang: statistics.mean(r[lang] for r in members) for lang in languages}))
    if not groups and len(rows) > 1:
        rows.append((f"mean of {len(rows)}", {lang: statistics.mean(r[1][lang] for r in rows) for lang in languages}))
    table = xnli_table(rows, languages)
    if notes or warnings:
        table += "".join(f"\nNot in the table: {note}" if args.runs else f"\nNote: {note}" for note in notes)
        table += "".join(f"\nWarning: {warning}" for warning in warnings) + "\n"
    print(table)
    if reused:
        print(f"{reused} checkpoint(s) scored before on the same data and settings: not validated again",
              file=sys.stderr)
    if args.out:
        with open(os.path.join(args.out, "table3.md"), "w") as f:
            f.write(table)
        with open(os.path.join(args.out, "xnli.json"), "w") as f:
            json.dump({"split": args.split, "rows": [{"model": n, "accuracy": s, "scored": scored} for n, s in rows],
                       "notes": notes, "warnings": warnings}, f, indent=1)
    print(f"fairseq-validate's output: {logs}/validate_*.log", file=sys.stderr)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fairseq_r3f.evaluation.results", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    documented = {"epilog": __doc__, "formatter_class": argparse.RawDescriptionHelpFormatter}
    glue = commands.add_parser("glue", **documented,
                               help="Table 2 and Figures 1 and 2 from a folder of recipes/glue.sh runs")
    glue.add_argument("runs", help="the SAVE_ROOT of recipes/glue.sh (searched recursively)")
    glue.add_argument("--out", help="where to write the tables and figures (default: RUNS)")
    glue.add_argument("--select-on-half", choices=sorted(HALVES),
                      help="select configurations, seeds and checkpoints on this half of the dev set (valid_a for "
                           "first, valid_b for second) and report the other half (see split-dev)")
    split = commands.add_parser("split-dev", **documented,
                                help="write the two halves of a dev subset for --select-on-half")
    split.add_argument("data", help="a binarised sentence-prediction folder (input0/, [input1/,] label/)")
    split.add_argument("--subset", default="valid", help="the subset to split (default: valid)")
    split.add_argument("--seed", type=int, default=0, help="seed of the shuffle that assigns examples to halves")
    xnli = commands.add_parser("xnli", **documented, help="Table 3 for one or more checkpoints")
    xnli.add_argument("--data", required=True, help="the output folder of preprocess/xnli.py")
    xnli.add_argument("--checkpoint", action="append", help="a checkpoint; repeat to average runs")
    xnli.add_argument("--runs", help="every finished run of recipes/xnli.sh under this SAVE_ROOT (searched "
                      "recursively): a row per run and the mean of each configuration's seeds")
    xnli.add_argument("--split", default="test", choices=["test", "valid"])
    xnli.add_argument("--languages", default=",".join(XNLI_LANGUAGES), help="commas or spaces: en,fr or \"en fr\"")
    xnli.add_argument("--batch-size", type=int, default=32)
    xnli.add_argument("--cpu", action="store_true")
    xnli.add_argument("--out", help="also write table3.md and xnli.json here (and fairseq-validate's logs)")
    args = parser.parse_args(argv)
    try:
        {"glue": glue_main, "split-dev": split_dev_main, "xnli": xnli_main}[args.command](args)
    except ResultsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
