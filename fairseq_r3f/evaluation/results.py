"""Result tables for the GLUE and XNLI recipes, in the layout of the paper's Tables 2 and 3, and Figures 1 and 2.

    python -m fairseq_r3f.evaluation.results glue RUNS_DIR [--out OUT_DIR] [--select-on-half {first,second}]
    python -m fairseq_r3f.evaluation.results split-dev DATA_BIN [--subset valid]
    python -m fairseq_r3f.evaluation.results xnli --data XNLI_BIN --checkpoint CKPT [--checkpoint CKPT ...]
    python -m fairseq_r3f.evaluation.results xnli --data XNLI_BIN --runs SAVE_ROOT

glue
    Reads every run folder under RUNS_DIR written by recipes/glue.sh: run.json (the recipe's label), train.log
    (fairseq's ``--log-format json`` records, one block per launch, each after a ``# <time> start`` line) and
    identity.json (what ran, written by ``python -m r3f_runs identify``).

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
import sys

from fairseq_r3f.evaluation.glue import glue_main, split_dev_main
from fairseq_r3f.evaluation.selection import HALVES, ResultsError
from fairseq_r3f.evaluation.xnli import xnli_main

from r3f_runs.folder import RunError
from r3f_runs.vocabulary import XNLI_LANGUAGES


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
    except (ResultsError, RunError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
