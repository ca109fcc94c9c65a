#!/usr/bin/env bash
set -euo pipefail
# Shared by the recipes (sourced, not run): reading fairseq_r3f/hparams, checking inputs and overrides, the
# launcher (one GPU, several on one node, SLURM, torchrun), the batch split, fp16, logging, dry-run, the tiny
# CPU mode, and the sentence-prediction runs of recipes/glue.sh and recipes/xnli.sh. The sourcing script
# defines usage() first.
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
#                    table's sweep_size, 8; see search_grid)

R3F_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
HPARAMS=$R3F_ROOT/fairseq_r3f/hparams
USER_DIR=$R3F_ROOT/fairseq_r3f

NGPUS=${NGPUS:-1}
NNODES=${NNODES:-1}
UPDATE_FREQ=${UPDATE_FREQ:-1}
BATCH_READING=${BATCH_READING:-effective}
LAUNCHER=${LAUNCHER:-local}
MASTER_PORT=${MASTER_PORT:-29500}
FP16=${FP16:-1}
DRY_RUN=${DRY_RUN:-0}
TINY=${TINY:-0}
TINY_UPDATES=${TINY_UPDATES:-4}
SWEEP=${SWEEP:-0}
SWEEP_SIZE=${SWEEP_SIZE:-}  # the recipe's table gives the default

# die MESSAGE: a wrong invocation: the message, then the usage.
die() {
  echo "error: $*" >&2
  echo >&2
  usage >&2
  exit 2
}

# fail MESSAGE: one line and stop (the invocation is right, something it needs is not).
fail() {
  echo "error: $*" >&2
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
# a finite non-negative decimal number (no nan, inf, sign or garbage)
is_number() { [[ "$1" =~ ^([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?$ ]]; }

# require_numbers VARIABLE KIND VALUES...: every value (one, or a list from the variable) must be a KIND:
# int (a positive integer), seed (an integer >= 0) or number (finite, >= 0); else one line naming VARIABLE.
require_numbers() {
  local variable=$1 kind=$2 value
  shift 2
  for value in "$@"; do
    case "$kind" in
      int) is_int "$value" || die "$variable=$value must be a positive integer" ;;
      seed) [[ "$value" =~ ^[0-9]+$ ]] || die "$variable=\"$*\": seeds must be integers (got $value)" ;;
      number) is_number "$value" || die "$variable: $value is not a finite non-negative number" ;;
    esac
  done
}

# The interpreter beside fairseq-train (the environment the runs use), for torch and the plugin's tools.
r3f_python() {
  local train
  train=$(command -v fairseq-train || true)
  if [[ -n "$train" && -x "$(dirname "$train")/python" ]]; then echo "$(dirname "$train")/python"; else echo python3; fi
}

check_launch() {
  require_numbers NGPUS int "$NGPUS"
  require_numbers NNODES int "$NNODES"
  require_numbers UPDATE_FREQ int "$UPDATE_FREQ"
  require_numbers TINY_UPDATES int "$TINY_UPDATES"
  require_numbers MASTER_PORT int "$MASTER_PORT"
  [[ -z "$SWEEP_SIZE" ]] || require_numbers SWEEP_SIZE int "$SWEEP_SIZE"
  case "$LAUNCHER" in local | torchrun | slurm) ;; *) die "LAUNCHER=$LAUNCHER: choose local, torchrun or slurm" ;; esac
  case "$BATCH_READING" in effective | per_gpu) ;; *) die "BATCH_READING=$BATCH_READING: choose effective or per_gpu" ;; esac
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
  R3F_PYTHON=$(r3f_python)
  if [[ "$FP16" == 1 && "$TINY" != 1 ]] \
    && ! "$R3F_PYTHON" -c 'import sys, torch; sys.exit(not torch.cuda.is_available())' 2> /dev/null; then
    if [[ "$DRY_RUN" == 1 ]]; then
      echo "# note: FP16=1 needs a CUDA GPU, which this machine lacks:" \
        "these commands run on a GPU machine (or use FP16=0)" >&2
    else
      fail "FP16=1 (the default) needs a CUDA GPU and torch sees none here: use FP16=0 for fp32, or run on a GPU"
    fi
  fi
}

# per_gpu_batch EFFECTIVE: sentences (or tokens) per GPU per step so that GPUs x UPDATE_FREQ x it = EFFECTIVE.
per_gpu_batch() {
  local effective=$1 split=$((WORLD_SIZE * UPDATE_FREQ))
  if ((effective % split != 0)); then
    die "the effective batch $effective (the paper's) is not divisible by NGPUS x NNODES x UPDATE_FREQ = $split; choose GPUs and UPDATE_FREQ whose product divides $effective"
  fi
  echo $((effective / split))
}

# split_batch BATCH: sets PER_GPU_BATCH and EFFECTIVE_BATCH from a table's sentence batch under BATCH_READING.
split_batch() {
  if [[ "$BATCH_READING" == per_gpu ]]; then
    PER_GPU_BATCH=$1 EFFECTIVE_BATCH=$(($1 * WORLD_SIZE * UPDATE_FREQ))
  else
    PER_GPU_BATCH=$(per_gpu_batch "$1") EFFECTIVE_BATCH=$1
  fi
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

# The tiny models replacing the pretrained checkpoint in TINY mode (fairseq_r3f/hparams/tiny.tsv, which the
# probing drivers' --tiny and the tests read too): TINY_MODEL_FLAGS for RoBERTa, TINY_SEQ2SEQ_FLAGS for BART and
# the transformer.
hparam_set TINY_FLAG_LINE "$HPARAMS/tiny.tsv" roberta flags
read -r -a TINY_MODEL_FLAGS <<< "$TINY_FLAG_LINE"
hparam_set TINY_FLAG_LINE "$HPARAMS/tiny.tsv" seq2seq flags
read -r -a TINY_SEQ2SEQ_FLAGS <<< "$TINY_FLAG_LINE"

# pretrained_flags PATH: --finetune-from-model PATH, which fairseq honours only while the run folder has no
# checkpoint_last.pt (it then loads PATH and resets optimizer, scheduler, meters and data loader); a run that
# has one resumes from it. No flag in TINY mode (a fresh tiny model, or the run's own checkpoint).
pretrained_flags() {
  PRETRAINED_FLAGS=()
  [[ "$TINY" == 1 ]] || PRETRAINED_FLAGS=(--finetune-from-model "$1")
}

# ------------------------------------------------------------------------------------------- overrides

# override_value FLAG ARGS...: prints the last value ARGS give FLAG (--flag V or --flag=V); status 1 if none.
override_value() {
  local flag=$1 found=1 value=
  shift
  while (($#)); do
    case "$1" in
      "$flag") if (($# > 1)); then value=$2 found=0; shift; fi ;;
      "$flag"=*) value=${1#*=} found=0 ;;
    esac
    shift
  done
  ((found == 0)) && echo "$value"
  return $found
}

has_flag() {  # FLAG ARGS...: ARGS contain FLAG (alone or as --flag=...)
  local flag=$1 arg
  shift
  for arg in "$@"; do [[ "$arg" == "$flag" || "$arg" == "$flag"=* ]] && return 0; done
  return 1
}

same_number() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a + 0 == b + 0) }'; }
# same_value A B: the same word, or the same finite number (1.0 and 1, 1e-5 and 0.00001)
same_value() { [[ "$1" == "$2" ]] || { is_number "$1" && is_number "$2" && same_number "$1" "$2"; }; }

# method_of_criterion CRITERION: the recipes' method that trains with it.
method_of_criterion() {
  case "$1" in
    sentence_prediction) echo "std++ (or std)" ;;
    sentence_prediction_r3f) echo "r3f (r4f with the SN head)" ;;
    sentence_prediction_smart) echo smart ;;
    sentence_prediction_freelb) echo "freelb (with --task sentence_prediction_freelb)" ;;
    label_smoothed_cross_entropy_r3f) echo "recipes/summarization.sh" ;;
    *) echo "one whose criterion it is" ;;
  esac
}

# check_overrides METHOD CRITERION TASK USES_R3F ARGS...: refuses flags after METHOD that would make the run
# something else than its label says (run.json, the tables): another architecture family (with or without
# R4F's spectrally normalised head), criterion or task, or R3F settings that contradict the configuration
# (LAMBDAS, NOISE_TYPES, R3F_EPS). Anything else (--max-update, --lr, model sizes, ...) passes.
check_overrides() {
  local method=$1 criterion=$2 task=$3 uses_r3f=$4 value configured
  shift 4
  if value=$(override_value --arch "$@"); then
    if [[ "$method" == r4f && "$value" != *_sn_* ]]; then
      fail "--arch $value drops R4F's spectrally normalised head: use --arch ${value/_/_sn_}, or METHOD r3f"
    elif [[ "$method" != r4f && "$value" == *_sn_* ]]; then
      fail "--arch $value adds R4F's spectrally normalised head to $method: use --arch ${value/_sn_/_}, or METHOD r4f"
    fi
  fi
  if has_flag --spectral-norm-classification-head "$@"; then
    fail "--spectral-norm-classification-head (fairseq's: out_proj only) is not $method:" \
      "use METHOD r4f, whose architecture normalises every head matrix"
  fi
  if value=$(override_value --criterion "$@") && [[ "$value" != "$criterion" ]]; then
    fail "--criterion $value is not $method's ($criterion): use METHOD $(method_of_criterion "$value") instead"
  fi
  if value=$(override_value --task "$@") && [[ "$value" != "$task" ]]; then
    fail "--task $value is not $method's ($task): drop it (METHOD freelb uses sentence_prediction_freelb)"
  fi
  local flag variable
  for flag in --r3f-lambda --noise-type --eps; do
    value=$(override_value "$flag" "$@") || continue
    case "$flag" in
      --r3f-lambda) variable=R3F_LAMBDA configured=$LAMBDAS ;;
      --noise-type) variable=NOISE_TYPE configured=$NOISE_TYPES ;;
      --eps) variable=R3F_EPS configured=$R3F_EPS ;;
    esac
    if [[ "$SWEEP" == 1 && "$variable" != R3F_EPS ]]; then variable=${variable/R3F_/}S; fi
    if [[ "$uses_r3f" != 1 ]]; then
      fail "$flag $value is R3F's and $method has no R3F term: use METHOD r3f (or r4f) with $variable=$value"
    fi
    local c
    for c in $configured; do
      if ! same_value "$c" "$value"; then
        fail "$flag $value contradicts the run's label ($variable: $configured): set $variable=$value instead"
      fi
    done
  done
}

# ----------------------------------------------------------------------------------- configurations

# json_value VALUE: VALUE as a JSON number (inf as Infinity, which Python's json reads) or string.
json_value() {
  if [[ "$1" =~ ^-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?$ ]]; then
    echo "$1"
  elif [[ "$1" == inf ]]; then
    echo Infinity
  elif [[ "$1" =~ ^[0-9]*\.?[0-9]+([eE][-+]?[0-9]+)?$ ]]; then
    awk -v v="$1" 'BEGIN { printf "%.17g\n", v }'
  else
    echo "\"$1\""
  fi
}

# AXES: the settings of a method's configurations, one "KEY|FLAG|NAME|VALUES" each (VALUES space-separated);
# every combination is a configuration. KEY is its run.json entry; an empty FLAG labels without a flag. NAME is
# how the value shows in the configuration's folder name (lambda1.0_uniform): a prefix, empty for the value
# alone, or "!" for a setting left out of the name.
axis() { AXES+=("$1|$2|$3|$4"); }

# search_grid ARGS...: sets CONFIG_NAMES, CONFIG_FLAGS, CONFIG_LABELS (run.json entries) and SEARCH_JSON from
# AXES. A setting that ARGS (the flags after METHOD) give another value becomes that value, in the label and in
# the folder name (smart/smart-steps2), so that the label says what runs; a swept setting cannot be overridden.
# With SWEEP=1 a grid larger than SWEEP_SIZE keeps SWEEP_SIZE configurations evenly spaced over its list
# (configuration floor(k x size / SWEEP_SIZE) for k = 0 .. SWEEP_SIZE - 1), so that by default every method's
# search has the same number of runs per task.
search_grid() {
  require_numbers SWEEP_SIZE int "$SWEEP_SIZE"
  CONFIG_NAMES=("") CONFIG_FLAGS=("") CONFIG_LABELS=("")
  local axis_spec key flag name values value i grid_json= given
  for axis_spec in "${AXES[@]}"; do
    IFS='|' read -r key flag name values <<< "$axis_spec"
    if [[ -n "$flag" ]] && given=$(override_value "$flag" "$@") && ! same_value "$given" "$values"; then
      if [[ $(wc -w <<< "$values") -gt 1 ]]; then
        fail "$flag $given overrides a setting SWEEP=1 searches ($key: $values): drop it, or run without SWEEP=1"
      fi
      values=$given
      [[ "$name" == "!" ]] && name=${flag#--}
    fi
    local names=() flags=() labels=() list=
    for value in $values; do list=${list:+$list, }$(json_value "$value"); done
    grid_json=${grid_json:+$grid_json, }"\"$key\": [$list]"
    for i in "${!CONFIG_NAMES[@]}"; do
      for value in $values; do
        if [[ "$name" == "!" ]]; then names+=("${CONFIG_NAMES[i]}")
        else names+=("${CONFIG_NAMES[i]:+${CONFIG_NAMES[i]}_}$name$value"); fi
        if [[ -n "$flag" ]]; then flags+=("${CONFIG_FLAGS[i]:+${CONFIG_FLAGS[i]} }$flag $value")
        else flags+=("${CONFIG_FLAGS[i]}"); fi
        labels+=("${CONFIG_LABELS[i]:+${CONFIG_LABELS[i]}, }\"$key\": $(json_value "$value")")
      done
    done
    CONFIG_NAMES=("${names[@]}") CONFIG_FLAGS=("${flags[@]}") CONFIG_LABELS=("${labels[@]}")
  done
  local size=${#CONFIG_NAMES[@]}
  if [[ "$SWEEP" == 1 ]] && ((size > SWEEP_SIZE)); then
    local kept_names=() kept_flags=() kept_labels=() k
    for ((k = 0; k < SWEEP_SIZE; k++)); do
      i=$((k * size / SWEEP_SIZE))
      kept_names+=("${CONFIG_NAMES[i]}") kept_flags+=("${CONFIG_FLAGS[i]}") kept_labels+=("${CONFIG_LABELS[i]}")
    done
    CONFIG_NAMES=("${kept_names[@]}") CONFIG_FLAGS=("${kept_flags[@]}") CONFIG_LABELS=("${kept_labels[@]}")
    echo "# SWEEP_SIZE=$SWEEP_SIZE: $SWEEP_SIZE of the $size configurations of $METHOD's grid, evenly spaced" >&2
  fi
  for i in "${!CONFIG_NAMES[@]}"; do CONFIG_NAMES[i]=${CONFIG_NAMES[i]:-default}; done
  local sweep=false
  [[ "$SWEEP" == 1 ]] && sweep=true
  SEARCH_JSON="{\"configurations\": ${#CONFIG_NAMES[@]}, \"grid\": {$grid_json}, \"grid_size\": $size, \"sweep\": $sweep}"
}

# r3f_configurations USES_R3F LOOKUP: sets LAMBDAS, NOISE_TYPES and R3F_EPS, the R3F settings a recipe runs,
# and checks them and SEEDS. LOOKUP VAR NAME reads a value of the recipe's table. With SWEEP=1 the table's grid
# (LAMBDAS / NOISE_TYPES narrow it), else R3F_LAMBDA / NOISE_TYPE or the table's single-run default; a
# method without R3F (USES_R3F=0) runs once with lambda 0. R3F_EPS defaults to the table's eps (TABLE_EPS).
r3f_configurations() {
  local uses_r3f=$1 lookup=$2 grid
  "$lookup" grid eps
  TABLE_EPS=$grid R3F_EPS=${R3F_EPS:-$grid}
  if [[ "$uses_r3f" != 1 ]]; then
    LAMBDAS=0 NOISE_TYPES=none
  elif [[ "$SWEEP" == 1 ]]; then
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
  LAMBDAS=${LAMBDAS//,/ } NOISE_TYPES=${NOISE_TYPES//,/ }
  local noise lambda variable=LAMBDAS
  [[ "$SWEEP" == 1 ]] || variable=R3F_LAMBDA
  for noise in $NOISE_TYPES; do
    [[ "$noise" =~ ^(uniform|normal|none)$ ]] || die "noise type $noise: choose uniform or normal (or none)"
  done
  for lambda in $LAMBDAS; do
    is_number "$lambda" || die "$variable: lambda $lambda is not a non-negative number (finite, e.g. 1.0)"
  done
  is_number "$R3F_EPS" || die "R3F_EPS: eps $R3F_EPS is not a finite non-negative number (e.g. 1e-5)"
  require_numbers SEEDS seed $SEEDS
  [[ -n "${SEEDS// /}" ]] || die "SEEDS is empty: give at least one seed"
}

# eps_name: how eps shows in a configuration's folder name: not at all at the table's value, else as epsE.
eps_name() { if same_number "$R3F_EPS" "$TABLE_EPS"; then echo "!"; else echo eps; fi; }

# ------------------------------------------------------------------------------------------ running

# run_one RUN_DIR META_JSON COMMAND...: prints the command (DRY_RUN=1) or runs it with its log in RUN_DIR, then
# records what ran: versions.json (plugin, fairseq, torch, git commit) and identity.json (read back from the
# checkpoint by python -m fairseq_r3f.runs identify, which stops the recipe when it contradicts run.json).
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
  "${R3F_PYTHON:-$(r3f_python)}" -m fairseq_r3f.runs versions > "$run_dir/versions.json" \
    || fail "python -m fairseq_r3f.runs versions failed: is the plugin installed in this environment?"
  # appended, one marker per launch: a relaunch resumes from the run's checkpoint_last.pt
  echo "# $(date -u '+%Y-%m-%dT%H:%M:%SZ') start" >> "$run_dir/train.log"
  if ! "$@" >> "$run_dir/train.log" 2>&1; then
    tail -n 20 "$run_dir/train.log" >&2
    echo "error: the run in $run_dir failed; its log is $run_dir/train.log (run the same command again to resume)" >&2
    exit 1
  fi
  if [[ -f "$run_dir/checkpoint_last.pt" ]]; then
    "${R3F_PYTHON:-$(r3f_python)}" -m fairseq_r3f.runs identify "$run_dir" > /dev/null || exit 2
  else
    echo "note: $run_dir saved no checkpoint: no identity.json (the tables cannot check what it was)" >&2
  fi
  touch "$run_dir/done"
}

# progress K N START RUN_DIR: "run k of N: RUN_DIR" with the elapsed time and an estimate of the rest.
progress() {
  local k=$1 n=$2 elapsed=$((SECONDS - $3)) eta=unknown
  ((k > 1)) && eta=$(format_seconds $((elapsed * (n - k + 1) / (k - 1))))
  echo "run $k of $n: $4 (elapsed $(format_seconds "$elapsed"), ETA $eta)" >&2
}

format_seconds() { printf '%dh%02dm%02ds' $(($1 / 3600)) $(($1 % 3600 / 60)) $(($1 % 60)); }

# sentence_prediction_runs DATA RUN_PREFIX LABEL_JSON ARGS...: every configuration of search_grid for every
# seed of SEEDS, as fairseq-train on DATA, each in RUN_PREFIX/CONFIG/seedN with run.json = LABEL_JSON plus the
# configuration, seed and search; ARGS (the flags after METHOD) go last. Shared by recipes/glue.sh and
# recipes/xnli.sh, which set the variables below.
sentence_prediction_runs() {
  local data=$1 prefix=$2 label=$3 i seed k=0 total start=$SECONDS run_dir config_flags meta
  shift 3
  total=$((${#CONFIG_NAMES[@]} * $(wc -w <<< "$SEEDS")))
  for i in "${!CONFIG_NAMES[@]}"; do
    read -r -a config_flags <<< "${CONFIG_FLAGS[i]}"
    for seed in $SEEDS; do
      k=$((k + 1))
      run_dir=$prefix/${CONFIG_NAMES[i]}/seed$seed
      [[ "$DRY_RUN" == 1 ]] || progress "$k" "$total" "$start" "$run_dir"
      meta="{$label, \"config\": \"${CONFIG_NAMES[i]}\", \"seed\": $seed, ${CONFIG_LABELS[i]}, \"search\": $SEARCH_JSON}"
      run_one "$run_dir" "$meta" "${LAUNCH[@]}" "$data" \
        --task "$FAIRSEQ_TASK" --num-classes "$NUM_CLASSES" --init-token 0 --separator-token 2 \
        --max-positions "$MAX_POSITIONS" --shorten-method truncate --arch "$ARCH" "${PRETRAINED_FLAGS[@]}" \
        "${TINY_FLAGS[@]}" --criterion "$CRITERION" "${config_flags[@]}" "${TASK_FLAGS[@]}" \
        --dropout "$DROPOUT" --attention-dropout "$ATTENTION_DROPOUT" \
        --weight-decay "$WEIGHT_DECAY" --optimizer adam --adam-betas "$ADAM_BETAS" \
        --adam-eps "$ADAM_EPS" --clip-norm "$CLIP_NORM" \
        --lr-scheduler "$LR_SCHEDULER" --total-num-update "$MAX_UPDATE" \
        --warmup-updates "$WARMUP" --max-update "$MAX_UPDATE" "${METHOD_FLAGS[@]}" \
        --batch-size "$PER_GPU_BATCH" --max-tokens "$MAX_TOKENS" \
        --valid-subset "$VALID" --best-checkpoint-metric "$METRIC" --maximize-best-checkpoint-metric \
        --seed "$seed" --save-dir "$run_dir" "${SHARED_FLAGS[@]}" "${DIST_FLAGS[@]}" "$@"
    done
  done
}

# words "a,b c" -> "a b c" (lists are accepted with commas, spaces or both)
words() { local list=${1//,/ }; echo $list; }

# seq_list N -> "1 2 ... N"
seq_list() { seq -s ' ' 1 "$1"; }
