#!/usr/bin/env bash
set -euo pipefail
# Fine-tune RoBERTa-large on one GLUE task with one method, over seeds (and, for R3F/R4F, Table 6's sweep).
#
#   DATA_DIR=GLUE_BIN ROBERTA_PATH=roberta.large/model.pt recipes/glue.sh TASK METHOD [fairseq-train flags]
#
# TASK    MNLI QNLI QQP SST-2 RTE MRPC CoLA STS-B (preprocess/glue.py wrote DATA_DIR/TASK-bin)
# METHOD  std    RoBERTa's published fine-tuning (its lr, batch, updates, weight decay 0.1, 10 epochs)
#         std++  the paper's budget and optimiser (Tables 5, 6: lr, batch, updates, 6% warm-up, weight decay
#                0.01) with bias-corrected Adam (fairseq's adam) and the plain cross-entropy: R3F without R3F
#         r3f    std++ plus lambda x symmetric KL under noise (--criterion sentence_prediction_r3f)
#         r4f    r3f on a spectrally normalised head (--arch roberta_sn_large)
#         smart  std++ plus SMART's adversarial smoothness term (--criterion sentence_prediction_smart, its
#                defaults: K=1 ascent step; docs/baselines.md); SMART_* flags go after METHOD
#         freelb std++ with FreeLB's adversarial training (--task/--criterion sentence_prediction_freelb)
# Environment:
#   DATA_DIR       folder with TASK-bin (required)
#   ROBERTA_PATH   RoBERTa-large model.pt (required unless TINY=1)
#   SAVE_ROOT=runs/glue   each run goes to SAVE_ROOT/TASK/METHOD/CONFIG/seedN: train.log (json records),
#                  run.json (what it is), command.sh, checkpoints
#   SEEDS          seeds to run (default: 1 to 10, the paper's ten seeds)
#   SWEEP=1        r3f/r4f: every lambda x noise type of Table 6 (LAMBDAS="0.1 1.0", NOISE_TYPES="uniform"
#                  narrow it); otherwise one configuration, R3F_LAMBDA (default 1.0) and NOISE_TYPE (uniform)
#   and the launch settings of recipes/common.sh: NGPUS NNODES UPDATE_FREQ LAUNCHER FP16 DRY_RUN TINY
# Flags after METHOD go to fairseq-train last and override the recipe's.
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
if [[ "${SWEEP:-0}" == 1 && "$METHOD" != r3f && "$METHOD" != r4f ]]; then
  die "SWEEP=1 sweeps R3F's lambda and noise type: use it with METHOD r3f or r4f"
fi
check_launch
launch_command
shared_flags

task_value() { hparam_set "$1" "$TASKS_TSV" "$TASK" "$2"; }
glue_value() { hparam_set "$1" "$GLUE_TSV" "$2" value; }

task_value NUM_CLASSES num_classes
task_value METRIC metric
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
FAIRSEQ_TASK=sentence_prediction ARCH=roberta_large
case "$METHOD" in
  std | std++) CRITERION=sentence_prediction ;;
  r3f) CRITERION=sentence_prediction_r3f ;;
  r4f) CRITERION=sentence_prediction_r3f ARCH=roberta_sn_large ;;
  smart) CRITERION=sentence_prediction_smart ;;
  freelb) CRITERION=sentence_prediction_freelb FAIRSEQ_TASK=sentence_prediction_freelb ;;
esac
case "$TASK" in
  MNLI) VALID=valid,valid1 ;;  # matched, mismatched; the checkpoint is chosen on matched
  *) VALID=valid ;;
esac
case "$TASK" in
  QQP | MRPC) TASK_FLAGS=(--report-acc-and-f1) ;;
  CoLA) TASK_FLAGS=(--report-mcc) ;;
  STS-B) TASK_FLAGS=(--regression-target --report-pearson-and-spearman) ;;
  *) TASK_FLAGS=() ;;
esac
PER_GPU_BATCH=$(per_gpu_batch "$BATCH")
glue_value MAX_POSITIONS max_positions
MODEL_FLAGS=(--arch "$ARCH" --restore-file "${ROBERTA_PATH:-}" --reset-optimizer --reset-dataloader --reset-meters)
if [[ "$TINY" == 1 ]]; then
  MODEL_FLAGS=(--arch "${ARCH/large/base}" "${TINY_MODEL_FLAGS[@]}")
  MAX_UPDATE=$TINY_UPDATES WARMUP=1 MAX_POSITIONS=64
fi

glue_value N_SEEDS seeds
SEEDS=${SEEDS:-$(seq 1 "$N_SEEDS")}
SAVE_ROOT=${SAVE_ROOT:-runs/glue}

echo "# $TASK $METHOD: lr $LR, $MAX_UPDATE updates ($WARMUP warm-up), effective batch $BATCH = $WORLD_SIZE GPU(s) x $PER_GPU_BATCH x update-freq $UPDATE_FREQ" >&2
glue_value EPS eps
glue_value DROPOUT dropout
glue_value ATTENTION_DROPOUT attention_dropout
glue_value ADAM_BETAS adam_betas
glue_value ADAM_EPS adam_eps
glue_value CLIP_NORM clip_norm
glue_value LR_SCHEDULER lr_scheduler
glue_value MAX_TOKENS max_tokens
USES_R3F=0
[[ "$METHOD" == r3f || "$METHOD" == r4f ]] && USES_R3F=1
r3f_configurations "$USES_R3F" glue_value
for NOISE in $NOISE_TYPES; do
  for LAMBDA in $LAMBDAS; do
    if [[ "$CRITERION" == sentence_prediction_r3f ]]; then
      CONFIG=lambda${LAMBDA}_$NOISE
      R3F_FLAGS=(--r3f-lambda "$LAMBDA" --noise-type "$NOISE" --eps "$EPS")
    else
      CONFIG=default R3F_FLAGS=()
    fi
    for SEED in $SEEDS; do
      RUN_DIR=$SAVE_ROOT/$TASK/$METHOD/$CONFIG/seed$SEED
      META=$(printf '{"task": "%s", "method": "%s", "config": "%s", "seed": %s, "r3f_lambda": %s, "noise_type": "%s", "metric": "%s", "valid_subsets": "%s"}' \
        "$TASK" "$METHOD" "$CONFIG" "$SEED" "$LAMBDA" "$NOISE" "$METRIC" "$VALID")
      run_one "$RUN_DIR" "$META" "${LAUNCH[@]}" "$DATA" \
        --task "$FAIRSEQ_TASK" --num-classes "$NUM_CLASSES" --init-token 0 --separator-token 2 \
        --max-positions "$MAX_POSITIONS" --shorten-method truncate "${MODEL_FLAGS[@]}" \
        --criterion "$CRITERION" "${R3F_FLAGS[@]}" "${TASK_FLAGS[@]}" \
        --dropout "$DROPOUT" --attention-dropout "$ATTENTION_DROPOUT" \
        --weight-decay "$WEIGHT_DECAY" --optimizer adam --adam-betas "$ADAM_BETAS" \
        --adam-eps "$ADAM_EPS" --clip-norm "$CLIP_NORM" \
        --lr-scheduler "$LR_SCHEDULER" --lr "$LR" --total-num-update "$MAX_UPDATE" \
        --warmup-updates "$WARMUP" --max-update "$MAX_UPDATE" "${METHOD_FLAGS[@]}" \
        --batch-size "$PER_GPU_BATCH" --max-tokens "$MAX_TOKENS" \
        --valid-subset "$VALID" --best-checkpoint-metric "$METRIC" --maximize-best-checkpoint-metric \
        --seed "$SEED" --save-dir "$RUN_DIR" "${SHARED_FLAGS[@]}" "${DIST_FLAGS[@]}" "$@"
    done
  done
done
