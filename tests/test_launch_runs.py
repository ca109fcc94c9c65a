"""The run layer through the real recipe command (recipes/glue.sh, TINY=1, two updates on the CPU): settings
after METHOD recorded in run.json and checked against the checkpoint, a relaunch with other settings refused, a
kill between the end of training and ``done`` not training past the planned end, two launches on one folder,
and a damaged run.json named."""

import json
import os
import subprocess
import sys
import time

import pytest

from conftest import REPO
from fairseq_r3f.toy_data import write_toy_task

GLUE_SH = os.path.join(REPO, "recipes", "glue.sh")
BIN = os.path.dirname(sys.executable)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("launch")
    data_bin = write_toy_task(str(root / "toy"), n_train=64, n_valid=16, pairs=True)
    os.makedirs(root / "glue")
    os.symlink(data_bin, root / "glue" / "RTE-bin")
    return str(root / "glue")


def env(data, save, **extra):
    return {**os.environ, "PATH": BIN + os.pathsep + os.environ["PATH"], "OMP_NUM_THREADS": "1", "DATA_DIR": data,
            "SAVE_ROOT": str(save), "TINY": "1", "TINY_UPDATES": "2", "SEEDS": "1",
            **{k: str(v) for k, v in extra.items()}}


def recipe(args, data, save, wait=True, **extra):
    command = [GLUE_SH, *args]
    if not wait:
        return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
                                env=env(data, save, **extra))
    return subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=env(data, save, **extra))


def starts(run_dir):
    with open(os.path.join(run_dir, "train.log")) as f:
        return sum(1 for line in f if line.startswith("# ") and line.rstrip().endswith(" start"))


def checkpoint_updates(run_dir):
    import torch

    state = torch.load(os.path.join(run_dir, "checkpoint_last.pt"), map_location="cpu", weights_only=False)
    return state["optimizer_history"][-1]["num_updates"]


def test_settings_after_method_are_recorded_checked_and_a_different_relaunch_is_refused(data, tmp_path):
    proc = recipe(["RTE", "std", "--dropout", "0.0"], data, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = tmp_path / "RTE" / "std" / "default" / "seed1"
    label = json.loads((run_dir / "run.json").read_text())
    assert label["overrides"] == ["--dropout", "0.0"] and label["recipe"] == "glue"
    assert label["command"][-2:] == ["--dropout", "0.0"]
    assert label["planned_configuration"]["model.dropout"] == 0
    identity = json.loads((run_dir / "identity.json").read_text())
    assert identity["configuration"]["model.dropout"] == 0
    assert json.loads((run_dir / "done").read_text())["num_updates"] == 2
    [entry] = json.loads((tmp_path / "RTE" / "std" / "plan.json").read_text())["runs"]
    assert entry == {"dir": "default/seed1", "config": "default", "seed": 1,
                     "configuration": label["planned_configuration"]}

    # the same folder launched without the flag: refused with the field named, never skipped as done
    proc = recipe(["RTE", "std"], data, tmp_path)
    assert proc.returncode == 2 and "model.dropout" in proc.stderr and "another plan" in proc.stderr, proc.stderr
    assert "already done" not in proc.stderr
    # the same command: skipped as done
    proc = recipe(["RTE", "std", "--dropout", "0.0"], data, tmp_path)
    assert proc.returncode == 0 and "already done" in proc.stderr and starts(run_dir) == 1

    # a kill after fairseq-train ended but before the record: the same command records it without training
    for name in ("done", "identity.json", "trained"):
        os.remove(run_dir / name)
    proc = recipe(["RTE", "std", "--dropout", "0.0"], data, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "already reached the planned end" in proc.stderr and starts(run_dir) == 1
    assert checkpoint_updates(str(run_dir)) == 2 and json.loads((run_dir / "done").read_text())["num_updates"] == 2

    # a damaged run.json: named, with what to do, no traceback
    (run_dir / "run.json").write_text('{"task": "RTE", "meth')
    os.remove(run_dir / "done")
    proc = recipe(["RTE", "std", "--dropout", "0.0"], data, tmp_path)
    assert proc.returncode == 2 and str(run_dir / "run.json") in proc.stderr and "damaged" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_second_launch_on_a_run_folder_in_use_is_refused(data, tmp_path):
    first = recipe(["RTE", "r3f"], data, tmp_path, wait=False, TINY_UPDATES=4)
    run_dir = tmp_path / "RTE" / "r3f" / "lambda1.0_uniform" / "seed1"
    deadline = time.monotonic() + 120
    while not (run_dir / "train.log").exists() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    try:
        second = recipe(["RTE", "r3f"], data, tmp_path, TINY_UPDATES=4)
    finally:
        out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err[-3000:]
    assert second.returncode == 2, second.stderr[-3000:]
    [line] = [line for line in second.stderr.splitlines() if line.startswith("error:")]
    assert f"pid {first.pid}" in line and "host" in line and "started" in line and "in use" in line
    assert checkpoint_updates(str(run_dir)) == 4 and starts(str(run_dir)) == 1


def test_environment_values_are_checked_through_the_recipe(data, tmp_path):
    proc = recipe(["RTE", "r3f"], data, tmp_path, R3F_LAMBDA="1e400", DRY_RUN=1)
    assert proc.returncode == 2 and "R3F_LAMBDA: lambda 1e400" in proc.stderr and proc.stdout == ""
    proc = recipe(["RTE", "r3f", "--lr", "nan"], data, tmp_path, DRY_RUN=1)
    assert proc.returncode == 2 and "--lr nan" in proc.stderr and "again" not in proc.stderr
    assert not (tmp_path / "RTE").exists()
