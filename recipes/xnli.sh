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

# Everything else (the tables, checks, grid, launch, records) is the run layer, r3f_runs/.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
hand_over xnli "$@"
