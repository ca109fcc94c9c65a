#!/usr/bin/env bash
set -euo pipefail
# Shared by recipes/glue.sh and recipes/xnli.sh (sourced, not run): reading fairseq_r3f/hparams, checking inputs,
# the launcher (one GPU, several on one node, SLURM, torchrun), the batch split, fp16, logging, dry-run and
# the tiny CPU mode. The sourcing script defines usage() first.
#
# Launch settings (environment):
#   NGPUS=1          GPUs per node
#   NNODES=1         nodes
#   UPDATE_FREQ=1    gradient accumulation; the per-GPU batch is the paper's effective batch / (NGPUS x NNODES
#                    x UPDATE_FREQ) and must come out whole
#   LAUNCHER=local   local (fairseq spawns one process per GPU) | torchrun | slurm (run inside an allocation)
#   MASTER_ADDR, MASTER_PORT=29500   rendezvous for torchrun (MASTER_ADDR needed with NNODES > 1); SLURM uses
#                    MASTER_PORT as fairseq's --distributed-port
#   FP16=1           mixed precision with the authors' loss-scale flags; 0 for fp32
#   DRY_RUN=1        print every command (and its run folder) instead of running it
#   TINY=1           a tiny randomly initialised model on the CPU for a few updates (tests; no checkpoint)
#   TINY_UPDATES=4   updates per run in TINY mode

R3F_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
HPARAMS=$R3F_ROOT/fairseq_r3f/hparams
USER_DIR=$R3F_ROOT/fairseq_r3f

NGPUS=${NGPUS:-1}
NNODES=${NNODES:-1}
UPDATE_FREQ=${UPDATE_FREQ:-1}
LAUNCHER=${LAUNCHER:-local}
MASTER_PORT=${MASTER_PORT:-29500}
FP16=${FP16:-1}
DRY_RUN=${DRY_RUN:-0}
TINY=${TINY:-0}
TINY_UPDATES=${TINY_UPDATES:-4}

die() {
  echo "error: $*" >&2
  echo >&2
  usage >&2
  exit 2
}

# hparam FILE ROW COLUMN: prints one value of a tab-separated table whose first line (after # comments) is a
# header. Inside $(...) a missing value only ends the subshell: prefer hparam_set, which stops the script.
hparam() {
  awk -F'\t' -v row="$2" -v col="$3" '
    /^#/ || NF == 0 { next }
    !seen { for (i = 1; i <= NF; i++) idx[$i] = i; seen = 1; next }
    $1 == row && (col in idx) { print $idx[col]; found = 1; exit }
    END { if (!found) exit 1 }' "$1" || { echo "error: $1 has no value for $2 / $3" >&2; exit 2; }
}

# hparam_set VARIABLE FILE ROW COLUMN: sets VARIABLE to that value; a missing value stops the script.
hparam_set() {
  local value
  value=$(hparam "$2" "$3" "$4") || exit 2
  printf -v "$1" '%s' "$value"
}

require_file() {  # VARIABLE PATH WHAT
  [[ -n "$2" ]] || die "$1 is not set: $3"
  [[ -f "$2" ]] || die "$1=$2: no such file ($3)"
}

require_dir() {
  [[ -n "$2" ]] || die "$1 is not set: $3"
  [[ -d "$2" ]] || die "$1=$2: no such folder ($3)"
}

is_int() { [[ "$1" =~ ^[1-9][0-9]*$ ]]; }

check_launch() {
  is_int "$NGPUS" || die "NGPUS=$NGPUS must be a positive integer"
  is_int "$NNODES" || die "NNODES=$NNODES must be a positive integer"
  is_int "$UPDATE_FREQ" || die "UPDATE_FREQ=$UPDATE_FREQ must be a positive integer"
  case "$LAUNCHER" in local | torchrun | slurm) ;; *) die "LAUNCHER=$LAUNCHER: choose local, torchrun or slurm" ;; esac
  WORLD_SIZE=$((NGPUS * NNODES))
  if [[ "$LAUNCHER" == local && "$NNODES" -gt 1 ]]; then
    die "NNODES=$NNODES needs LAUNCHER=slurm or LAUNCHER=torchrun (the local launcher starts one node)"
  fi
  if [[ "$LAUNCHER" == torchrun && "$NNODES" -gt 1 && -z "${MASTER_ADDR:-}" ]]; then
    die "LAUNCHER=torchrun with NNODES=$NNODES needs MASTER_ADDR (the host name of the first node)"
  fi
  if [[ "$TINY" == 1 && ( "$WORLD_SIZE" -gt 1 || "$LAUNCHER" != local ) ]]; then
    die "TINY=1 runs one CPU process: use NGPUS=1 NNODES=1 LAUNCHER=local (check launch lines with DRY_RUN=1)"
  fi
  if [[ "$DRY_RUN" != 1 ]]; then
    command -v fairseq-train > /dev/null || die "fairseq-train not found: activate the environment with fairseq and the plugin"
  fi
}

# per_gpu_batch EFFECTIVE: sentences per GPU per step so that GPUs x UPDATE_FREQ x it = the paper's batch.
per_gpu_batch() {
  local effective=$1 split=$((WORLD_SIZE * UPDATE_FREQ))
  if ((effective % split != 0)); then
    die "the effective batch $effective (the paper's) is not divisible by NGPUS x NNODES x UPDATE_FREQ = $split; choose GPUs and UPDATE_FREQ whose product divides $effective"
  fi
  echo $((effective / split))
}

# Sets LAUNCH (the command that starts fairseq-train) and DIST_FLAGS.
launch_command() {
  DIST_FLAGS=()
  if ((WORLD_SIZE > 1)); then
    # fairseq's default c10d DDP; RoBERTa's LM head takes no part in sentence prediction, hence
    # --find-unused-parameters (tests/test_distributed.py: R3F's two forwards per backward are fine with it).
    DIST_FLAGS=(--distributed-world-size "$WORLD_SIZE" --find-unused-parameters)
  fi
  case "$LAUNCHER" in
    local) LAUNCH=(fairseq-train) ;;
    torchrun)
      LAUNCH=(torchrun --nnodes "$NNODES" --nproc-per-node "$NGPUS")
      if ((NNODES > 1)); then
        LAUNCH+=(--rdzv-backend c10d --rdzv-endpoint "$MASTER_ADDR:$MASTER_PORT" --rdzv-id "${RDZV_ID:-r3f}")
      else
        LAUNCH+=(--master-port "$MASTER_PORT")
      fi
      LAUNCH+=("$(command -v fairseq-train || echo fairseq-train)")
      ;;
    slurm)
      LAUNCH=(srun --nodes "$NNODES" --ntasks-per-node "$NGPUS" --gpus-per-node "$NGPUS" fairseq-train)
      DIST_FLAGS+=(--distributed-port "$MASTER_PORT")
      ;;
  esac
}

# Precision, logging and tiny-mode flags shared by every run.
shared_flags() {
  SHARED_FLAGS=(--user-dir "$USER_DIR" --log-format json --required-batch-size-multiple 1
    --no-epoch-checkpoints --update-freq "$UPDATE_FREQ")
  if [[ "$TINY" == 1 ]]; then
    export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
    SHARED_FLAGS+=(--cpu --num-workers 0 --log-interval 1)
  else
    SHARED_FLAGS+=(--log-interval 100)
    if [[ "$FP16" == 1 ]]; then
      SHARED_FLAGS+=(--fp16 --fp16-init-scale 4 --threshold-loss-scale 1 --fp16-scale-window 128)
    fi
  fi
}

# The tiny RoBERTa of tests/conftest.py, replacing the pretrained checkpoint in TINY mode.
TINY_MODEL_FLAGS=(--encoder-layers 2 --encoder-embed-dim 32 --encoder-ffn-embed-dim 64 --encoder-attention-heads 2)

# run_one RUN_DIR META_JSON COMMAND...: prints the command (DRY_RUN=1) or runs it with its log in RUN_DIR.
run_one() {
  local run_dir=$1 meta=$2
  shift 2
  if [[ "$DRY_RUN" == 1 ]]; then
    echo "# run: $run_dir"
    printf '%q ' "$@"
    echo
    return
  fi
  if [[ -f "$run_dir/done" ]]; then
    echo "skip $run_dir: already done (delete the folder to run it again)" >&2
    return
  fi
  mkdir -p "$run_dir"
  echo "$meta" > "$run_dir/run.json"
  printf '%q ' "$@" > "$run_dir/command.sh"
  echo >> "$run_dir/command.sh"
  echo "run $run_dir" >&2
  # appended: a run restarted after a failure resumes from its checkpoint_last.pt and keeps its first log
  echo "# $(date -u '+%Y-%m-%dT%H:%M:%SZ') start" >> "$run_dir/train.log"
  if ! "$@" >> "$run_dir/train.log" 2>&1; then
    tail -n 20 "$run_dir/train.log" >&2
    echo "error: the run in $run_dir failed; its log is $run_dir/train.log" >&2
    exit 1
  fi
  touch "$run_dir/done"
}

# r3f_configurations USES_R3F LOOKUP: sets LAMBDAS and NOISE_TYPES, the R3F configurations a recipe runs, and
# checks them and SEEDS. LOOKUP VAR NAME reads a value of the recipe's table. With SWEEP=1 the table's grid
# (LAMBDAS / NOISE_TYPES narrow it), else R3F_LAMBDA / NOISE_TYPE or the table's single-run default; a
# method without R3F (USES_R3F=0) runs once with lambda 0.
r3f_configurations() {
  local uses_r3f=$1 lookup=$2 grid
  if [[ "$uses_r3f" != 1 ]]; then
    LAMBDAS=0 NOISE_TYPES=none
  elif [[ "${SWEEP:-0}" == 1 ]]; then
    "$lookup" grid r3f_lambda_grid
    LAMBDAS=${LAMBDAS:-${grid//,/ }}
    "$lookup" grid noise_type_grid
    NOISE_TYPES=${NOISE_TYPES:-${grid//,/ }}
  else
    "$lookup" grid r3f_lambda
    LAMBDAS=${R3F_LAMBDA:-$grid}
    "$lookup" grid noise_type
    NOISE_TYPES=${NOISE_TYPE:-$grid}
  fi
  local noise lambda seed
  for noise in $NOISE_TYPES; do
    [[ "$noise" =~ ^(uniform|normal|none)$ ]] || die "noise type $noise: choose uniform or normal (or none)"
  done
  for lambda in $LAMBDAS; do
    [[ "$lambda" =~ ^[0-9]*\.?[0-9]+([eE]-?[0-9]+)?$ ]] || die "lambda $lambda is not a non-negative number"
  done
  for seed in $SEEDS; do
    [[ "$seed" =~ ^[0-9]+$ ]] || die "SEEDS=\"$SEEDS\": seeds must be integers"
  done
}

# words "a,b,c" -> "a b c"
words() { echo "${1//,/ }"; }

# seq_list N -> "1 2 ... N"
seq_list() { seq -s ' ' 1 "$1"; }
