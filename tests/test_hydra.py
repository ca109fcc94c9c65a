"""The hydra configs in fairseq_r3f/config: their values are the hyper-parameter tables', and they train under the
plain ``fairseq-hydra-train`` console script as fairseq's own examples are run (no wrapper, no extra fields),
through the run layer: checkpoint.save_dir is locked, recorded, verified and marked done as a recipe's run folder,
and the result tables take it."""

import fcntl
import json
import shutil
import socket
import os
import random
import re
import subprocess
import sys

import pytest
import torch
from conftest import USER_DIR, real_weights
from omegaconf import OmegaConf

from fairseq_r3f.config import CONFIG_DIR, generate
from fairseq_r3f.evaluation.xnli import is_xnli
from fairseq_r3f.evaluation.rouge import is_summarization
from fairseq_r3f.preprocess.xnli import LANGUAGES
from fairseq_r3f.tools import fairseq_command
from r3f_runs.tables import read_table
from r3f_runs.status import run_status

GLUE_FILES = {"MNLI": "mnli", "QNLI": "qnli", "QQP": "qqp", "SST-2": "sst_2", "RTE": "rte", "MRPC": "mrpc",
              "CoLA": "cola", "STS-B": "sts_b"}
TINY_ROBERTA = ["+model.encoder_layers=2", "+model.encoder_embed_dim=32", "+model.encoder_ffn_embed_dim=64",
                "+model.encoder_attention_heads=2", "task.max_positions=64"]
TINY_BART = ["+model.encoder_layers=1", "+model.decoder_layers=1", "+model.encoder_embed_dim=32",
             "+model.decoder_embed_dim=32", "+model.encoder_ffn_embed_dim=64", "+model.decoder_ffn_embed_dim=64",
             "+model.encoder_attention_heads=2", "+model.decoder_attention_heads=2",
             "+model.max_source_positions=64", "+model.max_target_positions=64"]
ON_THE_CPU = ["common.cpu=true", "common.fp16=false", "common.log_interval=1", "dataset.num_workers=0",
              "common.seed=1"]


def load(name):
    """The config ``name`` (rte_r3f) from whichever of the config folders holds it."""
    paths = [os.path.join(CONFIG_DIR, folder, name + ".yaml") for folder in ("glue", "xnli", "summarization")]
    return OmegaConf.load(next(path for path in paths if os.path.exists(path)))


def shared(table):
    return {name: row["value"] for name, row in read_table(table).items()}


def test_there_is_a_config_for_every_glue_task_and_method_xnli_and_summarization_dataset():
    found = {os.path.relpath(os.path.join(root, f), CONFIG_DIR)
             for root, _, files in os.walk(CONFIG_DIR) for f in files if f.endswith(".yaml")}
    tasks = read_table("glue_tasks.tsv")
    assert set(GLUE_FILES) == set(tasks)
    expected = {f"glue/{GLUE_FILES[t]}_{m}.yaml" for t in tasks for m in ("stdpp", "r3f", "r4f")}
    expected |= {f"xnli/xnli_{m}.yaml" for m in ("std", "r3f", "r4f")}
    expected |= {f"summarization/{d}_r3f.yaml" for d in ("cnn_dm", "gigaword", "reddit_tifu")}
    assert found == expected


def assert_optimiser(cfg, values, lr, max_update, warmup):
    assert cfg.optimizer._name == "adam"
    assert cfg.optimizer.adam_betas == values["adam_betas"]
    assert cfg.optimizer.adam_eps == float(values["adam_eps"])
    assert cfg.optimizer.weight_decay == float(values["weight_decay"])
    assert cfg.lr_scheduler._name == values["lr_scheduler"]
    assert cfg.lr_scheduler.warmup_updates == warmup
    assert list(cfg.optimization.lr) == [float(lr)]
    assert cfg.optimization.max_update == int(max_update)
    assert cfg.optimization.clip_norm == float(values["clip_norm"])
    assert cfg.model.dropout == float(values["dropout"])
    assert cfg.model.attention_dropout == float(values["attention_dropout"])


def assert_method(cfg, method, values):
    criterion = {"std": "sentence_prediction", "stdpp": "sentence_prediction"}.get(method, "sentence_prediction_r3f")
    assert cfg.criterion._name == criterion
    assert cfg.model._name == ("roberta_sn_large" if method == "r4f" else "roberta_large")
    if criterion == "sentence_prediction_r3f":
        assert cfg.criterion.r3f_lambda == float(values["r3f_lambda"])
        assert cfg.criterion.noise_type == values["noise_type"]
        assert cfg.criterion.eps == float(values["eps"])
    else:
        assert "r3f_lambda" not in cfg.criterion


@pytest.mark.parametrize("task", sorted(GLUE_FILES))
@pytest.mark.parametrize("method", ["stdpp", "r3f", "r4f"])
def test_glue_configs_hold_the_tables_values(task, method):
    cfg, row, values = load(f"{GLUE_FILES[task]}_{method}"), read_table("glue_tasks.tsv")[task], shared("glue.tsv")
    assert cfg.task._name == "sentence_prediction" and OmegaConf.is_missing(cfg.task, "data")
    # the pretrained model through finetune_from_model (loaded only without a checkpoint_last.pt of the run's own)
    assert OmegaConf.is_missing(cfg.checkpoint, "finetune_from_model") and not cfg.checkpoint.get("reset_optimizer")
    assert "restore_file" not in cfg.checkpoint
    assert cfg.task.num_classes == int(row["num_classes"])
    assert cfg.task.max_positions == int(values["max_positions"])
    assert cfg.dataset.batch_size == int(row["batch_size"])  # the effective batch, on one GPU
    assert cfg.dataset.max_tokens == int(values["max_tokens"])
    assert cfg.checkpoint.best_checkpoint_metric == row["metric"]
    assert cfg.dataset.valid_subset == ("valid,valid1" if task == "MNLI" else "valid")
    assert cfg.criterion.get("regression_target", False) == (task == "STS-B")
    assert cfg.criterion.get("report_mcc", False) == (task == "CoLA")
    assert cfg.criterion.get("report_acc_and_f1", False) == (task in ("QQP", "MRPC"))
    max_update = int(row["max_update"])
    assert_optimiser(cfg, values, row["lr"], max_update, int(float(values["warmup_ratio"]) * max_update))
    assert_method(cfg, method, values)
    assert "max_epoch" not in cfg.optimization  # STD++ and R3F/R4F run the paper's update budget


def test_the_rte_configs_say_what_the_papers_tables_say():
    # Tables 5 and 6 for RTE: lr 1e-5, batch 8, 3120 updates, 6% warm-up; lambda from the grid, sigma 1e-5
    cfg = load("rte_r3f")
    assert (list(cfg.optimization.lr), cfg.dataset.batch_size, cfg.optimization.max_update) == ([1e-5], 8, 3120)
    assert cfg.lr_scheduler.warmup_updates == 187 and cfg.criterion.eps == 1e-5
    assert cfg.optimizer.adam_betas == "(0.9,0.98)" and cfg.optimizer.adam_eps == 1e-6


@pytest.mark.parametrize("method", ["std", "r3f", "r4f"])
def test_xnli_configs_hold_the_tables_values(method):
    cfg, values = load(f"xnli_{method}"), shared("xnli.tsv")
    assert cfg.task.num_classes == int(values["num_classes"])
    assert cfg.dataset.batch_size == int(values["batch_size"])
    assert cfg.dataset.valid_subset.split(",") == [f"valid_{language}" for language in LANGUAGES]
    assert cfg.dataset.valid_subset.startswith("valid_en,")  # English chooses the kept checkpoint
    max_update = int(values["max_update"])
    assert_optimiser(cfg, values, values["lr"], max_update, int(float(values["warmup_ratio"]) * max_update))
    assert_method(cfg, method, values)


@pytest.mark.parametrize("dataset", ["cnn_dm", "gigaword", "reddit_tifu"])
def test_summarization_configs_hold_the_tables_values(dataset):
    cfg = load(f"{dataset}_r3f")
    values = {name: row[dataset] for name, row in read_table("summarization.tsv").items()}
    assert cfg.task._name == "translation" and cfg.model._name == values["arch"]
    assert cfg.criterion._name == "label_smoothed_cross_entropy_r3f"
    assert cfg.criterion.label_smoothing == float(values["label_smoothing"])
    assert cfg.criterion.r3f_lambda == float(values["r3f_lambda"])
    assert cfg.criterion.noise_type == values["noise_type"] and cfg.criterion.eps == float(values["eps"])
    assert cfg.criterion.r3f_kl_normalization == values["r3f_kl_normalization"]
    tokens_per_update = int(values["max_tokens"]) * int(values["reference_gpus"]) * int(values["reference_update_freq"])
    assert cfg.dataset.max_tokens * cfg.optimization.update_freq[0] == tokens_per_update
    assert cfg.dataset.max_tokens == int(values["max_tokens"])
    assert cfg.optimizer._name == values["optimizer"]
    assert_optimiser(cfg, values, values["lr"], values["total_updates"], int(values["warmup_updates"]))


def test_the_configs_are_what_the_tables_give_now():
    assert generate.main(["--check"]) == 0, "a table changed: run python -m fairseq_r3f.config.generate"


def test_a_stale_config_is_named(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(generate, "CONFIG_DIR", str(tmp_path))
    assert generate.main([]) == 0
    path = tmp_path / "glue" / "rte_r3f.yaml"
    path.write_text(path.read_text().replace("max_update: 3120", "max_update: 3000"))
    assert generate.main(["--check"]) == 1
    assert "1 config(s) differ from the tables (glue/rte_r3f.yaml): run python -m fairseq_r3f.config.generate" \
        in capsys.readouterr().err


def test_the_hydra_plugin_leaves_other_hydra_programs_alone():
    code = ("import sys, hydra_plugins.fairseq_r3f_plugin as p\n"
            "from hydra.core.config_search_path import ConfigSearchPath\n"
            "from hydra._internal.config_search_path_impl import ConfigSearchPathImpl\n"
            "path = ConfigSearchPathImpl(); p.FairseqR3FSearchPathPlugin().manipulate_search_path(path)\n"
            "print('fairseq' in sys.modules, len(path.get_path()))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["False", "0"]


def composed(name, **overrides):
    """The plugin's config ``name`` as fairseq-hydra-train composes it (fairseq's schema, the YAML, overrides)."""
    from fairseq.dataclass.configs import FairseqConfig

    cfg = OmegaConf.merge(OmegaConf.structured(FairseqConfig), load(name))
    for key, value in overrides.items():
        OmegaConf.update(cfg, key.replace("__", "."), value, merge=False)
    return cfg


def test_the_run_layer_labels_each_config_from_what_it_composes():
    import fairseq_r3f  # noqa: F401  (the plugin's criterions and architectures)
    from r3f_runs.hydra import hydra_label
    from r3f_runs.tables import hydra_config_family
    from r3f_runs.values import Stop

    # the run layer takes the plugin's configs, by name; a config of another name trains as fairseq has it
    shipped = [name[:-5] for folder in ("glue", "xnli", "summarization")
               for name in os.listdir(os.path.join(CONFIG_DIR, folder))]
    assert len(shipped) == 30 and all(hydra_config_family(name) for name in shipped)
    assert [hydra_config_family(name) for name in ("my_r3f", "rte_std", "config", "glue/rte_r3f")] == [None] * 4
    methods = {"stdpp": "std++", "std": "std", "r3f": "r3f", "r4f": "r4f"}
    for task, file in GLUE_FILES.items():
        for method in ("stdpp", "r3f", "r4f"):
            label = hydra_label(composed(f"{file}_{method}", task__data=f"/data/{task}-bin"), f"{file}_{method}")
            assert (label["task"], label["method"], label["seed"]) == (task, methods[method], 1)
            assert label["effective_batch"] == int(read_table("glue_tasks.tsv")[task]["batch_size"])
            assert label["r3f_lambda"] == (0 if method == "stdpp" else 1.0)
    for method in ("std", "r3f", "r4f"):
        label = hydra_label(composed(f"xnli_{method}", task__data="/data/xnli"), f"xnli_{method}")
        assert (label["task"], label["method"]) == ("XNLI", method)
    label = hydra_label(composed("gigaword_r3f", task__data="/data/gigaword", common__seed=3), "gigaword_r3f")
    assert (label["dataset"], label["seed"], "method" in label) == ("gigaword", 3, False)
    for name, overrides, message in (
            ("rte_r3f", {"task__data": "/data/MNLI-bin"}, "task.data=/data/MNLI-bin holds MNLI, and rte_r3f is RTE"),
            ("rte_r3f", {"task__num_classes": 3}, "task.num_classes=3: RTE has 2 classes"),
            ("rte_r3f", {"criterion": {"_name": "sentence_prediction"}}, "rte_r3f composed to std++"),
            ("rte_r4f", {"model___name": "roberta_large"}, "rte_r4f composed to r3f"),
            ("cnn_dm_r3f", {"criterion": {"_name": "label_smoothed_cross_entropy"}}, "cnn_dm_r3f trains")):
        cfg = composed(name, **{"task__data": "/data/x", **overrides})
        with pytest.raises(Stop, match=re.escape(message)):
            hydra_label(cfg, name)


def test_several_launched_processes_are_refused(tmp_path):
    """Under torchrun or srun every process would lock and record the same folder: refused before anything."""
    import fairseq_r3f  # noqa: F401
    from r3f_runs.hydra import launch_composed
    from r3f_runs.values import Stop

    cfg = composed("rte_r3f", task__data="/data/RTE-bin", checkpoint__save_dir=str(tmp_path / "run"))
    for env in ({"WORLD_SIZE": "2"}, {"SLURM_NTASKS": "4"}):
        with pytest.raises(Stop, match="runs as one process"):
            launch_composed(cfg, lambda c: pytest.fail("trained"), "rte_r3f", [], env=env)
    assert not (tmp_path / "run").exists()


# -- through fairseq-hydra-train -----------------------------------------------------------------------------------


def hydra_train(cwd, *overrides, config_dir=None, config_name, flags=()):
    """Runs the fairseq-hydra-train console script; returns (process, json records by tag)."""
    command = fairseq_command("fairseq-hydra-train") + list(flags)
    if config_dir is not None:
        command += ["--config-dir", config_dir]
    command += ["--config-name", config_name, f"hydra.run.dir={cwd}/hydra", *overrides]
    proc = subprocess.run(command, capture_output=True, text=True, cwd=str(cwd),
                          env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"})
    records = {}
    for line in (proc.stdout + proc.stderr).splitlines():
        match = re.search(r"\]\[(\w+)\]\[INFO\] - (\{.*\})$", line)
        if match:
            records.setdefault(match.group(1), []).append(json.loads(match.group(2)))
    return proc, records


def saved_cfg(save_dir):
    state = torch.load(os.path.join(save_dir, "checkpoint_last.pt"), map_location="cpu", weights_only=False)
    return state["cfg"], state["model"]


def read_json(path):
    with open(path) as f:
        return json.load(f)


def glue_table(root, out):
    """The GLUE results table over ``root`` (python -m fairseq_r3f.evaluation.results glue): its results.json."""
    proc = subprocess.run([sys.executable, "-m", "fairseq_r3f.evaluation.results", "glue", str(root),
                           "--out", str(out)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return read_json(os.path.join(out, "results.json"))


def test_glue_r3f_config_trains_with_r3f_under_fairseq_hydra_train(toy_task, tmp_path):
    """The run is recorded as a recipe's (run.json labelled from what composed, identity.json, done) and the GLUE
    table lists it with its logged number; the same command again trains nothing; another lambda into the same
    save_dir is refused with the field named."""
    save = tmp_path / "runs" / "rte_r3f" / "seed1"

    def launch(*extra):
        return hydra_train(
            tmp_path, f"task.data={toy_task}", "checkpoint.finetune_from_model=null",
            f"common.user_dir={USER_DIR}", f"checkpoint.save_dir={save}", "optimization.max_update=3",
            *TINY_ROBERTA, *ON_THE_CPU, *extra, config_dir=os.path.join(CONFIG_DIR, "glue"), config_name="rte_r3f")

    proc, records = launch()
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [r["num_updates"] for r in records["train_inner"]] == ["1", "2", "3"]
    assert all(float(r["symm_kl"]) > 0 for r in records["train_inner"])  # the R3F term is computed and logged
    cfg, state = saved_cfg(save)
    assert not any(key.endswith(".u") for key in state)  # R3F: a plain head
    assert cfg["criterion"]["_name"] == "sentence_prediction_r3f" and cfg["criterion"]["r3f_lambda"] == 1.0
    assert cfg["model"]["_name"] == "roberta_large" and cfg["model"]["encoder_layers"] == 2
    assert cfg["optimization"]["lr"] == [1e-5] and cfg["lr_scheduler"]["warmup_updates"] == 187

    # recorded as the recipes record a run
    label = read_json(save / "run.json")
    assert {k: label[k] for k in ("recipe", "task", "method", "seed", "config", "r3f_lambda", "noise_type")} == {
        "recipe": "hydra", "task": "RTE", "method": "r3f", "seed": 1, "config": "rte_r3f", "r3f_lambda": 1.0,
        "noise_type": "uniform"}
    assert label["planned_configuration"]["criterion.r3f_lambda"] == 1
    assert label["planned_configuration"]["model.encoder_layers"] == 2
    assert read_json(save / "done")["num_updates"] == 3
    assert read_json(save / "identity.json")["mismatches"] == []
    assert (save / "versions.json").exists() and "fairseq-hydra-train" in (save / "command.sh").read_text()
    # the logging config fairseq-train applies in its first worker (a spawned process on several GPUs) writes
    # train.log too
    handler = cfg["job_logging_cfg"]["handlers"]["fairseq_r3f_train_log"]
    assert handler["filename"] == str(save / "train.log")

    # the GLUE table lists it with the number its log gave
    valid = max(float(r["valid_accuracy"]) for r in records["valid"])
    results = glue_table(tmp_path / "runs", tmp_path / "table")
    [cell] = results["summary"]
    assert (cell["task"], cell["row"], cell["seeds"]) == ("RTE", "R3F", [1])
    assert cell["max"][0] == pytest.approx(valid) and results["not_in_tables"] == []

    # the same command again: nothing trained, the checkpoint untouched
    stamp = os.stat(save / "checkpoint_last.pt").st_mtime_ns
    proc, records = launch()
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not records and f"skip {save}: already done" in proc.stderr
    assert os.stat(save / "checkpoint_last.pt").st_mtime_ns == stamp

    # another effective setting into the same save_dir: refused, naming the field
    proc, records = launch("criterion.r3f_lambda=0.5")
    assert proc.returncode == 2 and "criterion.r3f_lambda: 1 recorded, 0.5 now" in proc.stderr, proc.stderr[-2000:]
    assert not records and os.stat(save / "checkpoint_last.pt").st_mtime_ns == stamp


def test_a_multirun_over_seeds_gives_one_cell_with_every_seed(toy_task, tmp_path):
    """fairseq-hydra-train --multirun over common.seed, each job into its own save_dir: each job is a run of its own
    (its train.log holds its records only), and the GLUE table pools the seeds in one cell."""
    proc, records = hydra_train(
        tmp_path, f"hydra.sweep.dir={tmp_path}/sweep", f"task.data={toy_task}",
        "checkpoint.finetune_from_model=null", f"checkpoint.save_dir={tmp_path}/runs/seed${{common.seed}}",
        "optimization.max_update=2", *TINY_ROBERTA, *ON_THE_CPU[:-1], "common.seed=1,2", config_name="rte_r3f",
        flags=["--multirun"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(records["train_inner"]) == 4
    for seed in (1, 2):
        run = tmp_path / "runs" / f"seed{seed}"
        assert read_json(run / "run.json")["seed"] == seed and read_json(run / "done")["num_updates"] == 2
        assert (run / "train.log").read_text().count("| train_inner |") == 2
    [cell] = glue_table(tmp_path / "runs", tmp_path / "table")["summary"]
    assert (cell["row"], cell["seeds"], cell["planned_seeds"]) == ("R3F", [1, 2], 2)


def test_a_save_dir_in_use_is_refused_naming_the_holder(toy_task, tmp_path):
    save = tmp_path / "run"
    save.mkdir()
    holder = f"pid {os.getpid()} host {socket.gethostname()} started 2026-01-01T00:00:00Z"
    (save / "lock").write_text(holder + "\n")  # the holder record
    folder = os.open(save, os.O_RDONLY)
    try:
        fcntl.flock(folder, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the folder held as launch.run_lock holds it
        proc, records = hydra_train(
            tmp_path, f"task.data={toy_task}", "checkpoint.finetune_from_model=null", f"checkpoint.save_dir={save}",
            "optimization.max_update=1", *TINY_ROBERTA, *ON_THE_CPU, config_name="rte_r4f")
    finally:
        os.close(folder)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert f"error: {save} is in use by {holder}" in proc.stderr
    assert not records and sorted(os.listdir(save)) == ["lock"]


def test_the_same_command_again_resumes_instead_of_reloading_the_pretrained_model(toy_task, tmp_path):
    """A run killed after update 2 and launched again with the same command continues from its own
    checkpoint_last.pt (the pretrained model is loaded only on the first launch) and ends with the uninterrupted
    run's model; a kill between the end of training and ``done`` trains nothing more."""
    def train(save, max_update, pretrained="null"):
        return hydra_train(
            tmp_path, f"task.data={toy_task}", f"checkpoint.finetune_from_model={pretrained}",
            f"common.user_dir={USER_DIR}", f"checkpoint.save_dir={save}", f"optimization.max_update={max_update}",
            "checkpoint.save_interval_updates=2", *TINY_ROBERTA, *ON_THE_CPU,
            config_dir=os.path.join(CONFIG_DIR, "glue"), config_name="rte_r3f")

    proc, _ = train(tmp_path / "pretrained", 2)
    assert proc.returncode == 0, proc.stderr[-3000:]
    pretrained = tmp_path / "pretrained" / "checkpoint_last.pt"
    run = tmp_path / "runs" / "run"
    proc, records = train(run, 4, pretrained)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"loading pretrained model from {pretrained}" in proc.stdout + proc.stderr
    assert [r["num_updates"] for r in records["train_inner"]] == ["1", "2", "3", "4"]
    uninterrupted = {k: v.clone() for k, v in saved_cfg(run)[1].items()}
    valid = [float(r["valid_accuracy"]) for r in records["valid"]]

    # as a SIGKILL after update 2 leaves the folder: checkpoint_last.pt at update 2, no trained, identity or done
    shutil.copy(run / "checkpoint_1_2.pt", run / "checkpoint_last.pt")
    for name in ("trained", "identity.json", "done"):
        os.remove(run / name)
    proc, records = train(run, 4, pretrained)  # the same command
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-3000:]
    assert "loading pretrained model" not in output and "checkpoint_last.pt" in output
    assert [r["num_updates"] for r in records["train_inner"]] == ["3", "4"]
    resumed, _ = real_weights(saved_cfg(run)[1])
    assert resumed.keys() == real_weights(uninterrupted)[0].keys()
    assert all(torch.equal(resumed[k], uninterrupted[k]) for k in resumed), "the resumed run ends elsewhere"
    assert read_json(run / "done")["num_updates"] == 4

    # a kill between the end of training and done: the same command records the run, training nothing
    os.remove(run / "done")
    stamp = os.stat(run / "checkpoint_last.pt").st_mtime_ns
    proc, records = train(run, 4, pretrained)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "already reached the planned end (update 4)" in proc.stderr and not records
    assert os.stat(run / "checkpoint_last.pt").st_mtime_ns == stamp and read_json(run / "done")["num_updates"] == 4
    # the table reads the trajectory that led to the final checkpoint: the resumed launch's rounds
    [cell] = glue_table(tmp_path / "runs", tmp_path / "table")["summary"]
    assert cell["max"][0] == pytest.approx(max(valid))


def test_an_override_that_changes_the_method_is_refused_before_training(toy_task, tmp_path):
    for config, override, message in (
            ("rte_r4f", "model._name=roberta_base", "drops R4F's spectrally normalised head from rte_r4f"),
            ("rte_r3f", "criterion._name=sentence_prediction", "replaces rte_r3f's criterion"),
            ("rte_r3f", "optimization.lr=[nan]", "nan is not a finite number")):
        proc, records = hydra_train(
            tmp_path, f"task.data={toy_task}", "checkpoint.finetune_from_model=null",
            f"checkpoint.save_dir={tmp_path / config}", "optimization.max_update=1", override, *TINY_ROBERTA,
            *ON_THE_CPU, config_name=config)
        assert proc.returncode == 2 and f"error: {override}" in proc.stderr and message in proc.stderr, \
            proc.stderr[-2000:]
        assert not records and not (tmp_path / config).exists()


def test_xnli_r4f_config_found_by_name_alone_trains_the_spectrally_normalised_head(toy_task, tmp_path):
    # no --config-dir and no common.user_dir: the plugin's folders are on Hydra's search path
    save = tmp_path / "save"
    proc, records = hydra_train(
        tmp_path, f"task.data={toy_task}", "checkpoint.finetune_from_model=null",
        f"checkpoint.save_dir={save}", "optimization.max_update=2", "dataset.valid_subset=valid", *TINY_ROBERTA,
        *ON_THE_CPU, config_name="xnli_r4f")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "symm_kl" in records["train_inner"][-1]
    cfg, state = saved_cfg(save)
    assert cfg["model"]["_name"] == "roberta_sn_large" and cfg["criterion"]["_name"] == "sentence_prediction_r3f"
    head = "classification_heads.sentence_classification_head."
    assert {head + "dense.u", head + "out_proj.u"} <= set(state)  # every head matrix carries its power-iteration u
    label = read_json(save / "run.json")
    assert (label["task"], label["method"], label["recipe"]) == ("XNLI", "r4f", "hydra")
    assert run_status(str(save), is_xnli) == ("finished", "update 2")  # as the XNLI table reads it


def write_tiny_summarization_set(folder):
    rng = random.Random(0)
    words = [f"w{i}" for i in range(40)]
    raw = folder / "raw"
    raw.mkdir()
    for split, n in (("train", 48), ("valid", 8)):
        sources = [" ".join(rng.choice(words) for _ in range(rng.randint(8, 20))) for _ in range(n)]
        (raw / f"{split}.source").write_text("".join(s + "\n" for s in sources))
        (raw / f"{split}.target").write_text("".join(" ".join(s.split()[:4]) + "\n" for s in sources))
    data_bin = folder / "bin"
    subprocess.run(fairseq_command("fairseq-preprocess") + [
        "--source-lang", "source", "--target-lang", "target", "--trainpref", str(raw / "train"),
        "--validpref", str(raw / "valid"), "--destdir", str(data_bin), "--joined-dictionary", "--workers", "1",
    ], check=True, capture_output=True)
    return data_bin


def test_summarization_config_trains_bart_with_the_seq2seq_r3f_criterion(tmp_path):
    data_bin = write_tiny_summarization_set(tmp_path)
    save = tmp_path / "save"
    proc, records = hydra_train(
        tmp_path, f"task.data={data_bin}", "checkpoint.finetune_from_model=null",
        f"checkpoint.save_dir={save}", "optimization.max_update=2", "optimization.update_freq=[1]",
        "dataset.max_tokens=512", "model._name=bart_base", *TINY_BART, *ON_THE_CPU,
        config_dir=os.path.join(CONFIG_DIR, "summarization"), config_name="cnn_dm_r3f")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "symm_kl" in records["train_inner"][-1]
    cfg, _ = saved_cfg(save)
    assert cfg["criterion"]["_name"] == "label_smoothed_cross_entropy_r3f"
    assert cfg["criterion"]["r3f_kl_normalization"] == "sentence" and cfg["optimization"]["clip_norm"] == 0.1
    label = read_json(save / "run.json")
    assert (label["dataset"], label["recipe"]) == ("cnn_dm", "hydra")
    assert label["r3f_lambda"] == cfg["criterion"]["r3f_lambda"]
    assert run_status(str(save), is_summarization("cnn_dm")) == ("finished", "update 2")  # the ROUGE table's

