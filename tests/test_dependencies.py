"""The package declares what it imports: every module outside the standard library that the package imports is
declared in pyproject.toml (``dependencies``, or the ``eval`` extra) or is the environment's own (fairseq, torch,
and the configuration packages fairseq itself requires); and a launch whose runs would import a missing module
stops before it writes or trains anything, naming the module, what needs it and the pip command.
(tests/test_glue_recipes.py trains CoLA and STS-B in an environment of fairseq plus the declared packages only.)"""

import ast
import importlib.metadata
import io
import os
import re
import sys

import pytest
from conftest import REPO

from fairseq_r3f import requirements
from r3f_runs.cli import run_recipe

PACKAGES = ("fairseq_r3f", "r3f_runs", "hydra_plugins", "rxf")


def pyproject_list(key: str):
    """A one-line list of pyproject.toml's [project] (``dependencies = [...]``), as written."""
    with open(os.path.join(REPO, "pyproject.toml"), encoding="utf-8") as f:
        for line in f:
            match = re.match(rf"^{re.escape(key)} = (\[.*\])\s*$", line)
            if match:
                return ast.literal_eval(match.group(1))
    raise AssertionError(f"pyproject.toml has no one-line {key} = [...]")


def pyproject_extra(name: str):
    """An extra of pyproject.toml's [project.optional-dependencies], on one line or over several."""
    with open(os.path.join(REPO, "pyproject.toml"), encoding="utf-8") as f:
        text = f.read()
    section = text.split("[project.optional-dependencies]", 1)[1].split("\n[", 1)[0]
    match = re.search(rf"^{re.escape(name)} = (\[.*?\])", section, re.M | re.S)
    assert match, f"pyproject.toml has no extra {name}"
    body = "\n".join(line.split("#", 1)[0] for line in match.group(1).splitlines())
    return ast.literal_eval(body)


def distribution_names(specifiers):
    return {re.split(r"[<>=!~;\[ ]", spec, maxsplit=1)[0].lower().replace("_", "-") for spec in specifiers}


def third_party_imports():
    """{top-level module: [file:line, ...]} of every import in the package's modules (also inside functions) that
    is neither the standard library nor the package itself."""
    found = {}
    for package in PACKAGES:
        for folder, _, files in os.walk(os.path.join(REPO, package)):
            for name in sorted(files):
                if not name.endswith(".py"):
                    continue
                path = os.path.join(folder, name)
                with open(path, encoding="utf-8") as f:
                    tree = ast.parse(f.read(), path)
                for node in ast.walk(tree):
                    if isinstance(node, ast.Import):
                        modules = [alias.name for alias in node.names]
                    elif isinstance(node, ast.ImportFrom) and node.level == 0:
                        modules = [node.module]
                    else:
                        continue
                    for module in modules:
                        top = module.split(".")[0]
                        if top in sys.stdlib_module_names or top in PACKAGES:
                            continue
                        found.setdefault(top, []).append(f"{os.path.relpath(path, REPO)}:{node.lineno}")
    return found


needs_stdlib_names = pytest.mark.skipif(sys.version_info < (3, 10), reason="sys.stdlib_module_names: Python >= 3.10")


@needs_stdlib_names
def test_every_module_the_package_imports_is_declared_or_the_environments():
    imports = third_party_imports()
    assert {"sklearn", "scipy", "fairseq", "torch"} <= set(imports)  # the scan sees imports inside functions
    extras = {module: (extra, dist) for extra, table in requirements.EXTRAS.items() for module, dist in table.items()}
    known = {**requirements.DECLARED, **extras, **requirements.FROM_THE_ENVIRONMENT}
    unknown = {module: where for module, where in imports.items() if module not in known}
    assert not unknown, f"imported but neither declared nor the environment's (fairseq_r3f/requirements.py): {unknown}"
    declared = distribution_names(pyproject_list("dependencies"))
    for module, dist in requirements.DECLARED.items():
        assert dist.lower() in declared, f"{module} ({dist}) is not in pyproject.toml's dependencies"
    for module, (extra, dist) in extras.items():
        assert dist.lower() in distribution_names(pyproject_extra(extra)), f"{module} ({dist}): not in {extra}"
    # nothing declared that the package does not import (a stale entry would hide a missing one)
    assert declared == {d.lower() for d in requirements.DECLARED.values()}


def test_the_environments_packages_are_never_declared_and_come_with_fairseq():
    declared = distribution_names(pyproject_list("dependencies"))
    assert not declared & {"fairseq", "fairseq-fixed", "torch", "hydra-core", "omegaconf", "torchaudio"}
    fairseq = next(d for d in importlib.metadata.distributions()
                   if (d.metadata["Name"] or "").lower() in ("fairseq", "fairseq-fixed"))
    fairseq_requires = distribution_names(r for r in fairseq.requires or [] if "extra ==" not in r)
    for module, dist in requirements.FROM_THE_ENVIRONMENT.items():
        assert dist in fairseq_requires | {"fairseq", "torch"}, f"{module} ({dist}) does not come with fairseq"


def test_a_run_needs_the_modules_of_its_flags():
    command = ["data", "--report-mcc", "--report-pearson-and-spearman", "--eval-bleu", "--eval-bleu-detok", "moses"]
    assert [module for module, _ in requirements.modules_of_command(command)] == [
        "fairseq", "torch", "numpy", "sklearn.metrics", "scipy.stats", "sacrebleu", "sacremoses"]
    assert [module for module, _ in requirements.modules_of_command(["data", "--bpe", "gpt2"])] == [
        "fairseq", "torch", "numpy"]


def glue_inputs(tmp_path, task):
    data = tmp_path / "glue"
    for part in ("input0/dict.txt", "label/dict.txt", "label/train.label"):
        (data / f"{task}-bin" / part).parent.mkdir(parents=True, exist_ok=True)
        (data / f"{task}-bin" / part).write_text("")
    return {"DATA_DIR": str(data), "TINY": "1", "SEEDS": "1", "SAVE_ROOT": str(tmp_path / "runs"),
            "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]}


@pytest.mark.parametrize("task,module,dist,flag", [("CoLA", "sklearn", "scikit-learn", "--report-mcc"),
                                                    ("STS-B", "scipy", "scipy", "--report-pearson-and-spearman")])
def test_a_launch_without_a_module_its_runs_import_stops_before_writing_anything(tmp_path, monkeypatch, task, module,
                                                                                  dist, flag):
    # a module set to None in sys.modules is one that Python's import system cannot import (its submodules too:
    # fairseq may have imported them already)
    for name in [name for name in sys.modules if name == module or name.startswith(module + ".")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, module, None)
    env = glue_inputs(tmp_path, task)
    out, err = io.StringIO(), io.StringIO()
    status = run_recipe("glue", [task, "r3f"], env, stdout=out, stderr=err)
    message = err.getvalue()
    assert status != 0, message
    assert f"{sys.executable} cannot import what the planned runs need: {module}." in message
    assert flag in message and f"{sys.executable} -m pip install {dist} " in message
    assert "Nothing was written or trained" in message
    assert not os.path.exists(env["SAVE_ROOT"])  # no run folder, no plan.json, no run.json
    # the same plan as a dry run prints its commands: a dry run imports nothing
    status = run_recipe("glue", [task, "r3f"], {**env, "DRY_RUN": "1"}, stdout=out, stderr=err)
    assert status == 0 and flag in out.getvalue()


def test_a_missing_fairseq_is_named_with_what_installs_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "fairseq", None)
    monkeypatch.setitem(sys.modules, "sacremoses", None)
    message = requirements.missing_message([["data", "--eval-bleu", "--eval-bleu-detok", "moses"]])
    assert message.startswith(f"{sys.executable} cannot import what the planned runs need: fairseq (for fairseq-train "
                              f"and the plugin); sacremoses (for --eval-bleu-detok moses).")
    assert f"{sys.executable} -m pip install sacremoses and install fairseq into this environment" in message
