"""The XNLI table (Table 3, ``python -m fairseq_r3f.evaluation.results xnli``): fairseq-validate on each
checkpoint over the per-language subsets, every example scored, cached under the checkpoint's and the data's key.
"""

import json
import os
import re
import statistics
import sys
import tempfile
from collections import defaultdict
from typing import Dict, List, Optional, Sequence, Tuple

from fairseq_r3f.evaluation import generation
from fairseq_r3f.evaluation.glue import row_name
from fairseq_r3f.evaluation.selection import ResultsError, cells, collect_runs, not_in_tables, planned_seeds
from fairseq_r3f.logs import read_json_log
from fairseq_r3f.tools import USER_DIR, CommandFailed, fairseq_command, run_logged

from r3f_runs.folder import LABEL_FILE, RunError
from r3f_runs.status import read_plans, run_status


def subset_size(data: str, subset: str) -> int:
    from fairseq.data import indexed_dataset

    return len(indexed_dataset.MMapIndexedDataset(os.path.join(data, "label", subset)))


def validate_checkpoint(checkpoint: str, data: str, subsets: List[str], batch_size: int, cpu: bool, log_path: str):
    """{subset: (accuracy in percent, examples scored)} from fairseq-validate, its output in ``log_path``; fails
    unless every example of every subset was scored."""
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
            if os.path.isfile(os.path.join(folder, LABEL_FILE)):
                try:
                    status, reason = run_status(folder)
                except RunError as error:
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
