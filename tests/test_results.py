"""fairseq_r3f.evaluation.results on run folders with known json logs: which validation round is a run's
best, max and median over seeds, the configuration shown for a sweep, Table 2's and Table 3's layouts, the
figure, and the errors. (tests/test_glue_recipes.py and tests/test_xnli.py run its command line on real tiny runs.)"""

import json
import os
import statistics


from fairseq_r3f.evaluation.results import GLUE_COLUMNS, best_validation, collect_runs, main, summarise, xnli_table
from fairseq_r3f.logs import read_json_log


def log_line(tag, values):
    return f"2026-01-01 00:00:00 | INFO | {tag} | " + json.dumps({k: str(v) for k, v in values.items()})


def write_run(root, task, method, config, seed, rounds):
    """rounds: [{subset: {metric: value}}] in validation order, at 10, 20, ... updates."""
    folder = os.path.join(root, task, method, config, f"seed{seed}")
    os.makedirs(folder)
    with open(os.path.join(folder, "run.json"), "w") as f:
        json.dump({"task": task, "method": method, "config": config, "seed": seed}, f)
    lines = [log_line("train_inner", {"epoch": 1, "loss": 0.7, "num_updates": 5})]
    for k, round_ in enumerate(rounds, start=1):
        for subset, metrics in round_.items():
            lines.append(log_line(subset, {f"{subset}_{m}": v for m, v in metrics.items()}
                                  | {f"{subset}_num_updates": 10 * k, f"{subset}_loss": 0.5}))
    with open(os.path.join(folder, "train.log"), "w") as f:
        f.write("\n".join(lines) + "\n")
    return folder


def test_best_round_is_chosen_by_the_first_metric_and_the_second_comes_from_the_same_round(tmp_path):
    folder = write_run(tmp_path, "MNLI", "r3f", "lambda1.0_uniform", 1, [
        {"valid": {"accuracy": 80.0}, "valid1": {"accuracy": 85.0}},
        {"valid": {"accuracy": 82.5}, "valid1": {"accuracy": 81.0}},  # best matched: mismatched 81, not 85
        {"valid": {"accuracy": 82.5}, "valid1": {"accuracy": 90.0}},  # a tie keeps the earlier, as fairseq does
    ])
    records = read_json_log(open(os.path.join(folder, "train.log")).read())
    assert best_validation(records, GLUE_COLUMNS["MNLI"][1]) == [82.5, 81.0]
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
    summary = summarise(collect_runs(str(tmp_path)))
    # lambda 0.1 has the best single seed (90) but lambda 1.0 the best median (81): the median decides.
    assert summary[("RTE", "r3f")]["config"] == "lambda1.0_normal"
    assert summary[("RTE", "r3f")]["max"] == [82.0] and summary[("RTE", "r3f")]["median"] == [81.0]
    assert summary[("RTE", "std")]["median"] == [statistics.median([60.0, 65.0, 62.0, 64.0])] == [63.0]
    assert summary[("RTE", "std")]["per_seed"] == [60.0, 65.0, 62.0, 64.0]
    assert summary[("CoLA", "r4f")]["max"] == [55.5]

    out = tmp_path / "out"
    assert main(["glue", str(tmp_path), "--out", str(out)]) == 0
    table = (out / "table2.md").read_text()
    best, median = table.split("Median over the seeds:")
    assert "| Method | MNLI Acc-m/mm | QQP Acc/F1 | RTE Acc | QNLI Acc | MRPC Acc | CoLA Mcc | SST-2 Acc | STS-B Pearson |" in best
    assert "| STD | - | - | 65.0 | - | - | - | - | - |" in best
    assert "| R3F | - | - | 82.0 | - | - | - | - | - |" in best
    assert "| R4F | - | - | - | - | - | 55.5 | - | 91.2 |" in best
    assert "| STD | - | - | 63.0 | - | - | - | - | - |" in median
    assert "RTE R3F: lambda1.0_normal, seeds [1, 2, 3]" in table
    assert best.index("| STD |") < best.index("| R3F |") < best.index("| R4F |")  # the paper's row order
    assert len((out / "runs.tsv").read_text().splitlines()) == 1 + 10 + 2
    assert (out / "figure2.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_runs_without_validation_are_reported_and_an_empty_folder_is_an_error(tmp_path, capsys):
    write_run(tmp_path, "SST-2", "std++", "default", 1, [{"valid": {"accuracy": 95.0}}])
    write_run(tmp_path, "SST-2", "std++", "default", 2, [])  # crashed before its first validation
    assert main(["glue", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    assert "1 run(s) without a validation record" in captured.err
    assert "| STD++ | - | - | - | - | - | - | 95.0 |" in captured.out
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
