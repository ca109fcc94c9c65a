"""Every number a user passes to the plugin's criterions and tasks is checked before training starts, through
fairseq-train: NaN is refused everywhere, inf wherever it has no documented meaning, each with one message
naming the flag. The options are read from the registered dataclasses, so a new option is covered as soon as
it exists."""

import dataclasses
import re
from typing import Optional

import pytest
from fairseq.registry import REGISTRIES
from fairseq.tasks import TASK_DATACLASS_REGISTRY

from conftest import TINY_BART, USER_DIR, run_fairseq, train_args
from fairseq_r3f.__main__ import components
from fairseq_r3f.toy_data import write_toy_reversal_task


@pytest.fixture(scope="module")
def translation_task(tmp_path_factory):
    """A toy translation task in fairseq's raw text format: reverse a sentence of 3 to 8 words."""
    return write_toy_reversal_task(str(tmp_path_factory.mktemp("translation")), n_train=32, n_valid=8)


def translation_args(data, save_dir, *extra):
    return [
        data, "--user-dir", USER_DIR, "--task", "translation", "--source-lang", "src", "--target-lang", "tgt",
        "--dataset-impl", "raw", "--arch", "transformer", *TINY_BART, "--criterion",
        "label_smoothed_cross_entropy_r3f", "--optimizer", "adam", "--lr", "1e-3", "--max-update", "1",
        "--batch-size", "8", "--cpu", "--no-save", "--save-dir", save_dir, "--num-workers", "0", *extra,
    ]


# How to run each component of the plugin that has float options: fairseq-train's flags for a tiny model.
COMMANDS = {
    "sentence_prediction_r3f": lambda data, save, *extra: train_args(data["toy"], save, *extra),
    "sentence_prediction_smart": lambda data, save, *extra: train_args(
        data["toy"], save, *extra, criterion="sentence_prediction_smart"),
    "sentence_prediction_freelb": lambda data, save, *extra: train_args(
        data["toy"], save, "--task", "sentence_prediction_freelb", *extra, criterion="sentence_prediction_freelb"),
    "label_smoothed_cross_entropy_r3f": lambda data, save, *extra: translation_args(data["translation"], save,
                                                                                    *extra),
}


def plugin_float_options():
    """(component, dataclass field) for every float option of every criterion and task the plugin registers,
    the options they inherit from fairseq's parents included."""
    found = components()
    configs = [(name, REGISTRIES["criterion"]["dataclass_registry"][name]) for name in found["criterion"]]
    # A task without a dataclass (the mBART translation task) takes fairseq's own argparse options:
    # test_tasks_without_a_dataclass_add_no_options says it adds none of its own.
    configs += [(name, TASK_DATACLASS_REGISTRY[name]) for name in found["task"] if name in TASK_DATACLASS_REGISTRY]
    return [(name, option) for name, config in configs for option in dataclasses.fields(config)
            if option.type in (float, Optional[float])]


def flag(option):
    return "--" + option.name.replace("_", "-")


CASES = [pytest.param(name, option, value, id=f"{name}{flag(option)}={value}")
         for name, option in plugin_float_options() for value in ("nan", "inf")]


def test_tasks_without_a_dataclass_add_no_options():
    from fairseq.tasks import TASK_REGISTRY

    for name in components()["task"]:
        if name not in TASK_DATACLASS_REGISTRY:
            assert "add_args" not in vars(TASK_REGISTRY[name]), (
                f"task {name} adds argparse options of its own: give it a dataclass so its float options are checked")


def test_the_options_are_found():
    names = {(name, flag(option)) for name, option in plugin_float_options()}
    assert {("sentence_prediction_r3f", "--r3f-lambda"), ("sentence_prediction_r3f", "--eps"),
            ("sentence_prediction_smart", "--smart-eps"), ("sentence_prediction_freelb", "--freelb-max-norm"),
            ("label_smoothed_cross_entropy_r3f", "--label-smoothing")} <= names
    assert len(names) >= 12


@pytest.fixture(scope="module")
def data(toy_task, translation_task):
    return {"toy": toy_task, "translation": translation_task}


def train_in_process(args):
    """What fairseq-train does with ``args`` (its cli_main on the CPU: parse, then fairseq_cli.train.main), in
    this process: a refusal is the exception the command line would print, without a fairseq start-up each."""
    from fairseq import options
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf
    from fairseq_cli import train

    cfg = convert_namespace_to_omegaconf(options.parse_args_and_arch(options.get_training_parser(), args))
    train.main(cfg)


@pytest.mark.parametrize("name, option, value", CASES)
def test_non_finite_numbers_are_refused_with_the_flag_named(data, tmp_path, name, option, value):
    assert name in COMMANDS, f"add a fairseq-train command line for {name} to COMMANDS"
    args = COMMANDS[name](data, str(tmp_path), flag(option), value, "--max-update", "1")
    documented_inf = re.search(r"\binf\b", option.metadata.get("help", "")) is not None
    if value == "inf" and documented_inf:
        proc, _ = run_fairseq("train", args, check=False)
        assert proc.returncode == 0, proc.stderr[-2000:]  # inf has a meaning there, and it is accepted
        return
    expected = "a number >= 0 or inf" if documented_inf else "a finite number >= 0"
    with pytest.raises(ValueError) as refused:
        train_in_process(args)
    assert str(refused.value) == f"{flag(option)} must be {expected} (got {value})"


def test_a_refusal_is_one_line_of_fairseq_trains_output(toy_task, tmp_path):
    """The refusals above, as the command line shows them."""
    proc, _ = run_fairseq("train", train_args(toy_task, str(tmp_path), "--r3f-lambda", "nan", "--max-update", "1"),
                          check=False)
    assert proc.returncode != 0
    assert "ValueError: --r3f-lambda must be a finite number >= 0 (got nan)" in proc.stderr, proc.stderr[-2000:]


def test_the_seq2seq_criterion_on_a_classification_task_is_refused_in_one_line(toy_task, tmp_path):
    proc, _ = run_fairseq("train", train_args(toy_task, str(tmp_path), "--max-update", "1",
                                              criterion="label_smoothed_cross_entropy_r3f"), check=False)
    assert proc.returncode != 0
    assert "InterpolationKeyError" not in proc.stderr
    assert ("ValueError: --criterion label_smoothed_cross_entropy_r3f is for sequence-to-sequence tasks "
            "(translation, summarization); for SentencePredictionTask, a sentence classification task, use "
            "--criterion sentence_prediction_r3f") in proc.stderr
