"""The GLUE tables and figures (Table 2, Figures 1 and 2, ``python -m fairseq_r3f.evaluation.results glue``) and
the dev-set halves for ``--select-on-half`` (``split-dev``). Which runs and rounds enter them is
fairseq_r3f.evaluation.selection; what each option means is in fairseq_r3f.evaluation.results.
"""

import json
import logging
import os
import random
import statistics
from typing import Dict, List, Optional, Sequence, Tuple

from fairseq_r3f.evaluation.selection import (
    GLUE_COLUMNS, HALVES, ResultsError, cells, collect_runs, included, not_in_tables, summarise,
)

from r3f_runs.status import read_plans
from r3f_runs.vocabulary import METHOD_NAMES


# Under a table that holds any of them: what the released rows are (they are never the paper's methods).
RELEASED_NOTE = ("*-readme and *-released rows: the authors' released configurations (recipes/glue.sh METHOD "
                 "r3f-readme, r4f-readme: fairseq's examples/rxf/README.md command with the noise reaching the "
                 "encoder; r3f-released, r4f-released: the same as the released code computed it, the noise dropped "
                 "(--noise-type none: its RoBERTa encoder dropped token_embeddings=, so lambda weighed a symmetric KL "
                 "between two dropout samples); smart-released: mt-dnn's code between 682b9fb and 1f43b6e; "
                 "docs/glue_xnli.md), not the paper's R3F/R4F/SMART.")


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
