"""python -m r3f_runs on real tiny checkpoints: the identity read back from what fairseq-train saved,
a mislabelled run refused, and the versions a run folder records."""

import json
import os
import subprocess
import sys

import fairseq
import pytest
import torch

from conftest import REPO, run_fairseq, train_args
from r3f_runs.configuration import configuration_differences, configuration_from_args, effective_configuration
from r3f_runs.identity import label_mismatches


def runs_cli(*args):
    return subprocess.run([sys.executable, "-m", "r3f_runs", *args], capture_output=True, text=True,
                          cwd=REPO)


def arguments(toy_task, folder, *extra, arch="roberta_base", criterion="sentence_prediction_r3f"):
    return train_args(toy_task, str(folder), "--max-update", "2", "--seed", "3", *extra, arch=arch,
                      criterion=criterion)


def train(toy_task, folder, *extra, arch="roberta_base", criterion="sentence_prediction_r3f", label=None):
    os.makedirs(folder)
    proc, _ = run_fairseq("train", arguments(toy_task, folder, *extra, arch=arch, criterion=criterion))
    (folder / "train.log").write_text("# 2026-01-01T00:00:00Z start\n" + proc.stdout + proc.stderr)
    if label is not None:
        (folder / "run.json").write_text(json.dumps(label))
    return folder


R4F_LABEL = {"task": "RTE", "method": "r4f", "config": "lambda0.5_normal", "seed": 3, "r3f_lambda": 0.5,
             "noise_type": "normal", "eps": 1e-5}


@pytest.fixture(scope="module")
def plain_run(toy_task, tmp_path_factory):
    """An R3F run on the plain head, labelled r4f (what an --arch override used to produce)."""
    return train(toy_task, tmp_path_factory.mktemp("runs") / "plain", "--r3f-lambda", "0.5", "--noise-type",
                 "normal", label=R4F_LABEL)


def test_identify_reads_an_r4f_run_back_from_its_checkpoint(toy_task, tmp_path):
    run = train(toy_task, tmp_path / "r4f", "--r3f-lambda", "0.5", "--noise-type", "normal", arch="roberta_sn_base",
                label=R4F_LABEL)
    proc = runs_cli("identify", str(run))
    assert proc.returncode == 0, proc.stderr
    written = json.loads((run / "identity.json").read_text())
    for ident in (json.loads(proc.stdout), written):
        assert ident["arch"] == "roberta_sn_base" and ident["spectral_norm_head"] is True
        assert ident["criterion"] == "sentence_prediction_r3f" and ident["task"] == "sentence_prediction"
        assert (ident["r3f_lambda"], ident["noise_type"], ident["eps"], ident["seed"]) == (0.5, "normal", 1e-5, 3)
        assert ident["num_updates"] == 2
    assert written["mismatches"] == []
    # the configuration read back from the checkpoint is the one fairseq's parser builds from the same arguments
    planned = effective_configuration(configuration_from_args(arguments(
        toy_task, run, "--r3f-lambda", "0.5", "--noise-type", "normal", arch="roberta_sn_base")))
    assert configuration_differences(written["configuration"], planned) == []
    assert written["configuration"]["model._name"] == "roberta_sn_base"
    assert written["configuration"]["criterion.r3f_lambda"] == 0.5

    # finished only with done, the checkpoint at the log's last update and done's planned end
    assert runs_cli("status", str(run)).stdout.startswith("unfinished: no done file")
    (run / "done").write_text(json.dumps({"num_updates": 2, "finished": "2026-01-01T00:00:00Z"}))
    proc = runs_cli("status", str(run))
    assert (proc.returncode, proc.stdout) == (0, "finished: update 2\n")
    (run / "done").write_text(json.dumps({"num_updates": 3, "finished": "2026-01-01T00:00:00Z"}))
    assert runs_cli("status", str(run)).stdout == "failed: stopped at update 2, the planned end recorded in done is 3\n"
    log = (run / "train.log").read_text()
    (run / "train.log").write_text(log[: log.index('"num_updates": "2"')])  # cut before the last update's record
    proc = runs_cli("status", str(run))
    assert proc.returncode == 1 and proc.stdout.startswith("truncated: train.log ends at update 1, the checkpoint is "
                                                           "at update 2")


def test_an_r4f_label_on_a_plain_head_is_refused_with_one_line(plain_run):
    proc = runs_cli("identify", str(plain_run))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "r4f needs an SN architecture" in lines[0] and "--arch roberta_base" in lines[0]
    assert str(plain_run) in lines[0]
    # what ran is still written down, with the disagreement
    ident = json.loads((plain_run / "identity.json").read_text())
    assert ident["spectral_norm_head"] is False and ident["mismatches"]


def test_settings_that_differ_from_the_label_are_each_named(plain_run):
    (plain_run / "run.json").write_text(json.dumps({**R4F_LABEL, "method": "r3f", "r3f_lambda": 1.0, "seed": 4}))
    proc = runs_cli("identify", str(plain_run))
    assert proc.returncode == 2
    assert "run.json has r3f_lambda 1.0, the checkpoint 0.5" in proc.stderr
    assert "run.json has seed 4, the checkpoint 3" in proc.stderr
    assert "SN architecture" not in proc.stderr  # r3f on a plain head is right
    (plain_run / "run.json").write_text(json.dumps({**R4F_LABEL, "method": "r3f"}))
    assert runs_cli("identify", str(plain_run)).returncode == 0


def test_freelb_needs_its_criterion_and_its_task(toy_task, tmp_path):
    run = train(toy_task, tmp_path / "freelb", "--freelb-steps", "1", "--task", "sentence_prediction_freelb",
                criterion="sentence_prediction_freelb",
                label={"task": "RTE", "method": "freelb", "config": "default", "seed": 3, "freelb_steps": 1})
    proc = runs_cli("identify", str(run))
    assert proc.returncode == 0, proc.stderr
    ident = json.loads(proc.stdout)
    assert ident["criterion"] == ident["task"] == "sentence_prediction_freelb" and ident["freelb_steps"] == 1
    for method, expected in (("std++", "std++ needs --criterion sentence_prediction, the checkpoint was trained "
                              "with sentence_prediction_freelb"),
                             ("smart", "smart needs --criterion sentence_prediction_smart")):
        (run / "run.json").write_text(json.dumps({"task": "RTE", "method": method, "seed": 3}))
        proc = runs_cli("identify", str(run))
        assert proc.returncode == 2 and expected in proc.stderr
    # a FreeLB criterion under fairseq's plain task
    assert label_mismatches({"method": "freelb"}, {**ident, "task": "sentence_prediction"}) == [
        "freelb needs --task sentence_prediction_freelb, the checkpoint was trained with sentence_prediction"]


def test_label_rules_for_the_other_methods():
    plain = {"criterion": "sentence_prediction", "task": "sentence_prediction", "arch": "roberta_large",
             "spectral_norm_head": False, "seed": 1}
    assert label_mismatches({"method": "std", "r3f_lambda": 0, "noise_type": "none", "seed": 1}, plain) == []
    assert label_mismatches({"method": "std", "seed": 1}, {**plain, "arch": "roberta_sn_large",
                                                             "spectral_norm_head": True})[0].startswith(
        "std needs a plain classification head")
    smart = {**plain, "criterion": "sentence_prediction_smart", "smart_lambda": 1.0, "smart_steps": 1}
    assert label_mismatches({"method": "smart", "smart_lambda": "1.0", "smart_steps": 1}, smart) == []
    assert label_mismatches({"method": "smart", "smart_lambda": 3}, smart) == [
        "run.json has smart_lambda 3, the checkpoint 1.0"]
    summarization = {"criterion": "label_smoothed_cross_entropy_r3f", "task": "translation", "arch": "bart_large",
                     "spectral_norm_head": False, "r3f_lambda": 0.01, "noise_type": "uniform", "eps": 1e-5}
    assert label_mismatches({"dataset": "cnn_dm", "r3f_lambda": 0.01, "noise_type": "uniform"}, summarization) == []
    assert label_mismatches({"dataset": "cnn_dm"}, {**summarization, "criterion": "cross_entropy"}) == [
        "summarization cnn_dm needs --criterion label_smoothed_cross_entropy_r3f, the checkpoint was trained "
        "with cross_entropy"]
    assert label_mismatches({"method": "R3F"}, plain)[0].startswith("run.json names method 'R3F'")


def test_identify_without_a_checkpoint_is_one_clear_error(tmp_path):
    proc = runs_cli("identify", str(tmp_path))
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"error: {tmp_path} has no checkpoint_last.pt: nothing to identify " \
                                  "(has the run saved a checkpoint?)"


def test_versions_name_the_installed_packages_and_the_commit():
    import fairseq_r3f

    proc = runs_cli("versions")
    assert proc.returncode == 0, proc.stderr
    found = json.loads(proc.stdout)
    assert found["fairseq_r3f"] == fairseq_r3f.__version__
    assert found["fairseq"] == fairseq.__version__ and found["torch"] == torch.__version__
    head = subprocess.run(["git", "-C", REPO, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    if head:  # a git checkout: its commit, marked when tracked files differ from it
        assert found["git_commit"].split("+")[0] == head
    else:
        assert found["git_commit"] is None
