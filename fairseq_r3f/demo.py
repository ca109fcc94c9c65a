"""The built-in demo: fine-tune a tiny RoBERTa on the built-in toy task with standard fine-tuning, R3F and
R4F, through the real ``fairseq-train``, on the CPU, and print one row per method.

    python -m fairseq_r3f.demo [--work-dir DIR] [--max-update N] [--methods std r3f r4f]

The model is trained from scratch (nothing can be downloaded here), so the accuracies say that each method
trains, not how they compare on real pre-trained checkpoints.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

from fairseq_r3f.logs import read_json_log
from fairseq_r3f.tools import USER_DIR, fairseq_command
from fairseq_r3f.toy_data import write_toy_task


METHODS = {
    "std": ["--criterion", "sentence_prediction", "--arch", "roberta_base"],
    "r3f": ["--criterion", "sentence_prediction_r3f", "--arch", "roberta_base",
            "--r3f-lambda", "1.0", "--noise-type", "uniform", "--eps", "1e-5"],
    "r4f": ["--criterion", "sentence_prediction_r3f", "--arch", "roberta_sn_base",
            "--r3f-lambda", "1.0", "--noise-type", "uniform", "--eps", "1e-5"],
}

TINY_MODEL = [
    "--encoder-layers", "2", "--encoder-embed-dim", "64", "--encoder-ffn-embed-dim", "128",
    "--encoder-attention-heads", "4", "--max-positions", "64",
]


def train(method: str, data_bin: str, save_dir: str, max_update: int, seed: int) -> dict:
    command = fairseq_command("fairseq-train") + [
        data_bin, "--user-dir", USER_DIR, "--task", "sentence_prediction", "--num-classes", "2",
        "--init-token", "0", "--separator-token", "2", "--max-positions", "64", *TINY_MODEL,
        "--optimizer", "adam", "--adam-betas", "(0.9, 0.98)", "--adam-eps", "1e-6", "--weight-decay", "0.01",
        "--lr", "1e-3", "--lr-scheduler", "polynomial_decay", "--warmup-updates", str(max_update // 10),
        "--total-num-update", str(max_update), "--max-update", str(max_update), "--batch-size", "32",
        "--required-batch-size-multiple", "1", "--dropout", "0.1", "--attention-dropout", "0.1",
        "--best-checkpoint-metric", "accuracy", "--maximize-best-checkpoint-metric",
        "--no-epoch-checkpoints", "--no-last-checkpoints", "--save-dir", save_dir, "--cpu",
        "--log-format", "json", "--log-interval", "10", "--seed", str(seed), "--num-workers", "0",
        *METHODS[method],
    ]
    started = time.time()
    proc = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-3000:])
        raise SystemExit(f"demo: fairseq-train failed for {method} (exit {proc.returncode})")
    records = read_json_log(proc.stdout + proc.stderr)
    valid = records.get("valid", [])
    kls = [r["symm_kl"] for r in records.get("train_inner", []) if "symm_kl" in r]
    return {
        "method": method,
        "valid_accuracy": max(r["valid_accuracy"] for r in valid),
        "symm_kl": statistics.mean(kls) if kls else None,
        # fairseq logs updates per second over each log interval (its train_wall is whole seconds)
        "sec_per_update": statistics.median(1.0 / r["ups"] for r in records["train_inner"]),
        "wall_seconds": time.time() - started,
    }


def format_table(rows) -> str:
    lines = [f"{'method':<8}{'valid acc (%)':>15}{'mean symm_kl':>15}{'s / update':>12}"]
    for row in rows:
        kl = f"{row['symm_kl']:.3e}" if row["symm_kl"] is not None else "-"
        lines.append(f"{row['method'].upper():<8}{row['valid_accuracy']:>15.1f}{kl:>15}{row['sec_per_update']:>12.4f}")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work-dir", help="where data and checkpoints go (default: a temporary folder)")
    parser.add_argument("--max-update", type=int, default=300, help="updates per method (default 300)")
    parser.add_argument("--methods", nargs="+", choices=sorted(METHODS), default=["std", "r3f", "r4f"])
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    if args.max_update < 10:
        parser.error(f"--max-update must be at least 10 (got {args.max_update})")

    work_dir = args.work_dir or tempfile.mkdtemp(prefix="fairseq_r3f_demo_")
    print(f"demo: building the toy task in {work_dir}", flush=True)
    # 15% of the labels flipped, in training and validation: a ceiling of about 85%, and noise to overfit to
    data_bin = write_toy_task(os.path.join(work_dir, "data"), n_train=2000, n_valid=400, seed=args.seed,
                              label_noise=0.15)
    rows = []
    for method in args.methods:
        print(f"demo: fine-tuning with {method.upper()} for {args.max_update} updates", flush=True)
        rows.append(train(method, data_bin, os.path.join(work_dir, method), args.max_update, args.seed))
    print()
    print(format_table(rows))
    return rows


if __name__ == "__main__":
    main()
