"""Cyclic retention (the paper's Figure 5): run the chain SST-2 -> QNLI -> QQP -> RTE three times over. Before
each fine-tuning step, a linear probe for that step's task is trained on the frozen model the chain has so
far (sequential probing: train on A, probe B, fine-tune on B, probe C, ...). Every cycle the probed task
has been fully fine-tuned once more in the past, so probes should rise from cycle to cycle; how much they
rise measures how much of the earlier fine-tunings the representation retained.

    python -m fairseq_r3f.probing.retention --data-root GLUE_BIN --work-dir WORK \
        --pretrained roberta.large/model.pt [--methods std++ r4f] [--cycles 3] [-- FAIRSEQ FLAGS]

The first task of cycle 1 is probed on the --pretrained model (without one it has no probe in cycle 1),
and the chain's final fine-tuning is not run: no probe reads it. Writes WORK/results.json, WORK/results.md
and WORK/retention.png (one panel per task, probe metric per cycle, one line per method, as in Figure 5).
"""

import argparse
from typing import Dict, List

from fairseq_r3f.probing import plots
from fairseq_r3f.probing.runner import Experiment, add_common_arguments, cell, main_wrapper, split_extra, summarise

CHAIN = ["SST-2", "QNLI", "QQP", "RTE"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m fairseq_r3f.probing.retention", description=__doc__.split("\n\n")[0],
    )
    add_common_arguments(parser, default_methods=["std++", "r4f"])
    parser.add_argument("--chain", nargs="+", default=CHAIN,
                        help=f"one cycle of tasks, in order (default: {' '.join(CHAIN)})")
    parser.add_argument("--cycles", type=int, default=3, help="times the chain is run (default: 3)")
    return parser


def run(argv: List[str]) -> Dict:
    own, extra = split_extra(argv)
    args = build_parser().parse_args(own)
    if args.cycles < 1:
        raise SystemExit(f"error: --cycles {args.cycles}: give at least 1")
    if len(set(args.chain)) != len(args.chain):
        raise SystemExit(f"error: --chain {' '.join(args.chain)} names a task twice; give each task once per cycle")
    exp = Experiment("retention", args, extra)
    exp.check_tasks(args.chain)
    sequence = [(cycle, task) for cycle in range(1, args.cycles + 1) for task in args.chain]

    def steps() -> List[Dict]:
        rows = []
        for method in exp.methods:
            for seed in args.seeds:
                current = exp.pretrained  # the checkpoint the chain has reached
                for position, (cycle, task) in enumerate(sequence, 1):
                    step = f"{method}/seed{seed}/{position:02d}-c{cycle}-{task}"
                    row = {"method": method, "seed": seed, "cycle": cycle, "position": position, "probe_task": task,
                           "metric_name": exp.hparams.metric(task), "probed_after": sequence[position - 2][1]
                           if position > 1 else "pretrained"}
                    if current is None:
                        row.update(metric=None, note="not probed: no --pretrained model before the first fine-tuning")
                    else:
                        row["metric"] = exp.probe(f"{step}/probe", task, current, seed)["metric"]
                    rows.append(row)
                    if position < len(sequence):
                        current = exp.finetune(f"{step}/finetune", task, method, seed, current)["checkpoint"]
        return rows

    rows = exp.run_steps(steps)
    if args.dry_run:
        return {}

    summary = {
        method: {task: [summarise([r["metric"] for r in rows if r["method"] == method and r["probe_task"] == task
                                   and r["cycle"] == cycle]) for cycle in range(1, args.cycles + 1)]
                 for task in args.chain}
        for method in exp.methods
    }
    results = {"chain": args.chain, "cycles": args.cycles,
               "metric_names": {t: exp.hparams.metric(t) for t in args.chain}, "rows": rows, "summary": summary}
    cycles = range(1, args.cycles + 1)
    lines = [
        f"Linear probe for each task just before it is fine-tuned again, per cycle of {' -> '.join(args.chain)}; "
        f"mean over seeds {args.seeds} (min-max when several).", "",
        "| task | method | " + " | ".join(f"cycle {c}" for c in cycles) + " |",
        "|---" * (args.cycles + 2) + "|",
    ]
    for task in args.chain:
        for method in exp.methods:
            cells = [cell(s) for s in summary[method][task]]
            lines.append(f"| {task} ({exp.hparams.metric(task)}) | {method} | " + " | ".join(cells) + " |")
    return exp.publish(results, lines, plots.retention)


def main(argv=None) -> int:
    return main_wrapper(run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
