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
#   R3F_KL_NORMALIZATION=sentence  what lambda weighs (docs/summarization.md); Table 8 used sentence (assumed)
#   and the launch settings of recipes/common.sh: NGPUS NNODES UPDATE_FREQ LAUNCHER FP16 DRY_RUN TINY.
#   The effective batch is Table 7's max tokens x reference_gpus (8) tokens per update; each GPU gets
#   that / (NGPUS x NNODES x UPDATE_FREQ) tokens, which must be whole and hold a 1024-token article.
# Flags after DATASET go to fairseq-train last and override the recipe's; those that would change what the run
# is (--criterion, --task, --r3f-lambda, --noise-type, --eps, --r3f-kl-normalization) are refused. A run folder
# with a checkpoint_last.pt resumes from it (--finetune-from-model loads BART only for a fresh run).

# Everything else (the tables, checks, grid, launch, records) is the run layer, r3f_runs/.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
hand_over summarization "$@"
