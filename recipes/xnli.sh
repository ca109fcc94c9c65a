#!/usr/bin/env bash
set -euo pipefail
# Zero-shot XNLI with XLM-R large: fine-tune on English MNLI, validate on each XNLI language (Table 3, Table 9).
#
#   DATA_DIR=XNLI_BIN XLMR_PATH=xlmr.large/model.pt recipes/xnli.sh METHOD [fairseq-train flags]
#
# METHOD  std   XLM-R fine-tuned with Table 9's optimiser and budget and the plain cross-entropy (the baseline)
#         r3f   plus lambda x symmetric KL under noise (--criterion sentence_prediction_r3f)
#         r4f   r3f on a spectrally normalised head (--arch roberta_sn_large)
# Environment:
#   DATA_DIR       the output folder of preprocess/xnli.py (train = MNLI, valid_<lang>/test_<lang> per language)
#   XLMR_PATH      XLM-R large model.pt (required unless TINY=1); loaded only while a run has no checkpoint of
#                  its own: an interrupted run resumes from its checkpoint_last.pt when run again
#   LANGUAGES      validation languages, commas or spaces, English first: it chooses the kept checkpoint
#                  (default: the 15 of Table 3); every language's accuracy is logged at each validation
#   SAVE_ROOT=runs/xnli   runs go to SAVE_ROOT/METHOD/CONFIG/seedN (train.log with json records, run.json,
#                  versions.json, identity.json, command.sh, checkpoints)
#   SEEDS          default 1 to 5 (Table 3 averages five runs)
#   SWEEP=1        r3f/r4f: every lambda x noise type of Table 9 (LAMBDAS, NOISE_TYPES narrow it); std: the
#                  learning rates of std_lr_grid; SWEEP_SIZE (default 8) caps each search at the same size.
#                  Otherwise R3F_LAMBDA (default 1), NOISE_TYPE (uniform), R3F_EPS (1e-5)
#   and the launch settings of recipes/common.sh: NGPUS NNODES UPDATE_FREQ BATCH_READING LAUNCHER FP16 DRY_RUN TINY
# Flags after METHOD go to fairseq-train last; those that would change the method are refused (as glue.sh).
# Test-set accuracy per language, Table 3's layout:
#   python -m fairseq_r3f.evaluation.results xnli --data XNLI_BIN --checkpoint RUN/checkpoint_best.pt
# Hyper-parameters: fairseq_r3f/hparams/xnli.tsv.

usage() { sed -n '3,/^$/s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; }
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

[[ $# -ge 1 ]] || die "give a METHOD"
METHOD=$1
shift
case "$METHOD" in std | r3f | r4f) ;; *) die "unknown METHOD $METHOD: choose std, r3f or r4f" ;; esac
XNLI_TSV=$HPARAMS/xnli.tsv
value() { hparam_set "$1" "$XNLI_TSV" "$2" value; }

LANGUAGES=$(words "${LANGUAGES:-en fr es de el bg ru tr ar vi th zh hi sw ur}")
require_dir DATA_DIR "${DATA_DIR:-}" "the output folder of preprocess/xnli.py"
require_file DATA_DIR "$DATA_DIR/input0/dict.txt" "run preprocess/xnli.py first"
require_file DATA_DIR "$DATA_DIR/label/dict.txt" "run preprocess/xnli.py first"
VALID=
for LANG_ in $LANGUAGES; do
  require_file DATA_DIR "$DATA_DIR/input0/valid_$LANG_.bin" "no valid_$LANG_ subset: run preprocess/xnli.py with this language"
  VALID=${VALID:+$VALID,}valid_$LANG_
done
[[ -n "$VALID" ]] || die "LANGUAGES is empty: give the validation languages, English first"
if [[ "$TINY" != 1 ]]; then
  require_file XLMR_PATH "${XLMR_PATH:-}" "the XLM-R large checkpoint, model.pt of xlmr.large.tar.gz"
fi

value N_SEEDS seeds
SEEDS=$(words "${SEEDS:-$(seq_list "$N_SEEDS")}")
value TABLE_SWEEP_SIZE sweep_size
SWEEP_SIZE=${SWEEP_SIZE:-$TABLE_SWEEP_SIZE}
USES_R3F=0
[[ "$METHOD" != std ]] && USES_R3F=1
r3f_configurations "$USES_R3F" value
check_launch
FAIRSEQ_TASK=sentence_prediction ARCH=roberta_large  # XLM-R large has RoBERTa-large's shape
case "$METHOD" in
  std) CRITERION=sentence_prediction ;;
  r3f) CRITERION=sentence_prediction_r3f ;;
  r4f) CRITERION=sentence_prediction_r3f ARCH=roberta_sn_large ;;
esac
check_overrides "$METHOD" "$CRITERION" "$FAIRSEQ_TASK" "$USES_R3F" "$@"
launch_command
shared_flags

value BATCH batch_size
split_batch "$BATCH"
value MAX_UPDATE max_update
value WARMUP_RATIO warmup_ratio
WARMUP=$(awk -v r="$WARMUP_RATIO" -v m="$MAX_UPDATE" 'BEGIN { printf "%d", r * m }')
value MAX_POSITIONS max_positions
value TRAIN_SIZE train_size
pretrained_flags "${XLMR_PATH:-}"
TINY_FLAGS=()
if [[ "$TINY" == 1 ]]; then
  ARCH=${ARCH/large/base} TINY_FLAGS=("${TINY_MODEL_FLAGS[@]}")
  MAX_UPDATE=$TINY_UPDATES WARMUP=1 MAX_POSITIONS=64
fi
SAVE_ROOT=${SAVE_ROOT:-runs/xnli}

EPOCHS=$(awk -v u="$MAX_UPDATE" -v b="$EFFECTIVE_BATCH" -v n="$TRAIN_SIZE" 'BEGIN { printf "%.2f", u * b / n }')
echo "# XNLI $METHOD: $MAX_UPDATE updates ($WARMUP warm-up), effective batch $EFFECTIVE_BATCH =" \
  "$WORLD_SIZE GPU(s) x $PER_GPU_BATCH x update-freq $UPDATE_FREQ (BATCH_READING=$BATCH_READING):" \
  "at most $EPOCHS MNLI epochs; checkpoint chosen on ${VALID%%,*}" >&2
value NUM_CLASSES num_classes
value DROPOUT dropout
value ATTENTION_DROPOUT attention_dropout
value WEIGHT_DECAY weight_decay
value ADAM_BETAS adam_betas
value ADAM_EPS adam_eps
value CLIP_NORM clip_norm
value LR_SCHEDULER lr_scheduler
value LR lr
value MAX_TOKENS max_tokens
METRIC=accuracy METHOD_FLAGS=() TASK_FLAGS=()

AXES=()
if [[ "$METHOD" == std ]]; then
  if [[ "$SWEEP" == 1 ]]; then value LR_GRID std_lr_grid; axis lr --lr lr "$(words "$LR_GRID")"
  else axis lr --lr "!" "$LR"; fi
  axis r3f_lambda "" "!" 0  # labels without a flag: no R3F term
  axis noise_type "" "!" none
else
  axis r3f_lambda --r3f-lambda lambda "$LAMBDAS"
  axis noise_type --noise-type "" "$NOISE_TYPES"
  axis eps --eps "$(eps_name)" "$R3F_EPS"
  axis lr --lr "!" "$LR"
fi
search_grid "$@"

LABEL=$(printf '"task": "XNLI", "method": "%s", "metric": "accuracy", "valid_subsets": "%s", ' "$METHOD" "$VALID")
LABEL+=$(printf '"batch_reading": "%s", "effective_batch": %s' "$BATCH_READING" "$EFFECTIVE_BATCH")
sentence_prediction_runs "$DATA_DIR" "$SAVE_ROOT/$METHOD" "$LABEL" "$@"
