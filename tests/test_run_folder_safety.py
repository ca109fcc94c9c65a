"""A run folder nobody can corrupt, through the real commands (recipes/glue.sh with TINY=1 on the CPU,
fairseq-hydra-train, fairseq-train, the tools and the tables): the folder stays locked by the training itself
when its launcher is killed, also after its holder record is deleted; a log two trainings wrote is refused;
every seed count is out of the seeds planned for that configuration; settings that cannot run here are refused
before a folder exists, and a failure a rerun cannot fix advises none; a checkpoint that would run code when
unpickled is refused by every entry point that reads one."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import REPO, train_args
from fairseq_r3f.tools import fairseq_command
from fairseq_r3f.toy_data import write_toy_task
from test_launch_runs import checkpoint_updates, recipe, starts
from r3f_runs.cli import run_recipe

PYTHON_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """DATA_DIR of a toy RTE (recipes/glue.sh's layout)."""
    root = tmp_path_factory.mktemp("data")
    os.makedirs(root / "glue")
    os.symlink(write_toy_task(str(root / "toy"), n_train=64, n_valid=16, pairs=True), root / "glue" / "RTE-bin")
    return str(root / "glue")


def python_tool(*args, env=None):
    return subprocess.run([sys.executable, "-m", *map(str, args)], capture_output=True, text=True, cwd=REPO,
                          env=env or PYTHON_ENV)


def error_lines(stderr):
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def children(pid):
    """The processes whose parent is ``pid``."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry))
    return found


def wait_for_exit(pid, timeout):
    deadline = time.monotonic() + timeout
    while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
        with open(f"/proc/{pid}/stat") as f:
            if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                break
        time.sleep(0.2)


# -- the lock belongs to the training ------------------------------------------------------------------------------

def test_the_training_holds_its_folder_after_its_launcher_is_killed(data, tmp_path):
    """SIGKILL the launcher while its fairseq-train lives on: a relaunch is refused naming fairseq-train's pid
    (not the dead launcher's), and still refused after the holder record ``lock`` is deleted; once the training
    ends, the same command records the run without training it again."""
    first = recipe(["RTE", "std++"], data, tmp_path, wait=False, TINY_UPDATES=20)
    run_dir = tmp_path / "RTE" / "std++" / "default" / "seed1"
    deadline = time.monotonic() + 180
    while first.poll() is None and time.monotonic() < deadline:
        if (run_dir / "train.log").exists() and "| train_inner |" in (run_dir / "train.log").read_text():
            break
        time.sleep(0.1)
    [training] = children(first.pid)
    os.kill(training, signal.SIGSTOP)  # paused while the relaunches try: it cannot end before them
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    try:
        second = recipe(["RTE", "std++"], data, tmp_path, TINY_UPDATES=20)
        [line] = error_lines(second.stderr)
        assert second.returncode == 2 and "is in use by" in line, second.stderr[-2000:]
        assert f"fairseq-train pid {training} " in line and f"pid {first.pid} " not in line, line
        os.remove(run_dir / "lock")  # what a user who takes it for a stale lock file does
        third = recipe(["RTE", "std++"], data, tmp_path, TINY_UPDATES=20)
        assert third.returncode == 2 and "is in use by" in third.stderr, third.stderr[-2000:]
        assert starts(run_dir) == 1
    finally:
        os.kill(training, signal.SIGCONT)
        wait_for_exit(training, 300)
    fourth = recipe(["RTE", "std++"], data, tmp_path, TINY_UPDATES=20)
    assert fourth.returncode == 0, fourth.stderr[-3000:]
    assert "already reached the planned end (update 20)" in fourth.stderr and starts(run_dir) == 1
    assert checkpoint_updates(str(run_dir)) == 20
    status = python_tool("r3f_runs", "status", run_dir)
    assert status.returncode == 0 and status.stdout.strip() == "finished: update 20", status.stdout + status.stderr


# -- seed counts, and a log two trainings wrote ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def seed_runs(data, tmp_path_factory):
    """Seeds 1, 2 and 5 of RTE std, then seed 3 with --dropout 0.0, into one sweep folder."""
    save = tmp_path_factory.mktemp("seeds")
    for seeds, flags in (("1 2 5", []), ("3", ["--dropout", "0.0"])):
        proc = recipe(["RTE", "std", *flags], data, save, SEEDS=seeds)
        assert proc.returncode == 0, proc.stderr[-3000:]
    return save


def glue_results(root, out):
    proc = python_tool("fairseq_r3f.evaluation.results", "glue", root, "--out", out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(os.path.join(out, "results.json")) as f:
        return json.load(f), (out / "table2.md").read_text()


def test_each_configurations_seeds_are_counted_out_of_the_seeds_planned_for_it(seed_runs, tmp_path):
    results, table = glue_results(seed_runs, tmp_path / "table")
    cells = {cell["row"]: (cell["seeds"], cell["planned_seeds"]) for cell in results["summary"]}
    assert cells == {"STD, dropout 0.1": ([1, 2, 5], 3), "STD, dropout 0": ([3], 1)}, cells
    assert "(3/3 seeds)" in table and "(1/1 seeds)" in table and "/4 seeds" not in table

    # a planned seed without a folder: counted out of the seeds planned for its configuration, and named
    root = tmp_path / "copy"
    shutil.copytree(seed_runs, root)
    shutil.rmtree(root / "RTE" / "std" / "default" / "seed5")
    results, table = glue_results(root, tmp_path / "table_without_seed5")
    cells = {cell["row"]: (cell["seeds"], cell["planned_seeds"]) for cell in results["summary"]}
    assert cells == {"STD, dropout 0.1": ([1, 2], 3), "STD, dropout 0": ([3], 1)}, cells
    [note] = [line for line in table.splitlines() if line.startswith("RTE STD, dropout 0.1: ")]
    assert "(2/3 seeds; seed 5 missing)" in note, table


def doctored_copy(run_dir, root, edit):
    """A copy of a finished run folder whose train.log's records of its last launch went through ``edit``."""
    copy = root / "RTE" / "std" / "default" / "seed1"
    shutil.copytree(run_dir, copy)
    lines = (copy / "train.log").read_text().splitlines(keepends=True)
    records = [i for i, line in enumerate(lines) if "| train_inner |" in line or "| valid |" in line]
    (copy / "train.log").write_text("".join(lines[:records[0]] + edit([lines[i] for i in records])))
    return copy


@pytest.mark.parametrize("kind", ["repeated", "interleaved"])
def test_a_log_that_two_trainings_wrote_is_refused(seed_runs, tmp_path, kind):
    """A log whose update numbers repeat (a second training after the first, without a launch of its own) or
    interleave (two at once): refused by the status and left out of the tables with the reason, never
    finished."""
    edit = {"repeated": lambda records: records + records,
            "interleaved": lambda records: [r for pair in zip(records, records) for r in pair]}[kind]
    run = doctored_copy(seed_runs / "RTE" / "std" / "default" / "seed1", tmp_path / "runs", edit)
    status = python_tool("r3f_runs", "status", run)
    assert status.returncode == 1 and status.stdout.startswith("failed: train.log"), status.stdout + status.stderr
    assert "update 1 is logged after update" in status.stdout and "two trainings" in status.stdout
    # beside a run of one training: the table has that one and names this one under it
    shutil.copytree(seed_runs / "RTE" / "std" / "default" / "seed2", tmp_path / "runs" / "RTE" / "std" / "default" /
                    "seed2")
    results, table = glue_results(tmp_path / "runs", tmp_path / "table")
    assert [cell["seeds"] for cell in results["summary"]] == [[2]]
    assert f"{run}: failed (train.log: update 1 is logged after update" in table, table


# -- refusals before launch -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("flag", ["--fp16", "--amp"])
def test_a_precision_the_cpu_cannot_run_is_refused_before_a_folder_exists(data, tmp_path, flag):
    proc = recipe(["RTE", "std", flag], data, tmp_path)
    [line] = error_lines(proc.stderr)
    assert proc.returncode == 2 and line.startswith(f"error: {flag} ") and "CPU" in line, proc.stderr[-2000:]
    assert "resume" not in proc.stderr and not (tmp_path / "RTE").exists()


def test_every_half_precision_flag_is_refused_on_the_cpu(data, tmp_path):
    """The other half-precision flags through the launcher's entry (in this process): TINY=1 trains on the CPU
    whatever the machine; without TINY on a machine without CUDA a launch is refused and a dry run notes it."""
    from io import StringIO

    base = {"DATA_DIR": data, "SAVE_ROOT": str(tmp_path), "TINY": "1", "TINY_UPDATES": "2", "SEEDS": "1",
            "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]}
    for flag in ("--bf16", "--memory-efficient-fp16", "--memory-efficient-bf16", "--amp", "--fp16"):
        stderr = StringIO()
        assert run_recipe("glue", ["RTE", "r3f", flag], base, stderr=stderr) == 2
        assert error_lines(stderr.getvalue())[0].startswith(f"error: {flag} "), stderr.getvalue()
    if not torch.cuda.is_available():
        roberta = tmp_path / "model.pt"
        roberta.write_text("")
        full = {**base, "TINY": "0", "FP16": "0", "ROBERTA_PATH": str(roberta)}
        stderr = StringIO()
        assert run_recipe("glue", ["RTE", "r3f", "--amp"], full, stderr=stderr) == 2
        assert "error: --amp needs a CUDA GPU" in stderr.getvalue(), stderr.getvalue()
        stderr, stdout = StringIO(), StringIO()
        assert run_recipe("glue", ["RTE", "r3f", "--fp16"], {**full, "DRY_RUN": "1"}, stdout=stdout,
                                 stderr=stderr) == 0
        assert "# note: --fp16 needs a CUDA GPU" in stderr.getvalue() and "--fp16" in stdout.getvalue()
    assert not (tmp_path / "RTE").exists()


def test_a_non_finite_value_inside_a_tuple_is_refused_before_a_folder_exists(data, tmp_path):
    proc = recipe(["RTE", "std", "--adam-betas", "(0.9,nan)"], data, tmp_path)
    [line] = error_lines(proc.stderr)
    assert proc.returncode == 2 and line.startswith("error: --adam-betas (0.9,nan)") and "finite" in line, \
        proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and "resume" not in proc.stderr and not (tmp_path / "RTE").exists()


def test_a_failure_that_a_rerun_cannot_fix_advises_no_rerun(data, tmp_path):
    # every example is longer than 4 tokens: fairseq-train stops at its first batch, the same every time
    proc = recipe(["RTE", "std", "--max-tokens", "4"], data, tmp_path)
    [line] = error_lines(proc.stderr)
    assert proc.returncode == 1 and "failed (exit status 1)" in line, proc.stderr[-2000:]
    assert "resume" not in line and "same command" not in line and "checkpoint" in line, line


# -- one weights-only loader -----------------------------------------------------------------------------------------

class RunsCode:
    """Unpickling this creates the folder ``marker``: what a crafted checkpoint's code could do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.makedirs, (self.marker,)


# torch's switch that turns the weights-only default off: a load that relies on the default unpickles anything
UNSAFE_DEFAULT = {**PYTHON_ENV, "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"}


def plant(path, marker):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    torch.save({"model": {}, "cfg": {"model": None}, "optimizer_history": [{"num_updates": 1}],
                "extra_state": {"payload": RunsCode(marker)}}, str(path))


def test_a_crafted_checkpoint_runs_no_code_in_any_entry_point(data, seed_runs, toy_pair_task, tmp_path):
    marker = tmp_path / "code_ran"

    def refused(proc, *names):
        output = proc.stdout + proc.stderr
        assert proc.returncode != 0 and not marker.exists(), output[-3000:]
        for name in names:
            assert name in output, output[-3000:]

    # recipe relaunch: an unfinished run folder of the same command
    save = tmp_path / "recipe"
    run = save / "RTE" / "std" / "default" / "seed1"
    shutil.copytree(seed_runs / "RTE" / "std" / "default" / "seed1", run)
    for name in ("done", "trained", "identity.json"):
        os.remove(run / name)
    plant(run / "checkpoint_last.pt", marker)
    proc = subprocess.run([os.path.join(REPO, "recipes", "glue.sh"), "RTE", "std"], capture_output=True, text=True,
                          cwd=REPO, env={**UNSAFE_DEFAULT, "DATA_DIR": data, "SAVE_ROOT": str(save), "TINY": "1",
                                         "TINY_UPDATES": "2", "SEEDS": "1",
                                         "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]})
    refused(proc, str(run / "checkpoint_last.pt"), "weights-only")

    # hydra relaunch
    hydra_save = tmp_path / "hydra" / "seed1"
    plant(hydra_save / "checkpoint_last.pt", marker)
    proc = subprocess.run(fairseq_command("fairseq-hydra-train") + [
        "--config-name", "rte_r3f", f"hydra.run.dir={tmp_path}/hydra_out", f"task.data={toy_pair_task}",
        "checkpoint.finetune_from_model=null", f"checkpoint.save_dir={hydra_save}", "optimization.max_update=2",
        "+model.encoder_layers=2", "+model.encoder_embed_dim=32", "+model.encoder_ffn_embed_dim=64",
        "+model.encoder_attention_heads=2", "task.max_positions=64", "common.cpu=true", "common.fp16=false",
        "dataset.num_workers=0"], capture_output=True, text=True, cwd=str(tmp_path), env=UNSAFE_DEFAULT)
    refused(proc, "weights-only")

    # fairseq-train's own resume from checkpoint_last.pt
    train_save = tmp_path / "train"
    plant(train_save / "checkpoint_last.pt", marker)
    proc = subprocess.run(fairseq_command("fairseq-train") + train_args(toy_pair_task, str(train_save)),
                          capture_output=True, text=True, cwd=REPO, env=UNSAFE_DEFAULT)
    refused(proc, "weights-only")

    # export, a finished run's status and the tables (its identity.json deleted: they read the checkpoint), probing's
    # start checkpoint
    planted = tmp_path / "planted" / "checkpoint_last.pt"
    plant(planted, marker)
    refused(python_tool("fairseq_r3f.export", planted, tmp_path / "out.pt", env=UNSAFE_DEFAULT), "weights-only")
    finished = tmp_path / "finished"
    shutil.copytree(seed_runs / "RTE" / "std" / "default" / "seed1", finished)
    os.remove(finished / "identity.json")
    plant(finished / "checkpoint_last.pt", marker)
    refused(python_tool("r3f_runs", "status", finished, env=UNSAFE_DEFAULT), "weights-only")
    refused(python_tool("fairseq_r3f.evaluation.results", "glue", finished, "--out", tmp_path / "table",
                        env=UNSAFE_DEFAULT), "weights-only")
    probe = subprocess.run(
        fairseq_command("fairseq-train") + train_args(toy_pair_task, str(tmp_path / "probe"), "--task",
                                                      "sentence_prediction_probe", "--probe-checkpoint",
                                                      str(planted)),
        capture_output=True, text=True, cwd=REPO, env=UNSAFE_DEFAULT)
    refused(probe, "weights-only")
