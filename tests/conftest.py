"""Shared fixtures: the built-in toy task, binarised once per session, and a runner for fairseq's CLIs."""

import os
import subprocess

import pytest

from fairseq_r3f.logs import read_json_log
from fairseq_r3f.tools import fairseq_command
from fairseq_r3f.toy_data import write_toy_task

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
USER_DIR = os.path.join(REPO, "fairseq_r3f")

# A RoBERTa small enough to train for a few updates on the CPU in about a second.
TINY_ROBERTA = [
    "--encoder-layers", "2", "--encoder-embed-dim", "32", "--encoder-ffn-embed-dim", "64",
    "--encoder-attention-heads", "2", "--max-positions", "64",
]
TINY_BART = [
    "--encoder-layers", "1", "--decoder-layers", "1", "--encoder-embed-dim", "32", "--decoder-embed-dim", "32",
    "--encoder-ffn-embed-dim", "64", "--decoder-ffn-embed-dim", "64", "--encoder-attention-heads", "2",
    "--decoder-attention-heads", "2", "--max-source-positions", "64", "--max-target-positions", "64",
]
NO_DROPOUT = ["--dropout", "0", "--attention-dropout", "0", "--activation-dropout", "0", "--pooler-dropout", "0"]


def run_fairseq(tool, args, check=True):
    """Runs fairseq-<tool> with the plugin; returns (completed process, json log records by tag)."""
    proc = subprocess.run(
        fairseq_command("fairseq-" + tool) + args, capture_output=True, text=True, cwd=REPO,
        env={**os.environ, "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1"},
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"fairseq-{tool} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return proc, read_json_log(proc.stdout + proc.stderr)


def train_args(data_bin, save_dir, *extra, arch="roberta_base", criterion="sentence_prediction_r3f"):
    """fairseq-train flags for the toy task; ``extra`` comes last so a test can override anything."""
    model = TINY_BART if arch.startswith("bart") else TINY_ROBERTA
    task = ["--add-prev-output-tokens"] if arch.startswith("bart") else []
    return [
        data_bin, "--user-dir", USER_DIR, "--task", "sentence_prediction", "--num-classes", "2",
        "--init-token", "0", "--separator-token", "2", "--max-positions", "64", "--arch", arch, *model, *task,
        "--criterion", criterion, "--optimizer", "adam", "--lr", "1e-3", "--lr-scheduler", "fixed",
        "--batch-size", "16", "--required-batch-size-multiple", "1", "--max-update", "10",
        "--log-format", "json", "--log-interval", "1", "--save-dir", save_dir, "--cpu", "--seed", "1",
        "--no-epoch-checkpoints", "--num-workers", "0", *extra,
    ]


@pytest.fixture(scope="session")
def toy_task(tmp_path_factory):
    return write_toy_task(str(tmp_path_factory.mktemp("toy")), n_train=256, n_valid=64)


@pytest.fixture(scope="session")
def toy_pair_task(tmp_path_factory):
    return write_toy_task(str(tmp_path_factory.mktemp("toy_pairs")), n_train=256, n_valid=64, pairs=True)


@pytest.fixture(scope="session")
def toy_regression_task(tmp_path_factory):
    return write_toy_task(str(tmp_path_factory.mktemp("toy_reg")), n_train=256, n_valid=63, regression=True)


def build_in_process(data_bin, *extra, arch="roberta_base", criterion="sentence_prediction_r3f"):
    """The task, model and criterion fairseq-train would build from the same flags, in this process."""
    from fairseq import options, tasks

    parser = options.get_training_parser()
    args = options.parse_args_and_arch(parser, train_args(data_bin, "/nonexistent", *extra, arch=arch,
                                                          criterion=criterion))
    task = tasks.setup_task(args)
    model = task.build_model(args)
    return task, model, task.build_criterion(args)


def first_batch(task, split="valid", max_sentences=16):
    """A collated batch of the split's first ``max_sentences`` examples, in dataset order."""
    task.load_dataset(split)
    dataset = task.dataset(split)
    return dataset.collater([dataset[i] for i in range(min(max_sentences, len(dataset)))])
