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
#   TOKENIZATION   sentencepiece or moses; unset: what DATA_BIN holds. moses (IWSLT'14 data of
#                  preprocess/translation.py --tokenization moses) trains with --share-all-embeddings and keeps
#                  checkpoint_best.pt by validation BLEU (--eval-bleu), the comparable path; score it with
#                  python -m fairseq_r3f.evaluation.bleu --bleu tokenized
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

# Everything else (the tables, checks, grid, launch, records) is the run layer, r3f_runs/.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
hand_over translation "$@"
