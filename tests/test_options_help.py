"""Every option the plugin adds is documented where a user looks for it."""

import contextlib
import dataclasses
import inspect
import io
import os
import re
import subprocess
import sys
from unittest import mock

import pytest

from conftest import REPO
from fairseq_r3f.__main__ import components, main as fairseq_r3f_main
from fairseq.registry import REGISTRIES
from fairseq.tasks import TASK_DATACLASS_REGISTRY, TASK_REGISTRY


def test_the_plugin_registers_its_components():
    found = components()
    assert {"sentence_prediction_r3f", "label_smoothed_cross_entropy_r3f"} <= set(found["criterion"])
    assert {"roberta_sn_base", "roberta_sn_large", "bart_sn_base", "bart_sn_large"} <= set(found["arch"])


def test_every_option_the_plugin_adds_has_help():
    """Options inherited from fairseq's own criterions and tasks are fairseq's business; ours all have help."""
    fairseq_parents = [REGISTRIES["criterion"]["dataclass_registry"]["sentence_prediction"],
                       REGISTRIES["criterion"]["dataclass_registry"]["label_smoothed_cross_entropy"],
                       TASK_DATACLASS_REGISTRY["sentence_prediction"]]
    inherited = {f.name for parent in fairseq_parents for f in dataclasses.fields(parent)}
    found = components()
    checked = 0
    # a task without a dataclass adds no options (tests/test_option_checks.py checks that)
    for name in found["criterion"] + [task for task in found["task"] if task in TASK_DATACLASS_REGISTRY]:
        dataclass = REGISTRIES["criterion"]["dataclass_registry"].get(name) or TASK_DATACLASS_REGISTRY[name]
        for field in dataclasses.fields(dataclass):
            if field.name not in inherited and not field.name.startswith("_"):
                checked += 1
                assert field.metadata.get("help"), f"{name}: --{field.name.replace('_', '-')} has no help"
    assert checked >= 10


@pytest.mark.parametrize("name, flags", [
    ("sentence_prediction_r3f", ["--r3f-lambda", "--eps", "--noise-type {uniform,normal,none}", "default: 1e-05"]),
    ("label_smoothed_cross_entropy_r3f", ["--r3f-lambda", "--eps", "--label-smoothing", "--r3f-kl-normalization"]),
])
def test_python_m_fairseq_r3f_prints_a_criterions_options(name, flags):
    out = subprocess.run([sys.executable, "-m", "fairseq_r3f", name], capture_output=True, text=True, cwd=REPO,
                         check=True).stdout
    for flag in flags:
        assert flag in out


def test_unknown_component_is_named():
    proc = subprocess.run([sys.executable, "-m", "fairseq_r3f", "sentence_prediction_r4f"], capture_output=True,
                          text=True, cwd=REPO)
    assert proc.returncode != 0
    assert "'sentence_prediction_r4f' is not a criterion, task, model or architecture of the plugin" in proc.stderr
    assert ("arch: bart_sn_base, bart_sn_large, bart_sn_outproj_base, bart_sn_outproj_large, roberta_sn_base, "
            "roberta_sn_large, roberta_sn_outproj_base, roberta_sn_outproj_large") in proc.stderr


def help_of(name):
    """What ``python -m fairseq_r3f NAME`` prints (its main(), run here: the command line itself is tested
    above), at the 80 columns argparse wraps to when the output is not a terminal."""
    out = io.StringIO()
    with mock.patch.dict(os.environ, {"COLUMNS": "80"}), contextlib.redirect_stdout(out):
        fairseq_r3f_main([name])
    return out.getvalue()


@pytest.mark.parametrize("name", [name for names in components().values() for name in names])
def test_every_registered_name_prints_its_help_in_words(name):
    out = help_of(name)
    assert out.startswith("usage: fairseq-train --user-dir fairseq_r3f --")
    assert f" {name}" in out.splitlines()[0]
    # what @dataclass writes into a class without a docstring: its signature, e.g. "XConfig(_name: ...)"
    assert re.search(r"\w+\(_name: ", out) is None, out[:2000]
    assert "options:" in out or "optional arguments:" in out


def test_the_probe_task_describes_itself_in_its_modules_words():
    out = help_of("sentence_prediction_probe")
    assert "--probe-checkpoint PROBE_CHECKPOINT" in out
    module_doc = inspect.getmodule(TASK_REGISTRY["sentence_prediction_probe"]).__doc__
    for line in inspect.cleandoc(module_doc).splitlines():
        assert line in out.splitlines()  # printed as written, code examples included


@pytest.mark.parametrize("arch, family, defaults", [
    ("roberta_sn_large", "fairseq's model roberta (RobertaModel)",
     {"--encoder-layers L": 24, "--encoder-embed-dim H": 1024}),
    ("roberta_sn_base", "fairseq's model roberta (RobertaModel)", {"--encoder-layers L": 12}),
    ("bart_sn_base", "fairseq's model bart (BARTModel)", {"--encoder-layers": 6, "--decoder-layers": 6}),
])
def test_an_architecture_names_its_family_and_the_values_it_sets(arch, family, defaults):
    text = " ".join(help_of(arch).split())
    assert f"--arch {arch}: an architecture of the model {arch.rsplit('_', 1)[0]}, which extends {family}" in text
    for flag, value in defaults.items():
        assert re.search(re.escape(flag) + r" [^-]*\(default: " + str(value) + r"\)", text), (flag, value)


def test_a_model_lists_its_architectures():
    out = help_of("roberta_sn")
    assert "its architectures: roberta_sn_base, roberta_sn_large" in " ".join(out.split())
