"""python -m fairseq_r3f.export: checkpoints that plain fairseq loads, scores and continues without the plugin.

"Plain fairseq" here is a separate Python process, started in an empty folder, in which importing the plugin
raises: nothing it registers (architectures, criterions, the checkpoint allow-list) can be used there.
"""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import REPO, USER_DIR, first_batch, run_fairseq, train_args
from fairseq_r3f import export
from fairseq_r3f.logs import read_json_log

HEAD = "sentence_classification_head"

PLAIN_FAIRSEQ = r'''
import sys

class NoPlugin:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "fairseq_r3f":
            raise ModuleNotFoundError("the plugin is not available in plain fairseq")

sys.meta_path.insert(0, NoPlugin())
if sys.argv[1] == "--allow-namespace":  # what BART needs from plain fairseq on torch >= 2.6 (docs/export.md)
    import argparse
    import torch

    if hasattr(torch.serialization, "add_safe_globals"):  # older torch has no allow-list and loads it anyway
        torch.serialization.add_safe_globals([argparse.Namespace])
    del sys.argv[1]
command, args = sys.argv[1], sys.argv[2:]
if command == "logits":
    import numpy as np
    import torch
    from fairseq import checkpoint_utils

    checkpoint, data, inputs, out = args
    models, _, _ = checkpoint_utils.load_model_ensemble_and_task([checkpoint], arg_overrides={"data": data})
    net_input = {k: torch.from_numpy(v) for k, v in np.load(inputs).items()}
    with torch.no_grad():
        logits = models[0].eval()(**net_input, features_only=True, classification_head_name="%s")[0]
    np.save(out, logits.double().numpy())
else:
    import importlib

    sys.argv = ["fairseq-" + command] + args
    importlib.import_module("fairseq_cli." + command).cli_main()
''' % HEAD


def plain_fairseq(tmp_path, command, *args, check=True, allow_namespace=False):
    """Runs fairseq_cli.<command> (or the logits routine) in a process where the plugin cannot be imported."""
    script = tmp_path / "plain_fairseq.py"
    script.write_text(PLAIN_FAIRSEQ)
    cwd = tmp_path / "elsewhere"
    cwd.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    allow = ["--allow-namespace"] if allow_namespace else []
    proc = subprocess.run([sys.executable, str(script), *allow, command, *args], capture_output=True, text=True,
                          cwd=cwd, env={**env, "OMP_NUM_THREADS": "1"})
    if check and proc.returncode != 0:
        raise AssertionError(f"plain fairseq {command} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return proc, read_json_log(proc.stdout + proc.stderr)


def run_export(*args):
    return subprocess.run([sys.executable, "-m", "fairseq_r3f.export", *args], capture_output=True, text=True,
                          cwd=REPO)


def validate_args(data, checkpoint, criterion):
    return [data, "--path", checkpoint, "--task", "sentence_prediction", "--criterion", criterion,
            "--num-classes", "2", "--batch-size", "16", "--required-batch-size-multiple", "1",
            "--log-format", "json", "--cpu"]


def train(data, save_dir, arch, criterion="sentence_prediction_r3f", *extra):
    """A few updates of fine-tuning; returns the checkpoint and the json log records."""
    _, records = run_fairseq("train", train_args(data, str(save_dir), "--lr", "5e-3", "--max-update", "5", *extra,
                                                 arch=arch, criterion=criterion))
    return str(save_dir / "checkpoint_last.pt"), records


def exported(checkpoint, out, *flags):
    assert export.main([checkpoint, str(out), *flags]) == 0
    return str(out)


@pytest.fixture(scope="module")
def r4f(toy_task, tmp_path_factory):
    """An R4F checkpoint and its export through the command line."""
    folder = tmp_path_factory.mktemp("r4f")
    checkpoint, _ = train(toy_task, folder, "roberta_sn_base")
    proc = run_export(checkpoint, str(folder / "plain.pt"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.splitlines()[-1] == (
        f"wrote {folder / 'plain.pt'}: arch roberta_base, criterion sentence_prediction, task sentence_prediction, "
        "2 normalised head matrices folded, optimizer state dropped")
    return checkpoint, str(folder / "plain.pt")


def test_plain_fairseq_cannot_load_the_original(toy_task, r4f, tmp_path):
    """What the export is for: without the plugin the checkpoint does not load (torch >= 2.6 refuses the
    argparse.Namespace before the unknown architecture is even reached)."""
    proc, _ = plain_fairseq(tmp_path, "validate", *validate_args(toy_task, r4f[0], "sentence_prediction"),
                            check=False)
    assert proc.returncode != 0
    # fairseq 0.12.2 stops at the unknown architecture too, but its build_model fails while formatting its own
    # message (an IndexError on the line that lists MODEL_DATACLASS_REGISTRY)
    assert "argparse.Namespace" in proc.stderr or "roberta_sn_base" in proc.stderr or \
        ("IndexError" in proc.stderr and "MODEL_DATACLASS_REGISTRY" in proc.stderr)


def test_r4f_export_scores_like_the_original_without_the_plugin(toy_task, r4f, tmp_path):
    checkpoint, out = r4f
    _, original = run_fairseq("validate", validate_args(toy_task, checkpoint, "sentence_prediction_r3f")
                              + ["--user-dir", USER_DIR])
    _, plain = plain_fairseq(tmp_path, "validate", *validate_args(toy_task, out, "sentence_prediction"))
    (original,), (plain,) = original["valid"], plain["valid"]
    assert plain["valid_loss"] == original["valid_loss"]
    assert plain["valid_accuracy"] == original["valid_accuracy"]


def test_exported_checkpoint_names_only_fairseq(r4f):
    state = torch.load(r4f[1], map_location="cpu")  # weights-only, nothing allowed beyond torch's defaults
    cfg = state["cfg"]
    assert isinstance(cfg["model"], dict)
    assert cfg["model"]["arch"] == cfg["model"]["_name"] == "roberta_base"
    assert cfg["model"]["criterion"] == "sentence_prediction" and cfg["model"]["user_dir"] is None
    assert "r3f_lambda" not in cfg["model"] and "noise_type" not in cfg["model"]
    assert cfg["criterion"]["_name"] == "sentence_prediction" and "r3f_lambda" not in cfg["criterion"]
    assert cfg["common"]["user_dir"] is None
    assert not [key for key in state["model"] if key.endswith(".u")]
    assert state["last_optimizer_state"] is None
    assert state["optimizer_history"][-1]["criterion_name"] == "SentencePredictionCriterion"


@pytest.mark.parametrize("arch", ["roberta_sn_base", "bart_sn_base"])
def test_logits_of_the_export_in_plain_fairseq_equal_the_originals(toy_task, r4f, tmp_path, arch):
    from fairseq import checkpoint_utils

    if arch == "roberta_sn_base":
        checkpoint, out = r4f
    else:
        checkpoint = train(toy_task, tmp_path / "train", arch)[0]
        out = exported(checkpoint, tmp_path / "plain.pt")
    models, _, task = checkpoint_utils.load_model_ensemble_and_task([checkpoint], arg_overrides={"data": toy_task})
    net_input = first_batch(task, max_sentences=64)["net_input"]
    with torch.no_grad():
        original = models[0].eval()(**net_input, features_only=True, classification_head_name=HEAD)[0].double()
    np.savez(tmp_path / "inputs.npz", **{k: v.numpy() for k, v in net_input.items()})
    bart = arch.startswith("bart")
    assert isinstance(torch.load(out, map_location="cpu", weights_only=False)["cfg"]["model"], dict) != bart
    plain_fairseq(tmp_path, "logits", out, toy_task, str(tmp_path / "inputs.npz"), str(tmp_path / "logits.npy"),
                  allow_namespace=bart)
    plain = torch.from_numpy(np.load(tmp_path / "logits.npy"))
    assert plain.shape == original.shape == (64, 2)
    assert (plain - original).abs().max().item() <= 1e-6
    # the normalisation mattered: the raw head matrices would give other logits
    raw = torch.load(checkpoint, map_location="cpu")["model"]
    head = f"classification_heads.{HEAD}.out_proj."
    assert not torch.allclose(raw[head + "weight"], torch.load(out, map_location="cpu")["model"][head + "weight"])


@pytest.mark.parametrize("criterion,flags", [
    ("sentence_prediction_r3f", []),
    # a plain checkpoint, with fairseq's own spectral-norm head (which fairseq cannot reload: folded here)
    ("sentence_prediction", ["--spectral-norm-classification-head"]),
])
def test_r3f_and_plain_checkpoints_export_too(toy_task, tmp_path, criterion, flags):
    checkpoint, records = train(toy_task, tmp_path / "train", "roberta_base", criterion, *flags)
    out = exported(checkpoint, tmp_path / "plain.pt")
    _, plain = plain_fairseq(tmp_path, "validate", *validate_args(toy_task, out, "sentence_prediction"))
    # what training measured on the same checkpoint (fairseq-validate with the plugin gives the same numbers)
    assert plain["valid"][0]["valid_loss"] == records["valid"][-1]["valid_loss"]
    assert plain["valid"][0]["valid_accuracy"] == records["valid"][-1]["valid_accuracy"]


def test_kept_optimizer_state_continues_in_plain_fairseq(toy_task, r4f, tmp_path):
    out = exported(r4f[0], tmp_path / "plain.pt", "--keep-optimizer")
    assert torch.load(out, map_location="cpu")["last_optimizer_state"]["state"]
    flags = [arg for arg in train_args(toy_task, str(tmp_path / "continued"), "--restore-file", out,
                                       "--max-update", "7", criterion="sentence_prediction")
             if arg != USER_DIR and arg != "--user-dir"]
    proc, records = plain_fairseq(tmp_path, "train", *flags)
    assert "(epoch 1 @ 5 updates)" in proc.stdout + proc.stderr
    assert [r["num_updates"] for r in records["train_inner"]] == [6, 7]


def test_refusals_name_the_problem(tmp_path, r4f, capsys):
    r4f_checkpoint = r4f[0]
    text = tmp_path / "notes.txt"
    text.write_text("not a checkpoint\n")
    tensors = tmp_path / "tensors.pt"
    torch.save({"weight": torch.zeros(2)}, tensors)
    existing = tmp_path / "existing.pt"
    existing.write_bytes(b"keep me")
    cases = [
        ([str(text), str(tmp_path / "a.pt")], "is not a fairseq checkpoint: torch.load failed"),
        ([str(tensors), str(tmp_path / "b.pt")], "is not a fairseq checkpoint: it has no 'model' state"),
        ([str(tmp_path / "missing.pt"), str(tmp_path / "c.pt")], "missing.pt: no such file"),
        ([r4f_checkpoint, r4f_checkpoint], "is the checkpoint itself"),
        ([r4f_checkpoint, str(existing)], "exists: pass --force to overwrite it"),
        ([r4f_checkpoint, str(tmp_path / "no" / "d.pt")], "d.pt: its folder does not exist; create it first"),
    ]
    for argv, message in cases:
        assert export.main(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
    assert existing.read_bytes() == b"keep me"
    assert not (tmp_path / "a.pt").exists() and not (tmp_path / "b.pt").exists()
    assert export.main([r4f_checkpoint, str(existing), "--force"]) == 0
    assert torch.load(existing, map_location="cpu")["cfg"]["model"]["arch"] == "roberta_base"


def test_refusal_through_the_command_line(tmp_path):
    proc = run_export(str(tmp_path / "missing.pt"), str(tmp_path / "out.pt"))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == f"fairseq_r3f.export: {tmp_path / 'missing.pt'}: no such file"


def test_a_plugin_task_without_counterpart_is_refused(r4f):
    state = export.load_checkpoint(r4f[0])
    state["cfg"] = {**state["cfg"], "task": {**state["cfg"]["task"], "_name": "sentence_prediction_probe"}}
    with pytest.raises(export.ExportError, match="the task 'sentence_prediction_probe' is the plugin's and has no"):
        export.export(state)


def test_legacy_args_checkpoint_exports_to_cfg(toy_task, r4f, tmp_path):
    """Old-style checkpoints keep their settings as an argparse.Namespace under "args" and no "cfg"."""
    from fairseq import options

    state = torch.load(r4f[0], map_location="cpu")
    parser = options.get_training_parser()
    args = options.parse_args_and_arch(parser, train_args(toy_task, "/nonexistent", arch="roberta_sn_base"))
    legacy = tmp_path / "legacy.pt"
    torch.save({**state, "args": args, "cfg": None}, legacy)
    out = exported(str(legacy), tmp_path / "plain.pt")
    exported_state = torch.load(out, map_location="cpu")
    assert exported_state["args"] is None
    assert exported_state["cfg"]["model"]["arch"] == "roberta_base"
    assert exported_state["cfg"]["criterion"]["_name"] == "sentence_prediction"
    _, plain = plain_fairseq(tmp_path, "validate", *validate_args(toy_task, out, "sentence_prediction"))
    _, original = plain_fairseq(tmp_path, "validate", *validate_args(toy_task, r4f[1], "sentence_prediction"))
    assert plain["valid"][0]["valid_loss"] == original["valid"][0]["valid_loss"]


def test_every_plugin_criterion_and_task_becomes_its_parent(r4f):
    cfg = export.load_checkpoint(r4f[0])["cfg"]
    seq2seq = {"_name": "label_smoothed_cross_entropy_r3f", "label_smoothing": 0.1, "ignore_prefix_size": 0,
               "r3f_lambda": 0.01, "eps": 1e-5, "noise_type": "normal", "r3f_kl_normalization": "sentence"}
    plain = export.plain_config({**cfg, "criterion": seq2seq})["criterion"]
    assert plain == {"_name": "label_smoothed_cross_entropy", "label_smoothing": 0.1, "ignore_prefix_size": 0}
    freelb = {**cfg["criterion"], "_name": "sentence_prediction_freelb", "freelb_steps": 2}
    smart = {**cfg["criterion"], "_name": "sentence_prediction_smart", "smart_lambda": 1.0}
    for criterion in (freelb, smart):
        plain = export.plain_config({**cfg, "criterion": criterion, "task": {
            **cfg["task"], "_name": "sentence_prediction_freelb"}})
        assert plain["criterion"]["_name"] == plain["task"]["_name"] == "sentence_prediction"
        assert not {"freelb_steps", "smart_lambda", "r3f_lambda"} & set(plain["criterion"])
        assert plain["criterion"]["classification_head_name"] == HEAD
