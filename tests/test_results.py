"""fairseq_r3f.evaluation.results on run folders with known json logs: which validation round is a run's
best, max and median over seeds, the configuration shown for a sweep, Table 2's and Table 3's layouts, the
figure, and the errors. (tests/test_glue_recipes.py and tests/test_xnli.py run its command line on real tiny runs.)"""

import json
import os
import shutil
import statistics

from fairseq_r3f.evaluation.results import main
from fairseq_r3f.evaluation.selection import GLUE_COLUMNS, best_validation, collect_runs, included, summarise
from fairseq_r3f.evaluation.xnli import xnli_table
from r3f_runs.train_log import final_trajectory
from fairseq_r3f.logs import read_json_log
from r3f_runs.status import log_last_update
from r3f_runs.vocabulary import SENTENCE_METHODS


def log_line(tag, values, time="00:00:00"):
    return f"2026-01-01 {time} | INFO | {tag} | " + json.dumps({k: str(v) for k, v in values.items()})


def identity_of(method, seed, config="default", num_updates=None, **settings):
    """An identity.json as python -m r3f_runs identify writes it for a run of ``method``: its effective
    configuration here is a few real keys, with the configuration's name standing for the swept settings."""
    criterion, task, sn = SENTENCE_METHODS[method]
    arch = "roberta_sn_large" if sn else "roberta_large"
    configuration = {"model._name": arch, "criterion._name": criterion, "model.dropout": 0.1,
                     "optimization.max_update": 2036, SWEPT: config, **settings}
    return {"criterion": criterion, "task": task or "sentence_prediction", "spectral_norm_head": sn,
            "arch": arch, "seed": seed, "num_updates": num_updates, "configuration": configuration}


# The stand-in for the settings a search varies (criterion.r3f_lambda, optimization.lr, ...).
SWEPT = "criterion.grid_point"


def valid_lines(rounds, start=1):
    """rounds: [{subset: {metric: value}}] in validation order, at 10 x start, 10 x (start + 1), ... updates."""
    lines = []
    for k, round_ in enumerate(rounds, start=start):
        lines.append(log_line("train_inner", {"epoch": 1, "loss": 0.7, "num_updates": 10 * k}))
        for subset, metrics in round_.items():
            lines.append(log_line(subset, {**{f"{subset}_{m}": v for m, v in metrics.items()},
                                           f"{subset}_num_updates": 10 * k, f"{subset}_loss": 0.5}))
    return lines


def write_run(root, task, method, config, seed, rounds, log=None, identity=True, finished=True, settings=None,
              **label):
    """A run folder with run.json, identity.json, a train.log of ``rounds`` (or the lines ``log``) and, when
    ``finished``, the launcher's done at the log's last update; ``settings`` change the run's configuration."""
    folder = os.path.join(root, task, method, config, f"seed{seed}")
    os.makedirs(folder)
    with open(os.path.join(folder, "run.json"), "w") as f:
        json.dump({"task": task, "method": method, "config": config, "seed": seed, "swept": [SWEPT], **label}, f)
    lines = log if log is not None else valid_lines(rounds)
    with open(os.path.join(folder, "train.log"), "w") as f:
        f.write("\n".join(lines) + "\n")
    last = log_last_update(folder)
    if identity:
        with open(os.path.join(folder, "identity.json"), "w") as f:
            json.dump(identity_of(method, seed, config, last, **(settings or {})), f)
    if finished:
        with open(os.path.join(folder, "done"), "w") as f:
            json.dump({"num_updates": last, "finished": "2026-01-01T00:00:00Z"}, f)
    return folder


def test_best_round_is_chosen_by_the_first_metric_and_the_second_comes_from_the_same_round(tmp_path):
    folder = write_run(tmp_path, "MNLI", "r3f", "lambda1.0_uniform", 1, [
        {"valid": {"accuracy": 80.0}, "valid1": {"accuracy": 85.0}},
        {"valid": {"accuracy": 82.5}, "valid1": {"accuracy": 81.0}},  # best matched: mismatched 81, not 85
        {"valid": {"accuracy": 82.5}, "valid1": {"accuracy": 90.0}},  # fairseq's checkpoint_best takes a tie
        {"valid": {"accuracy": 82.0}, "valid1": {"accuracy": 95.0}},
    ])
    records = read_json_log(open(os.path.join(folder, "train.log")).read())
    assert best_validation(records, GLUE_COLUMNS["MNLI"][1]) == [82.5, 90.0]
    folder = write_run(tmp_path, "QQP", "std", "default", 1, [
        {"valid": {"accuracy": 90.0, "f1": 88.0}}, {"valid": {"accuracy": 91.0, "f1": 87.0}}])
    records = read_json_log(open(os.path.join(folder, "train.log")).read())
    assert best_validation(records, GLUE_COLUMNS["QQP"][1]) == [91.0, 87.0]
    assert best_validation({}, GLUE_COLUMNS["RTE"][1]) is None


def test_max_median_and_the_sweep_configuration_of_best_median(tmp_path):
    rte = {("r3f", "lambda0.1_uniform"): [70.0, 71.0, 90.0], ("r3f", "lambda1.0_normal"): [80.0, 81.0, 82.0],
           ("std", "default"): [60.0, 65.0, 62.0, 64.0]}
    for (method, config), scores in rte.items():
        for seed, score in enumerate(scores, start=1):
            write_run(tmp_path, "RTE", method, config, seed, [{"valid": {"accuracy": score - 5}},
                                                              {"valid": {"accuracy": score}}])
    write_run(tmp_path, "CoLA", "r4f", "lambda1.0_uniform", 1, [{"valid": {"mcc": 55.5}}])
    write_run(tmp_path, "STS-B", "r4f", "lambda1.0_uniform", 1, [{"valid": {"pearson": 91.25}}])
    summary = summarise(included(collect_runs(str(tmp_path))))
    # lambda 0.1 has the best single seed (90) but lambda 1.0 the best median (81): the median decides.
    assert summary[("RTE", "r3f", "")]["config"] == "lambda1.0_normal"
    assert summary[("RTE", "r3f", "")]["max"] == [82.0] and summary[("RTE", "r3f", "")]["median"] == [81.0]
    assert summary[("RTE", "std", "")]["median"] == [statistics.median([60.0, 65.0, 62.0, 64.0])] == [63.0]
    assert summary[("RTE", "std", "")]["per_seed"] == [60.0, 65.0, 62.0, 64.0]
    assert summary[("CoLA", "r4f", "")]["max"] == [55.5]

    out = tmp_path / "out"
    assert main(["glue", str(tmp_path), "--out", str(out)]) == 0
    table = (out / "table2.md").read_text()
    best, median = table.split("Median over the seeds:")
    assert ("| Method | MNLI Acc-m/mm | QQP Acc/F1 | RTE Acc | QNLI Acc | MRPC Acc | CoLA Mcc | SST-2 Acc "
            "| STS-B Pearson |") in best
    assert "| STD | - | - | 65.0 | - | - | - | - | - |" in best
    assert "| R3F | - | - | 82.0 | - | - | - | - | - |" in best
    assert "| R4F | - | - | - | - | - | 55.5 | - | 91.2 |" in best
    assert "| STD | - | - | 63.0 | - | - | - | - | - |" in median
    assert "RTE R3F: lambda1.0_normal, seeds [1, 2, 3] (3/3 seeds)" in table
    assert best.index("| STD |") < best.index("| R3F |") < best.index("| R4F |")  # the paper's row order
    assert len((out / "runs.tsv").read_text().splitlines()) == 1 + 10 + 2
    assert (out / "figure2.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_runs_without_validation_are_reported_and_an_empty_folder_is_an_error(tmp_path, capsys):
    write_run(tmp_path, "SST-2", "std++", "default", 1, [{"valid": {"accuracy": 95.0}}])
    crashed = write_run(tmp_path, "SST-2", "std++", "default", 2, [], finished=False)  # before its first validation
    assert main(["glue", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    assert "left out: 1 run(s) not finished" in captured.err
    assert "| STD++ | - | - | - | - | - | - | 95.0 (1/2 seeds) |" in captured.out
    assert f"{crashed}: unfinished (no done file" in captured.out
    assert main(["glue", str(tmp_path / "none")]) == 2
    assert "no run found" in capsys.readouterr().err


def test_xnli_table_layout_and_average():
    scores = {lang: float(i) for i, lang in enumerate(["en", "fr", "es"])}
    table = xnli_table([("a.pt", scores), ("mean of 1", scores)], ["en", "fr", "es"])
    assert table.splitlines() == ["| Model | en | fr | es | Avg |", "|---|---|---|---|---|",
                                  "| a.pt | 0.0 | 1.0 | 2.0 | 1.0 |", "| mean of 1 | 0.0 | 1.0 | 2.0 | 1.0 |"]


def test_xnli_stops_on_missing_subsets_and_checkpoints(tmp_path, capsys):
    assert main(["xnli", "--data", str(tmp_path), "--checkpoint", str(tmp_path / "c.pt")]) == 2
    assert "no test subset for ['en'" in capsys.readouterr().err
    for key in ("input0", "label"):
        os.makedirs(tmp_path / key)
        (tmp_path / key / "test_en.bin").write_bytes(b"")
    assert main(["xnli", "--data", str(tmp_path), "--checkpoint", str(tmp_path / "c.pt"), "--languages", "en"]) == 2
    assert "c.pt: no such file" in capsys.readouterr().err


# ---------------------------------------------------------------- constructed logs: what enters a table

START = "# 2026-01-01T00:00:00Z start"


def loaded(updates):
    return ("2026-01-01 00:00:00 | INFO | fairseq.trainer | Loaded checkpoint x/checkpoint_last.pt "
            f"(epoch 1 @ {updates} updates)")


def test_only_the_trajectory_of_the_final_checkpoint_is_read(tmp_path, capsys):
    fresh = "2026-01-01 00:00:00 | INFO | fairseq.trainer | No existing checkpoint found x/checkpoint_last.pt"
    acc = [{"valid": {"accuracy": a}} for a in (60.0, 70.0, 95.0)]
    log = (
        [START, fresh] + valid_lines(acc)  # killed after saving at 20 updates: its round at 30 (95) is gone
        + [START, "Traceback: failed at start-up"]  # a launch that never reached a checkpoint
        + [START, loaded(20)] + valid_lines([{"valid": {"accuracy": 80.0}}, {"valid": {"accuracy": 75.0}}], start=3)
    )
    folder = write_run(tmp_path, "RTE", "r3f", "c", 1, None, log=log)
    records = final_trajectory(open(os.path.join(folder, "train.log")).read())
    assert [r["valid_num_updates"] for r in records["valid"]] == [10, 20, 30, 40]
    assert [r["valid_accuracy"] for r in records["valid"]] == [60.0, 70.0, 80.0, 75.0]
    assert main(["glue", str(tmp_path)]) == 0
    assert "| R3F | - | - | 80.0 |" in capsys.readouterr().out  # not the abandoned 95.0
    # A launch from 0 updates (the pretrained model again) discards everything before it.
    log += [START, loaded(0)] + valid_lines([{"valid": {"accuracy": 50.0}}])
    with open(os.path.join(folder, "train.log"), "w") as f:
        f.write("\n".join(log) + "\n")
    records = final_trajectory(open(os.path.join(folder, "train.log")).read())
    assert [r["valid_accuracy"] for r in records["valid"]] == [50.0]


def test_seconds_to_best_count_every_launch_of_the_trajectory(tmp_path):
    def launch(first, rounds):  # (time, updates, accuracy)
        lines = [START, log_line("fairseq_cli.train", {}, first).split(" | {")[0] + " | start-up"]
        for time, updates, accuracy in rounds:
            lines.append(log_line("valid", {"valid_accuracy": accuracy, "valid_num_updates": updates}, time))
        return lines

    first = launch("10:00:00", [("10:01:00", 10, 60.0), ("10:02:00", 20, 70.0), ("10:03:00", 30, 99.0)])
    first[1] += " fairseq.trainer | No existing checkpoint found x/checkpoint_last.pt"
    second = launch("11:00:00", [("11:00:30", 30, 65.0), ("11:01:30", 40, 80.0)])
    second[1] += " " + loaded(20)
    log = first + [START, "Traceback: failed at start-up"] + second
    write_run(tmp_path, "RTE", "r3f", "c", 1, None, log=log)
    assert main(["glue", str(tmp_path), "--out", str(tmp_path / "out")]) == 0
    rows = (tmp_path / "out" / "runs.tsv").read_text().splitlines()
    assert rows[1].split("\t")[4:7] == ["80.0", "-", str(120 + 90)]  # 2 min to update 20, then 1.5 min
    assert "| R3F | 210 (210-210, n=1) |" in (tmp_path / "out" / "figure1.md").read_text()


def test_mislabelled_runs_stop_the_tables_and_runs_without_identity_are_counted(tmp_path, capsys):
    good = write_run(tmp_path, "RTE", "r3f", "c", 1, [{"valid": {"accuracy": 70.0}}])
    bad = write_run(tmp_path, "RTE", "r4f", "c", 1, [{"valid": {"accuracy": 90.0}}])
    with open(os.path.join(bad, "identity.json"), "w") as f:
        json.dump(identity_of("r3f", 1), f)  # what ran was R3F on a plain head
    assert main(["glue", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: 1 run(s) did not train what their run.json says")
    assert f"{bad}: r4f needs an SN architecture" in err and good not in err
    os.remove(os.path.join(bad, "identity.json"))  # no identity and no checkpoint: left out, counted
    write_run(tmp_path, "RTE", "r3f", "c", 2, [{"valid": {"accuracy": 72.0}}], identity=False)
    assert main(["glue", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    assert "left out: 2 run(s) not finished" in captured.err
    assert f"{bad}: failed (done, but neither checkpoint_last.pt nor identity.json" in captured.out
    assert "| R3F | - | - | 70.0 (1/2 seeds) |" in captured.out and "| R4F |" not in captured.out


def test_configurations_searched_per_cell_and_fewer_than_planned(tmp_path, capsys):
    for config, score in (("lambda0.1_uniform", 70.0), ("lambda1.0_uniform", 71.0)):
        write_run(tmp_path, "RTE", "r3f", config, 1, [{"valid": {"accuracy": score}}], search={"configurations": 8})
    for config in ("lr1e-5", "lr2e-5"):
        write_run(tmp_path, "RTE", "std++", config, 1, [{"valid": {"accuracy": 65.0}}], search={"configurations": 2})
    write_run(tmp_path, "RTE", "std", "default", 1, [{"valid": {"accuracy": 60.0}}])
    assert main(["glue", str(tmp_path), "--out", str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err
    assert "warning: RTE R3F: 2 of the 8 planned configurations have results" in err
    assert "STD++" not in err
    searched = (tmp_path / "out" / "table2.md").read_text().split("Configurations searched")[1].split("Noise")[0]
    assert "| STD | - | - | 1 | - |" in searched
    assert "| STD++ | - | - | 2 | - |" in searched
    assert "| R3F | - | - | 2/8 | - |" in searched


def test_select_on_one_dev_half_and_report_the_other(tmp_path, capsys):
    # Config x wins on half A (at its first round), config y on half B (at its second round).
    rounds = {"x": [({"accuracy": 80.0}, {"accuracy": 60.0}), ({"accuracy": 70.0}, {"accuracy": 65.0})],
              "y": [({"accuracy": 75.0}, {"accuracy": 85.0}), ({"accuracy": 74.0}, {"accuracy": 86.0})]}
    for config, values in rounds.items():
        write_run(tmp_path, "RTE", "r3f", config, 1, [
            {"valid": {"accuracy": (a["accuracy"] + b["accuracy"]) / 2}, "valid_a": a, "valid_b": b}
            for a, b in values])
    assert main(["glue", str(tmp_path), "--select-on-half", "first", "--out", str(tmp_path / "a")]) == 0
    out = capsys.readouterr().out
    assert "selected on dev half A (valid_a), reported on half B (valid_b)" in out
    assert "| R3F | - | - | 60.0 |" in out and "RTE R3F: x," in out  # x's half B at x's best round on A
    assert main(["glue", str(tmp_path), "--select-on-half", "second", "--out", str(tmp_path / "b")]) == 0
    out = capsys.readouterr().out
    assert "| R3F | - | - | 74.0 |" in out and "RTE R3F: y," in out  # y's half A at its best round on B
    assert main(["glue", str(tmp_path), "--out", str(tmp_path / "whole")]) == 0
    assert "| R3F | - | - | 80.0 |" in capsys.readouterr().out  # the whole dev set: y's (85 + 75) / 2
    (tmp_path / "x").mkdir()
    write_run(tmp_path / "x", "RTE", "r3f", "z", 1, [{"valid": {"accuracy": 70.0}}])
    assert main(["glue", str(tmp_path / "x"), "--select-on-half", "first"]) == 2
    assert "--select-on-half needs the dev halves" in capsys.readouterr().err


def test_noise_kept_is_the_mean_over_the_run_and_a_dash_without_noise(tmp_path, capsys):
    def noisy(values):
        return [log_line("train_inner", {"num_updates": u, "noise_kept": v, "wall": u}) for u, v in
                enumerate(values, 1)] + valid_lines([{"valid": {"accuracy": 70.0}}])

    write_run(tmp_path, "RTE", "r3f", "c", 1, None, log=noisy([80.0, 90.0]))
    write_run(tmp_path, "RTE", "r3f", "c", 2, None, log=noisy([60.0, 60.0, 60.0]))
    write_run(tmp_path, "RTE", "std", "default", 1, [{"valid": {"accuracy": 60.0}}])
    assert main(["glue", str(tmp_path), "--out", str(tmp_path / "out")]) == 0
    noise = (tmp_path / "out" / "table2.md").read_text().split("Noise kept")[1]
    assert "| R3F | - | - | 72.5 |" in noise and "| STD | - | - | - |" in noise
    rows = [line.split("\t") for line in (tmp_path / "out" / "runs.tsv").read_text().splitlines()]
    assert rows[0][5] == "noise_kept"
    assert sorted(r[5] for r in rows[1:]) == ["-", "60.00", "85.00"]


# ---------------------------------------------------------------- identity and completeness: what a cell holds

def rte(score):
    return [{"valid": {"accuracy": score - 5}}, {"valid": {"accuracy": score}}]


def table_of(root, capsys, *args):
    out = os.path.join(root, "out")
    assert main(["glue", str(root), "--out", out, *args]) == 0
    captured = capsys.readouterr()
    tsv = [line.split("\t") for line in open(os.path.join(out, "runs.tsv")).read().splitlines()]
    return open(os.path.join(out, "table2.md")).read(), {row[7]: dict(zip(tsv[0], row)) for row in tsv[1:]}, \
        captured.err


def test_a_setting_given_after_the_method_never_shares_a_cell(tmp_path, capsys):
    """Seeds 1, 2, 5 of the recipe's STD, and a seed 3 launched with --dropout 0.0 --max-update 2 into the same
    SAVE_ROOT: two rows, each named by the settings that differ; the odd run's 58.3 is not STD's max."""
    for seed in (1, 2, 5):
        write_run(tmp_path, "RTE", "std", "default", seed, rte(41.7))
    odd = write_run(tmp_path, "RTE", "std", "default", 3, rte(58.3),
                    settings={"model.dropout": 0, "optimization.max_update": 2})
    table, rows, _ = table_of(tmp_path, capsys)
    best = table.split("Median over the seeds:")[0]
    assert "| STD, dropout 0.1, max_update 2036 | - | - | 41.7 |" in best
    assert "| STD, dropout 0, max_update 2 | - | - | 58.3 |" in best
    assert "| STD |" not in best
    assert "RTE STD, dropout 0.1, max_update 2036: default, seeds [1, 2, 5] (3/3 seeds)" in table
    assert rows[odd]["row"] == "STD, dropout 0, max_update 2" and rows[odd]["status"] == "finished"
    # a nan is named as what it is, not taken for the default
    write_run(tmp_path / "nan", "RTE", "std", "default", 1, rte(41.7))
    write_run(tmp_path / "nan", "RTE", "std", "default", 2, rte(50.0), settings={"model.dropout": "nan"})
    table, _, _ = table_of(tmp_path / "nan", capsys)
    assert "| STD, dropout nan | - | - | 50.0 |" in table and "| STD, dropout 0.1 | - | - | 41.7 |" in table


def test_settings_too_many_to_name_stop_the_table_with_the_fields(tmp_path, capsys):
    write_run(tmp_path, "RTE", "std", "default", 1, rte(41.7))
    write_run(tmp_path, "RTE", "std", "default", 2, rte(41.7), settings={
        "model.dropout": 0, "optimization.max_update": 2, "model.attention_dropout": 0, "criterion.eps": 1})
    assert main(["glue", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert ("RTE STD: runs of 2 configurations that differ in 4 settings (criterion.eps, model.attention_dropout, "
            "model.dropout, optimization.max_update)") in err


def test_the_same_run_found_twice_counts_once(tmp_path, capsys):
    """Two copies of one SAVE_ROOT under a parent: seeds [1, 2], not [1, 1, 2, 2]; the warning names both."""
    for seed, score in ((1, 60.0), (2, 70.0)):
        write_run(tmp_path / "copy_a", "RTE", "r3f", "c", seed, rte(score))
    shutil.copytree(tmp_path / "copy_a", tmp_path / "copy_b")
    table, rows, err = table_of(tmp_path, capsys)
    assert "RTE R3F: c, seeds [1, 2] (2/2 seeds)" in table
    assert "| R3F | - | - | 65.0 |" in table.split("Median over the seeds:")[1]
    first, second = (str(tmp_path / name / "RTE/r3f/c/seed1") for name in ("copy_a", "copy_b"))
    assert f"warning: {second} is the same run as {first} (same configuration and seed 1): counted once" in err
    assert rows[second]["status"] == "duplicate" and rows[first]["status"] == "finished"


def test_only_finished_runs_enter_and_the_others_are_named(tmp_path, capsys):
    """A SIGKILLed run (no done) and a run whose train.log was cut in half (the checkpoint says 40 updates, the
    log ends at 20) are not in the cell: it says 2/4 seeds, the notes and runs.tsv name both with the reason."""
    write_run(tmp_path, "RTE", "r3f", "c", 1, rte(60.0))
    write_run(tmp_path, "RTE", "r3f", "c", 2, rte(62.0))
    killed = write_run(tmp_path, "RTE", "r3f", "c", 3, rte(99.0), finished=False)
    cut = write_run(tmp_path, "RTE", "r3f", "c", 4, rte(70.0) + rte(90.0))
    log = open(os.path.join(cut, "train.log")).read().splitlines()
    with open(os.path.join(cut, "train.log"), "w") as f:
        f.write("\n".join(log[: len(log) // 2]) + "\n")
    table, rows, err = table_of(tmp_path, capsys)
    assert "| R3F | - | - | 62.0 (2/4 seeds) |" in table
    assert "RTE R3F: c, seeds [1, 2] (2/4 seeds; seed 3 unfinished; seed 4 truncated)" in table
    assert f"{killed}: unfinished (no done file" in table
    assert f"{cut}: truncated (train.log ends at update 20, the checkpoint is at update 40 (the log is cut " \
           "short))" in table
    assert (rows[killed]["status"], rows[cut]["status"]) == ("unfinished", "truncated")
    assert "left out: 2 run(s) not finished" in err
    # a done whose planned end is not where the run stopped (one update past --max-update)
    with open(os.path.join(tmp_path, "RTE/r3f/c/seed2/done"), "w") as f:
        json.dump({"num_updates": 19, "finished": "2026-01-01T00:00:00Z"}, f)
    table, rows, _ = table_of(tmp_path, capsys)
    assert "stopped at update 20, the planned end recorded in done is 19" in table
    assert "| R3F | - | - | 60.0 (1/4 seeds) |" in table


def write_plan(sweep_folder, configs, seeds):
    with open(os.path.join(sweep_folder, "plan.json"), "w") as f:
        json.dump({"runs": [{"dir": f"{c}/seed{s}", "config": c, "seed": s} for c in configs for s in seeds]}, f)


def test_a_partial_sweep_says_what_is_missing(tmp_path, capsys):
    """plan.json lists x and y with seeds 1 and 2; y's seed 2 never ran: the cell shows y (best median) with 1/2
    seeds, the missing run is named, and the configurations searched are 2 of 2."""
    write_run(tmp_path, "RTE", "r3f", "x", 1, rte(60.0))
    write_run(tmp_path, "RTE", "r3f", "x", 2, rte(62.0))
    write_run(tmp_path, "RTE", "r3f", "y", 1, rte(70.0))
    write_plan(tmp_path / "RTE" / "r3f", ["x", "y", "z"], [1, 2])
    table, rows, err = table_of(tmp_path, capsys)
    assert "| R3F | - | - | 70.0 (1/2 seeds) |" in table
    assert "| R3F | - | - | 2/3 |" in table.split("Configurations searched")[1]
    missing = str(tmp_path / "RTE/r3f/y/seed2")
    assert f"{missing}: missing (planned in {tmp_path / 'RTE/r3f/plan.json'}, no run folder)" in table
    assert rows[missing]["status"] == "missing" and rows[str(tmp_path / "RTE/r3f/z/seed1")]["status"] == "missing"
    assert "warning: RTE R3F: 2 of the 3 planned configurations have results" in err


def test_runs_of_other_tasks_are_skipped_with_a_note(tmp_path, capsys):
    write_run(tmp_path, "RTE", "std", "default", 1, rte(60.0))
    for name, label in (("translation", {"recipe": "translation", "method": "r3f", "config": "iwslt14_de_en"}),
                        ("summarization", {"dataset": "cnn_dm", "method": "r3f"})):
        os.makedirs(tmp_path / name)
        (tmp_path / name / "run.json").write_text(json.dumps({**label, "seed": 1}))
    table, rows, err = table_of(tmp_path, capsys)
    assert "note: 2 run(s) of other tasks or recipes are not in these tables" in err
    assert "| STD | - | - | 60.0 |" in table and len(rows) == 1


def test_runs_written_before_the_swept_keys_were_recorded(tmp_path, capsys):
    """A run.json without "swept" (older recipes): the search grid's axes with several values are the swept
    settings, matched by field name; a setting outside the grid still splits the cell."""
    grid = {"configurations": 2, "grid": {"r3f_lambda": [0.1, 1.0], "noise_type": ["uniform"]}}
    for config, value, score in (("lambda0.1_uniform", 0.1, 60.0), ("lambda1.0_uniform", 1.0, 70.0)):
        write_run(tmp_path, "RTE", "r3f", config, 1, rte(score), swept=None, search=grid,
                  settings={SWEPT: None, "criterion.r3f_lambda": value})
    table, _, _ = table_of(tmp_path, capsys)
    assert "| R3F | - | - | 70.0 |" in table and "RTE R3F: lambda1.0_uniform, seeds [1]" in table
    write_run(tmp_path, "RTE", "r3f", "lambda1.0_uniform", 2, rte(90.0), swept=None, search=grid,
              settings={SWEPT: None, "criterion.r3f_lambda": 1.0, "model.dropout": 0})
    table, _, _ = table_of(tmp_path, capsys)
    assert "| R3F, dropout 0 | - | - | 90.0 |" in table and "| R3F, dropout 0.1 | - | - | 70.0 |" in table


def test_a_damaged_run_json_is_one_error_naming_it(tmp_path, capsys):
    folder = write_run(tmp_path, "RTE", "std", "default", 1, rte(60.0))
    with open(os.path.join(folder, "run.json"), "w") as f:
        f.write('{"task": "RTE", ')
    assert main(["glue", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {folder}/run.json is damaged (not JSON") and len(err.splitlines()) == 1


def test_a_run_whose_checkpoint_is_not_its_plan_is_failed_with_the_fields(tmp_path, capsys):
    planned = identity_of("std", 1)["configuration"]
    write_run(tmp_path, "RTE", "std", "default", 1, rte(60.0), planned_configuration=planned)
    other = write_run(tmp_path, "RTE", "std", "default", 2, rte(70.0),
                      planned_configuration={**planned, "model.dropout": 0.3, "optimization.max_update": 10})
    table, rows, _ = table_of(tmp_path, capsys)
    assert f"{other}: failed (the checkpoint's configuration differs from the plan in model.dropout, " \
           "optimization.max_update)" in table
    assert "| STD | - | - | 60.0 (1/2 seeds) |" in table and rows[other]["status"] == "failed"


def test_a_run_writing_its_checkpoint_right_now_is_unfinished_not_an_error(tmp_path, capsys):
    write_run(tmp_path, "RTE", "std", "default", 1, rte(60.0))
    running = write_run(tmp_path, "RTE", "std", "default", 2, rte(70.0), identity=False, finished=False)
    with open(os.path.join(running, "checkpoint_last.pt"), "wb") as f:
        f.write(b"PK\x03\x04 half written")
    table, rows, _ = table_of(tmp_path, capsys)
    assert rows[running]["status"] == "unfinished" and "| STD | - | - | 60.0 (1/2 seeds) |" in table
