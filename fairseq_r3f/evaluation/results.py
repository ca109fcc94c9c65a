"""Result tables for the GLUE and XNLI recipes, in the layout of the paper's Tables 2 and 3, and Figure 2.

    python -m fairseq_r3f.evaluation.results glue RUNS_DIR [--out OUT_DIR]
    python -m fairseq_r3f.evaluation.results xnli --data XNLI_BIN --checkpoint CKPT [--checkpoint CKPT ...]

``glue`` reads every run folder under RUNS_DIR written by recipes/glue.sh (run.json + train.log with
``--log-format json`` records), takes each run's best validation round by the task's metric (MNLI matched
accuracy, QQP and the rest accuracy, CoLA MCC, STS-B Pearson; the second number of a cell, MNLI mismatched or
QQP F1, comes from that same round, i.e. the kept checkpoint), and writes for each task and method the max and
the median over seeds (table2.md, Table 2's two halves), every run (runs.tsv, results.json), and the per-seed
distribution per method (figure2.png, as Figure 2). A method swept over several configurations (lambda x noise
type) is shown with the configuration of best median; runs.tsv has them all.

``xnli`` runs fairseq-validate on each checkpoint over the per-language subsets of preprocess/xnli.py (every
example scored) and prints accuracy per language and the average in Table 3's layout, with the mean over
checkpoints (the paper averages 5 runs) when several are given.
"""

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
from collections import defaultdict
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
METHOD_NAMES = {"std": "STD", "std++": "STD++", "smart": "SMART", "freelb": "FreeLB", "r3f": "R3F", "r4f": "R4F"}
XNLI_LANGUAGES = ("en", "fr", "es", "de", "el", "bg", "ru", "tr", "ar", "vi", "th", "zh", "hi", "sw", "ur")


class ResultsError(Exception):
    pass


def best_validation(records: Dict[str, List[Dict]], metrics: Sequence[Tuple[str, str]]) -> Optional[List[float]]:
    """The values of ``metrics`` at the validation round where the first one is highest (None: no round).

    ``records`` are read_json_log's records of one training log; subset s's metric m is logged under tag s as
    key "s_m", with "s_num_updates" telling which round it belongs to.
    """
    subset, metric = metrics[0]
    rounds = [r for r in records.get(subset, []) if isinstance(r.get(f"{subset}_{metric}"), float)]
    if not rounds:
        return None
    best = max(rounds, key=lambda r: r[f"{subset}_{metric}"])  # the first of equal rounds, as fairseq keeps
    updates = best.get(f"{subset}_num_updates")
    values = []
    for other_subset, other_metric in metrics:
        if other_subset == subset:
            record = best
        else:
            same_round = [r for r in records.get(other_subset, []) if r.get(f"{other_subset}_num_updates") == updates]
            record = same_round[0] if same_round else {}
        value = record.get(f"{other_subset}_{other_metric}")
        values.append(value if isinstance(value, float) else float("nan"))
    return values


def collect_runs(root: str) -> List[Dict]:
    """Every run under ``root`` (a folder with run.json and train.log) with its best validation values."""
    runs = []
    for folder, _dirs, files in sorted(os.walk(root)):
        if "run.json" not in files:
            continue
        with open(os.path.join(folder, "run.json")) as f:
            run = json.load(f)
        if run.get("task") not in GLUE_COLUMNS:
            continue
        log_path = os.path.join(folder, "train.log")
        values = None
        if os.path.exists(log_path):
            with open(log_path, errors="replace") as f:
                values = best_validation(read_json_log(f.read()), GLUE_COLUMNS[run["task"]][1])
        run.update(folder=folder, values=values)
        runs.append(run)
    if not runs:
        raise ResultsError(f"no run found under {root}: expected folders with run.json and train.log (recipes/glue.sh)")
    return runs


def summarise(runs: List[Dict]) -> Dict[Tuple[str, str], Dict]:
    """Per (task, method): the configuration of best median, and its per-metric max and median over seeds."""
    groups: Dict[Tuple[str, str, str], List[Dict]] = defaultdict(list)
    for run in runs:
        if run["values"] is not None:
            groups[(run["task"], run["method"], run.get("config", "default"))].append(run)
    summary = {}
    for (task, method, config), members in groups.items():
        columns = list(zip(*[m["values"] for m in members]))
        best_run = max(members, key=lambda m: m["values"][0])
        entry = {
            "config": config,
            "seeds": sorted(m["seed"] for m in members),
            "max": best_run["values"],  # the best seed, with its own second number
            "median": [statistics.median(c) for c in columns],
            "per_seed": [m["values"][0] for m in sorted(members, key=lambda m: m["seed"])],
        }
        current = summary.get((task, method))
        if current is None or (entry["median"][0], entry["max"][0]) > (current["median"][0], current["max"][0]):
            summary[(task, method)] = entry
    return summary


def _cell(values: Optional[Sequence[float]]) -> str:
    if values is None:
        return "-"
    return "/".join("-" if v != v else f"{v:.1f}" for v in values)


def glue_table(summary: Dict[Tuple[str, str], Dict]) -> str:
    """Table 2's layout: methods as rows, the task columns once for the best seed and once for the median."""
    tasks = [t for t in GLUE_COLUMNS if t != "STS-B" or any(k[0] == "STS-B" for k in summary)]
    methods = [m for m in METHOD_NAMES if any(k[1] == m for k in summary)]
    methods += sorted({k[1] for k in summary} - set(methods))
    lines = []
    for half in ("max", "median"):
        title = "Best of the seeds (max)" if half == "max" else "Median over the seeds"
        header = ["Method"] + [f"{t} {GLUE_COLUMNS[t][0]}" for t in tasks]
        lines += [f"{title}:", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for method in methods:
            cells = [_cell(summary[(t, method)][half] if (t, method) in summary else None) for t in tasks]
            lines.append("| " + " | ".join([METHOD_NAMES.get(method, method)] + cells) + " |")
        lines.append("")
    notes = [f"{t} {METHOD_NAMES.get(m, m)}: {e['config']}, seeds {e['seeds']}"
             for (t, m), e in sorted(summary.items())]
    return "\n".join(lines + ["Configurations and seeds:"] + notes) + "\n"


def seed_figure(summary: Dict[Tuple[str, str], Dict], path: str) -> None:
    """Figure 2: per task, the distribution over seeds of the task's metric for each method."""
    logging.getLogger("matplotlib").setLevel(logging.WARNING)  # an imported library may have set DEBUG on root
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = [t for t in GLUE_COLUMNS if any(k[0] == t for k in summary)]
    fig, axes = plt.subplots(1, len(tasks), figsize=(3.2 * len(tasks), 3.4), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        methods = [m for m in METHOD_NAMES if (task, m) in summary]
        methods += sorted({k[1] for k in summary if k[0] == task} - set(methods))
        data = [summary[(task, m)]["per_seed"] for m in methods]
        positions = list(range(1, len(methods) + 1))
        spread = [i for i, d in enumerate(data) if len(d) > 1 and max(d) > min(d)]
        if spread:
            ax.violinplot([data[i] for i in spread], positions=[positions[i] for i in spread], showmedians=True)
        for x, values in zip(positions, data):
            ax.scatter([x] * len(values), values, s=12, color="black", zorder=3)
        ax.set_xticks(positions)
        ax.set_xticklabels([METHOD_NAMES.get(m, m) for m in methods])
        header, metrics = GLUE_COLUMNS[task]
        ax.set_title(f"{task} ({metrics[0][1]})")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def glue_main(args) -> None:
    runs = collect_runs(args.runs)
    missing = [r["folder"] for r in runs if r["values"] is None]
    if missing:
        print(f"warning: {len(missing)} run(s) without a validation record are left out: {missing[:5]}",
              file=sys.stderr)
    summary = summarise(runs)
    if not summary:
        raise ResultsError(f"none of the {len(runs)} runs under {args.runs} has a validation record yet")
    table = glue_table(summary)
    print(table)
    out = args.out or args.runs
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "table2.md"), "w") as f:
        f.write(table)
    with open(os.path.join(out, "runs.tsv"), "w") as f:
        f.write("task\tmethod\tconfig\tseed\tvalues\tfolder\n")
        for r in runs:
            fields = [r["task"], r["method"], r.get("config"), r["seed"], _cell(r["values"]), r["folder"]]
            f.write("\t".join(map(str, fields)) + "\n")
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump({"runs": runs, "summary": [{"task": t, "method": m, **e} for (t, m), e in summary.items()]},
                  f, indent=1)
    seed_figure(summary, os.path.join(out, "figure2.png"))
    print(f"wrote {out}/table2.md, runs.tsv, results.json, figure2.png")


def subset_size(data: str, subset: str) -> int:
    from fairseq.data import indexed_dataset

    return len(indexed_dataset.MMapIndexedDataset(os.path.join(data, "label", subset)))


def validate_checkpoint(checkpoint: str, data: str, subsets: List[str], batch_size: int, cpu: bool):
    """{subset: (accuracy in percent, examples scored)} from fairseq-validate; fails unless every example of
    every subset was scored."""
    from fairseq_r3f.tools import USER_DIR, fairseq_command

    command = fairseq_command("fairseq-validate") + [
        data, "--task", "sentence_prediction", "--path", checkpoint, "--user-dir", USER_DIR,
        # fairseq 0.12 needs --criterion here to resolve the task's interpolations from the checkpoint.
        "--criterion", "sentence_prediction", "--valid-subset", ",".join(subsets),
        "--batch-size", str(batch_size), "--required-batch-size-multiple", "1", "--log-format", "json",
    ] + (["--cpu"] if cpu else [])
    proc = subprocess.run(command, capture_output=True, text=True)
    if proc.returncode != 0:
        raise ResultsError(f"fairseq-validate failed on {checkpoint}:\n{proc.stderr[-3000:]}")
    records = read_json_log(proc.stdout + proc.stderr)
    scores = {}
    for subset in subsets:
        found = [r for r in records.get(subset, []) if isinstance(r.get(f"{subset}_accuracy"), float)]
        if not found:
            raise ResultsError(f"fairseq-validate logged no accuracy for {subset} of {checkpoint}")
        # bsz of the one aggregate over the whole subset is the number of sentences scored.
        scored, size = int(found[-1].get(f"{subset}_bsz", -1)), subset_size(data, subset)
        if scored != size:
            raise ResultsError(f"fairseq-validate scored {scored} of the {size} examples of {subset}")
        scores[subset] = (found[-1][f"{subset}_accuracy"], scored)
    return scores


def xnli_table(rows: List[Tuple[str, Dict[str, float]]], languages: Sequence[str]) -> str:
    """Table 3's layout: one row per model, a column per language, then the average."""
    header = ["Model"] + list(languages) + ["Avg"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, scores in rows:
        values = [scores[lang] for lang in languages]
        cells = [f"{v:.1f}" for v in values] + [f"{sum(values) / len(values):.1f}"]
        lines.append("| " + " | ".join([name] + cells) + " |")
    return "\n".join(lines) + "\n"


def xnli_main(args) -> None:
    languages = [lang for lang in args.languages.split(",") if lang]
    missing = [lang for lang in languages
               if not os.path.exists(os.path.join(args.data, "input0", f"{args.split}_{lang}.bin"))]
    if missing:
        raise ResultsError(f"{args.data} has no {args.split} subset for {missing}: run preprocess/xnli.py")
    for checkpoint in args.checkpoint:
        if not os.path.isfile(checkpoint):
            raise ResultsError(f"--checkpoint {checkpoint}: no such file")
    subsets = [f"{args.split}_{lang}" for lang in languages]
    rows, scored = [], {}
    for checkpoint in args.checkpoint:
        scores = validate_checkpoint(checkpoint, args.data, subsets, args.batch_size, args.cpu)
        rows.append((checkpoint, {lang: scores[f"{args.split}_{lang}"][0] for lang in languages}))
        scored = {lang: scores[f"{args.split}_{lang}"][1] for lang in languages}
    if len(rows) > 1:
        rows.append((f"mean of {len(rows)}", {lang: statistics.mean(r[1][lang] for r in rows) for lang in languages}))
    table = xnli_table(rows, languages)
    print(table)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "table3.md"), "w") as f:
            f.write(table)
        with open(os.path.join(args.out, "xnli.json"), "w") as f:
            json.dump({"split": args.split, "rows": [{"model": n, "accuracy": s, "scored": scored} for n, s in rows]},
                      f, indent=1)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fairseq_r3f.evaluation.results", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    glue = commands.add_parser("glue", help="Table 2 and Figure 2 from a folder of recipes/glue.sh runs")
    glue.add_argument("runs", help="the SAVE_ROOT of recipes/glue.sh (searched recursively)")
    glue.add_argument("--out", help="where to write table2.md, runs.tsv, results.json, figure2.png (default: RUNS)")
    xnli = commands.add_parser("xnli", help="Table 3 for one or more checkpoints")
    xnli.add_argument("--data", required=True, help="the output folder of preprocess/xnli.py")
    xnli.add_argument("--checkpoint", required=True, action="append", help="a checkpoint; repeat to average runs")
    xnli.add_argument("--split", default="test", choices=["test", "valid"])
    xnli.add_argument("--languages", default=",".join(XNLI_LANGUAGES))
    xnli.add_argument("--batch-size", type=int, default=32)
    xnli.add_argument("--cpu", action="store_true")
    xnli.add_argument("--out", help="also write table3.md and xnli.json here")
    args = parser.parse_args(argv)
    try:
        glue_main(args) if args.command == "glue" else xnli_main(args)
    except ResultsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
