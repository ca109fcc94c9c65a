"""python -m fairseq_r3f.evaluation.results on real tiny fairseq-train runs laid out as the recipes lay them out:
a run killed after its first saved checkpoint and launched again gives the table of an uninterrupted run, the
wall clock continues across the resume (Figure 1), noise_kept, the dev halves of split-dev, a mislabelled
checkpoint refused, and the XNLI table's progress and quiet terminal."""

import datetime
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, train_args
from r3f_runs.train_log import ELAPSED, final_trajectory, launches
from fairseq_r3f.tools import fairseq_command

ENV = {**os.environ, "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1"}
R3F_LABEL = {"task": "SST-2", "method": "r3f", "config": "lambda0.5_normal", "seed": 1, "r3f_lambda": 0.5,
             "noise_type": "normal", "search": {"configurations": 1}}
STD_LABEL = {"task": "SST-2", "method": "std", "config": "default", "seed": 1, "r3f_lambda": 0, "noise_type": "none"}


def start(data, run_dir, label, *extra, criterion="sentence_prediction_r3f"):
    """Starts fairseq-train as recipes/common.sh does: run.json, then a start line and the output in train.log."""
    os.makedirs(run_dir, exist_ok=True)
    run_dir = Path(run_dir)
    with open(os.path.join(run_dir, "run.json"), "w") as f:
        json.dump(label, f)
    command = fairseq_command("fairseq-train") + train_args(
        data, str(run_dir), "--max-update", "48", "--save-interval-updates", "6", "--valid-subset",
        "valid,valid_a,valid_b", "--best-checkpoint-metric", "accuracy", "--maximize-best-checkpoint-metric",
        *extra, criterion=criterion)
    log = open(os.path.join(run_dir, "train.log"), "a")
    log.write(f"# {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%dT%H:%M:%SZ} start\n")
    log.flush()
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=ENV)
    proc.run_dir = run_dir
    return proc


def finish(proc):
    """Waits for the run, then marks it done as the recipes do once training has ended."""
    assert proc.wait(timeout=300) == 0
    (proc.run_dir / "done").write_text("")


def results(*args):
    return subprocess.run([sys.executable, "-m", "fairseq_r3f.evaluation.results", *map(str, args)],
                          capture_output=True, text=True, cwd=REPO, env=ENV)


def records_of(run_dir):
    with open(os.path.join(run_dir, "train.log")) as f:
        return final_trajectory(f.read())


@pytest.fixture(scope="module")
def runs(toy_task, tmp_path_factory):
    root = tmp_path_factory.mktemp("glue_runs")
    data = str(root / "data-bin")
    shutil.copytree(toy_task, data)
    split = results("split-dev", data)
    assert split.returncode == 0, split.stderr
    run = "SST-2/r3f/lambda0.5_normal/seed1"
    whole, killed = root / "whole" / run, root / "killed" / run
    r3f = ["--r3f-lambda", "0.5", "--noise-type", "normal"]
    finish(start(data, whole, R3F_LABEL, *r3f))
    proc = start(data, killed, R3F_LABEL, *r3f)
    deadline = time.time() + 300
    while "Saved checkpoint" not in open(killed / "train.log").read():
        assert proc.poll() is None and time.time() < deadline, "the run ended before its first checkpoint"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    shutil.copytree(killed, root / "interrupted")  # what a SIGKILL leaves: a checkpoint, no done
    finish(start(data, killed, R3F_LABEL, *r3f))  # the same command again: fairseq resumes checkpoint_last.pt
    std = root / "both" / "SST-2/std/default/seed1"
    finish(start(data, std, STD_LABEL, "--max-update", "12", criterion="sentence_prediction"))
    shutil.copytree(whole, root / "both" / run)
    both = results("glue", root / "both", "--out", root / "out_both")  # the tables of an STD and an R3F run
    return {"root": root, "data": data, "whole": whole, "killed": killed, "std": std, "split": split.stdout,
            "interrupted": root / "interrupted", "both": both}


def test_what_real_runs_ran_decides_the_cells(runs):
    """Real checkpoints: a seed launched with --dropout 0.0 after the method gets a row of its own, a killed run
    and a run whose train.log was cut in half are named and left out."""
    root = runs["root"] / "mixed"
    shutil.copytree(runs["std"], root / "SST-2/std/default/seed1")
    odd = root / "SST-2/std/default/seed2"
    finish(start(runs["data"], odd, {**STD_LABEL, "seed": 2}, "--max-update", "12", "--seed", "2", "--dropout",
                 "0.0", criterion="sentence_prediction"))
    shutil.copytree(runs["whole"], root / "SST-2/r3f/lambda0.5_normal/seed1")
    killed = root / "SST-2/r3f/lambda0.5_normal/seed2"
    shutil.copytree(runs["interrupted"], killed)
    cut = root / "SST-2/r3f/lambda0.5_normal/seed3"
    shutil.copytree(runs["whole"], cut)
    log = (cut / "train.log").read_text().splitlines()
    (cut / "train.log").write_text("\n".join(log[: len(log) // 2]) + "\n")
    proc = results("glue", root, "--out", root / "out")
    assert proc.returncode == 0, proc.stderr
    table = (root / "out" / "table2.md").read_text()
    best = table.split("Median over the seeds:")[0]
    assert "| STD, dropout 0.1 |" in best and "| STD, dropout 0 |" in best and "| STD |" not in best
    assert "| R3F | - | - | - | - | - | - |" in best
    assert f"{killed}: unfinished (no done file" in table
    ends = max(r["num_updates"] for r in final_trajectory("\n".join(log[: len(log) // 2]))["train_inner"])
    assert f"{cut}: truncated (train.log ends at update {ends:.0f}, the checkpoint is at update 48" in table
    rows = {line.split("\t")[7]: line.split("\t") for line in (root / "out" / "runs.tsv").read_text().splitlines()}
    assert rows[str(odd)][8:10] == ["finished", "STD, dropout 0"]
    assert rows[str(killed)][8] == "unfinished" and rows[str(cut)][8] == "truncated"


def test_a_killed_and_resumed_run_gives_the_table_of_an_uninterrupted_run(runs):
    with open(runs["killed"] / "train.log") as f:
        parts = launches(f.read())
    assert len(parts) == 2 and parts[0][0] == 0
    resumed_at = parts[1][0]
    assert 0 < resumed_at < 48  # the second launch resumed from the first one's checkpoint
    whole, killed = records_of(runs["whole"]), records_of(runs["killed"])
    for subset in ("valid", "valid_a", "valid_b"):
        assert [(r[f"{subset}_num_updates"], r[f"{subset}_accuracy"]) for r in killed[subset]] == [
            (r[f"{subset}_num_updates"], r[f"{subset}_accuracy"]) for r in whole[subset]]
    assert [r["num_updates"] for r in killed["train_inner"]] == list(range(1, 49))
    tables = {}
    for name in ("whole", "killed"):
        for half in ([], ["--select-on-half", "first"]):
            out = runs["root"] / f"out_{name}{len(half)}"
            proc = results("glue", runs["root"] / name, "--out", out, *half)
            assert proc.returncode == 0, proc.stderr
            assert "left out" not in proc.stderr  # identity read from checkpoint_last.pt: the label holds
            tables[(name, len(half))] = (out / "table2.md").read_text()
            rows = (out / "runs.tsv").read_text().splitlines()
            tables[(name, len(half), "tsv")] = [line.split("\t")[:6] for line in rows]
    for half in (0, 2):
        assert tables[("whole", half)] == tables[("killed", half)]
        assert tables[("whole", half, "tsv")] == tables[("killed", half, "tsv")]
    assert "| R3F | - | - | - | - | - | - |" in tables[("whole", 0)]  # an SST-2 cell with a value


def test_seconds_to_best_count_both_launches_of_a_resumed_run_and_figure_1(runs):
    with open(runs["killed"] / "train.log") as f:
        (_, first), (resumed_at, second) = launches(f.read())
    # fairseq's own wall meter does not continue: it reads 0 through the launch that resumed mid-epoch
    assert {r["wall"] for r in second["train_inner"]} == {0.0}
    first_part = max(r[ELAPSED] for rs in first.values() for r in rs
                     if (r.get("num_updates") or r.get("valid_num_updates") or 0) <= resumed_at)
    records = records_of(runs["killed"])
    best = max(reversed(records["valid"]), key=lambda r: r["valid_accuracy"])
    own = [r for r in second["valid"] if r["valid_num_updates"] == best["valid_num_updates"]]
    if own:  # the best round is in the second launch: both launches count
        assert best[ELAPSED] == first_part + own[0][ELAPSED]

    out = runs["root"] / "out_both"
    assert runs["both"].returncode == 0, runs["both"].stderr
    rows = {line.split("\t")[1]: line.split("\t") for line in (out / "runs.tsv").read_text().splitlines()[1:]}
    for method, folder in (("r3f", runs["whole"]), ("std", runs["std"])):
        log = (folder / "train.log").read_text()
        stamps = [datetime.datetime.strptime(line[:19], "%Y-%m-%d %H:%M:%S") for line in log.splitlines()
                  if line[:2] == "20" and line[19:22] == " | "]
        records = records_of(folder)
        best = max(reversed(records["valid"]), key=lambda r: r["valid_accuracy"])
        best_line = [line for line in log.splitlines() if f'"valid_num_updates": "{best["valid_num_updates"]:.0f}"'
                     in line and "| valid |" in line][0]
        seconds = datetime.datetime.strptime(best_line[:19], "%Y-%m-%d %H:%M:%S") - stamps[0]
        assert rows[method][6] == f"{seconds.total_seconds():.0f}"
    figure = (out / "figure1.md").read_text()
    assert "Wall-clock seconds to the best checkpoint" in figure
    assert any(line.startswith("| STD | ") and "n=1" in line for line in figure.splitlines())
    assert any(line.startswith("| R3F | ") and "n=1" in line for line in figure.splitlines())
    assert (out / "figure1.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_noise_kept_of_real_runs(runs):
    out = runs["root"] / "out_both"
    assert runs["both"].returncode == 0, runs["both"].stderr
    rows = {line.split("\t")[1]: line.split("\t") for line in (out / "runs.tsv").read_text().splitlines()[1:]}
    kept = [r["noise_kept"] for r in records_of(runs["whole"])["train_inner"]]
    assert len(kept) == 48 and rows["r3f"][5] == f"{sum(kept) / len(kept):.2f}"
    assert rows["std"][5] == "-"
    noise = (out / "table2.md").read_text().split("Noise kept")[1]
    assert "| STD | - | - | - | - | - | - | - |" in noise
    assert f"| R3F | - | - | - | - | - | - | {sum(kept) / len(kept):.1f} |" in noise


def test_split_dev_halves_partition_the_dev_set_and_select_on_half_reports_the_other(runs):
    from fairseq.data import indexed_dataset

    def rows(subset):
        ds = {k: indexed_dataset.MMapIndexedDataset(os.path.join(runs["data"], k, subset)) for k in ("input0", "label")}
        return [(tuple(ds["input0"][i].tolist()), tuple(ds["label"][i].tolist())) for i in range(len(ds["input0"]))]

    a, b, whole = rows("valid_a"), rows("valid_b"), rows("valid")
    assert (len(a), len(b)) == (32, 32) and sorted(a + b) == sorted(whole)
    assert "valid_a (32 examples), valid_b (32 examples)" in runs["split"]
    records = records_of(runs["whole"])
    best_a = max(records["valid_a"], key=lambda r: r["valid_a_accuracy"])
    reported = [r["valid_b_accuracy"] for r in records["valid_b"]
                if r["valid_b_num_updates"] == best_a["valid_a_num_updates"]][0]
    table = (runs["root"] / "out_whole2" / "table2.md").read_text()
    assert "selected on dev half A (valid_a), reported on half B (valid_b)" in table
    assert f"| R3F | - | - | - | - | - | - | {reported:.1f} |" in table
    assert results("split-dev", runs["root"]).returncode == 2


def test_a_checkpoint_that_contradicts_its_label_stops_the_tables(runs):
    folder = runs["root"] / "mislabelled" / "SST-2/r4f/lambda0.5_normal/seed1"
    shutil.copytree(runs["whole"], folder)
    (folder / "run.json").write_text(json.dumps({**R3F_LABEL, "method": "r4f"}))
    proc = results("glue", runs["root"] / "mislabelled")
    assert proc.returncode == 2
    assert "1 run(s) did not train what their run.json says" in proc.stderr
    assert f"{folder}: r4f needs an SN architecture" in proc.stderr


def xnli_data(runs):
    data = runs["root"] / "xnli-bin"
    if not data.exists():
        shutil.copytree(runs["data"], data)
        for key in ("input0", "label"):
            for lang in ("en", "fr"):
                for ext in ("bin", "idx"):
                    shutil.copy(data / key / f"valid.{ext}", data / key / f"test_{lang}.{ext}")
    return data


def test_xnli_languages_progress_and_a_quiet_terminal(runs):
    data, checkpoint = xnli_data(runs), runs["whole"] / "checkpoint_best.pt"
    outputs = {}
    for languages in ("en fr", "en,fr"):
        out = runs["root"] / f"xnli_{languages[2]}"
        proc = results("xnli", "--data", data, "--checkpoint", checkpoint, "--languages", languages, "--cpu",
                       "--batch-size", "8", "--out", out)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.splitlines()[0] == "| Model | en | fr | Avg |"
        assert all(line.startswith("|") or not line for line in proc.stdout.splitlines())  # only the table
        assert "1/1" in proc.stderr and "INFO" not in proc.stderr  # the progress bar, no fairseq output
        assert "fairseq_cli.validate" in (out / "validate_1.log").read_text()  # which is in the log
        outputs[languages] = proc.stdout
    assert outputs["en fr"] == outputs["en,fr"]
    repeated = results("xnli", "--data", data, "--checkpoint", checkpoint, "--languages", "en, fr en", "--cpu")
    assert repeated.returncode == 2 and "--languages names en more than once" in repeated.stderr


def test_xnli_failure_names_the_log(runs, tmp_path):
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a checkpoint")
    proc = results("xnli", "--data", xnli_data(runs), "--checkpoint", broken, "--languages", "en", "--cpu",
                   "--out", tmp_path / "out")
    assert proc.returncode == 2
    log = tmp_path / "out" / "validate_1.log"
    assert f"its full output is in {log}" in proc.stderr and log.read_text()
    assert len(proc.stderr.splitlines()) < 25  # the error and the log's tail, not fairseq's whole output
