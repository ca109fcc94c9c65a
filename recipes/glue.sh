#!/usr/bin/env bash
set -euo pipefail
# Fine-tune RoBERTa-large on one GLUE task with one method, over seeds (and, with SWEEP=1, the method's grid).
#
#   DATA_DIR=GLUE_BIN ROBERTA_PATH=roberta.large/model.pt recipes/glue.sh TASK METHOD [fairseq-train flags]
#
# TASK    MNLI QNLI QQP SST-2 RTE MRPC CoLA STS-B (preprocess/glue.py wrote DATA_DIR/TASK-bin)
# METHOD  std    RoBERTa's published fine-tuning (its lr, batch, updates, weight decay 0.1, 10 epochs)
#         std++  the paper's budget and optimiser (Tables 5, 6: lr, batch, updates, 6% warm-up, weight decay
#                0.01) with bias-corrected Adam (fairseq's adam) and the plain cross-entropy: R3F without R3F
#         r3f    std++ plus lambda x symmetric KL under noise (--criterion sentence_prediction_r3f)
#         r4f    r3f on a spectrally normalised head (--arch roberta_sn_large)
#         smart  std++ plus SMART's adversarial smoothness term (--criterion sentence_prediction_smart; its
#                settings in fairseq_r3f/hparams/glue.tsv, docs/baselines.md)
#         freelb std++ with FreeLB's adversarial training (--task/--criterion sentence_prediction_freelb); one
#                run per seed uses the task's published settings (fairseq_r3f/hparams/freelb_tasks.tsv)
#         The authors' released configurations, labelled as such in every table (never r3f/r4f/smart):
#         r3f-readme    RTE only: the command of fairseq's examples/rxf/README.md (weight decay 0.1, lambda 0.7,
#                       10 epochs, seed 1; fairseq_r3f/hparams/glue_released.tsv) with the noise reaching the
#                       encoder; other tasks are refused
#         r3f-released  the same as the released code computed it: --noise-type none (its noise never reached
#                       RoBERTa's encoder, which drops token_embeddings=)
#         r4f-readme, r4f-released  the same two on fairseq's out_proj-only spectral-norm head
#                       (--arch roberta_sn_outproj_large)
#         smart-released  smart with --smart-variant released and mt-dnn's defaults as of 682b9fb..1f43b6e
#                       (glue.tsv smart_released_*)
# Environment:
#   DATA_DIR       folder with TASK-bin (required)
#   ROBERTA_PATH   RoBERTa-large model.pt (required unless TINY=1); loaded only while a run has no checkpoint
#                  of its own: an interrupted run resumes from its checkpoint_last.pt when run again
#   SAVE_ROOT=runs/glue   each run goes to SAVE_ROOT/TASK/METHOD/CONFIG/seedN: train.log (json records),
#                  run.json (what it is), versions.json, identity.json (what ran), command.sh, checkpoints
#   SEEDS          seeds to run (default: 1 to 10, the paper's ten seeds)
#   SWEEP=1        every method searches its own grid (glue.tsv): r3f/r4f lambda x noise type of Table 6
#                  (LAMBDAS="0.1 1.0", NOISE_TYPES="uniform" narrow it), std/std++ std_lr_grid, smart
#                  smart_lambda_grid x smart_lr_grid, freelb its step/init/max-norm grids; SWEEP_SIZE (default
#                  8) caps each search at the same number of configurations. Otherwise one configuration:
#                  R3F_LAMBDA (default 1.0), NOISE_TYPE (uniform), R3F_EPS (1e-5) for r3f/r4f
#   and the launch settings of recipes/common.sh: NGPUS NNODES UPDATE_FREQ BATCH_READING LAUNCHER FP16 DRY_RUN TINY
# Flags after METHOD go to fairseq-train last and override the recipe's; those that would change the method
# (--arch with or without the SN head, --criterion, --task, --r3f-lambda/--noise-type/--eps) are refused.
# Hyper-parameters: fairseq_r3f/hparams/glue_tasks.tsv (per task), fairseq_r3f/hparams/glue.tsv (shared).

# Everything else (the tables, checks, grid, launch, records) is the run layer, r3f_runs/.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
hand_over glue "$@"
