"""The package as users get it: built from the checkout's pyproject.toml, installed (not editable) into a folder
of its own and run from outside the checkout, it finds its tables, configs and hydra plugin as package data, and
its metadata says what it is. Also: the test tiers of tests/conftest.py name tests that exist."""

import ast
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys

import pytest

import conftest
from conftest import REPO
from fairseq_r3f.toy_data import write_toy_task
from fairseq_r3f.tools import fairseq_command
from r3f_runs.tables import read_table

# What a source distribution holds: the build must need nothing else from the checkout.
SOURCES = ("pyproject.toml", "setup.py", "README.md", "LICENSE", "fairseq_r3f", "r3f_runs", "hydra_plugins", "rxf")


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """{"site": the install folder, "cwd": a folder outside the checkout}; the wheel is built from a copy of
    SOURCES, so the build cannot lean on the rest of the checkout."""
    root = tmp_path_factory.mktemp("installed")
    source = root / "source"
    source.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for name in SOURCES:
        path = os.path.join(REPO, name)
        if os.path.isdir(path):
            shutil.copytree(path, source / name, ignore=ignore)
        else:
            shutil.copy(path, source / name)
    site = root / "site"
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
                           "--disable-pip-version-check", "-q", "--target", str(site), str(source)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    cwd = root / "elsewhere"
    cwd.mkdir()
    return {"site": str(site), "cwd": str(cwd)}


def run(installed, command, timeout=300):
    """``command`` (a list) with only the installed copy of the plugin importable first, outside the checkout."""
    env = {**os.environ, "PYTHONPATH": installed["site"], "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
    return subprocess.run(command, capture_output=True, text=True, cwd=installed["cwd"], env=env, timeout=timeout)


def python(installed, *args):
    return run(installed, [sys.executable, *args])


def test_the_installed_copy_is_what_runs_and_carries_its_data_and_metadata(installed):
    code = (
        "import importlib.metadata as m, json, fairseq_r3f, hydra_plugins.fairseq_r3f_plugin as plugin\n"
        "from fairseq_r3f import tools, config\n"
        "from r3f_runs import tables\n"
        "meta = m.metadata('fairseq-r3f')\n"
        "print(json.dumps({'package': fairseq_r3f.__file__, 'plugin': plugin.__file__, 'user_dir': tools.USER_DIR,\n"
        "  'run_layer_user_dir': tables.USER_DIR, 'table': tables.hparams_path('summarization.tsv'),\n"
        "  'configs': config.CONFIG_DIR,\n"
        "  'version': fairseq_r3f.__version__, 'dist_version': m.version('fairseq-r3f'),\n"
        "  'license': meta['License-Expression'], 'requires': m.requires('fairseq-r3f') or [],\n"
        "  'license_text': m.distribution('fairseq-r3f').read_text('licenses/LICENSE')}))"
    )
    proc = python(installed, "-c", code)
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = json.loads(proc.stdout.splitlines()[-1])
    site = installed["site"] + os.sep
    for key in ("package", "plugin", "user_dir", "run_layer_user_dir", "table", "configs"):
        assert found[key].startswith(site), (key, found[key])
    assert os.path.isfile(os.path.join(found["configs"], "glue", "rte_r3f.yaml"))
    assert found["version"] == found["dist_version"] == version_in_the_source()
    assert found["license"] == "MIT"
    assert found["license_text"].startswith("MIT License") and "Copyright (c) the fairseq-r3f authors" in \
        found["license_text"]
    assert not any(r.lower().startswith(("fairseq", "torch")) for r in found["requires"])
    # what the package imports beyond fairseq and torch (which the user brings): nothing else is required
    assert sorted(r for r in found["requires"] if "extra ==" not in r) == sorted([
        "numpy", "scikit-learn", "scipy", "sacrebleu>=1.4.12", "sentencepiece", "rouge-score>=0.1.2", "nltk", "tqdm",
        "PyYAML"])
    assert any(r.startswith("ruff") and 'extra == "test"' in r for r in found["requires"])


def version_in_the_source():
    """__version__ as fairseq_r3f/__init__.py assigns it: the only place the version is written."""
    tree = ast.parse(open(os.path.join(REPO, "fairseq_r3f", "__init__.py")).read())
    return next(node.value.value for node in tree.body if isinstance(node, ast.Assign)
                and [t.id for t in node.targets if isinstance(t, ast.Name)] == ["__version__"])


def test_the_version_is_written_once():
    with open(os.path.join(REPO, "pyproject.toml")) as f:
        pyproject = f.read()
    # the licence is dynamic too: setup.py writes it in the form the installed setuptools knows
    assert 'dynamic = ["version", "license"]' in pyproject and 'attr = "fairseq_r3f.__version__"' in pyproject
    assert importlib.metadata.version("fairseq-r3f") == version_in_the_source()


def test_rouge_reads_the_shipped_table(installed):
    cwd = installed["cwd"]
    with open(os.path.join(cwd, "ref.txt"), "w") as f:
        f.write("the cat sat on the mat . it was happy .\na dog ran home\n")
    results = {}
    for dataset in ("cnn_dm", "gigaword"):  # the table: ROUGE-Lsum for cnn_dm only
        proc = python(installed, "-m", "fairseq_r3f.evaluation.rouge", "--dataset", dataset, "--references", "ref.txt",
                      "--hypotheses", "ref.txt", "--output-dir", dataset, "--workers", "1")
        assert proc.returncode == 0, proc.stderr[-3000:]
        with open(os.path.join(cwd, dataset, "rouge.json")) as f:
            results[dataset] = json.load(f)
    assert results["gigaword"]["rouge1"] == 100.0 and "rougeLsum" not in results["gigaword"]
    assert results["cnn_dm"]["rougeLsum"] == 100.0
    proc = python(installed, "-m", "fairseq_r3f.evaluation.rouge", "--dataset", "xsum", "--references", "ref.txt",
                  "--hypotheses", "ref.txt")
    assert proc.returncode == 2 and "choose one of cnn_dm, gigaword, reddit_tifu" in proc.stderr


def test_preprocessing_runs_as_a_module(installed):
    for name in ("glue", "xnli", "summarization"):
        proc = python(installed, "-m", f"fairseq_r3f.preprocess.{name}", "--help")
        assert proc.returncode == 0 and proc.stdout.startswith("usage:"), proc.stderr[-3000:]


@pytest.fixture(scope="module")
def toy_glue_root(installed, toy_task):
    root = os.path.join(os.path.dirname(installed["cwd"]), "glue")
    os.makedirs(root)
    os.symlink(toy_task, os.path.join(root, "SST-2-bin"))
    os.symlink(write_toy_task(os.path.join(root, "qnli"), n_train=32, n_valid=8, seed=1),
               os.path.join(root, "QNLI-bin"))
    return root


def test_a_probing_driver_plans_its_runs_from_the_shipped_tables(installed, toy_glue_root):
    proc = python(installed, "-m", "fairseq_r3f.probing.generalisation", "--data-root", toy_glue_root,
                  "--work-dir", "work", "--methods", "r3f", "--probe-tasks", "QNLI", "--dry-run")
    assert proc.returncode == 0, proc.stderr[-3000:]
    finetune = next(line for line in proc.stdout.splitlines() if "SST-2-bin" in line and "fairseq-train" in line)
    sst2 = read_table("glue_tasks.tsv")["SST-2"]
    assert f"--user-dir {os.path.join(installed['site'], 'fairseq_r3f')} " in finetune
    assert f" --lr {sst2['lr']} " in finetune and f" --max-update {sst2['max_update']} " in finetune


def test_a_hydra_config_of_the_installed_copy_trains(installed, toy_task):
    hydra_dir = os.path.join(installed["cwd"], "hydra")
    proc = run(installed, fairseq_command("fairseq-hydra-train") + [
        "--config-name", "rte_r3f", f"hydra.run.dir={hydra_dir}", f"task.data={toy_task}",
        "checkpoint.finetune_from_model=null", "checkpoint.save_dir=save", "optimization.max_update=2",
        "+model.encoder_layers=2", "+model.encoder_embed_dim=32", "+model.encoder_ffn_embed_dim=64",
        "+model.encoder_attention_heads=2", "task.max_positions=64", "common.cpu=true", "common.fp16=false",
        "common.log_interval=1", "dataset.num_workers=0"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert '"symm_kl"' in proc.stdout + proc.stderr
    with open(os.path.join(hydra_dir, ".hydra", "hydra.yaml")) as f:
        sources = f.read()
    config_folder = os.path.join(installed["site"], "fairseq_r3f", "config", "glue")
    assert f"path: {config_folder}\n" in sources  # on the search path, by the installed hydra plugin


def test_no_module_reaches_outside_the_package_through_its_own_path():
    offenders = []
    for folder in ("fairseq_r3f", "r3f_runs", "hydra_plugins", "rxf"):
        for root, _, files in os.walk(os.path.join(REPO, folder)):
            for name in files:
                if not name.endswith(".py"):
                    continue
                path = os.path.join(root, name)
                for number, line in enumerate(open(path, encoding="utf-8"), 1):
                    if "__file__" in line and ("dirname(os.path.dirname" in line or ".." in line or "pardir" in line
                                               or "parent.parent" in line):
                        offenders.append(f"{os.path.relpath(path, REPO)}:{number}: {line.strip()}")
    assert offenders == []


def test_the_test_tiers_name_tests_that_exist():
    tests_dir = os.path.dirname(os.path.abspath(conftest.__file__))
    modules = {name[:-3] for name in os.listdir(tests_dir) if name.startswith("test_") and name.endswith(".py")}
    assert set(conftest.END_TO_END_MODULES) <= modules, set(conftest.END_TO_END_MODULES) - modules
    assert set(conftest.IN_PROCESS_TESTS) <= set(conftest.END_TO_END_MODULES)
    for module, names in [*conftest.IN_PROCESS_TESTS.items(), *conftest.LONG_TESTS.items(),
                          *conftest.OFFICIAL_TESTS.items()]:
        tree = ast.parse(open(os.path.join(tests_dir, module + ".py")).read())
        defined = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
        assert names <= defined, (module, names - defined)
