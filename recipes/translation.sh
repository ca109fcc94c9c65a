#!/usr/bin/env bash
set -euo pipefail
# Train translation models with and without a consistency regulariser: STD, R3F and a dropout-only variant
# (R-Drop's comparison), with fairseq's published settings (fairseq_r3f/hparams/translation.tsv).
#
#   DATA_BIN=OUT/bin recipes/translation.sh CONFIG [fairseq-train flags]
#
# CONFIG  iwslt14_de_en  transformer_iwslt_de_en from scratch (preprocess/translation.py --iwslt14-dir wrote DATA_BIN)
#         mbart_en_ro    mBART-cc25 fine-tuned English -> Romanian (DATA_BIN from preprocess/translation.py with
#                        mBART's --spm-model and --dict, languages en_XX / ro_RO)
# Methods (all with the criterion label_smoothed_cross_entropy_r3f, which at lambda 0 is fairseq's
# label_smoothed_cross_entropy exactly):
#   std   lambda 0: no second forward
#   r3f   lambda R3F_LAMBDA (default 1.25) x the symmetric KL between the outputs on clean and on noised
#         encoder embeddings (NOISE_TYPE uniform, EPS 1e-5); dropout is on in both forwards
#   drop  the same term with --noise-type none: two dropout samples only (R-Drop's regulariser), lambda
#         DROP_LAMBDA (default 1.25 = R-Drop's alpha 5, see docs/translation.md)
# Environment:
#   DATA_BIN       the bin/ folder written by preprocess/translation.py (required)
#   MBART_PATH     mbart.cc25 model.pt (mbart_en_ro; not with TINY=1)
#   METHODS="std r3f drop"   methods to run; SEEDS=1   seeds to run
#   R3F_LAMBDA, NOISE_TYPE, EPS, DROP_LAMBDA   override the table (R3F_LAMBDA / DROP_LAMBDA may list several)
#   SAVE_ROOT=runs/translation   each run goes to SAVE_ROOT/CONFIG/METHOD/lambdaL_NOISE/seedN
#   and the launch settings of recipes/common.sh: NGPUS NNODES UPDATE_FREQ LAUNCHER FP16 DRY_RUN TINY.
#   The effective batch is max_tokens x reference_gpus x reference_update_freq tokens per update (the table);
#   each GPU gets that / (NGPUS x NNODES x UPDATE_FREQ) tokens.
# A stopped run started again resumes from its checkpoint_last.pt (mBART is loaded only when there is none).
# Score with python -m fairseq_r3f.evaluation.bleu --config CONFIG --runs SAVE_ROOT ... (docs/translation.md).
# Flags after CONFIG go to fairseq-train last and override the recipe's.

usage() { sed -n '3,/^$/s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; }
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

[[ $# -ge 1 ]] || die "give a CONFIG"
CONFIG=$1
shift
TSV=$HPARAMS/translation.tsv
case "$CONFIG" in iwslt14_de_en | mbart_en_ro) ;; *) die "unknown CONFIG $CONFIG: choose iwslt14_de_en or mbart_en_ro" ;; esac

for NAME in arch task source_lang target_lang model_flags langs optimizer adam_betas adam_eps clip_norm lr \
  lr_scheduler warmup_updates max_update dropout attention_dropout weight_decay label_smoothing max_tokens \
  reference_gpus reference_update_freq r3f_kl_normalization r3f_lambda noise_type eps drop_lambda; do
  hparam_set "HP_$NAME" "$TSV" "$NAME" "$CONFIG"
done

require_dir DATA_BIN "${DATA_BIN:-}" "the bin/ folder written by preprocess/translation.py"
require_file DATA_BIN "$DATA_BIN/train.$HP_source_lang-$HP_target_lang.$HP_source_lang.bin" \
  "not a binarised $HP_source_lang-$HP_target_lang set: run preprocess/translation.py first (docs/translation.md)"
PRETRAINED=()
if [[ "$CONFIG" == mbart_en_ro && "$TINY" != 1 ]]; then
  require_file MBART_PATH "${MBART_PATH:-}" "the mbart.cc25 checkpoint, model.pt of mbart.cc25.v2.tar.gz"
  # loaded only when the run has no checkpoint_last.pt: a restarted run resumes
  PRETRAINED=(--finetune-from-model "$MBART_PATH")
fi
check_launch
launch_command
shared_flags

TOKENS_PER_UPDATE=$((HP_max_tokens * HP_reference_gpus * HP_reference_update_freq))
PER_GPU_TOKENS=$(per_gpu_batch "$TOKENS_PER_UPDATE")
MAX_UPDATE=$HP_max_update WARMUP=$HP_warmup_updates
read -r -a MODEL_FLAGS <<< "$HP_model_flags"
MODEL_FLAGS=(--arch "$HP_arch" "${MODEL_FLAGS[@]}")
if [[ "$TINY" == 1 ]]; then
  MODEL_FLAGS+=(--encoder-layers 1 --decoder-layers 1 --encoder-embed-dim 32 --decoder-embed-dim 32
    --encoder-ffn-embed-dim 64 --decoder-ffn-embed-dim 64 --encoder-attention-heads 2 --decoder-attention-heads 2
    --max-source-positions 64 --max-target-positions 64)
  MAX_UPDATE=$TINY_UPDATES WARMUP=1 PER_GPU_TOKENS=512
fi
TASK_FLAGS=(--task "$HP_task" --source-lang "$HP_source_lang" --target-lang "$HP_target_lang")
[[ "$HP_langs" == - ]] || TASK_FLAGS+=(--langs "$HP_langs")
SCHEDULE=(--lr-scheduler "$HP_lr_scheduler" --lr "$HP_lr" --warmup-updates "$WARMUP" --max-update "$MAX_UPDATE")
[[ "$HP_lr_scheduler" != polynomial_decay ]] || SCHEDULE+=(--total-num-update "$MAX_UPDATE")

METHODS=${METHODS:-std r3f drop}
SEEDS=${SEEDS:-1}
SAVE_ROOT=${SAVE_ROOT:-runs/translation}
EPS=${EPS:-$HP_eps}
[[ "$EPS" =~ ^[0-9]*\.?[0-9]+([eE]-?[0-9]+)?$ ]] || die "EPS=$EPS is not a non-negative number"
hp_value() { local name=HP_$2; printf -v "$1" '%s' "${!name}"; }
drop_value() { [[ "$2" == r3f_lambda ]] && printf -v "$1" '%s' "$HP_drop_lambda" || printf -v "$1" none; }

echo "# $CONFIG: lr $HP_lr, $MAX_UPDATE updates ($WARMUP warm-up), $TOKENS_PER_UPDATE tokens per update = $WORLD_SIZE GPU(s) x $PER_GPU_TOKENS x update-freq $UPDATE_FREQ" >&2
for METHOD in $METHODS; do
  case "$METHOD" in
    std) r3f_configurations 0 hp_value ;;
    r3f) r3f_configurations 1 hp_value ;;
    drop) R3F_LAMBDA=${DROP_LAMBDA:-} NOISE_TYPE=none r3f_configurations 1 drop_value ;;
    *) die "unknown method $METHOD: choose std, r3f or drop (METHODS=\"std r3f drop\")" ;;
  esac
  N_CONFIGS=$(($(wc -w <<< "$LAMBDAS") * $(wc -w <<< "$NOISE_TYPES")))
  for NOISE in $NOISE_TYPES; do
    for LAMBDA in $LAMBDAS; do
      CONFIG_NAME=lambda${LAMBDA}_$NOISE
      for SEED in $SEEDS; do
        RUN_DIR=$SAVE_ROOT/$CONFIG/$METHOD/$CONFIG_NAME/seed$SEED
        META=$(printf '{"task": "%s", "dataset": "%s", "method": "%s", "config": "%s", "seed": %s, "metric": "bleu", "valid_subsets": "valid", "r3f_lambda": %s, "noise_type": "%s", "eps": %s, "r3f_kl_normalization": "%s", "search": {"configurations": %s}}' \
          "$CONFIG" "$CONFIG" "$METHOD" "$CONFIG_NAME" "$SEED" "$LAMBDA" "$NOISE" "$EPS" "$HP_r3f_kl_normalization" "$N_CONFIGS")
        run_one "$RUN_DIR" "$META" "${LAUNCH[@]}" "$DATA_BIN" "${TASK_FLAGS[@]}" "${MODEL_FLAGS[@]}" \
          "${PRETRAINED[@]}" \
          --criterion label_smoothed_cross_entropy_r3f --label-smoothing "$HP_label_smoothing" \
          --r3f-lambda "$LAMBDA" --noise-type "$NOISE" --eps "$EPS" \
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
