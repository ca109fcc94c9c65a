"""Every option the plugin adds is documented where a user looks for it."""

import dataclasses
import subprocess
import sys

import pytest

from conftest import REPO
from fairseq_r3f.__main__ import components
from fairseq.registry import REGISTRIES
from fairseq.tasks import TASK_DATACLASS_REGISTRY


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
    for name in found["criterion"] + found["task"]:
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
    assert "'sentence_prediction_r4f' is not a criterion or task of the plugin" in proc.stderr
