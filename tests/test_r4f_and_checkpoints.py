"""R4F's spectrally normalised head and checkpoint loading (and loading under torch >= 2.6)."""

import argparse
import fractions
import glob
import os
import subprocess
import sys

import pytest
import torch

from conftest import (REPO, USER_DIR, build_in_process, needs_unsafe_globals_scan, needs_weights_only_default,
                      real_weights, run_fairseq, train_args)
from fairseq_r3f.checkpoints import FAIRSEQ_CHECKPOINT_GLOBALS
from rxf.spectral_norm import SpectralNormLinear

HEAD = "classification_heads.sentence_classification_head."


def load(path):
    return torch.load(path, map_location="cpu")  # weights-only: what fairseq itself gets on torch >= 2.6


def effective_matrices(model_state):
    """The matrices the head applies at evaluation: W / (u^T W v), v = normalise(W^T u)."""
    matrices = {}
    for layer in ("dense", "out_proj"):
        w, u = model_state[HEAD + layer + ".weight"].double(), model_state[HEAD + layer + ".u"].double()
        v = torch.nn.functional.normalize(w.t() @ u, dim=0)
        matrices[layer] = (w, w / (u @ w @ v))
    return matrices


@pytest.fixture(scope="module")
def r4f_run(toy_task, tmp_path_factory):
    save_dir = str(tmp_path_factory.mktemp("r4f"))
    _, records = run_fairseq("train", train_args(toy_task, save_dir, "--arch", "roberta_sn_base", "--lr", "5e-3",
                                                 "--max-update", "12", arch="roberta_sn_base"))
    return save_dir, records


@pytest.mark.parametrize("arch", ["roberta_sn_base", "bart_sn_base"])
def test_every_head_matrix_has_spectral_norm_one_after_training(toy_task, tmp_path, arch):
    run_fairseq("train", train_args(toy_task, str(tmp_path), "--lr", "5e-3", "--max-update", "12", arch=arch))
    for layer, (raw, normalised) in effective_matrices(load(str(tmp_path / "checkpoint_last.pt"))["model"]).items():
        assert torch.linalg.matrix_norm(normalised, ord=2).item() <= 1 + 1e-3, layer
        assert torch.linalg.matrix_norm(normalised, ord=2).item() >= 1 - 1e-3, layer
        # the raw matrix is far from norm 1: the head would not be 1-Lipschitz without the normalisation
        assert abs(torch.linalg.matrix_norm(raw, ord=2).item() - 1) > 0.05, layer


def test_resumed_run_equals_uninterrupted_run(toy_task, r4f_run, tmp_path):
    full_dir, full = r4f_run
    flags = ("--arch", "roberta_sn_base", "--lr", "5e-3")
    run_fairseq("train", train_args(toy_task, str(tmp_path), *flags, "--max-update", "5", arch="roberta_sn_base"))
    _, resumed = run_fairseq("train", train_args(toy_task, str(tmp_path), *flags, "--max-update", "12",
                                                 arch="roberta_sn_base"))
    assert [r["loss"] for r in resumed["train_inner"]] == [r["loss"] for r in full["train_inner"]][5:]
    final, left_out = real_weights(load(str(tmp_path / "checkpoint_last.pt"))["model"])
    expected, expected_left_out = real_weights(load(full_dir + "/checkpoint_last.pt")["model"])
    # the copies are the only tensors left out (conftest.BETTER_TRANSFORMER_COPIES: fairseq 0.12.2 re-derives them
    # at load); every real weight, the head's spectral-norm vectors included, must be identical
    assert left_out == expected_left_out
    assert final.keys() == expected.keys() and any("classification_heads" in k for k in expected)
    for key in expected:
        assert torch.equal(final[key], expected[key]), key


def test_fairseq_validate_scores_the_checkpoint_like_training_did(toy_task, r4f_run):
    save_dir, records = r4f_run
    _, validated = run_fairseq("validate", [
        toy_task, "--path", save_dir + "/checkpoint_last.pt", "--user-dir", USER_DIR, "--task",
        "sentence_prediction", "--criterion", "sentence_prediction_r3f", "--num-classes", "2",
        "--batch-size", "16", "--required-batch-size-multiple", "1", "--log-format", "json", "--cpu",
    ])
    (result,) = validated["valid"]
    assert result["valid_accuracy"] == records["valid"][-1]["valid_accuracy"]
    assert result["valid_loss"] == records["valid"][-1]["valid_loss"]


def test_hub_interface_loads_and_predicts(toy_task, r4f_run):
    from fairseq.models.roberta import RobertaModel

    save_dir, records = r4f_run
    hub = RobertaModel.from_pretrained(save_dir, "checkpoint_last.pt", data_name_or_path=toy_task,
                                       user_dir=USER_DIR, bpe=None)
    hub.eval()
    head = hub.model.classification_heads["sentence_classification_head"]
    assert isinstance(head.dense, SpectralNormLinear) and isinstance(head.out_proj, SpectralNormLinear)
    task = hub.task
    task.load_dataset("valid")
    dataset, correct = task.dataset("valid"), 0
    for i in range(len(dataset)):
        item = dataset[i]
        prediction = hub.predict("sentence_classification_head", item["net_input.src_tokens"]).argmax().item()
        correct += int(prediction == item["target"].item())
    assert 100.0 * correct / len(dataset) == pytest.approx(records["valid"][-1]["valid_accuracy"], abs=0.05)


def test_plain_checkpoint_restores_into_the_normalised_head(toy_task, tmp_path):
    """--restore-file of a plain fine-tuned checkpoint: same matrices, u computed from them."""
    run_fairseq("train", train_args(toy_task, str(tmp_path / "plain"), "--max-update", "3"))
    plain = str(tmp_path / "plain" / "checkpoint_last.pt")
    _, records = run_fairseq("train", train_args(
        toy_task, str(tmp_path / "sn"), "--restore-file", plain, "--reset-optimizer", "--reset-dataloader",
        "--reset-meters", "--max-update", "2", "--lr", "1e-9", arch="roberta_sn_base"))
    assert len(records["train_inner"]) == 2
    _, model, _ = build_in_process(toy_task, arch="roberta_sn_base")
    state = load(plain)["model"]
    model.load_state_dict(state, strict=True)
    for layer in ("dense", "out_proj"):
        module = getattr(model.classification_heads["sentence_classification_head"], layer)
        assert torch.equal(module.weight, state[HEAD + layer + ".weight"])
        true_sigma = torch.linalg.matrix_norm(module.weight.double(), ord=2).item()
        assert module.eval().sigma().item() == pytest.approx(true_sigma, rel=1e-4)


def published_style_checkpoint(toy_task, source, target):
    """A checkpoint shaped like the published RoBERTa/XLM-R model.pt: training arguments as an
    argparse.Namespace under "args", and no classification head."""
    from fairseq import options

    state = torch.load(source, map_location="cpu", weights_only=False)
    parser = options.get_training_parser()
    args = options.parse_args_and_arch(parser, train_args(toy_task, "/nonexistent", criterion="masked_lm"))
    args.task = "masked_lm"
    model = {k: v for k, v in state["model"].items() if not k.startswith("classification_heads.")}
    torch.save({"args": args, "model": model, "optimizer_history": state["optimizer_history"],
                "extra_state": {"epoch": 1, "val_loss": None}, "last_optimizer_state": None}, target)


def test_published_checkpoint_restores_with_a_fresh_head(toy_task, tmp_path):
    run_fairseq("train", train_args(toy_task, str(tmp_path / "plain"), "--max-update", "1"))
    published = str(tmp_path / "model.pt")
    published_style_checkpoint(toy_task, str(tmp_path / "plain" / "checkpoint_last.pt"), published)
    assert isinstance(load(published)["args"], argparse.Namespace)
    # --restore-file with resets (fairseq's GLUE example), and --finetune-from-model (the recipes: loaded only
    # when the run folder has no checkpoint of its own)
    loads = {"restore": ["--restore-file", published, "--reset-optimizer", "--reset-dataloader", "--reset-meters"],
             "finetune": ["--finetune-from-model", published]}
    for arch in ("roberta_base", "roberta_sn_base"):
        for name, flags in loads.items():
            proc, records = run_fairseq("train", train_args(toy_task, str(tmp_path / arch / name), *flags,
                                                            "--max-update", "2", arch=arch))
            assert len(records["train_inner"]) == 2
            assert f"Loaded checkpoint {published} (epoch" in proc.stdout + proc.stderr, name


@needs_unsafe_globals_scan
def test_checkpoints_need_nothing_beyond_the_allowed_globals(toy_task, r4f_run):
    allowed = {f"{cls.__module__}.{cls.__qualname__}" for cls in FAIRSEQ_CHECKPOINT_GLOBALS}
    paths = glob.glob(os.path.join(r4f_run[0], "*.pt"))
    assert paths
    for path in paths:
        assert set(torch.serialization.get_unsafe_globals_in_checkpoint(path)) <= allowed


@needs_weights_only_default
def test_weights_only_safety_stays_on_for_everything_else(tmp_path):
    fairseq_like, hostile = str(tmp_path / "ok.pt"), str(tmp_path / "other.pt")
    torch.save({"args": argparse.Namespace(lr=[1e-5]), "model": {"w": torch.ones(1)}}, fairseq_like)
    torch.save({"x": fractions.Fraction(1, 3)}, hostile)
    script = (
        "import sys, torch\n"
        "def loads(path):\n"
        "    try:\n        torch.load(path); return True\n"
        "    except Exception:\n        return False\n"
        f"before = loads({fairseq_like!r})\n"
        "import fairseq_r3f\n"
        f"print(before, loads({fairseq_like!r}), loads({hostile!r}))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.split() == ["False", "True", "False"]


def test_fairseqs_own_spectral_norm_flag_is_refused_with_the_sn_architectures(toy_task, tmp_path):
    proc, _ = run_fairseq("train", train_args(toy_task, str(tmp_path), "--spectral-norm-classification-head",
                                              arch="roberta_sn_base"), check=False)
    assert proc.returncode != 0
    assert "--spectral-norm-classification-head cannot be combined with the *_sn_* architectures" in proc.stderr


# -- R4F as released: fairseq's --spectral-norm-classification-head normalises out_proj only --

def test_released_r4f_normalises_only_out_proj_and_resumes(toy_task, tmp_path):
    flags = ("--lr", "5e-3")
    arch = "roberta_sn_outproj_base"
    _, full = run_fairseq("train", train_args(toy_task, str(tmp_path / "full"), *flags, "--max-update", "8",
                                              arch=arch))
    run_fairseq("train", train_args(toy_task, str(tmp_path / "resumed"), *flags, "--max-update", "4", arch=arch))
    _, resumed = run_fairseq("train", train_args(toy_task, str(tmp_path / "resumed"), *flags, "--max-update", "8",
                                                 arch=arch))
    assert [r["loss"] for r in resumed["train_inner"]] == [r["loss"] for r in full["train_inner"]][4:]
    state = load(str(tmp_path / "full" / "checkpoint_last.pt"))["model"]
    assert HEAD + "out_proj.u" in state and HEAD + "out_proj.v" in state and HEAD + "dense.u" not in state
    w, u, v = (state[HEAD + "out_proj." + name].double() for name in ("weight", "u", "v"))
    # torch's spectral_norm from its random start: sigma = u^T W v <= the largest singular value, equal once the
    # power iteration has converged (8 steps here: near it)
    assert 1 - 1e-6 <= torch.linalg.matrix_norm(w / (u @ w @ v), ord=2).item() < 1.5
    assert abs(torch.linalg.matrix_norm(w, ord=2).item() - 1) > 0.05  # the normalisation does something
    _, model, _ = build_in_process(toy_task, arch=arch)
    model.load_state_dict(state, strict=True)
    head = model.classification_heads["sentence_classification_head"]
    assert isinstance(head.out_proj, SpectralNormLinear)
    assert type(head.dense) is torch.nn.Linear  # the dense matrix is applied as it is


def test_released_r4f_checkpoint_validates_and_exports(toy_task, tmp_path):
    arch = "roberta_sn_outproj_base"
    _, records = run_fairseq("train", train_args(toy_task, str(tmp_path), "--lr", "5e-3", "--max-update", "4",
                                                 arch=arch))
    _, validated = run_fairseq("validate", [
        toy_task, "--path", str(tmp_path / "checkpoint_last.pt"), "--user-dir", USER_DIR, "--task",
        "sentence_prediction", "--criterion", "sentence_prediction_r3f", "--num-classes", "2",
        "--batch-size", "16", "--required-batch-size-multiple", "1", "--log-format", "json", "--cpu",
    ])
    assert validated["valid"][0]["valid_accuracy"] == records["valid"][-1]["valid_accuracy"]
    out = str(tmp_path / "export.pt")
    subprocess.run([sys.executable, "-m", "fairseq_r3f.export", str(tmp_path / "checkpoint_last.pt"), out],
                   check=True, cwd=REPO, capture_output=True)
    exported = load(out)
    assert exported["cfg"]["model"]["arch"] == "roberta_base"
    assert not any(key.endswith((".u", ".v")) for key in exported["model"])
