"""What enters a results table: the finished runs under a folder (r3f_runs.status), each run's best validation
round on its final trajectory, the cells (task x method x effective configuration) and the configuration shown
per method (best median over seeds), with the planned runs that are missing named. Shared by the GLUE, XNLI, BLEU
and ROUGE tables.
"""

import json
import os
import statistics
import sys
from collections import defaultdict
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from r3f_runs.configuration import configuration_differences
from r3f_runs.folder import LOG_FILE, RunError
from r3f_runs.identity import label_mismatches
from r3f_runs.status import labelled_runs
from r3f_runs.train_log import ELAPSED, final_trajectory
from r3f_runs.vocabulary import METHOD_NAMES


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
HALVES = {"first": ("a", "b"), "second": ("b", "a")}  # --select-on-half: (selected on, reported on)


class ResultsError(Exception):
    pass


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


def is_glue(label: Dict) -> bool:
    return label.get("task") in GLUE_COLUMNS and label.get("recipe", "glue") in ("glue", "hydra", "probing")


def collect_runs(root: str, half: Optional[str] = None, accepts=is_glue) -> List[Dict]:
    """Every run under ``root`` (a folder with run.json) that ``accepts`` its label, with its status
    (run_status), its effective configuration and, from the log's final trajectory, its best round:
    "values" (None without a round), "score", "noise_kept", "seconds_to_best". Runs of other tasks are counted
    in a note; a run whose checkpoint contradicts its label stops the tables."""
    try:
        labelled, other_tasks = labelled_runs(root, accepts)
    except RunError as error:
        raise ResultsError(str(error)) from None
    found, mislabelled = [], []
    for run in labelled:
        folder, ident, status = run["folder"], run["identity"], run["status"]
        if ident is not None and label_mismatches(run, ident):
            mislabelled.append(f"  {folder}: " + "; ".join(label_mismatches(run, ident)))
        run.update(values=None, score=None, noise_kept=None, seconds_to_best=None,
                   configuration=(ident or {}).get("configuration"), finished=status == "finished")
        log_path = os.path.join(folder, LOG_FILE)
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
            f"method, or correct run.json (python -m r3f_runs identify RUN_DIR shows what ran):\n"
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
        "with python -m r3f_runs identify RUN_DIR)": [
            r for r in runs if r["status"] == "finished" and r["identity"] is None],
        "whose identity.json has no configuration and no checkpoint to read it from (written by an older "
        "plugin: python -m r3f_runs identify RUN_DIR needs the checkpoint)": [
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
    slots = {(_sweep_folder(folder), run.get("config")) for run in members if run["folder"] in entry["folders"]
             for folder in [run["folder"], *run.get("copies", [])]}
    configuration = next(run["configuration"] for run in members if run["folder"] == entry["folders"][0])
    swept = set(swept_keys(members[0]))
    same = {k: v for k, v in configuration.items() if k not in swept}

    def planned_with_this(other: Optional[Dict]) -> bool:
        return not other or not configuration_differences(same, {k: v for k, v in other.items()
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
