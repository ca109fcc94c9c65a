"""fairseq_r3f/hparams/freelb_tasks.tsv holds FreeLB's per-task settings as its authors launched them."""

import csv
import math
import os

import pytest

import fairseq_r3f

TABLE = os.path.join(os.path.dirname(fairseq_r3f.__file__), "hparams", "freelb_tasks.tsv")

# Read from zhuchen03/FreeLB, fairseq-RoBERTa/launch/FreeLB/<script>, columns ADV_LR, ADV_STEPS, INIT_MAG, MNORM
# of the run_exp lines (the active ones unless said otherwise).
PUBLISHED = {
    "MNLI": (1e-1, 2, 1e-1, 3e-1, "mnli-fp32-clip.sh"),
    "QNLI": (7.5e-2, 2, 1.5e-1, 1.5e-1, "qnli-fp32-clip.sh"),
    "QQP": (2e-1, 2, 3.2e-1, 7e-1, "qqp-fp32-clip.sh"),
    "SST-2": (1e-1, 2, 1.0, 6e-1, "sst-fp32-clip.sh"),
    "RTE": (6e-2, 3, 1.6e-1, 1.4e-1, "rte-fp32-clip.sh"),  # commented lines: the active ones are plain fine-tuning
    "MRPC": (4e-2, 3, 0.64, 4e-1, "mrpc-fp32-clip.sh"),
    "CoLA": (2.5e-2, 3, 4e-1, 3e-1, "cola-fp32-clip.sh"),
    "STS-B": (1e-1, 3, 1.6e-1, 2.8e-1, "stsb-fp32.sh"),
}


def read_table():
    with open(TABLE, newline="") as f:
        lines = [line for line in f if line.strip() and not line.startswith("#")]
    return list(csv.DictReader(lines, delimiter="\t"))


def test_every_glue_task_has_the_published_values_with_their_script():
    rows = read_table()
    assert [r["task"] for r in rows] == list(PUBLISHED)
    for row in rows:
        adv_lr, steps, init_mag, max_norm, script = PUBLISHED[row["task"]]
        assert (float(row["adv_lr"]), int(row["adv_steps"]), float(row["init_mag"]), float(row["max_norm"])) == \
            pytest.approx((adv_lr, steps, init_mag, max_norm)), row["task"]
        assert row["source"].startswith(script + ":"), row["source"]


def test_the_rows_say_where_they_differ_from_the_active_lines_and_are_valid_plugin_values():
    rows = {r["task"]: r for r in read_table()}
    assert "active lines run plain fine-tuning" in rows["RTE"]["source"]
    assert "commented" in rows["RTE"]["source"]
    for row in rows.values():
        assert int(row["adv_steps"]) >= 1
        for name in ("adv_lr", "init_mag", "max_norm"):  # --freelb-* accept finite numbers > 0 here
            assert math.isfinite(float(row[name])) and float(row[name]) > 0, (row["task"], name)


def test_the_tasks_are_those_of_the_glue_table():
    with open(os.path.join(os.path.dirname(TABLE), "glue_tasks.tsv"), newline="") as f:
        lines = [line for line in f if line.strip() and not line.startswith("#")]
    glue = [r["task"] for r in csv.DictReader(lines, delimiter="\t")]
    assert sorted(glue) == sorted(r["task"] for r in read_table())
