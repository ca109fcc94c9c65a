"""The run layer's command line: the recipes hand over to it, and it answers what a run folder holds.

    python -m r3f_runs glue TASK METHOD [fairseq-train flags]    (recipes/glue.sh hands over to this)
    python -m r3f_runs xnli METHOD [flags]
    python -m r3f_runs summarization DATASET [flags]
    python -m r3f_runs translation CONFIG [flags]
    python -m r3f_runs versions          the plugin, fairseq and torch versions and the git commit, as json
    python -m r3f_runs identify RUN_DIR  writes RUN_DIR/identity.json from its checkpoint_last.pt; exit 2 naming
                                         every disagreement when it contradicts run.json
    python -m r3f_runs status RUN_DIR    finished, unfinished, truncated or failed, and why; exit 0 only when
                                         finished

A recipe's runs: planned (every run's fairseq-train arguments, from fairseq_r3f/hparams, the environment and the
flags after the recipe's arguments, which go last; DRY_RUN=1 prints them and stops), then launched, recorded and
verified one by one (r3f_runs.launching). The recipes run this package by its path, so that the checkout's run
layer plans whatever is installed.

Planning imports neither fairseq nor torch (a dry run takes a fraction of a second); what runs past it
(launching, identity, status) imports both, so those modules are imported only where they are used, in
``past_planning``.
"""

import argparse
import json
import os
import re
import sys
import time
from typing import List, Mapping, Optional, Sequence

from r3f_runs.folder import RunError
from r3f_runs.plan import dry_run_text
from r3f_runs.planners import make_plan
from r3f_runs.values import Stop
from r3f_runs.vocabulary import RECIPES

FOLDER_COMMANDS = ("versions", "identify", "status")


def past_planning():
    """The modules that run after planning: launching, identity and status (they import fairseq and torch)."""
    from r3f_runs import identity, launching, status

    return launching, identity, status


def usage_text(recipe_file: Optional[str]) -> str:
    """The recipe's header (from its third line to the first empty one), as its usage."""
    if recipe_file and os.path.isfile(recipe_file):
        lines = []
        with open(recipe_file, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                if number < 3:
                    continue
                line = line.rstrip("\n")
                if not line:
                    break
                if line.startswith("#"):
                    lines.append(re.sub(r"^# ?", "", line))
        return "\n".join(lines) + "\n"
    return f"usage: python -m r3f_runs {{{','.join(RECIPES)}}} ARGS... [fairseq-train flags]\n"


def run_recipe(recipe: str, args: Sequence[str], env: Mapping[str, str], hparams: Optional[str] = None,
               usage: Optional[str] = None, stdout=None, stderr=None) -> int:
    """One recipe invocation: the plan, printed (DRY_RUN=1) or launched run by run. Returns the exit status."""
    stdout, stderr = stdout or sys.stdout, stderr or sys.stderr
    notes: List[str] = []
    try:
        try:
            plan = make_plan(recipe, args, env, hparams, notes)
        finally:
            for note in notes:
                print(note, file=stderr)
        if env.get("DRY_RUN") == "1":
            stdout.write(dry_run_text(plan))
            return 0
        launching, _, _ = past_planning()
        launching.check_importable(plan)
        # fairseq-train's view of every run, before any folder is made: a plan it refuses stops here
        planned = {run.dir: launching.planned_configuration(run.command) for run in plan.runs}
        by_sweep = {}
        for run in plan.runs:
            by_sweep.setdefault(run.sweep_dir, []).append(run)
        for sweep_dir, sweep_runs in by_sweep.items():
            launching.record_plan(sweep_dir, sweep_runs, planned)
        started = time.monotonic()
        for k, run in enumerate(plan.runs, 1):
            launching.launch_run(plan, run, env, k, len(plan.runs), started, planned[run.dir])
        return 0
    except ModuleNotFoundError as error:
        print(f"error: {sys.executable} cannot import {error.name} ({error}): activate the environment with fairseq "
              f"and the plugin (make install)", file=stderr)
        return 2
    except Stop as stop:
        print(f"error: {stop}", file=stderr)
        if stop.usage:
            print(file=stderr)
            stderr.write(usage if usage is not None else usage_text(None))
        return stop.status


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    hparams = usage_file = None
    while argv and argv[0] in ("--hparams", "--usage-from"):
        if len(argv) < 2:
            break
        if argv[0] == "--hparams":
            hparams = argv[1]
        else:
            usage_file = argv[1]
        argv = argv[2:]
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    if argv[0] in FOLDER_COMMANDS:
        return folder_main(argv)
    return run_recipe(argv[0], argv[1:], os.environ, hparams, usage_text(usage_file))


def folder_main(argv: Sequence[str]) -> int:
    """versions, identify RUN_DIR, status RUN_DIR."""
    parser = argparse.ArgumentParser(prog="python -m r3f_runs", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("versions", help="print the versions as json")
    identify_parser = commands.add_parser("identify", help="write RUN_DIR/identity.json and check it against run.json")
    identify_parser.add_argument("run_dir")
    status_parser = commands.add_parser("status", help="print STATUS: REASON (finished, unfinished, truncated, "
                                                       "failed); exit status 0 only when finished")
    status_parser.add_argument("run_dir")
    args = parser.parse_args(argv)
    _, identity, status = past_planning()
    if args.command == "versions":
        print(json.dumps(identity.versions()))
        return 0
    if args.command == "status":
        try:
            state, reason = status.run_status(args.run_dir)
        except (RunError, OSError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        print(f"{state}: {reason}")
        return 0 if state == "finished" else 1
    try:
        ident = identity.identify(args.run_dir)
    except RunError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if ident["mismatches"]:
        print(f"error: {args.run_dir}: run.json contradicts its checkpoint: " + "; ".join(ident["mismatches"]),
              file=sys.stderr)
        return 2
    print(json.dumps({k: v for k, v in ident.items() if k != "mismatches"}))
    return 0
