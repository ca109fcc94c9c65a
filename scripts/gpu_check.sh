#!/usr/bin/env bash
# The plugin's checks on a CUDA machine, in one command and under 8 minutes; one report, report.md and
# report.json, in the output folder (docs/gpu_check.md says what each part shows).
#
#   bash scripts/gpu_check.sh [OUT_DIR]            # default OUT_DIR: gpu_check_<UTC time>
#   bash scripts/gpu_check.sh --dry-run [OUT_DIR]  # print the commands only (also GPU_CHECK_DRY_RUN=1)
#   bash scripts/gpu_check.sh --report OUT_DIR     # rebuild the report from the logs already in OUT_DIR
#
# What runs:
#   1. python -m fairseq_r3f.benchmark --json on CUDA, in fp32 and in fp16 (Table 1: cost per update);
#   2. R3F and R4F fine-tuning of a small RoBERTa on the built-in toy task, with --fp16 and with --bf16
#      (skipped where the GPU has no bf16), reporting the logged noise_kept, symm_kl, loss and accuracy;
#      and label_smoothed_cross_entropy_r3f training of a small BART with --fp16 on a toy seq2seq task (reverse
#      the source), reporting the same;
#   3. with two or more GPUs: the same R3F training under torchrun on two processes and in one process
#      (same sentences per update: batch B on each of 2 ranks = batch B with --update-freq 2), without
#      dropout and with a noise that depends only on the embedding, so both must give the same losses,
#      gradient norms and weights.
# Settings (environment): PYTHON (default: the repository's .venv, else python3); GPU_CHECK_BUDGET=460
# seconds for all steps together (a step that would pass it is cut short and reported); GPU_CHECK_GPUS=N the
# number of GPUs a dry run assumes (default: those torch sees, at least 1); MASTER_PORT=29511 for torchrun.
# Without a CUDA GPU it stops with exit status 2 (a dry run and --report need none).
set -euo pipefail

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
USER_DIR=$ROOT/fairseq_r3f
if [[ -n ${PYTHON:-} ]]; then :; elif [[ -x $ROOT/.venv/bin/python ]]; then PYTHON=$ROOT/.venv/bin/python
else PYTHON=python3; fi
DRY_RUN=${GPU_CHECK_DRY_RUN:-0}
BUDGET=${GPU_CHECK_BUDGET:-460}
MASTER_PORT=${MASTER_PORT:-29511}
REPORT_ONLY=0
OUT=

die() { echo "gpu_check: $*" >&2; exit 2; }

while (($#)); do
  case "$1" in
    -h | --help) usage; exit 0 ;;
    --dry-run) DRY_RUN=1 ;;
    --report) REPORT_ONLY=1 ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) [[ -z $OUT ]] || die "one output folder, got $OUT and $1"; OUT=$1 ;;
  esac
  shift
done
[[ $DRY_RUN == 0 || $DRY_RUN == 1 ]] || die "GPU_CHECK_DRY_RUN=$DRY_RUN: use 0 or 1"
[[ $BUDGET =~ ^[0-9]+$ ]] || die "GPU_CHECK_BUDGET=$BUDGET: a number of seconds"
if ((REPORT_ONLY)); then [[ -d ${OUT:-} ]] || die "--report needs the output folder of a run"; fi
OUT=${OUT:-gpu_check_$(date -u +%Y%m%dT%H%M%SZ)}

# The report, from what the steps left in $OUT: steps.tsv (name, exit status, seconds) and their logs.
write_report() {
  "$PYTHON" - "$OUT" <<'PYTHON'
import json
import os
import sys

import torch

import fairseq_r3f  # noqa: F401  (allows fairseq checkpoints to load)
from fairseq_r3f.logs import read_json_log

out = sys.argv[1]
DDP_TOLERANCE = 1e-4  # relative; one process and two sum the same gradients in another order


def read(name):
    path = os.path.join(out, name)
    return open(path, encoding="utf-8").read() if os.path.exists(path) else ""


steps = []
for line in read("steps.tsv").splitlines():
    name, status, seconds = line.split("\t")
    steps.append({"step": name, "status": status, "seconds": float(seconds)})
report = {"machine": dict(line.split("\t", 1) for line in read("machine.tsv").splitlines() if "\t" in line),
          "steps": steps, "benchmark": {}, "training": [], "ddp": None}

for precision in ("fp32", "fp16"):
    text = read(f"benchmark_{precision}.json")
    if text.strip():
        result = json.loads(text)
        report["benchmark"][precision] = {
            "config": result["config"], "device": result["device"], "targets": result.get("targets", {}),
            "methods": [{k: row[k] for k in ("method", "fp", "bp", "ms_per_update", "time_ratio", "peak_mb",
                                             "memory_ratio")} for row in result["methods"]]}

for step in steps:
    if not step["step"].startswith("train_"):
        continue
    _, method, precision = step["step"].split("_")
    records = read_json_log(read(step["step"] + ".log"))
    inner, valid = records.get("train_inner", []), records.get("valid", [])
    kept = [r["noise_kept"] for r in inner if isinstance(r.get("noise_kept"), float)]
    report["training"].append({
        "method": method, "precision": precision, "status": step["status"],
        "updates": int(inner[-1]["num_updates"]) if inner else 0,
        "noise_kept_first": kept[0] if kept else None, "noise_kept_mean": sum(kept) / len(kept) if kept else None,
        "noise_kept_min": min(kept) if kept else None,
        "symm_kl_last": inner[-1].get("symm_kl") if inner else None,
        "train_loss_last": inner[-1].get("loss") if inner else None,
        "valid_accuracy": valid[-1].get("valid_accuracy") if valid else None,
        "ups": inner[-1].get("ups") if inner else None,
    })


def relative_difference(a, b):
    return abs(a - b) / max(abs(a), abs(b), 1e-12)


if any(s["step"] == "ddp_two" for s in steps):
    one = read_json_log(read("ddp_one.log")).get("train_inner", [])
    two = read_json_log(read("ddp_two.log")).get("train_inner", [])
    ddp = {"updates_one": len(one), "updates_two": len(two), "per_update": []}
    for a, b in zip(one, two):
        ddp["per_update"].append({"update": int(a["num_updates"]), "loss_one": a["loss"], "loss_two": b["loss"],
                                  "gnorm_one": a["gnorm"], "gnorm_two": b["gnorm"],
                                  "symm_kl_one": a.get("symm_kl"), "symm_kl_two": b.get("symm_kl")})
    rows = ddp["per_update"]
    ddp["max_loss_rel_diff"] = max((relative_difference(r["loss_one"], r["loss_two"]) for r in rows), default=None)
    ddp["max_gnorm_rel_diff"] = max((relative_difference(r["gnorm_one"], r["gnorm_two"]) for r in rows),
                                    default=None)
    weights = [os.path.join(out, f"ddp_{n}", "checkpoint_last.pt") for n in ("one", "two")]
    if all(os.path.exists(w) for w in weights):
        a, b = (torch.load(w, map_location="cpu")["model"] for w in weights)
        ddp["weights_rel_diff"] = max(float((a[k].double() - b[k].double()).norm() / a[k].double().norm().clamp(
            min=1e-12)) for k in a if a[k].is_floating_point())
    else:
        ddp["weights_rel_diff"] = None
    measured = [ddp["max_loss_rel_diff"], ddp["max_gnorm_rel_diff"], ddp["weights_rel_diff"]]
    ddp["tolerance"] = DDP_TOLERANCE
    ddp["match"] = bool(rows) and len(one) == len(two) and None not in measured and max(measured) <= DDP_TOLERANCE
    report["ddp"] = ddp

with open(os.path.join(out, "report.json"), "w", encoding="utf-8") as f:
    json.dump(report, f, indent=1)


def cell(value, digits=1):
    return "-" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def scientific(value):
    return "-" if value is None else f"{value:.1e}"


lines = ["# GPU check", ""]
lines += [f"- {key}: {value}" for key, value in report["machine"].items()] + [""]
lines += ["| step | status | seconds |", "|---|---|---|"]
lines += [f"| {s['step']} | {s['status']} | {s['seconds']:.0f} |" for s in steps] + [""]
for precision, bench in report["benchmark"].items():
    c = bench["config"]
    lines += [f"## Cost per update ({precision}, `python -m fairseq_r3f.benchmark`)", "",
              f"{bench['device']}; RoBERTa {c['layers']} x {c['width']}, batch {c['batch_size']} x {c['seq_len']}, "
              f"medians of {c['repeats']}", "",
              "| method | FP | BP | ms/update | x STD | peak MB | x STD |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {m['method']} | {m['fp']} | {m['bp']} | {m['ms_per_update']:.1f} | {m['time_ratio']:.2f} | "
              f"{m['peak_mb']:.0f} | {m['memory_ratio']:.2f} |" for m in bench["methods"]]
    lines += [f"- target {name}: {'met' if ok else 'NOT met'}" for name, ok in bench["targets"].items()] + [""]
if report["training"]:
    lines += ["## Fine-tuning in half precision (toy tasks)", "",
              "| method | precision | status | updates | noise_kept % (first / mean / min) | symm_kl | train loss | "
              "valid acc | ups |", "|---|---|---|---|---|---|---|---|---|"]
    for t in report["training"]:
        kept = " / ".join(cell(t[k]) for k in ("noise_kept_first", "noise_kept_mean", "noise_kept_min"))
        lines.append(f"| {t['method']} | {t['precision']} | {t['status']} | {t['updates']} | {kept} | "
                     f"{cell(t['symm_kl_last'], 6)} | {cell(t['train_loss_last'], 3)} | {cell(t['valid_accuracy'])} | "
                     f"{cell(t['ups'])} |")
    lines.append("")
ddp = report["ddp"]
if ddp is None:
    lines += ["## Two processes", "", "Not run: it needs two GPUs.", ""]
else:
    lines += ["## Two processes (torchrun) against one", "",
              f"Result: {'MATCH' if ddp['match'] else 'MISMATCH'} (tolerance {ddp['tolerance']:.0e} relative); "
              f"updates {ddp['updates_one']} / {ddp['updates_two']}; largest relative difference: loss "
              f"{scientific(ddp['max_loss_rel_diff'])}, gradient norm {scientific(ddp['max_gnorm_rel_diff'])}, "
              f"weights after training {scientific(ddp['weights_rel_diff'])}",
              "", "| update | loss (1 / 2 processes) | gnorm (1 / 2) | symm_kl (1 / 2) |", "|---|---|---|---|"]
    lines += [f"| {r['update']} | {r['loss_one']} / {r['loss_two']} | {r['gnorm_one']} / {r['gnorm_two']} | "
              f"{r['symm_kl_one']} / {r['symm_kl_two']} |" for r in ddp["per_update"]]
    lines.append("")
with open(os.path.join(out, "report.md"), "w", encoding="utf-8") as f:
    f.write("\n".join(lines))
print(f"gpu_check: report in {os.path.join(out, 'report.md')} and report.json")
PYTHON
}

if ((REPORT_ONLY)); then write_report; exit 0; fi

GPUS=$("$PYTHON" -c 'import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)' \
  2>/dev/null) || die "$PYTHON cannot import torch: set PYTHON to the environment with torch, fairseq and the plugin"
if ((DRY_RUN)); then
  GPUS=${GPU_CHECK_GPUS:-$((GPUS > 0 ? GPUS : 1))}
  BF16=1
else
  ((GPUS > 0)) || die "no CUDA GPU visible to torch ($PYTHON: torch.cuda.is_available() is False); run it on a \
machine with an NVIDIA GPU and a CUDA build of torch (--dry-run prints the commands)"
  BF16=$("$PYTHON" -c 'import torch; print(int(torch.cuda.is_bf16_supported()))')
  mkdir -p "$OUT"
  : >"$OUT/steps.tsv"
  {
    printf 'date\t%s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    printf 'gpus\t%s\n' "$("$PYTHON" -c 'import torch; n = torch.cuda.device_count(); print(", ".join(
      torch.cuda.get_device_name(i) for i in range(n)))')"
    printf 'versions\t%s\n' "$("$PYTHON" -c 'import json, torch, fairseq, fairseq_r3f; print(json.dumps({
      "torch": torch.__version__, "cuda": torch.version.cuda, "fairseq": fairseq.__version__,
      "fairseq_r3f": fairseq_r3f.__version__}))' 2>/dev/null)"
    printf 'commit\t%s\n' "$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
  } >"$OUT/machine.tsv"
fi
DEADLINE=$((SECONDS + BUDGET))

# step NAME TIMEOUT [VAR=value ...] COMMAND...: runs COMMAND with its output in $OUT/NAME.log (a step whose name
# is bench_X writes its stdout, the JSON, to $OUT/benchmark_X.json) and records how it ended in $OUT/steps.tsv.
step() {
  local name=$1 limit=$2
  shift 2
  if ((DRY_RUN)); then
    printf '%s:' "$name"
    printf ' %q' "$@"
    printf '\n'
    return 0
  fi
  local left=$((DEADLINE - SECONDS)) start=$SECONDS status rc
  ((limit < left)) || limit=$left
  if ((limit < 10)); then
    printf '%s\tskipped (time budget spent)\t0\n' "$name" >>"$OUT/steps.tsv"
    return 0
  fi
  echo "gpu_check: $name (at most ${limit}s)" >&2
  set +e
  if [[ $name == bench_* ]]; then
    timeout "$limit" env "$@" >"$OUT/benchmark_${name#bench_}.json" 2>"$OUT/$name.log"
  else
    timeout "$limit" env "$@" >"$OUT/$name.log" 2>&1
  fi
  rc=$?
  set -e
  case $rc in 0) status=ok ;; 124) status="timed out after ${limit}s" ;; *) status="FAILED (exit $rc)" ;; esac
  printf '%s\t%s\t%s\n' "$name" "$status" "$((SECONDS - start))" >>"$OUT/steps.tsv"
}

# fairseq-train's own main with two changes: --bf16 without the --tpu that fairseq's option parsing attaches
# to it (fairseq-train --bf16 asks for torch_xla, also on a GPU), and, with R3F_EMBEDDING_NOISE=1, a noise
# that depends only on the embedding (the two-process check below). A dry run writes this file too.
mkdir -p "$OUT"
cat >"$OUT/fairseq_train.py" <<'WRAPPER'
from fairseq_cli.train import main  # first: it sets the log format that --log-format json lines are read with

import os
import sys

import torch
from fairseq import options
from fairseq.dataclass.utils import convert_namespace_to_omegaconf
from fairseq.distributed import utils as distributed_utils

import fairseq_r3f.criterions.r3f as r3f

if os.environ.get("R3F_EMBEDDING_NOISE") == "1":
    r3f.random_noise = lambda noise_type, eps: (lambda embedding: eps * torch.sin(1e3 * embedding.float()))
sys.argv[0] = "fairseq-train"
args = options.parse_args_and_arch(options.get_training_parser())
args.tpu = False
distributed_utils.call_main(convert_namespace_to_omegaconf(args), main)
WRAPPER
TRAIN=("$PYTHON" "$OUT/fairseq_train.py")
BENCH=("$PYTHON" -m fairseq_r3f.benchmark --device cuda --json --size base --seq-len 128 --batch-size 16
  --repeats 5)
DATA=$OUT/toy/data-bin
# A 4-layer RoBERTa from scratch: large enough for the GPU to matter, small enough for a minute per run.
MODEL=(--encoder-layers 4 --encoder-embed-dim 256 --encoder-ffn-embed-dim 1024 --encoder-attention-heads 4)
TOY_TASK=("$DATA" --user-dir "$USER_DIR" --task sentence_prediction --num-classes 2 --init-token 0
  --separator-token 2 --max-positions 128 "${MODEL[@]}" --criterion sentence_prediction_r3f --r3f-lambda 1.0
  --noise-type uniform --optimizer adam --lr 1e-4 --lr-scheduler fixed --required-batch-size-multiple 1
  --log-format json --seed 1 --num-workers 0)
FP16_FLAGS=(--fp16 --fp16-init-scale 4 --threshold-loss-scale 1 --fp16-scale-window 128)  # the authors' RTE flags
# A 2 + 2-layer BART from scratch, 256 wide like the RoBERTa above, with the summarization recipe's criterion
# flags; --report-accuracy: the target tokens predicted right, the report's accuracy column.
SEQ2SEQ_TASK=("$OUT/toy_seq2seq" --user-dir "$USER_DIR" --task translation --source-lang src --target-lang tgt
  --dataset-impl raw --arch bart_base --encoder-layers 2 --decoder-layers 2 --encoder-embed-dim 256
  --decoder-embed-dim 256 --encoder-ffn-embed-dim 1024 --decoder-ffn-embed-dim 1024 --encoder-attention-heads 4
  --decoder-attention-heads 4 --max-source-positions 128 --max-target-positions 128 --layernorm-embedding
  --share-all-embeddings --share-decoder-input-output-embed --criterion label_smoothed_cross_entropy_r3f
  --label-smoothing 0.1 --report-accuracy --r3f-lambda 0.01 --noise-type uniform --eps 1e-5
  --r3f-kl-normalization sentence --optimizer adam --lr 1e-4 --lr-scheduler fixed --required-batch-size-multiple 1
  --log-format json --seed 1 --num-workers 0)

# train_sentence_prediction PRECISION: R3F and R4F on the toy task in fp16 or bf16.
train_sentence_prediction() {
  local precision=$1 flags method arch name
  flags=("${FP16_FLAGS[@]}")
  [[ $precision == fp16 ]] || flags=(--bf16)
  for method in r3f r4f; do
    arch=roberta_base
    [[ $method == r3f ]] || arch=roberta_sn_base
    if [[ $precision == bf16 ]] && ((!BF16)); then
      printf 'train_%s_bf16\tskipped (no bf16 on this GPU)\t0\n' "$method" >>"$OUT/steps.tsv"
      continue
    fi
    name=train_${method}_$precision
    step "$name" 90 "${TRAIN[@]}" "${TOY_TASK[@]}" --arch "$arch" --eps 1e-5 --batch-size 32 --max-update 300 \
      --log-interval 10 --distributed-world-size 1 --no-save --save-dir "$OUT/$name" "${flags[@]}"
  done
}

step bench_fp32 120 "${BENCH[@]}" --plot "$OUT/benchmark_fp32.png"
step bench_fp16 120 "${BENCH[@]}" --fp16 --plot "$OUT/benchmark_fp16.png"
step toy_task 60 "$PYTHON" -c "import sys; from fairseq_r3f.toy_data import write_toy_task
write_toy_task(sys.argv[1], n_train=4000, n_valid=500, label_noise=0.15)" "$OUT/toy"
step toy_seq2seq 30 "$PYTHON" -c "import sys; from fairseq_r3f.toy_data import write_toy_reversal_task
write_toy_reversal_task(sys.argv[1], n_train=4000, n_valid=500, vocab=100, min_words=8, max_words=24)" \
  "$OUT/toy_seq2seq"
train_sentence_prediction fp16
# before the bf16 steps: fp16 is what the summarization and translation recipes train with
step train_bart-r3f_fp16 90 "${TRAIN[@]}" "${SEQ2SEQ_TASK[@]}" --batch-size 32 --max-update 100 --log-interval 10 \
  --distributed-world-size 1 --no-save --save-dir "$OUT/train_bart-r3f_fp16" "${FP16_FLAGS[@]}"
train_sentence_prediction bf16

if ((GPUS >= 2)); then
  # fairseq seeds each update alike on every rank, so rank 1 would draw other noise and dropout than the second
  # half-batch of one process: noise from the embedding alone and no dropout make the two runs comparable.
  DDP=("${TOY_TASK[@]}" --arch roberta_base --eps 1e-2 --dropout 0 --attention-dropout 0 --activation-dropout 0
    --pooler-dropout 0 --batch-size 8 --max-update 10 --log-interval 1 --no-epoch-checkpoints --no-save-optimizer-state)
  step ddp_one 120 CUDA_VISIBLE_DEVICES=0 R3F_EMBEDDING_NOISE=1 "${TRAIN[@]}" "${DDP[@]}" --distributed-world-size 1 \
    --update-freq 2 --save-dir "$OUT/ddp_one"
  step ddp_two 120 R3F_EMBEDDING_NOISE=1 "$PYTHON" -m torch.distributed.run --nproc-per-node 2 \
    --master-port "$MASTER_PORT" "$OUT/fairseq_train.py" "${DDP[@]}" --distributed-world-size 2 \
    --find-unused-parameters --save-dir "$OUT/ddp_two"
fi

if ((DRY_RUN)); then
  echo "report: bash $0 --report $OUT"
else
  write_report
fi
