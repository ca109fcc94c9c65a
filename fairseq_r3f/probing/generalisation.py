"""Generalisation probing (the paper's Figure 3): fine-tune on a source task (SST-2) with each method, then
train a linear probe on the frozen model for every other task; a better-kept representation probes better.

    python -m fairseq_r3f.probing.generalisation --data-root GLUE_BIN --work-dir WORK \
        --pretrained roberta.large/model.pt [--methods std++ smart r3f r4f] [--seeds 1 2 3] [-- FAIRSEQ FLAGS]

Writes WORK/results.json (every probe, and mean/min/max over seeds per method and task), WORK/results.md
(the table) and WORK/generalisation.png (one panel per probed task, one box per method, as in Figure 3).
"""

import argparse
from typing import Dict, List

from fairseq_r3f.probing import plots
from fairseq_r3f.probing.runner import Experiment, add_common_arguments, cell, main_wrapper, split_extra, summarise

PROBE_TASKS = ["MNLI", "QNLI", "QQP", "RTE", "MRPC", "CoLA"]  # "six other GLUE tasks" (Section 4.1)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m fairseq_r3f.probing.generalisation", description=__doc__.split("\n\n")[0],
    )
    add_common_arguments(parser, default_methods=["std++", "smart", "r3f", "r4f"])
    parser.add_argument("--source", default="SST-2", help="task fine-tuned on (default: SST-2)")
    parser.add_argument("--probe-tasks", nargs="+", default=PROBE_TASKS,
                        help=f"tasks probed on the fine-tuned model (default: {' '.join(PROBE_TASKS)})")
    return parser


def run(argv: List[str]) -> Dict:
    own, extra = split_extra(argv)
    args = build_parser().parse_args(own)
    exp = Experiment("generalisation", args, extra)
    exp.check_tasks([args.source] + args.probe_tasks)

    def steps() -> List[Dict]:
        rows = []
        for method in exp.methods:
            for seed in args.seeds:
                prefix = f"{method}/seed{seed}"
                tuned = exp.finetune(f"{prefix}/finetune-{args.source}", args.source, method, seed, exp.pretrained)
                for task in args.probe_tasks:
                    probe = exp.probe(f"{prefix}/probe-{task}", task, tuned["checkpoint"], seed)
                    rows.append({"method": method, "seed": seed, "source": args.source, "probe_task": task,
                                 "metric_name": exp.hparams.metric(task), "metric": probe["metric"],
                                 "source_metric": tuned["metric"]})
        return rows

    rows = exp.run_steps(steps)
    if args.dry_run:
        return {}

    summary = {
        method: {task: summarise([r["metric"] for r in rows if r["method"] == method and r["probe_task"] == task])
                 for task in args.probe_tasks}
        for method in exp.methods
    }
    results = {"source": args.source, "probe_tasks": args.probe_tasks,
               "metric_names": {t: exp.hparams.metric(t) for t in args.probe_tasks}, "rows": rows,
               "summary": summary}
    header = "| method | " + " | ".join(f"{t} ({exp.hparams.metric(t)})" for t in args.probe_tasks) + " |"
    lines = [
        f"Linear probes on models fine-tuned on {args.source}: best validation metric, mean over seeds "
        f"{args.seeds} (min-max when several).", "", header, "|---" * (len(args.probe_tasks) + 1) + "|",
    ]
    for method in exp.methods:
        cells = [cell(summary[method][task]) for task in args.probe_tasks]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return exp.publish(results, lines, plots.generalisation)


def main(argv=None) -> int:
    return main_wrapper(run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
