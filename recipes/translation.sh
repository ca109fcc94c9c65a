#!/usr/bin/env bash
set -euo pipefail
# Train translation models with and without a consistency regulariser: STD, R3F and a dropout-only variant
# (R-Drop's comparison), with fairseq's published settings (fairseq_r3f/hparams/translation.tsv).
#
#   DATA_BIN=OUT/bin recipes/translation.sh CONFIG [fairseq-train flags]
#
# CONFIG  iwslt14_de_en  transformer_iwslt_de_en from scratch (DATA_BIN from preprocess/translation.py --iwslt14-dir)
#         mbart_en_ro    mBART-cc25 fine-tuned English -> Romanian (DATA_BIN from preprocess/translation.py with
#                        mBART's --spm-model and --dict, languages en_XX / ro_RO)
# Methods (all with the criterion label_smoothed_cross_entropy_r3f, which at lambda 0 is fairseq's
# label_smoothed_cross_entropy exactly):
#   std   lambda 0: no second forward
#   r3f   lambda R3F_LAMBDA (default 1.25) x the symmetric KL between the outputs on clean and on noised
#         encoder embeddings (NOISE_TYPE uniform, R3F_EPS 1e-5); dropout is on in both forwards
#   drop  the same term with --noise-type none: two dropout samples only (R-Drop's regulariser), lambda
#         DROP_LAMBDA (default 1.25 = R-Drop's alpha 5, see docs/translation.md)
# Environment:
#   DATA_BIN       the bin/ folder written by preprocess/translation.py (required)
#   MBART_PATH     mbart.cc25 model.pt (mbart_en_ro; not with TINY=1)
#   METHODS="std r3f drop"   methods to run; SEEDS=1   seeds to run
#   R3F_LAMBDA, NOISE_TYPE, R3F_EPS, DROP_LAMBDA   override the table (R3F_LAMBDA / DROP_LAMBDA may list
#                  several values: one configuration each)
#   SAVE_ROOT=runs/translation   each run goes to SAVE_ROOT/CONFIG/METHOD/lambdaL_NOISE/seedN
#   and the launch settings of recipes/common.sh: NGPUS NNODES UPDATE_FREQ LAUNCHER FP16 DRY_RUN TINY.
#   The effective batch is max_tokens x reference_gpus x reference_update_freq tokens per update (the table);
#   each GPU gets that / (NGPUS x NNODES x UPDATE_FREQ) tokens.
# A stopped run started again resumes from its checkpoint_last.pt (mBART is loaded only when there is none).
# Score with python -m fairseq_r3f.evaluation.bleu --config CONFIG --runs SAVE_ROOT ... (docs/translation.md).
# Flags after CONFIG go to fairseq-train last and override the recipe's; those that would change what a run is
# (--criterion, --task, --r3f-lambda, --noise-type, --eps, --r3f-kl-normalization) are refused.

usage() { sed -n '3,/^$/s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; }
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

[[ $# -ge 1 ]] || die "give a CONFIG"
CONFIG=$1
shift
TSV=$HPARAMS/translation.tsv
case "$CONFIG" in
  iwslt14_de_en | mbart_en_ro) ;;
  *) die "unknown CONFIG $CONFIG: choose iwslt14_de_en or mbart_en_ro" ;;
esac

for NAME in arch task source_lang target_lang model_flags langs optimizer adam_betas adam_eps clip_norm lr \
  lr_scheduler warmup_updates max_update dropout attention_dropout weight_decay label_smoothing max_tokens \
  reference_gpus reference_update_freq r3f_kl_normalization r3f_lambda noise_type eps drop_lambda; do
  hparam_set "HP_$NAME" "$TSV" "$NAME" "$CONFIG"
done

require_dir DATA_BIN "${DATA_BIN:-}" "the bin/ folder written by preprocess/translation.py"
require_file DATA_BIN "$DATA_BIN/train.$HP_source_lang-$HP_target_lang.$HP_source_lang.bin" \
  "not a binarised $HP_source_lang-$HP_target_lang set: run preprocess/translation.py first (docs/translation.md)"
check_launch
launch_command
shared_flags
PRETRAINED_FLAGS=()
if [[ "$CONFIG" == mbart_en_ro && "$TINY" != 1 ]]; then
  require_file MBART_PATH "${MBART_PATH:-}" "the mbart.cc25 checkpoint, model.pt of mbart.cc25.v2.tar.gz"
  pretrained_flags "$MBART_PATH"
fi

TOKENS_PER_UPDATE=$((HP_max_tokens * HP_reference_gpus * HP_reference_update_freq))
PER_GPU_TOKENS=$(per_gpu_batch "$TOKENS_PER_UPDATE")
MAX_UPDATE=$HP_max_update WARMUP=$HP_warmup_updates
read -r -a MODEL_FLAGS <<< "$HP_model_flags"
MODEL_FLAGS=(--arch "$HP_arch" "${MODEL_FLAGS[@]}")
if [[ "$TINY" == 1 ]]; then
  MODEL_FLAGS+=("${TINY_SEQ2SEQ_FLAGS[@]}")
  MAX_UPDATE=$TINY_UPDATES WARMUP=1 PER_GPU_TOKENS=512
fi
TASK_FLAGS=(--task "$HP_task" --source-lang "$HP_source_lang" --target-lang "$HP_target_lang")
[[ "$HP_langs" == - ]] || TASK_FLAGS+=(--langs "$HP_langs")
SCHEDULE=(--lr-scheduler "$HP_lr_scheduler" --lr "$HP_lr" --warmup-updates "$WARMUP" --max-update "$MAX_UPDATE")
[[ "$HP_lr_scheduler" != polynomial_decay ]] || SCHEDULE+=(--total-num-update "$MAX_UPDATE")

METHODS=$(words "${METHODS:-std r3f drop}")
SEEDS=$(words "${SEEDS:-1}")
SAVE_ROOT=${SAVE_ROOT:-runs/translation}
hp_value() { local name=HP_$2; printf -v "$1" '%s' "${!name}"; }
drop_value() {  # drop's lambda, no noise, the table's eps (unused without noise, recorded all the same)
  case "$2" in
    r3f_lambda) printf -v "$1" '%s' "$HP_drop_lambda" ;;
    noise_type) printf -v "$1" none ;;
    *) hp_value "$@" ;;
  esac
}
if value=$(override_value --r3f-kl-normalization "$@") && [[ "$value" != "$HP_r3f_kl_normalization" ]]; then
  fail "--r3f-kl-normalization $value contradicts the table's $HP_r3f_kl_normalization, for which lambda was chosen: change it in $TSV"
fi

echo "# $CONFIG: lr $HP_lr, $MAX_UPDATE updates ($WARMUP warm-up), $TOKENS_PER_UPDATE tokens per update = $WORLD_SIZE GPU(s) x $PER_GPU_TOKENS x update-freq $UPDATE_FREQ" >&2
for METHOD in $METHODS; do
  case "$METHOD" in
    std) USES_R3F=0; r3f_configurations 0 hp_value ;;
    r3f) USES_R3F=1; r3f_configurations 1 hp_value ;;
    drop) USES_R3F=1; R3F_LAMBDA=${DROP_LAMBDA:-} NOISE_TYPE=none r3f_configurations 1 drop_value ;;
    *) die "unknown method $METHOD: choose std, r3f or drop (METHODS=\"std r3f drop\")" ;;
  esac
  check_overrides "$METHOD" label_smoothed_cross_entropy_r3f "$HP_task" "$USES_R3F" "$@"
  CONFIGURATIONS=$(($(wc -w <<< "$LAMBDAS") * $(wc -w <<< "$NOISE_TYPES")))
  SEARCH_JSON="{\"configurations\": $CONFIGURATIONS, \"sweep\": false}"
  RUN_K=0 RUNS_TOTAL=$((CONFIGURATIONS * $(wc -w <<< "$SEEDS"))) STARTED=$SECONDS
  for NOISE in $NOISE_TYPES; do
    for LAMBDA in $LAMBDAS; do
      CONFIG_NAME=lambda${LAMBDA}_$NOISE
      [[ "$(eps_name)" == "!" ]] || CONFIG_NAME=${CONFIG_NAME}_eps$R3F_EPS
      for SEED in $SEEDS; do
        RUN_DIR=$SAVE_ROOT/$CONFIG/$METHOD/$CONFIG_NAME/seed$SEED RUN_K=$((RUN_K + 1))
        [[ "$DRY_RUN" == 1 ]] || progress "$RUN_K" "$RUNS_TOTAL" "$STARTED" "$RUN_DIR"
        META=$(printf '{"task": "%s", "dataset": "%s", "method": "%s", "config": "%s", "seed": %s, "metric": "bleu", "valid_subsets": "valid", "r3f_lambda": %s, "noise_type": "%s", "eps": %s, "r3f_kl_normalization": "%s", "search": %s}' \
          "$CONFIG" "$CONFIG" "$METHOD" "$CONFIG_NAME" "$SEED" "$(json_value "$LAMBDA")" "$NOISE" \
          "$(json_value "$R3F_EPS")" "$HP_r3f_kl_normalization" "$SEARCH_JSON")
        run_one "$RUN_DIR" "$META" "${LAUNCH[@]}" "$DATA_BIN" "${TASK_FLAGS[@]}" "${MODEL_FLAGS[@]}" \
          "${PRETRAINED_FLAGS[@]}" \
          --criterion label_smoothed_cross_entropy_r3f --label-smoothing "$HP_label_smoothing" \
          --r3f-lambda "$LAMBDA" --noise-type "$NOISE" --eps "$R3F_EPS" \
          --r3f-kl-normalization "$HP_r3f_kl_normalization" \
          --dropout "$HP_dropout" --attention-dropout "$HP_attention_dropout" --weight-decay "$HP_weight_decay" \
          --optimizer "$HP_optimizer" --adam-betas "$HP_adam_betas" --adam-eps "$HP_adam_eps" \
          --clip-norm "$HP_clip_norm" "${SCHEDULE[@]}" --max-tokens "$PER_GPU_TOKENS" \
          --skip-invalid-size-inputs-valid-test --seed "$SEED" --save-dir "$RUN_DIR" \
          "${SHARED_FLAGS[@]}" "${DIST_FLAGS[@]}" "$@"
      done
    done
  done
done
