"""scripts/gpu_check.sh on a machine without a GPU: its refusal, its dry run, the commands it would run (on the
CPU, with a tiny model appended), and the report it builds from their logs."""

import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from conftest import REPO, TINY_BART, TINY_ROBERTA
from fairseq_r3f.logs import read_json_log

SCRIPT = os.path.join(REPO, "scripts", "gpu_check.sh")
ON_THE_CPU = [*TINY_ROBERTA, "--cpu", "--max-update", "3", "--log-interval", "1", "--batch-size", "8"]
SEQ2SEQ_ON_THE_CPU = [*TINY_BART, *ON_THE_CPU[len(TINY_ROBERTA):]]
FP16_FLAGS = " --fp16 --fp16-init-scale 4 --threshold-loss-scale 1 --fp16-scale-window 128"


def gpu_check(*args, **env):
    return subprocess.run(["bash", SCRIPT, *args], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, "PYTHON": sys.executable, **env})


def dry_run(out, gpus):
    proc = gpu_check("--dry-run", str(out), GPU_CHECK_GPUS=str(gpus))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[-1] == f"report: bash {SCRIPT} --report {out}"
    return dict(line.split(": ", 1) for line in lines[:-1])


def run_step(command, *extra, log=None):
    """Runs a command line as the dry run printed it (bash quoting), with flags appended."""
    line = command + "".join(" " + arg for arg in extra)
    proc = subprocess.run(["bash", "-c", line], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    if log:
        with open(log, "w") as f:
            f.write(proc.stdout + proc.stderr)
    return proc


def test_refuses_without_a_gpu(tmp_path):
    proc = gpu_check(str(tmp_path / "out"))
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("gpu_check: no CUDA GPU visible to torch")
    assert proc.stdout == "" and not (tmp_path / "out").exists()


def test_bad_settings_are_refused(tmp_path):
    for args, env, message in [(["--fast"], {}, "unknown option --fast"),
                               ([str(tmp_path / "a"), str(tmp_path / "b")], {}, "one output folder"),
                               (["--report", str(tmp_path / "none")], {}, "--report needs the output folder"),
                               ([str(tmp_path)], {"GPU_CHECK_BUDGET": "soon"}, "GPU_CHECK_BUDGET=soon")]:
        proc = gpu_check(*args, **env)
        assert proc.returncode == 2 and message in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr


def test_dry_run_prints_each_command(tmp_path):
    one = dry_run(tmp_path / "one", gpus=1)
    assert list(one) == ["bench_fp32", "bench_fp16", "toy_task", "toy_seq2seq", "train_r3f_fp16", "train_r4f_fp16",
                         "train_bart-r3f_fp16", "train_r3f_bf16", "train_r4f_bf16"]
    assert "-m fairseq_r3f.benchmark --device cuda --json" in one["bench_fp32"] and "--fp16" not in one["bench_fp32"]
    assert " --fp16 " in one["bench_fp16"]
    for name in ("train_r3f_fp16", "train_r3f_bf16"):
        assert "--arch roberta_base " in one[name] and "--criterion sentence_prediction_r3f" in one[name]
    for name in ("train_r4f_fp16", "train_r4f_bf16"):
        assert "--arch roberta_sn_base " in one[name]
    assert one["train_r3f_fp16"].endswith(FP16_FLAGS)
    assert one["train_r4f_bf16"].endswith("--bf16")
    seq2seq = one["train_bart-r3f_fp16"]
    for flags in ("--task translation ", "--arch bart_base ", "--criterion label_smoothed_cross_entropy_r3f ",
                  "--label-smoothing 0.1 --report-accuracy --r3f-lambda 0.01 --noise-type uniform --eps 1e-5 ",
                  f"{tmp_path / 'one' / 'toy_seq2seq'} "):
        assert flags in seq2seq, flags
    assert seq2seq.endswith(FP16_FLAGS) and "--bf16" not in seq2seq and "--cpu" not in seq2seq
    # a dry run writes only the training wrapper its commands name
    assert os.listdir(tmp_path / "one") == ["fairseq_train.py"]

    two = dry_run(tmp_path / "two", gpus=2)
    assert list(two)[-2:] == ["ddp_one", "ddp_two"]
    assert "-m torch.distributed.run --nproc-per-node 2" in two["ddp_two"]
    assert "--distributed-world-size 2 --find-unused-parameters" in two["ddp_two"]
    assert "--batch-size 8" in two["ddp_two"] and "--update-freq 2" in two["ddp_one"]

    proc = gpu_check(str(tmp_path / "env"), GPU_CHECK_DRY_RUN="1")
    assert proc.returncode == 0 and proc.stdout.startswith("bench_fp32: ")


def test_benchmark_fp16_needs_cuda():
    proc = subprocess.run([sys.executable, "-m", "fairseq_r3f.benchmark", "--fp16", "--device", "cpu"],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == (
        "--fp16 needs a CUDA device (fairseq's FP16Optimizer is CUDA-only); drop --fp16 on the CPU")


@pytest.fixture(scope="module")
def cpu_run(tmp_path_factory):
    """The dry run's toy tasks, bf16 R4F training, seq2seq R3F training (its fp16 flags replaced by --bf16: fp16
    training needs CUDA) and one-process DDP reference run for real on the CPU (tiny models), a CPU benchmark, and
    the step table a run would have written."""
    out = tmp_path_factory.mktemp("gpu_check")
    commands = dry_run(out, gpus=2)
    run_step(commands["toy_task"])
    run_step(commands["toy_seq2seq"])
    run_step(commands["train_r4f_bf16"], *ON_THE_CPU, log=out / "train_r4f_bf16.log")
    seq2seq = commands["train_bart-r3f_fp16"]
    assert seq2seq.endswith(FP16_FLAGS)
    run_step(seq2seq[:-len(FP16_FLAGS)], "--bf16", *SEQ2SEQ_ON_THE_CPU, log=out / "train_bart-r3f_bf16.log")
    run_step(commands["ddp_one"], *ON_THE_CPU, log=out / "ddp_one.log")
    (out / "ddp_command").write_text(commands["ddp_one"])
    shutil.copytree(out / "ddp_one", out / "ddp_two")  # two processes that agree exactly with one
    shutil.copy(out / "ddp_one.log", out / "ddp_two.log")
    proc = run_step(f"{sys.executable} -m fairseq_r3f.benchmark --device cpu --json --size tiny --seq-len 16 "
                    "--batch-size 2 --repeats 1 --warmup 0 --methods STD,R3F,R4F --vocab 100 --plot ''")
    (out / "benchmark_fp32.json").write_text(proc.stdout)
    (out / "steps.tsv").write_text("".join(f"{name}\tok\t1\n" for name in (
        "bench_fp32", "toy_task", "toy_seq2seq", "train_r4f_bf16", "train_bart-r3f_bf16", "ddp_one", "ddp_two"))
        + "bench_fp16\tFAILED (exit 1)\t2\n")
    return out


def report(out):
    proc = gpu_check("--report", str(out))
    assert proc.returncode == 0, proc.stderr
    return json.loads((out / "report.json").read_text()), (out / "report.md").read_text()


def test_report_carries_what_the_logs_say(cpu_run):
    result, markdown = report(cpu_run)
    records = read_json_log((cpu_run / "train_r4f_bf16.log").read_text())["train_inner"]
    training, seq2seq = result["training"]
    assert training["method"] == "r4f" and training["precision"] == "bf16" and training["updates"] == 3
    assert training["noise_kept_first"] == records[0]["noise_kept"]
    assert training["noise_kept_min"] == min(r["noise_kept"] for r in records)
    # bf16 keeps 8 significant bits: noise of 1e-5 on embeddings of about 0.02 changes few entries
    assert training["noise_kept_mean"] < 50
    assert training["train_loss_last"] == records[-1]["loss"]
    log = read_json_log((cpu_run / "train_bart-r3f_bf16.log").read_text())
    records, valid = log["train_inner"], log["valid"]
    assert seq2seq["method"] == "bart-r3f" and seq2seq["precision"] == "bf16" and seq2seq["updates"] == 3
    assert seq2seq["noise_kept_first"] == records[0]["noise_kept"] and seq2seq["noise_kept_mean"] < 50
    assert seq2seq["symm_kl_last"] == records[-1]["symm_kl"] > 0 and seq2seq["train_loss_last"] == records[-1]["loss"]
    assert seq2seq["valid_accuracy"] == valid[-1]["valid_accuracy"] is not None  # --report-accuracy's token share
    bench = json.loads((cpu_run / "benchmark_fp32.json").read_text())
    assert [m["method"] for m in result["benchmark"]["fp32"]["methods"]] == ["STD", "R3F", "R4F"]
    assert result["benchmark"]["fp32"]["methods"][1]["time_ratio"] == bench["methods"][1]["time_ratio"]
    assert {"step": "bench_fp16", "status": "FAILED (exit 1)", "seconds": 2.0} in result["steps"]
    assert result["ddp"]["match"] and result["ddp"]["updates_one"] == 3 and result["ddp"]["weights_rel_diff"] == 0
    assert "| r4f | bf16 | ok | 3 |" in markdown and "| bart-r3f | bf16 | ok | 3 |" in markdown
    assert "Result: MATCH" in markdown
    assert "| bench_fp16 | FAILED (exit 1) | 2 |" in markdown


def test_report_flags_two_processes_that_disagree(cpu_run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(cpu_run, out)
    log = (out / "ddp_two.log").read_text()
    (out / "ddp_two.log").write_text(re.sub(r'"gnorm": "[0-9.]+"', '"gnorm": "99.9"', log, count=1))
    result, markdown = report(out)
    assert not result["ddp"]["match"] and result["ddp"]["max_gnorm_rel_diff"] > 1e-4
    assert "Result: MISMATCH" in markdown


def test_two_process_runs_use_the_embedding_noise(cpu_run, tmp_path):
    """With --noise-type none and no dropout, R3F's term is zero; the wrapper's embedding noise replaces the
    noise whatever the type, so the term is not zero: the comparison really runs with that noise."""
    command = (cpu_run / "ddp_command").read_text().replace(str(cpu_run / "ddp_one"), str(tmp_path / "run"))
    assert command.startswith("CUDA_VISIBLE_DEVICES=0 R3F_EMBEDDING_NOISE=1 ")
    symm_kl = {}
    without = command.replace("R3F_EMBEDDING_NOISE=1", "")
    for name, line in (("embedding noise", command), ("no wrapper noise", without)):
        proc = run_step(line, *ON_THE_CPU, "--noise-type", "none", "--max-update", "1", "--no-save")
        symm_kl[name] = read_json_log(proc.stdout + proc.stderr)["train_inner"][0]["symm_kl"]
    assert symm_kl["no wrapper noise"] == 0 and symm_kl["embedding noise"] > 1e-6, symm_kl
