"""Probing (Section 4): the probe task freezes the fine-tuned model and trains only a new linear head; the three
drivers run end to end on tiny generated tasks, write their tables and figures, and resume a stopped chain
without redoing finished steps."""

import json
import os
import re
import subprocess
import sys

import pytest
import torch

from conftest import REPO, real_weights, run_fairseq, train_args
from fairseq_r3f.tools import fairseq_command
from fairseq_r3f.toy_data import write_toy_task

HEADS = "classification_heads."
# --tiny: the tiny CPU model for 4 updates; a learning rate and batch at which it learns something in 4.
TINY = ["--tiny", "--", "--lr", "1e-3", "--batch-size", "16"]


@pytest.fixture(scope="module")
def glue_root(tmp_path_factory, toy_task):
    """DATA_ROOT with two toy "GLUE tasks" generated from different seeds, named SST-2 and QNLI."""
    root = tmp_path_factory.mktemp("glue")
    qnli = write_toy_task(str(tmp_path_factory.mktemp("toy_qnli")), n_train=128, n_valid=32, seed=1)
    os.symlink(toy_task, root / "SST-2-bin")
    os.symlink(qnli, root / "QNLI-bin")
    return root


@pytest.fixture(scope="module")
def tuned(tmp_path_factory, glue_root):
    """A model fine-tuned on SST-2, with dropout on, and its checkpoint's weights."""
    save = str(tmp_path_factory.mktemp("tuned"))
    run_fairseq("train", train_args(str(glue_root / "SST-2-bin"), save, "--max-update", "6", "--dropout", "0.1",
                                    criterion="sentence_prediction"))
    path = os.path.join(save, "checkpoint_last.pt")
    return path, torch.load(path)["model"]


def probe_args(data, checkpoint, save_dir, *extra):
    return train_args(data, save_dir, "--task", "sentence_prediction_probe", "--probe-checkpoint", checkpoint,
                      "--dropout", "0.3", "--attention-dropout", "0.3", *extra, criterion="sentence_prediction")


def body(state):
    """The model's weights without its classification heads, and without fairseq 0.12.2's BetterTransformer copies
    of the encoder's weights (conftest.real_weights: loading a checkpoint re-derives them; nothing trains them)."""
    weights, _ = real_weights(state)
    return {k: v for k, v in weights.items() if not k.startswith(HEADS)}


def test_probe_freezes_the_model_and_trains_only_a_new_linear_head(tmp_path, glue_root, tuned):
    source_path, source = tuned
    save = str(tmp_path / "probe")
    proc, _ = run_fairseq("train", probe_args(str(glue_root / "QNLI-bin"), source_path, save, "--max-update", "8",
                                              "--save-interval-updates", "4"))
    assert "(num. trained: 66)" in proc.stdout + proc.stderr  # out_proj of the head: 32 x 2 + 2
    early = torch.load(os.path.join(save, "checkpoint_1_4.pt"))
    last = torch.load(os.path.join(save, "checkpoint_last.pt"))
    assert last["optimizer_history"][-1]["num_updates"] == 8

    for checkpoint in (early, last):
        model = checkpoint["model"]
        assert body(model).keys() == body(source).keys()
        changed = [k for k in body(source) if not torch.equal(model[k], source[k])]
        assert changed == [], f"frozen weights changed: {changed[:5]}"
        head = {k[len(HEADS):] for k in model if k.startswith(HEADS)}
        assert head == {f"sentence_classification_head.{p}" for p in
                        ("dense.weight", "dense.bias", "out_proj.weight", "out_proj.bias")}
        # The head is linear (its dense layer is the identity), and new: not the fine-tuned head.
        dense = model[HEADS + "sentence_classification_head.dense.weight"]
        assert torch.equal(dense, torch.eye(32))
        assert not torch.equal(dense, source[HEADS + "sentence_classification_head.dense.weight"])
        # The optimizer was given the head's out_proj only.
        shapes = sorted(tuple(s["exp_avg"].shape) for s in checkpoint["last_optimizer_state"]["state"].values())
        assert shapes == [(2,), (2, 32)]

    out_proj = HEADS + "sentence_classification_head.out_proj.weight"
    assert not torch.equal(early["model"][out_proj], last["model"][out_proj])  # the head learns

    # A probe checkpoint loads back (resume, fairseq-validate, the hub) without --probe-checkpoint's file.
    from fairseq import checkpoint_utils

    os.rename(source_path, source_path + ".moved")
    try:
        (model,), _ = checkpoint_utils.load_model_ensemble([os.path.join(save, "checkpoint_last.pt")])
    finally:
        os.rename(source_path + ".moved", source_path)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in last["model"].items())
    assert [n for n, p in model.named_parameters() if p.requires_grad] == [
        HEADS + "sentence_classification_head.out_proj.weight", HEADS + "sentence_classification_head.out_proj.bias"]


def _build(task, extra, checkpoint=None):
    """The model fairseq-train would build, in this process, with dropout 0.5 everywhere."""
    from fairseq import options, tasks, utils
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf

    flags = ["--task", task, *(["--probe-checkpoint", checkpoint] if checkpoint else [])]
    argv = train_args(extra[0], "unused", *flags, "--dropout", "0.5", "--attention-dropout", "0.5",
                      "--activation-dropout", "0.5", "--pooler-dropout", "0.5", *extra[1:],
                      criterion="sentence_prediction")
    args = options.parse_args_and_arch(options.get_training_parser(), argv)
    utils.import_user_module(args)
    cfg = convert_namespace_to_omegaconf(args)
    return tasks.setup_task(cfg.task).build_model(cfg.model)


def test_probe_model_has_no_dropout_and_loads_every_weight(glue_root, tuned):
    source_path, source = tuned
    data = str(glue_root / "QNLI-bin")
    tokens = torch.tensor([[0, 5, 6, 7, 2, 2, 8, 9, 2]])

    probe = _build("sentence_prediction_probe", [data, "--encoder-layerdrop", "0.5"], source_path).train()
    outputs = [probe(tokens, classification_head_name="sentence_classification_head")[0] for _ in range(3)]
    assert all(torch.equal(outputs[0], out) for out in outputs[1:])
    trainable = [n for n, p in probe.named_parameters() if p.requires_grad]
    assert trainable == [HEADS + "sentence_classification_head.out_proj.weight",
                         HEADS + "sentence_classification_head.out_proj.bias"]
    state = probe.state_dict()
    assert all(torch.equal(state[k], v) for k, v in body(source).items())

    # The same model under fairseq's sentence_prediction keeps its dropout: the check above can fail.
    plain = _build("sentence_prediction", [data]).train()
    first, second = (plain(tokens, classification_head_name="sentence_classification_head")[0] for _ in range(2))
    assert not torch.equal(first, second)


def test_probe_refuses_a_missing_or_mismatched_checkpoint(glue_root, tuned):
    data = str(glue_root / "QNLI-bin")
    with pytest.raises(ValueError, match="needs --probe-checkpoint"):
        _build("sentence_prediction_probe", [data])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        _build("sentence_prediction_probe", [data], tuned[0] + ".missing")
    with pytest.raises(ValueError, match="does not fit the model"):
        _build("sentence_prediction_probe", [data, "--encoder-layers", "3"], tuned[0])
    with pytest.raises(ValueError, match="does not fit the model"):
        _build("sentence_prediction_probe", [data, "--encoder-ffn-embed-dim", "48"], tuned[0])


def test_probe_task_help_is_text_not_a_repr():
    proc = subprocess.run([sys.executable, "-m", "fairseq_r3f", "sentence_prediction_probe"], capture_output=True,
                          text=True, cwd=REPO, check=True)
    text = " ".join(proc.stdout.split())
    assert "SentencePredictionProbeConfig(" not in text and "= None" not in text
    assert "frozen" in text and "linear" in text
    assert "--probe-checkpoint PROBE_CHECKPOINT checkpoint whose model is probed" in text
    from fairseq_r3f.tasks.probing import SentencePredictionProbeConfig

    assert not SentencePredictionProbeConfig.__doc__.startswith("SentencePredictionProbeConfig(")  # the repr


def run_driver(name, *args, env=None, check=True):
    proc = subprocess.run(
        [sys.executable, "-m", f"fairseq_r3f.probing.{name}", *map(str, args)], capture_output=True, text=True,
        cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"{name} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return proc


def run_in_process(name, *args):
    """The driver's run(argv), as its command line calls it, without a new interpreter (fairseq's import
    costs seconds); the command line itself is exercised by the degradation test."""
    import importlib

    return importlib.import_module(f"fairseq_r3f.probing.{name}").run([str(a) for a in args])


def assert_png(path):
    import matplotlib.image

    image = matplotlib.image.imread(str(path))
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    return image


def test_dry_run_uses_the_paper_values_and_the_method_flags(tmp_path, glue_root):
    from r3f_runs.values import flag_value
    from fairseq_r3f.probing.generalisation import build_parser
    from fairseq_r3f.probing.runner import Experiment

    args = build_parser().parse_args(["--data-root", str(glue_root), "--work-dir", str(tmp_path), "--dry-run"])
    exp = Experiment("generalisation", args, ["--fp16"])
    rte = exp.finetune_args("RTE", "r4f", 3, "/pre/model.pt", "/out")
    text = " ".join(rte)
    for expected in ("--lr 1e-5", "--max-update 3120", "--warmup-updates 187", "--batch-size 8",
                     "--criterion sentence_prediction_r3f", "--r3f-lambda 1.0", "--eps 1e-5",
                     "--finetune-from-model /pre/model.pt", "--seed 3", "--classification-head-name rte_head"):
        assert expected in text
    assert flag_value(rte, "--arch") == "roberta_sn_large" and rte.count("--arch") == 1
    assert rte[-1] == "--fp16"
    probe = exp.probe_args("CoLA", "/tuned.pt", 1, "/p")
    assert "--report-mcc" in probe and "--best-checkpoint-metric" in probe
    assert probe[probe.index("--best-checkpoint-metric") + 1] == "mcc"
    assert "sentence_prediction_r3f" not in probe and "--no-save" in probe


def test_generalisation_driver(tmp_path, glue_root, tuned):
    work = tmp_path / "work"
    run_in_process("generalisation", "--data-root", glue_root, "--work-dir", work, "--arch", "roberta_base",
                   "--methods", "r4f", "--probe-tasks", "QNLI", "--pretrained", tuned[0], *TINY)
    results = json.loads((work / "results.json").read_text())
    assert [(r["method"], r["probe_task"]) for r in results["rows"]] == [("r4f", "QNLI")]
    assert all(0 <= r["metric"] <= 100 for r in results["rows"])
    assert results["summary"]["r4f"]["QNLI"]["n"] == 1
    assert "| r4f |" in (work / "results.md").read_text()
    assert_png(work / "generalisation.png")
    # R4F fine-tuned a spectrally normalised head (its power-iteration vector is saved) from --pretrained.
    run = work / "runs" / "r4f" / "seed1" / "finetune-SST-2"
    checkpoint = torch.load(run / "checkpoint_best.pt")
    assert any(k.endswith("sst2_head.out_proj.u") for k in checkpoint["model"])
    assert "loading pretrained model from " + tuned[0] in (run / "train.log").read_text()
    assert "last_optimizer_state" not in checkpoint  # dropped once the run is done: nothing reads it
    assert not (run / "checkpoint_last.pt").exists()


def test_degradation_driver_resumes_a_stopped_chain(tmp_path, glue_root):
    calls = tmp_path / "calls.txt"
    wrapper = tmp_path / "train.sh"
    wrapper.write_text(
        '#!/usr/bin/env bash\necho "$*" >> "$CALLS"\n'
        'if [[ "$(wc -l < "$CALLS")" == "${FAIL_AT:-0}" ]]; then echo "simulated stop" >&2; exit 3; fi\n'
        f'exec {" ".join(fairseq_command("fairseq-train"))} "$@"\n'
    )
    work = tmp_path / "work"
    args = ["--data-root", glue_root, "--work-dir", work, "--arch", "roberta_base", "--methods", "r3f",
            "--chain", "SST-2", "QNLI", "--fairseq-train", f"bash {wrapper}", "--probe-flags=--lr 1e-2",
            *TINY]
    env = {"CALLS": str(calls)}

    stopped = run_driver("degradation", *args, env={**env, "FAIL_AT": "3"}, check=False)
    assert stopped.returncode == 1
    assert "step r3f/seed1/2-QNLI/finetune failed" in stopped.stderr and "run the same command again" in stopped.stderr
    assert len(json.loads((work / "state.json").read_text())["steps"]) == 2
    assert not (work / "results.json").exists()

    run_driver("degradation", *args, env=env)
    save_dirs = [re.search(r"--save-dir (\S+)", line).group(1) for line in calls.read_text().splitlines()]
    steps = [os.path.relpath(d, work / "runs") for d in save_dirs]
    assert steps == ["r3f/seed1/1-SST-2/finetune", "r3f/seed1/1-SST-2/probe-SST-2",
                     "r3f/seed1/2-QNLI/finetune", "r3f/seed1/2-QNLI/finetune", "r3f/seed1/2-QNLI/probe-SST-2"]
    state = json.loads((work / "state.json").read_text())["steps"]
    second = state["r3f/seed1/2-QNLI/finetune"]["args"]
    assert second[second.index("--finetune-from-model") + 1] == state["r3f/seed1/1-SST-2/finetune"]["checkpoint"]
    probe = state["r3f/seed1/2-QNLI/probe-SST-2"]["args"]
    assert probe[probe.index("--probe-checkpoint") + 1] == state["r3f/seed1/2-QNLI/finetune"]["checkpoint"]
    assert probe[-2:] == ["--lr", "1e-2"]
    tuned = torch.load(state["r3f/seed1/2-QNLI/finetune"]["checkpoint"])["model"]
    assert not any(k.endswith(".u") for k in tuned)  # R3F keeps the plain head

    results = json.loads((work / "results.json").read_text())
    assert [r["finetuned_on"] for r in results["rows"]] == ["SST-2", "QNLI"]
    assert all(r["probe_task"] == "SST-2" and 0 <= r["metric"] <= 100 for r in results["rows"])
    assert_png(work / "degradation.png")

    # Finished: running it again runs nothing; changing a flag is refused instead of mixing results.
    os.environ["CALLS"] = str(calls)
    try:
        again = run_in_process("degradation", *args)
        assert again["rows"] == results["rows"]
        assert len(calls.read_text().splitlines()) == 5
        with pytest.raises(SystemExit, match="other fairseq-train arguments"):
            run_in_process("degradation", *args, "--lr", "1e-4")
    finally:
        del os.environ["CALLS"]


def test_retention_driver(tmp_path, glue_root):
    work = tmp_path / "work"
    run_in_process("retention", "--data-root", glue_root, "--work-dir", work, "--arch", "roberta_base",
               "--methods", "std++", "--chain", "SST-2", "QNLI", "--cycles", "2", *TINY)
    results = json.loads((work / "results.json").read_text())
    rows = results["rows"]
    assert [(r["cycle"], r["probe_task"], r["probed_after"]) for r in rows] == [
        (1, "SST-2", "pretrained"), (1, "QNLI", "SST-2"), (2, "SST-2", "QNLI"), (2, "QNLI", "SST-2")]
    assert rows[0]["metric"] is None and "no --pretrained" in rows[0]["note"]  # nothing to probe before step 1
    assert all(0 <= r["metric"] <= 100 for r in rows[1:])
    state = json.loads((work / "state.json").read_text())["steps"]
    assert sorted(state) == sorted([
        "std++/seed1/01-c1-SST-2/finetune", "std++/seed1/02-c1-QNLI/probe", "std++/seed1/02-c1-QNLI/finetune",
        "std++/seed1/03-c2-SST-2/probe", "std++/seed1/03-c2-SST-2/finetune", "std++/seed1/04-c2-QNLI/probe"])
    probe = state["std++/seed1/03-c2-SST-2/probe"]["args"]
    assert probe[probe.index("--probe-checkpoint") + 1] == state["std++/seed1/02-c1-QNLI/finetune"]["checkpoint"]
    assert results["summary"]["std++"]["QNLI"][1]["n"] == 1
    image = assert_png(work / "retention.png")
    assert image.shape[1] > image.shape[0]  # the panels side by side


def test_best_metric_of_a_resumed_run_and_method_overrides():
    from fairseq_r3f.probing.methods import GlueHparams, builtin_methods, parse_method_overrides, sn_arch
    from fairseq_r3f.probing.runner import _best_metric

    # A resumed fine-tuning logs fairseq's running best (restored from its checkpoint) beside this attempt's.
    log = "\n".join(f'2026 | INFO | valid | {{"valid_accuracy": "{a}", "valid_best_accuracy": "{b}"}}'
                    for a, b in (("61.0", "70.5"), ("64.0", "70.5")))
    assert _best_metric(log, "accuracy") == (70.5, [61.0, 64.0])
    assert _best_metric('x | valid | {"valid_mcc": "0.25"}', "mcc") == (0.25, [0.25])

    assert sn_arch("roberta_large") == "roberta_sn_large" and sn_arch("bart_base") == "bart_sn_base"
    with pytest.raises(ValueError, match="roberta_sn_"):
        sn_arch("transformer")
    methods = parse_method_overrides(["r4f=--criterion sentence_prediction_r3f --r3f-lambda 0.5", "mine=--foo 1"],
                                     builtin_methods(GlueHparams.load().shared))
    assert methods["r4f"].train_flags("roberta_base")[-2:] == ["--arch", "roberta_sn_base"]
    assert methods["mine"].train_flags("roberta_base") == ["--foo", "1"]
    with pytest.raises(ValueError, match="NAME=FLAGS"):
        parse_method_overrides(["r3f"], methods)


def test_figures_with_several_seeds_and_missing_points(tmp_path):
    from fairseq_r3f.probing import plots

    rows = [{"method": m, "seed": s, "probe_task": t, "metric": None if (t, c) == ("SST-2", 1) else 50.0 + s + c,
             "cycle": c, "position": c}
            for m in ("std++", "r4f") for s in (1, 2) for t in ("SST-2", "QNLI") for c in (1, 2)]
    plots.generalisation({"rows": rows, "probe_tasks": ["SST-2", "QNLI"], "source": "SST-2",
                          "metric_names": {"SST-2": "accuracy", "QNLI": "accuracy"}}, ["std++", "r4f"],
                         str(tmp_path / "g.png"))
    plots.degradation({"rows": rows, "chain": ["SST-2", "QNLI"], "probe_task": "SST-2", "metric_name": "accuracy"},
                      ["std++", "r4f"], str(tmp_path / "d.png"))
    plots.retention({"rows": rows, "chain": ["SST-2", "QNLI"], "cycles": 2,
                     "metric_names": {"SST-2": "accuracy", "QNLI": "mcc"}}, ["std++", "r4f"], str(tmp_path / "r.png"))
    for name in ("g", "d", "r"):
        assert_png(tmp_path / f"{name}.png")
