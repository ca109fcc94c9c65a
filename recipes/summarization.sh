#!/usr/bin/env bash
set -euo pipefail
# Fine-tune BART-large with R3F on one summarization dataset, with the paper's hyper-parameters (appendix
# Tables 7 and 8, in fairseq_r3f/hparams/summarization.tsv).
#
#   DATA_BIN=OUT/bin BART_PATH=bart.large/model.pt recipes/summarization.sh DATASET [fairseq-train flags]
#
# DATASET  cnn_dm | gigaword | reddit_tifu (preprocess/summarization.py wrote DATA_BIN)
# Environment:
#   DATA_BIN       the bin/ folder written by preprocess/summarization.py (required)
#   BART_PATH      BART-large model.pt to fine-tune (required unless TINY=1)
#   SAVE_ROOT=runs/summarization   each run goes to SAVE_ROOT/DATASET/CONFIG/seedN: train.log, run.json,
#                  command.sh, checkpoint_best.pt / checkpoint_last.pt
#   SEEDS=1        seeds to run
#   SWEEP=1        every lambda x noise type of Table 8 (LAMBDAS="0.01 0.1", NOISE_TYPES="uniform" narrow it);
#                  otherwise one configuration: R3F_LAMBDA (default 0.01) and NOISE_TYPE (default uniform);
#                  R3F_EPS (default the table's 1e-5)
#   R3F_KL_NORMALIZATION=sentence  what lambda weighs (docs/summarization.md); the grid was tuned for sentence
#   and the launch settings of recipes/common.sh: NGPUS NNODES UPDATE_FREQ LAUNCHER FP16 DRY_RUN TINY.
#   The effective batch is Table 7's max tokens x reference_gpus (8) tokens per update; each GPU gets
#   that / (NGPUS x NNODES x UPDATE_FREQ) tokens, which must be whole and hold a 1024-token article.
# Flags after DATASET go to fairseq-train last and override the recipe's; those that would change what the run
# is (--criterion, --task, --r3f-lambda, --noise-type, --eps, --r3f-kl-normalization) are refused. A run folder
# with a checkpoint_last.pt resumes from it (--finetune-from-model loads BART only for a fresh run).

usage() { sed -n '3,/^$/s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; }
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

[[ $# -ge 1 ]] || die "give a DATASET"
DATASET=$1
shift
TSV=$HPARAMS/summarization.tsv
head -n 20 "$TSV" | awk -F'\t' -v d="$DATASET" '$1 == "name" { for (i = 2; i < NF; i++) if ($i == d) found = 1 }
  END { exit !found }' || die "unknown DATASET $DATASET: choose cnn_dm, gigaword or reddit_tifu"
require_dir DATA_BIN "${DATA_BIN:-}" "the bin/ folder written by preprocess/summarization.py"
require_file DATA_BIN "$DATA_BIN/train.source-target.source.bin" \
  "not a binarised summarization set: run preprocess/summarization.py --dataset $DATASET first"
if [[ "$TINY" != 1 ]]; then
  require_file BART_PATH "${BART_PATH:-}" "the BART-large checkpoint, model.pt of bart.large.tar.gz"
fi
check_launch
launch_command
shared_flags

# every value of the dataset's column, as HP_<name>; a missing one stops the script
for NAME in arch max_tokens total_updates warmup_updates lr lr_scheduler optimizer adam_betas adam_eps dropout \
  attention_dropout weight_decay clip_norm label_smoothing r3f_lambda r3f_lambda_grid r3f_kl_normalization \
  noise_type noise_type_grid eps reference_gpus reference_update_freq; do
  hparam_set "HP_$NAME" "$TSV" "$NAME" "$DATASET"
done

MAX_UPDATE=$HP_total_updates WARMUP=$HP_warmup_updates
TOKENS_PER_UPDATE=$((HP_max_tokens * HP_reference_gpus * HP_reference_update_freq))
PER_GPU_TOKENS=$(per_gpu_batch "$TOKENS_PER_UPDATE")
# --finetune-from-model loads BART only when the run has no checkpoint_last.pt: a restarted run resumes
MODEL_FLAGS=(--arch "$HP_arch" --finetune-from-model "${BART_PATH:-}")
if [[ "$TINY" == 1 ]]; then
  MODEL_FLAGS=(--arch bart_base "${TINY_SEQ2SEQ_FLAGS[@]}")
  MAX_UPDATE=$TINY_UPDATES WARMUP=1 PER_GPU_TOKENS=512
elif ((PER_GPU_TOKENS < 1024)); then
  die "$PER_GPU_TOKENS tokens per GPU step cannot hold a 1024-token article: lower UPDATE_FREQ (the effective batch is $TOKENS_PER_UPDATE tokens)"
fi

NORMALIZATION=${R3F_KL_NORMALIZATION:-$HP_r3f_kl_normalization}
SEEDS=$(words "${SEEDS:-1}")
SAVE_ROOT=${SAVE_ROOT:-runs/summarization}
# the table was read into HP_<name> above
hp_value() { local name=HP_$2; printf -v "$1" '%s' "${!name}"; }
r3f_configurations 1 hp_value
[[ "$NORMALIZATION" =~ ^(sentence|token)$ ]] || die "R3F_KL_NORMALIZATION=$NORMALIZATION: choose sentence or token"
check_overrides r3f label_smoothed_cross_entropy_r3f translation 1 "$@"
if value=$(override_value --r3f-kl-normalization "$@") && [[ "$value" != "$NORMALIZATION" ]]; then
  fail "--r3f-kl-normalization $value contradicts the run's label ($NORMALIZATION):" \
    "set R3F_KL_NORMALIZATION=$value instead"
fi
CONFIGURATIONS=$(($(wc -w <<< "$LAMBDAS") * $(wc -w <<< "$NOISE_TYPES")))
SEARCH_JSON="{\"configurations\": $CONFIGURATIONS, \"sweep\": $([[ "$SWEEP" == 1 ]] && echo true || echo false)}"

echo "# $DATASET: lr $HP_lr, $MAX_UPDATE updates ($WARMUP warm-up), $TOKENS_PER_UPDATE tokens per update = $WORLD_SIZE GPU(s) x $PER_GPU_TOKENS x update-freq $UPDATE_FREQ" >&2
RUN_K=0 RUNS_TOTAL=$((CONFIGURATIONS * $(wc -w <<< "$SEEDS"))) STARTED=$SECONDS
for NOISE in $NOISE_TYPES; do
  for LAMBDA in $LAMBDAS; do
    CONFIG=lambda${LAMBDA}_$NOISE
    [[ "$(eps_name)" == "!" ]] || CONFIG=${CONFIG}_eps$R3F_EPS
    [[ "$NORMALIZATION" == sentence ]] || CONFIG=${CONFIG}_per_$NORMALIZATION
    for SEED in $SEEDS; do
      RUN_DIR=$SAVE_ROOT/$DATASET/$CONFIG/seed$SEED RUN_K=$((RUN_K + 1))
      [[ "$DRY_RUN" == 1 ]] || progress "$RUN_K" "$RUNS_TOTAL" "$STARTED" "$RUN_DIR"
      META=$(printf '{"dataset": "%s", "config": "%s", "seed": %s, "r3f_lambda": %s, "noise_type": "%s", ' \
        "$DATASET" "$CONFIG" "$SEED" "$(json_value "$LAMBDA")" "$NOISE")
      META+=$(printf '"eps": %s, "r3f_kl_normalization": "%s", "search": %s}' \
        "$(json_value "$R3F_EPS")" "$NORMALIZATION" "$SEARCH_JSON")
      run_one "$RUN_DIR" "$META" "${LAUNCH[@]}" "$DATA_BIN" \
        --task translation --source-lang source --target-lang target --truncate-source "${MODEL_FLAGS[@]}" \
        --layernorm-embedding --share-all-embeddings --share-decoder-input-output-embed \
        --criterion label_smoothed_cross_entropy_r3f --label-smoothing "$HP_label_smoothing" \
        --r3f-lambda "$LAMBDA" --noise-type "$NOISE" --eps "$R3F_EPS" --r3f-kl-normalization "$NORMALIZATION" \
        --dropout "$HP_dropout" --attention-dropout "$HP_attention_dropout" \
        --weight-decay "$HP_weight_decay" --optimizer "$HP_optimizer" --adam-betas "$HP_adam_betas" \
        --adam-eps "$HP_adam_eps" --clip-norm "$HP_clip_norm" --lr-scheduler "$HP_lr_scheduler" \
        --lr "$HP_lr" --total-num-update "$MAX_UPDATE" --max-update "$MAX_UPDATE" --warmup-updates "$WARMUP" \
        --max-tokens "$PER_GPU_TOKENS" --skip-invalid-size-inputs-valid-test \
        --seed "$SEED" --save-dir "$RUN_DIR" "${SHARED_FLAGS[@]}" "${DIST_FLAGS[@]}" "$@"
    done
  done
done
