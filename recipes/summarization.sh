#!/usr/bin/env bash
set -euo pipefail
# Fine-tune BART with R3F on a summarization dataset, with the paper's hyper-parameters
# (recipes/hparams/summarization.tsv: appendix Tables 7 and 8).
#
# usage: BART_PATH=bart.large/model.pt recipes/summarization.sh DATASET DATA_BIN SAVE_DIR [fairseq-train flags...]
#   DATASET   cnn_dm | gigaword | reddit_tifu
#   DATA_BIN  the bin/ folder written by preprocess/summarization.py
#   SAVE_DIR  where checkpoints go
# Environment (all optional except BART_PATH):
#   BART_PATH    pre-trained checkpoint to fine-tune; "none" trains from scratch (tests, ablations)
#   NUM_GPUS     GPUs to use (default: all that nvidia-smi lists, else 1)
#   UPDATE_FREQ  default: reference_gpus x reference_update_freq / NUM_GPUS, so the effective batch
#                (max_tokens x NUM_GPUS x UPDATE_FREQ) stays the reference one; setting it changes that batch
#   FP16         1 (default) trains in mixed precision; 0 in fp32 (needed with --cpu)
#   R3F_LAMBDA, NOISE_TYPE, EPS, R3F_KL_NORMALIZATION   override the table (the paper's grid is in it)
#   DRY_RUN=1    print the fairseq-train command instead of running it
# fairseq-train is taken from PATH: activate the environment where fairseq and this plugin are installed.
# Flags after SAVE_DIR are passed to fairseq-train last, so they override anything here.

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(dirname "$HERE")"
HPARAMS="$HERE/hparams/summarization.tsv"

if [[ $# -lt 3 ]]; then
    sed -n '3,19p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
    exit 2
fi
DATASET="$1" DATA_BIN="$2" SAVE_DIR="$3"
shift 3

COLUMN="$(awk -F'\t' -v d="$DATASET" '$1 == "name" { for (i = 2; i < NF; i++) if ($i == d) print i }' "$HPARAMS")"
if [[ -z "$COLUMN" ]]; then
    echo "error: unknown DATASET '$DATASET': choose cnn_dm, gigaword or reddit_tifu" >&2
    exit 2
fi
hp() {  # hp NAME: the value of NAME for DATASET
    awk -F'\t' -v k="$1" -v c="$COLUMN" '$1 == k { print $c; found = 1 } END { exit !found }' "$HPARAMS" ||
        { echo "error: $HPARAMS has no row '$1'" >&2; exit 2; }
}

if [[ ! -f "$DATA_BIN/dict.source.txt" || ! -f "$DATA_BIN/train.source-target.source.bin" ]]; then
    echo "error: '$DATA_BIN' is not a binarised summarization set (no dict.source.txt / train.source-target.*):" \
        "run preprocess/summarization.py first and pass its bin/ folder" >&2
    exit 2
fi
if [[ -z "${BART_PATH:-}" ]]; then
    echo "error: set BART_PATH to the pre-trained BART checkpoint (e.g. bart.large/model.pt), or BART_PATH=none" \
        "to train from scratch" >&2
    exit 2
fi
INIT=()
if [[ "$BART_PATH" != none ]]; then
    if [[ ! -f "$BART_PATH" ]]; then
        echo "error: BART_PATH=$BART_PATH does not exist: download bart.large (docs/summarization.md)" >&2
        exit 2
    fi
    INIT=(--restore-file "$BART_PATH" --reset-optimizer --reset-dataloader --reset-meters --reset-lr-scheduler)
fi

if [[ -z "${NUM_GPUS:-}" ]]; then
    NUM_GPUS="$( (nvidia-smi -L 2>/dev/null || true) | grep -c '^GPU' || true)"
    [[ "$NUM_GPUS" -ge 1 ]] || NUM_GPUS=1
fi
REFERENCE_BATCH=$(( $(hp reference_gpus) * $(hp reference_update_freq) ))
if [[ -z "${UPDATE_FREQ:-}" ]]; then
    if (( REFERENCE_BATCH % NUM_GPUS != 0 )); then
        echo "error: NUM_GPUS=$NUM_GPUS does not divide the reference $REFERENCE_BATCH GPU-batches per update:" \
            "use a NUM_GPUS that divides it, or set UPDATE_FREQ yourself (which changes the effective batch)" >&2
        exit 2
    fi
    UPDATE_FREQ=$(( REFERENCE_BATCH / NUM_GPUS ))
elif (( NUM_GPUS * UPDATE_FREQ != REFERENCE_BATCH )); then
    echo "note: NUM_GPUS x UPDATE_FREQ = $(( NUM_GPUS * UPDATE_FREQ )) batches of $(hp max_tokens) tokens per" \
        "update, the reference is $REFERENCE_BATCH" >&2
fi
PRECISION=()
if [[ "${FP16:-1}" == 1 ]]; then
    PRECISION=(--fp16)
fi
UPDATES="$(hp total_updates)"

COMMAND=(
    fairseq-train "$DATA_BIN" --user-dir "$REPO/fairseq_r3f"
    "${INIT[@]}"
    --task translation --source-lang source --target-lang target --truncate-source
    --arch "$(hp arch)" --layernorm-embedding --share-all-embeddings --share-decoder-input-output-embed
    --criterion label_smoothed_cross_entropy_r3f --label-smoothing "$(hp label_smoothing)"
    --r3f-lambda "${R3F_LAMBDA:-$(hp r3f_lambda)}" --noise-type "${NOISE_TYPE:-$(hp noise_type)}"
    --eps "${EPS:-$(hp eps)}" --r3f-kl-normalization "${R3F_KL_NORMALIZATION:-$(hp r3f_kl_normalization)}"
    --dropout "$(hp dropout)" --attention-dropout "$(hp attention_dropout)" --weight-decay "$(hp weight_decay)"
    --optimizer "$(hp optimizer)" --adam-betas "$(hp adam_betas)" --adam-eps "$(hp adam_eps)"
    --clip-norm "$(hp clip_norm)" --lr-scheduler "$(hp lr_scheduler)" --lr "$(hp lr)"
    --total-num-update "$UPDATES" --max-update "$UPDATES" --warmup-updates "$(hp warmup_updates)"
    --max-tokens "$(hp max_tokens)" --update-freq "$UPDATE_FREQ" --distributed-world-size "$NUM_GPUS"
    --required-batch-size-multiple 1 --skip-invalid-size-inputs-valid-test --find-unused-parameters
    "${PRECISION[@]}" --no-epoch-checkpoints --save-dir "$SAVE_DIR"
    "$@"
)
if [[ "${DRY_RUN:-0}" == 1 ]]; then
    printf '%q ' "${COMMAND[@]}"
    echo
    exit 0
fi
mkdir -p "$SAVE_DIR"
exec "${COMMAND[@]}"
