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
#   XLMR_PATH      XLM-R large model.pt (required unless TINY=1)
#   LANGUAGES      validation languages, English first: it chooses the kept checkpoint (default: the 15 of
#                  Table 3); every language's accuracy is logged at each validation
#   SAVE_ROOT=runs/xnli   runs go to SAVE_ROOT/METHOD/CONFIG/seedN (train.log with json records, run.json)
#   SEEDS          default 1 to 5 (Table 3 averages five runs)
#   SWEEP=1        r3f/r4f: every lambda x noise type of Table 9 (LAMBDAS, NOISE_TYPES narrow it); otherwise
#                  R3F_LAMBDA (default 1) and NOISE_TYPE (uniform)
#   and the launch settings of recipes/common.sh: NGPUS NNODES UPDATE_FREQ LAUNCHER FP16 DRY_RUN TINY
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

LANGUAGES=${LANGUAGES:-en fr es de el bg ru tr ar vi th zh hi sw ur}
require_dir DATA_DIR "${DATA_DIR:-}" "the output folder of preprocess/xnli.py"
require_file DATA_DIR "$DATA_DIR/input0/dict.txt" "run preprocess/xnli.py first"
require_file DATA_DIR "$DATA_DIR/label/dict.txt" "run preprocess/xnli.py first"
VALID=
for LANG_ in $LANGUAGES; do
  require_file DATA_DIR "$DATA_DIR/input0/valid_$LANG_.bin" "no valid_$LANG_ subset: run preprocess/xnli.py with this language"
  VALID=${VALID:+$VALID,}valid_$LANG_
done
if [[ "$TINY" != 1 ]]; then
  require_file XLMR_PATH "${XLMR_PATH:-}" "the XLM-R large checkpoint, model.pt of xlmr.large.tar.gz"
fi
if [[ "${SWEEP:-0}" == 1 && "$METHOD" == std ]]; then
  die "SWEEP=1 sweeps R3F's lambda and noise type: use it with METHOD r3f or r4f"
fi
check_launch
launch_command
shared_flags

case "$METHOD" in
  std) CRITERION=sentence_prediction ARCH=roberta_large ;;  # XLM-R large has RoBERTa-large's shape
  r3f) CRITERION=sentence_prediction_r3f ARCH=roberta_large ;;
  r4f) CRITERION=sentence_prediction_r3f ARCH=roberta_sn_large ;;
esac
value BATCH batch_size
PER_GPU_BATCH=$(per_gpu_batch "$BATCH")
value MAX_UPDATE max_update
value WARMUP_RATIO warmup_ratio
WARMUP=$(awk -v r="$WARMUP_RATIO" -v m="$MAX_UPDATE" 'BEGIN { printf "%d", r * m }')
value MAX_POSITIONS max_positions
MODEL_FLAGS=(--arch "$ARCH" --restore-file "${XLMR_PATH:-}" --reset-optimizer --reset-dataloader --reset-meters)
if [[ "$TINY" == 1 ]]; then
  MODEL_FLAGS=(--arch "${ARCH/large/base}" "${TINY_MODEL_FLAGS[@]}")
  MAX_UPDATE=$TINY_UPDATES WARMUP=1 MAX_POSITIONS=64
fi
value N_SEEDS seeds
SEEDS=${SEEDS:-$(seq 1 "$N_SEEDS")}
SAVE_ROOT=${SAVE_ROOT:-runs/xnli}

echo "# XNLI $METHOD: $MAX_UPDATE updates ($WARMUP warm-up), effective batch $BATCH = $WORLD_SIZE GPU(s) x $PER_GPU_BATCH x update-freq $UPDATE_FREQ; checkpoint chosen on ${VALID%%,*}" >&2
value EPS eps
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
USES_R3F=0
[[ "$CRITERION" == sentence_prediction_r3f ]] && USES_R3F=1
r3f_configurations "$USES_R3F" value
for NOISE in $NOISE_TYPES; do
  for LAMBDA in $LAMBDAS; do
    if [[ "$CRITERION" == sentence_prediction_r3f ]]; then
      CONFIG=lambda${LAMBDA}_$NOISE
      R3F_FLAGS=(--r3f-lambda "$LAMBDA" --noise-type "$NOISE" --eps "$EPS")
    else
      CONFIG=default R3F_FLAGS=()
    fi
    for SEED in $SEEDS; do
      RUN_DIR=$SAVE_ROOT/$METHOD/$CONFIG/seed$SEED
      META=$(printf '{"task": "XNLI", "method": "%s", "config": "%s", "seed": %s, "r3f_lambda": %s, "noise_type": "%s", "metric": "accuracy", "valid_subsets": "%s"}' \
        "$METHOD" "$CONFIG" "$SEED" "$LAMBDA" "$NOISE" "$VALID")
      run_one "$RUN_DIR" "$META" "${LAUNCH[@]}" "$DATA_DIR" \
        --task sentence_prediction --num-classes "$NUM_CLASSES" --init-token 0 --separator-token 2 \
        --max-positions "$MAX_POSITIONS" --shorten-method truncate "${MODEL_FLAGS[@]}" \
        --criterion "$CRITERION" "${R3F_FLAGS[@]}" \
        --dropout "$DROPOUT" --attention-dropout "$ATTENTION_DROPOUT" \
        --weight-decay "$WEIGHT_DECAY" --optimizer adam --adam-betas "$ADAM_BETAS" \
        --adam-eps "$ADAM_EPS" --clip-norm "$CLIP_NORM" \
        --lr-scheduler "$LR_SCHEDULER" --lr "$LR" --total-num-update "$MAX_UPDATE" \
        --warmup-updates "$WARMUP" --max-update "$MAX_UPDATE" \
        --batch-size "$PER_GPU_BATCH" --max-tokens "$MAX_TOKENS" \
        --valid-subset "$VALID" --best-checkpoint-metric accuracy --maximize-best-checkpoint-metric \
        --seed "$SEED" --save-dir "$RUN_DIR" "${SHARED_FLAGS[@]}" "${DIST_FLAGS[@]}" "$@"
    done
  done
done
