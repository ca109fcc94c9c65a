"""Sequential degradation (the paper's Figure 4): fine-tune on SST-2, then on QNLI, QQP and RTE in turn, each
from the previous step's best checkpoint, and after every step train a linear probe for SST-2 on the frozen
model: how much of the source task's representation survives the later fine-tunings.

    python -m fairseq_r3f.probing.degradation --data-root GLUE_BIN --work-dir WORK \
        --pretrained roberta.large/model.pt [--methods std++ r4f] [--chain SST-2 QNLI QQP RTE] [-- FAIRSEQ FLAGS]

Writes WORK/results.json, WORK/results.md and WORK/degradation.png (probe metric after each step of the
chain, one line per method, as in Figure 4).
"""

import argparse
from typing import Dict, List

from fairseq_r3f.probing import plots
from fairseq_r3f.probing.runner import Experiment, add_common_arguments, cell, main_wrapper, split_extra, summarise

CHAIN = ["SST-2", "QNLI", "QQP", "RTE"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m fairseq_r3f.probing.degradation", description=__doc__.split("\n\n")[0],
    )
    add_common_arguments(parser, default_methods=["std++", "r4f"])
    parser.add_argument("--chain", nargs="+", default=CHAIN,
                        help=f"tasks fine-tuned on, in order (default: {' '.join(CHAIN)})")
    parser.add_argument("--probe-task", help="task probed after every step (default: the chain's first)")
    return parser


def run(argv: List[str]) -> Dict:
    own, extra = split_extra(argv)
    args = build_parser().parse_args(own)
    probe_task = args.probe_task or args.chain[0]
    exp = Experiment("degradation", args, extra)
    exp.check_tasks(args.chain + [probe_task])

    def steps() -> List[Dict]:
        rows = []
        for method in exp.methods:
            for seed in args.seeds:
                init = exp.pretrained
                for position, task in enumerate(args.chain, 1):
                    step = f"{method}/seed{seed}/{position}-{task}"
                    tuned = exp.finetune(f"{step}/finetune", task, method, seed, init)
                    probe = exp.probe(f"{step}/probe-{probe_task}", probe_task, tuned["checkpoint"], seed)
                    rows.append({"method": method, "seed": seed, "position": position, "finetuned_on": task,
                                 "probe_task": probe_task, "metric_name": exp.hparams.metric(probe_task),
                                 "metric": probe["metric"], "finetune_metric": tuned["metric"]})
                    init = tuned["checkpoint"]
        return rows

    rows = exp.run_steps(steps)
    if args.dry_run:
        return {}

    steps = [f"{position}-{task}" for position, task in enumerate(args.chain, 1)]
    summary = {
        method: {f"{r_pos}-{task}": summarise([r["metric"] for r in rows
                                               if r["method"] == method and r["position"] == r_pos])
                 for r_pos, task in enumerate(args.chain, 1)}
        for method in exp.methods
    }
    results = {"chain": args.chain, "probe_task": probe_task, "metric_name": exp.hparams.metric(probe_task),
               "steps": steps, "rows": rows, "summary": summary}
    lines = [
        f"Linear probe for {probe_task} ({exp.hparams.metric(probe_task)}) after each fine-tuning step of the "
        f"chain; mean over seeds {args.seeds} (min-max when several).", "",
        "| method | " + " | ".join(f"after {task}" for task in args.chain) + " |",
        "|---" * (len(args.chain) + 1) + "|",
    ]
    for method in exp.methods:
        cells = [cell(summary[method][step]) for step in steps]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return exp.publish(results, lines, plots.degradation)


def main(argv=None) -> int:
    return main_wrapper(run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
