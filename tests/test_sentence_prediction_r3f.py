"""sentence_prediction_r3f through the real fairseq-train command line."""

import pytest

from conftest import NO_DROPOUT, USER_DIR, build_in_process, first_batch, run_fairseq, train_args


def without_timings(record):
    return {k: v for k, v in record.items() if not k.endswith(("wps", "ups", "wall"))}


def updates(records, key):
    return [r[key] for r in records["train_inner"]]


@pytest.mark.parametrize("arch", ["roberta_base", "bart_base"])
def test_noise_reaches_the_encoder(toy_task, tmp_path, arch):
    """Dropout off: the only difference between the two passes is the noise, so symm_kl > 0 iff the noise
    reached the encoder (the authors' code logs 0 here on RoBERTa)."""
    noised = run_fairseq("train", train_args(toy_task, str(tmp_path / "a"), *NO_DROPOUT, "--eps", "1e-3",
                                             "--noise-type", "normal", "--max-update", "3", arch=arch))[1]
    assert all(kl > 0 for kl in updates(noised, "symm_kl"))
    assert all(kept == 100 for kept in updates(noised, "noise_kept"))
    silent = run_fairseq("train", train_args(toy_task, str(tmp_path / "b"), *NO_DROPOUT, "--eps", "0",
                                             "--max-update", "3", arch=arch))[1]
    assert updates(silent, "symm_kl") == [0, 0, 0]


def test_lambda_zero_reproduces_sentence_prediction(toy_task, tmp_path):
    """Same seed, same logged losses, accuracies and gradient norms at every update, and no symm_kl."""
    keys = ("loss", "accuracy", "gnorm")
    plain = run_fairseq("train", train_args(toy_task, str(tmp_path / "a"), criterion="sentence_prediction"))[1]
    r3f = run_fairseq("train", train_args(toy_task, str(tmp_path / "b"), "--r3f-lambda", "0"))[1]
    assert len(plain["train_inner"]) == 10
    for key in keys:
        assert updates(r3f, key) == updates(plain, key)
    assert [r["valid_loss"] for r in r3f["valid"]] == [r["valid_loss"] for r in plain["valid"]]
    assert not any("symm_kl" in r for r in r3f["train_inner"])
    # and the term, when on, does change training
    on = run_fairseq("train", train_args(toy_task, str(tmp_path / "c"), "--r3f-lambda", "1"))[1]
    assert updates(on, "loss") != updates(plain, "loss")


def test_validation_runs_no_noised_pass_and_reports_what_sentence_prediction_reports(toy_task, tmp_path):
    extra = ("--report-mcc", "--report-acc-and-f1", "--max-update", "4")
    plain = run_fairseq("train", train_args(toy_task, str(tmp_path / "a"), *extra, "--r3f-lambda", "0",
                                            criterion="sentence_prediction_r3f"))[1]["valid"][-1]
    reference = run_fairseq("train", train_args(toy_task, str(tmp_path / "b"), *extra,
                                                criterion="sentence_prediction"))[1]["valid"][-1]
    assert without_timings(plain) == without_timings(reference)
    r3f = run_fairseq("train", train_args(toy_task, str(tmp_path / "c"), *extra, "--eps", "1e-2"))[1]["valid"][-1]
    assert set(r3f) == set(reference)  # accuracy (in percent), mcc, f1: no symm_kl at validation
    assert 0 <= r3f["valid_accuracy"] <= 100 and "valid_mcc" in r3f and "valid_f1" in r3f


@pytest.mark.parametrize("batch_size", ["1", "8"])
def test_regression_targets(toy_regression_task, tmp_path, batch_size):
    # --batch-size-valid: fairseq's own Pearson metric fails on a first validation batch of one example
    records = run_fairseq("train", train_args(
        toy_regression_task, str(tmp_path), *NO_DROPOUT, "--regression-target", "--num-classes", "1",
        "--report-pearson-and-spearman", "--batch-size", batch_size, "--batch-size-valid", "8",
        "--eps", "1e-2", "--max-update", "6",
        "--best-checkpoint-metric", "loss",
    ))[1]
    assert all(kl > 0 for kl in updates(records, "symm_kl"))  # squared difference of the two outputs
    valid = records["valid"][-1]
    assert "valid_pearson" in valid and "valid_accuracy" not in valid


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--noise-type", "gauss"], "invalid choice: 'gauss'"),
        (["--eps=-1e-5"], "--eps must be a finite number >= 0 (got -1e-05)"),
        (["--r3f-lambda=-0.5"], "--r3f-lambda must be a finite number >= 0 (got -0.5)"),
    ],
)
def test_bad_input_stops_with_a_clear_message(toy_task, tmp_path, flags, message):
    proc, _ = run_fairseq("train", train_args(toy_task, str(tmp_path), *flags), check=False)
    assert proc.returncode != 0
    assert message in proc.stderr


def test_a_task_without_labels_is_refused(toy_task, tmp_path):
    proc, _ = run_fairseq("train", [
        toy_task + "/input0", "--user-dir", USER_DIR, "--task", "language_modeling", "--arch", "transformer_lm",
        "--decoder-layers", "1", "--decoder-embed-dim", "16", "--decoder-ffn-embed-dim", "16",
        "--decoder-attention-heads", "2", "--tokens-per-sample", "32", "--criterion", "sentence_prediction_r3f",
        "--optimizer", "adam", "--lr", "1e-3", "--max-update", "1", "--batch-size", "2", "--cpu",
        "--save-dir", str(tmp_path),
    ], check=False)
    assert proc.returncode != 0
    assert "--criterion sentence_prediction_r3f needs a sentence classification task" in proc.stderr


def test_a_model_without_the_named_head_is_refused(toy_task):
    task, model, criterion = build_in_process(toy_task)
    criterion.classification_head_name = "mnli_head"
    message = "no classification head 'mnli_head' \\(it has: sentence_classification_head\\)"
    with pytest.raises(ValueError, match=message):
        criterion(model, first_batch(task))
