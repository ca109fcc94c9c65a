"""The probing drivers' runs: a killed fine-tuning resumes from its own checkpoint and gives the results of an
uninterrupted run; what ran is read back from the checkpoint; flags that would change a method, and numbers
that are not finite, are refused before anything runs; progress goes to the terminal, fairseq's output to
each run's log."""

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time

import pytest
import torch
from test_probing import run_driver, run_in_process

from conftest import REPO
from fairseq_r3f.tools import fairseq_command
from fairseq_r3f.toy_data import write_toy_task


@pytest.fixture(scope="module")
def glue_root(tmp_path_factory, toy_task):
    """DATA_ROOT with two toy "GLUE tasks", SST-2 and QNLI."""
    root = tmp_path_factory.mktemp("glue")
    os.symlink(toy_task, root / "SST-2-bin")
    os.symlink(write_toy_task(str(tmp_path_factory.mktemp("toy_qnli")), n_train=128, n_valid=32, seed=1),
               root / "QNLI-bin")
    return root


FINETUNE = os.path.join("runs", "r3f", "seed1", "finetune-SST-2")
# 40 updates of batch 32 on the 256 training sentences, a checkpoint every 4: a run to kill in the middle.
GENERALISATION = ["--arch", "roberta_base", "--methods", "r3f", "--probe-tasks", "QNLI", "--tiny",
                  "--tiny-updates", "40", "--", "--lr", "1e-3", "--save-interval-updates", "4"]


def driver_command(name, *args):
    return [sys.executable, "-m", f"fairseq_r3f.probing.{name}", *map(str, args)]


def saved_a_checkpoint(train_log):
    return os.path.exists(train_log) and "Saved checkpoint" in open(train_log).read()


def kill_after_first_checkpoint(command, train_log, log_path):
    """Starts ``command`` in its own process group and SIGKILLs the whole group (driver and fairseq-train) as
    soon as fairseq logs that it saved (and copied to checkpoint_last.pt) its first checkpoint."""
    with open(log_path, "w") as log:
        proc = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, "OMP_NUM_THREADS": "1"})
        deadline = time.monotonic() + 300
        while not saved_a_checkpoint(train_log):
            assert proc.poll() is None, open(log_path).read()[-3000:]
            assert time.monotonic() < deadline, "no checkpoint after 300 s"
            time.sleep(0.01)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_a_killed_fine_tuning_resumes_from_its_checkpoint_and_gives_the_same_results(tmp_path, glue_root):
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    uninterrupted = run_driver("generalisation", "--data-root", glue_root, "--work-dir", whole,
                               "--keep-full-checkpoints", *GENERALISATION)

    command = driver_command("generalisation", "--data-root", glue_root, "--work-dir", cut, *GENERALISATION)
    kill_after_first_checkpoint(command, cut / FINETUNE / "train.log", tmp_path / "killed.txt")
    stopped_at = torch.load(cut / FINETUNE / "checkpoint_last.pt")["optimizer_history"][-1]["num_updates"]
    assert 0 < stopped_at < 40
    assert not (cut / "results.json").exists()

    resumed = run_driver("generalisation", "--data-root", glue_root, "--work-dir", cut, *GENERALISATION)
    log = (cut / FINETUNE / "train.log").read_text()
    loaded = re.findall(r"Loaded checkpoint \S+checkpoint_last\.pt \(epoch \d+ @ (\d+) updates\)", log)
    assert [int(u) for u in loaded] == [stopped_at]  # the second launch resumed, not restarted
    assert "loading pretrained model" not in log and "@ 0 updates" not in log

    expected, got = (json.loads((folder / "results.json").read_text()) for folder in (whole, cut))
    assert got["rows"] == expected["rows"] and got["summary"] == expected["summary"]
    assert (cut / "results.md").read_text() == (whole / "results.md").read_text()

    # What ran, read back from the checkpoint, and the versions, are in results.json.
    identity = got["identities"]["r3f/seed1/finetune-SST-2"]
    assert (identity["criterion"], identity["spectral_norm_head"], identity["r3f_lambda"]) == (
        "sentence_prediction_r3f", False, 1.0)
    assert identity["seed"] == 1 and identity["task"] == "sentence_prediction"
    assert got["versions"]["fairseq"] and got["versions"]["torch"] == torch.__version__

    # Progress on the terminal, fairseq's own output only in the logs.
    for proc in (uninterrupted, resumed):
        assert re.search(r"run 1 of 2 r3f/seed1/finetune-SST-2 \(elapsed 0:00:\d\d, ETA after the first run\)",
                         proc.stderr)
        assert re.search(r"run 2 of 2 r3f/seed1/probe-QNLI \(elapsed 0:\d\d:\d\d, ETA 0:\d\d:\d\d\)", proc.stderr)
        assert "fairseq_cli.train" not in proc.stderr and "num_updates" not in proc.stderr
    assert f"resuming its checkpoint_last.pt (update {stopped_at})" in resumed.stderr

    # A fine-tuning whose fairseq-train finished but whose step was not recorded is recorded, not launched again
    # (fairseq would train one update past --max-update).
    state_path = whole / "state.json"
    state = json.loads(state_path.read_text())
    del state["steps"]["r3f/seed1/finetune-SST-2"]
    state_path.write_text(json.dumps(state))
    log_before = (whole / FINETUNE / "train.log").read_text()
    again = run_in_process("generalisation", "--data-root", glue_root, "--work-dir", whole,
                           "--keep-full-checkpoints", *GENERALISATION)
    assert (whole / FINETUNE / "train.log").read_text() == log_before
    assert torch.load(whole / FINETUNE / "checkpoint_last.pt")["optimizer_history"][-1]["num_updates"] == 40
    assert again["rows"] == expected["rows"]


def refusal(*args):
    """The one-line error run() stops with, before it runs anything."""
    with pytest.raises(SystemExit) as stop:
        run_in_process("generalisation", *args)
    return str(stop.value)


def test_flags_that_change_the_method_are_refused(tmp_path, glue_root):
    common = ["--data-root", glue_root, "--work-dir", tmp_path / "work", "--probe-tasks", "QNLI", "--tiny"]
    proc = run_driver("generalisation", *common, "--methods", "r4f", "--", "--arch", "roberta_base", check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: '--arch roberta_base' after -- gives r4f a plain classification head, which is R3F: drop it and "
        "pass the driver --arch roberta_base (r4f then runs roberta_sn_base, the other methods roberta_base), or "
        "run method r3f")

    assert "gives r3f the spectrally normalised head" in refusal(*common, "--methods", "r3f", "--", "--arch",
                                                                 "roberta_sn_base")
    assert "'--criterion sentence_prediction' after -- replaces r3f's sentence_prediction_r3f" in refusal(
        *common, "--methods", "r3f", "std++", "--", "--criterion", "sentence_prediction")
    assert "r3f runs --criterion sentence_prediction_r3f, these flags give sentence_prediction" in refusal(
        *common, "--methods", "r3f", "--method", "r3f=--criterion sentence_prediction --lr 1e-3")
    assert "the architecture comes from the driver's --arch" in refusal(
        *common, "--methods", "r4f", "--method", "r4f=--arch roberta_base")
    assert "--arch roberta_sn_large: give the plain architecture (roberta_large)" in refusal(
        *common, "--arch", "roberta_sn_large")
    assert "fairseq's spectral norm" in refusal(*common, "--methods", "r3f", "--",
                                                "--spectral-norm-classification-head")
    assert "fairseq's spectral norm" in refusal(*common, "--methods", "r3f", "--method",
                                                "r3f=--spectral-norm-classification-head")
    assert not (tmp_path / "work" / "runs").exists()

    # A built-in method's flags replaced without its criterion keep the criterion; a new method runs as given.
    dry = run_in_process_output(*common, "--methods", "r3f", "mine", "--method", "r3f=--r3f-lambda 0.5",
                                "--method", "mine=--criterion sentence_prediction --lr 1e-4", "--dry-run")
    from r3f_runs.values import flag_value

    lines = dry.splitlines()
    r3f = shlex.split(lines[lines.index("# r3f/seed1/finetune-SST-2") + 1])
    mine = shlex.split(lines[lines.index("# mine/seed1/finetune-SST-2") + 1])
    assert flag_value(r3f, "--criterion") == "sentence_prediction_r3f" and r3f.count("--r3f-lambda") == 1
    assert flag_value(r3f, "--r3f-lambda") == "0.5" and "--noise-type" not in r3f  # the flags replaced
    assert flag_value(mine, "--criterion") == "sentence_prediction" and flag_value(mine, "--lr") == "1e-4"


def run_in_process_output(*args):
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        run_in_process("generalisation", *args)
    return out.getvalue()


def test_a_run_that_is_not_its_method_stops_the_driver(tmp_path, glue_root):
    """Whatever changes the command on its way to fairseq (here a wrapper dropping the SN architecture), the
    checkpoint says what ran, and an r4f step that trained a plain head does not enter the table."""
    wrapper = tmp_path / "train.sh"
    wrapper.write_text(f'#!/usr/bin/env bash\nexec {" ".join(fairseq_command("fairseq-train"))} '
                       '"${@/roberta_sn_base/roberta_base}"\n')
    work = tmp_path / "work"
    proc = run_driver("generalisation", "--data-root", glue_root, "--work-dir", work, "--arch", "roberta_base",
                      "--methods", "r4f", "--probe-tasks", "QNLI", "--tiny", "--fairseq-train", f"bash {wrapper}",
                      check=False)
    assert proc.returncode == 1
    assert ("step r4f/seed1/finetune-SST-2 did not run method r4f: r4f needs an SN architecture (roberta_sn_*, "
            "bart_sn_*), the checkpoint has --arch roberta_base") in proc.stderr
    assert not (work / "state.json").exists() or json.loads((work / "state.json").read_text())["steps"] == {}
    assert not (work / "results.json").exists()


@pytest.mark.parametrize("flags, named", [
    (["--", "--lr", "nan"], "--lr nan"),
    (["--method", "r3f=--r3f-lambda inf"], "--r3f-lambda inf"),
    (["--", "--eps=-inf"], "--eps -inf"),
])
def test_numbers_that_are_not_finite_are_refused(tmp_path, glue_root, flags, named):
    extra = flags if flags[0] == "--" else []
    own = [] if extra else flags
    message = refusal("--data-root", glue_root, "--work-dir", tmp_path / "work", "--methods", "r3f",
                      "--probe-tasks", "QNLI", "--tiny", *own, *extra)
    assert message == f"error: {named} (in the flags of step r3f/seed1/finetune-SST-2): give a finite number"
    assert not (tmp_path / "work" / "runs").exists()


def test_tiny_mode_sets_the_tiny_cpu_model(tmp_path, glue_root):
    dry = run_in_process_output("--data-root", glue_root, "--work-dir", tmp_path, "--probe-tasks", "QNLI",
                                "--methods", "std++", "--tiny", "--tiny-updates", "3", "--dry-run")
    for command in re.findall(r"^\S*fairseq.*$", dry, flags=re.M):
        for expected in ("--encoder-layers 2 --encoder-embed-dim 32", "--max-positions 64", "--max-update 3",
                         "--total-num-update 3", "--warmup-updates 1", "--cpu"):
            assert expected in command
        assert command.index("--max-positions 64") > command.index("--max-positions 512")  # overrides the table


def test_smart_runs_the_values_of_the_table(tmp_path, glue_root):
    from r3f_runs.tables import read_table

    dry = run_in_process_output("--data-root", glue_root, "--work-dir", tmp_path, "--probe-tasks", "QNLI",
                                "--methods", "smart", "--dry-run")
    finetune = re.search(r"smart/seed1/finetune-SST-2\n(.*)", dry).group(1)
    table = read_table("glue.tsv")
    for name in ("lambda", "steps", "step_size", "eps", "init", "norm"):
        assert f" --smart-{name.replace('_', '-')} {table['smart_' + name]['value']}" in finetune


def test_inf_passes_where_it_has_a_meaning(tmp_path, glue_root):
    dry = run_in_process_output("--data-root", glue_root, "--work-dir", tmp_path, "--probe-tasks", "QNLI",
                                "--methods", "freelb", "--method", "freelb=--criterion sentence_prediction_freelb "
                                "--freelb-max-norm inf", "--tiny", "--dry-run")
    assert "--freelb-max-norm inf" in dry  # an unconstrained FreeLB ball


def test_a_checkpoint_cut_off_while_saved_is_named(tmp_path, glue_root):
    from fairseq_r3f.probing.runner import StepFailed

    last = tmp_path / "work" / FINETUNE / "checkpoint_last.pt"
    last.parent.mkdir(parents=True)
    last.write_bytes(b"PK\x03\x04 cut off")
    with pytest.raises(StepFailed, match=re.escape(f"{last} cannot be read") + ".* delete it"):
        run_in_process("generalisation", "--data-root", glue_root, "--work-dir", tmp_path / "work", "--methods",
                       "r3f", "--probe-tasks", "QNLI", "--tiny")
    assert not (last.parent / "train.log").exists()  # nothing was launched
