#!/usr/bin/env bash
set -euo pipefail
# Shared by the recipes (sourced, not run): they hand over to the run layer, python -m r3f_runs, which
# reads fairseq_r3f/hparams, checks inputs and overrides, plans every run (grid, seeds, batch split, launcher),
# and launches, records and verifies them. The settings below are read there, from the environment.
#
# Launch settings (environment):
#   NGPUS=1          GPUs per node
#   NNODES=1         nodes
#   UPDATE_FREQ=1    gradient accumulation
#   BATCH_READING=effective   how a table's batch ("Max Sentences") is read: effective = sentences per update
#                    over all GPUs and UPDATE_FREQ (each GPU gets batch / (NGPUS x NNODES x UPDATE_FREQ), which
#                    must come out whole); per_gpu = sentences per GPU per step (the update is that x NGPUS x
#                    NNODES x UPDATE_FREQ). Summarization's token batch is always the effective one.
#   LAUNCHER=local   local (fairseq spawns one process per GPU) | torchrun | slurm (run inside an allocation)
#   MASTER_ADDR, MASTER_PORT=29500   rendezvous for torchrun (MASTER_ADDR needed with NNODES > 1); SLURM uses
#                    MASTER_PORT as fairseq's --distributed-port
#   FP16=1           mixed precision with the authors' loss-scale flags (needs a CUDA GPU); 0 for fp32
#   DRY_RUN=1        print every command (and its run folder) instead of running it
#   TINY=1           a tiny randomly initialised model on the CPU for a few updates (tests; no checkpoint)
#   TINY_UPDATES=4   updates per run in TINY mode
#   SWEEP_SIZE       with SWEEP=1, the most configurations any method's search runs per task (default: the
#                    table's sweep_size, 8; see search_grid in r3f_runs/plan.py)

R3F_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# The interpreter beside fairseq-train (the environment the runs use), else python3.
r3f_python() {
  local train
  train=$(command -v fairseq-train || true)
  if [[ -n "$train" && -x "$(dirname "$train")/python" ]]; then echo "$(dirname "$train")/python"; else echo python3; fi
}

# hand_over RECIPE ARGS...: the recipe's runs, planned and launched by the run layer (r3f_runs/) with this
# checkout's tables; a wrong invocation prints the calling recipe's header as its usage.
hand_over() {
  local recipe=$1 launcher=("$R3F_ROOT/r3f_runs")
  shift
  # run by its path: this checkout's run layer and plugin, whatever is installed; a copy of the recipes without
  # the packages beside them uses the installed ones
  [[ -f "${launcher[0]}/__main__.py" ]] || launcher=(-m r3f_runs)
  exec "$(r3f_python)" "${launcher[@]}" --hparams "$R3F_ROOT/fairseq_r3f/hparams" --usage-from "${BASH_SOURCE[1]}" \
    "$recipe" "$@"
}
