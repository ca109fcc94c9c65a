#!/usr/bin/env bash
set -euo pipefail
# Fine-tune RoBERTa-large on one GLUE task with one method, over seeds (and, with SWEEP=1, the method's grid).
#
#   DATA_DIR=GLUE_BIN ROBERTA_PATH=roberta.large/model.pt recipes/glue.sh TASK METHOD [fairseq-train flags]
#
# TASK    MNLI QNLI QQP SST-2 RTE MRPC CoLA STS-B (preprocess/glue.py wrote DATA_DIR/TASK-bin)
# METHOD  std    RoBERTa's published fine-tuning (its lr, batch, updates, weight decay 0.1, 10 epochs)
#         std++  the paper's budget and optimiser (Tables 5, 6: lr, batch, updates, 6% warm-up, weight decay
#                0.01) with bias-corrected Adam (fairseq's adam) and the plain cross-entropy: R3F without R3F
#         r3f    std++ plus lambda x symmetric KL under noise (--criterion sentence_prediction_r3f)
#         r4f    r3f on a spectrally normalised head (--arch roberta_sn_large)
#         smart  std++ plus SMART's adversarial smoothness term (--criterion sentence_prediction_smart; its
#                settings in fairseq_r3f/hparams/glue.tsv, docs/baselines.md)
#         freelb std++ with FreeLB's adversarial training (--task/--criterion sentence_prediction_freelb)
# Environment:
#   DATA_DIR       folder with TASK-bin (required)
#   ROBERTA_PATH   RoBERTa-large model.pt (required unless TINY=1); loaded only while a run has no checkpoint
#                  of its own: an interrupted run resumes from its checkpoint_last.pt when run again
#   SAVE_ROOT=runs/glue   each run goes to SAVE_ROOT/TASK/METHOD/CONFIG/seedN: train.log (json records),
#                  run.json (what it is), versions.json, identity.json (what ran), command.sh, checkpoints
#   SEEDS          seeds to run (default: 1 to 10, the paper's ten seeds)
#   SWEEP=1        every method searches its own grid (glue.tsv): r3f/r4f lambda x noise type of Table 6
#                  (LAMBDAS="0.1 1.0", NOISE_TYPES="uniform" narrow it), std/std++ std_lr_grid, smart
#                  smart_lambda_grid x smart_lr_grid, freelb its step/init/max-norm grids; SWEEP_SIZE (default
#                  8) caps each search at the same number of configurations. Otherwise one configuration:
#                  R3F_LAMBDA (default 1.0), NOISE_TYPE (uniform), R3F_EPS (1e-5) for r3f/r4f
#   and the launch settings of recipes/common.sh: NGPUS NNODES UPDATE_FREQ BATCH_READING LAUNCHER FP16 DRY_RUN TINY
# Flags after METHOD go to fairseq-train last and override the recipe's; those that would change the method
# (--arch with or without the SN head, --criterion, --task, --r3f-lambda/--noise-type/--eps) are refused.
# Hyper-parameters: fairseq_r3f/hparams/glue_tasks.tsv (per task), fairseq_r3f/hparams/glue.tsv (shared).

usage() { sed -n '3,/^$/s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; }
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

[[ $# -ge 2 ]] || die "give a TASK and a METHOD"
TASK=$1 METHOD=$2
shift 2
TASKS_TSV=$HPARAMS/glue_tasks.tsv GLUE_TSV=$HPARAMS/glue.tsv
awk -F'\t' -v t="$TASK" '!/^#/ && $1 == t { found = 1 } END { exit !found }' "$TASKS_TSV" \
  || die "unknown TASK $TASK: choose MNLI QNLI QQP SST-2 RTE MRPC CoLA STS-B"
case "$METHOD" in
  std | std++ | r3f | r4f | smart | freelb) ;;
  *) die "unknown METHOD $METHOD: choose std, std++, r3f, r4f, smart or freelb" ;;
esac

DATA=${DATA_DIR:-}/$TASK-bin
require_dir DATA_DIR "${DATA_DIR:-}" "the output folder of preprocess/glue.py"
require_file DATA_DIR "$DATA/input0/dict.txt" "run preprocess/glue.py --tasks $TASK first"
if [[ "$TASK" == STS-B ]]; then
  require_file DATA_DIR "$DATA/label/train.label" "run preprocess/glue.py --tasks STS-B first"
else
  require_file DATA_DIR "$DATA/label/dict.txt" "run preprocess/glue.py --tasks $TASK first"
fi
if [[ "$TINY" != 1 ]]; then
  require_file ROBERTA_PATH "${ROBERTA_PATH:-}" "the RoBERTa-large checkpoint, model.pt of roberta.large.tar.gz"
fi

task_value() { hparam_set "$1" "$TASKS_TSV" "$TASK" "$2"; }
glue_value() { hparam_set "$1" "$GLUE_TSV" "$2" value; }

glue_value N_SEEDS seeds
SEEDS=$(words "${SEEDS:-$(seq_list "$N_SEEDS")}")
glue_value TABLE_SWEEP_SIZE sweep_size
SWEEP_SIZE=${SWEEP_SIZE:-$TABLE_SWEEP_SIZE}
USES_R3F=0
[[ "$METHOD" == r3f || "$METHOD" == r4f ]] && USES_R3F=1
r3f_configurations "$USES_R3F" glue_value
check_launch

FAIRSEQ_TASK=sentence_prediction ARCH=roberta_large
case "$METHOD" in
  std | std++) CRITERION=sentence_prediction ;;
  r3f) CRITERION=sentence_prediction_r3f ;;
  r4f) CRITERION=sentence_prediction_r3f ARCH=roberta_sn_large ;;
  smart) CRITERION=sentence_prediction_smart ;;
  freelb) CRITERION=sentence_prediction_freelb FAIRSEQ_TASK=sentence_prediction_freelb ;;
esac
check_overrides "$METHOD" "$CRITERION" "$FAIRSEQ_TASK" "$USES_R3F" "$@"
launch_command
shared_flags

task_value NUM_CLASSES num_classes
task_value METRIC metric
task_value TRAIN_SIZE train_size
if [[ "$METHOD" == std ]]; then
  task_value LR std_lr
  task_value MAX_UPDATE std_max_update
  task_value BATCH std_batch_size
  task_value WARMUP std_warmup_updates
  glue_value WEIGHT_DECAY std_weight_decay
  glue_value MAX_EPOCH std_max_epoch
  METHOD_FLAGS=(--max-epoch "$MAX_EPOCH")
else
  task_value LR lr
  task_value MAX_UPDATE max_update
  task_value BATCH batch_size
  glue_value WARMUP_RATIO warmup_ratio
  WARMUP=$(awk -v r="$WARMUP_RATIO" -v m="$MAX_UPDATE" 'BEGIN { printf "%d", r * m }')
  glue_value WEIGHT_DECAY weight_decay
  METHOD_FLAGS=()
fi
task_value VALID valid_subsets
task_value METRIC_FLAGS metric_flags
TASK_FLAGS=()
[[ "$METRIC_FLAGS" == - ]] || read -ra TASK_FLAGS <<< "$METRIC_FLAGS"
split_batch "$BATCH"
glue_value MAX_POSITIONS max_positions
pretrained_flags "${ROBERTA_PATH:-}"
TINY_FLAGS=()
if [[ "$TINY" == 1 ]]; then
  ARCH=${ARCH/large/base} TINY_FLAGS=("${TINY_MODEL_FLAGS[@]}")
  MAX_UPDATE=$TINY_UPDATES WARMUP=1 MAX_POSITIONS=64
fi
SAVE_ROOT=${SAVE_ROOT:-runs/glue}

EPOCHS=$(awk -v u="$MAX_UPDATE" -v b="$EFFECTIVE_BATCH" -v n="$TRAIN_SIZE" -v cap="${MAX_EPOCH:-0}" \
  'BEGIN { e = u * b / n; if (cap > 0 && e > cap) e = cap; printf "%.2f", e }')
echo "# $TASK $METHOD: lr $LR, $MAX_UPDATE updates ($WARMUP warm-up), effective batch $EFFECTIVE_BATCH =" \
  "$WORLD_SIZE GPU(s) x $PER_GPU_BATCH x update-freq $UPDATE_FREQ (BATCH_READING=$BATCH_READING):" \
  "at most $EPOCHS epochs of $TRAIN_SIZE" >&2
glue_value DROPOUT dropout
glue_value ATTENTION_DROPOUT attention_dropout
glue_value ADAM_BETAS adam_betas
glue_value ADAM_EPS adam_eps
glue_value CLIP_NORM clip_norm
glue_value LR_SCHEDULER lr_scheduler
glue_value MAX_TOKENS max_tokens

# The method's configurations: its single default, or with SWEEP=1 its grid (fairseq_r3f/hparams/glue.tsv).
grid() {  # grid KEY FLAG NAME SINGLE_VALUE GRID_ROW: an axis of one value, or with SWEEP=1 of the table's grid
  local values=$4
  if [[ "$SWEEP" == 1 ]]; then glue_value values "$5"; values=$(words "$values"); axis "$1" "$2" "$3" "$values"
  else axis "$1" "$2" "!" "$values"; fi
}
AXES=()
case "$METHOD" in
  std | std++) grid lr --lr lr "$LR" std_lr_grid ;;
  r3f | r4f)
    axis r3f_lambda --r3f-lambda lambda "$LAMBDAS"
    axis noise_type --noise-type "" "$NOISE_TYPES"
    axis eps --eps "$(eps_name)" "$R3F_EPS"
    axis lr --lr "!" "$LR"
    ;;
  smart)
    glue_value SMART_LAMBDA smart_lambda
    grid smart_lambda --smart-lambda lambda "$SMART_LAMBDA" smart_lambda_grid
    grid lr --lr lr "$LR" smart_lr_grid
    for NAME in steps step_size eps init norm; do
      glue_value VALUE "smart_$NAME"
      axis "smart_$NAME" "--smart-${NAME//_/-}" "!" "$VALUE"
    done
    ;;
  freelb)
    for NAME in steps step_size init_mag max_norm; do
      glue_value VALUE "freelb_$NAME"
      grid "freelb_$NAME" "--freelb-${NAME//_/-}" "${NAME//_/}" "$VALUE" "freelb_${NAME}_grid"
    done
    glue_value VALUE freelb_norm
    axis freelb_norm --freelb-norm "!" "$VALUE"
    axis lr --lr "!" "$LR"
    ;;
esac
if [[ "$METHOD" != r3f && "$METHOD" != r4f ]]; then  # labels without a flag: no R3F term
  axis r3f_lambda "" "!" 0
  axis noise_type "" "!" none
fi
search_grid "$@"

LABEL=$(printf '"task": "%s", "method": "%s", "metric": "%s", "valid_subsets": "%s", ' \
  "$TASK" "$METHOD" "$METRIC" "$VALID")
LABEL+=$(printf '"batch_reading": "%s", "effective_batch": %s' "$BATCH_READING" "$EFFECTIVE_BATCH")
sentence_prediction_runs "$DATA" "$SAVE_ROOT/$TASK/$METHOD" "$LABEL" "$@"
