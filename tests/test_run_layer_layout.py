"""The run layer's shape (r3f_runs/__init__.py): its modules import only from the floors below them, an import
waits inside a function only where a light path must not pay for fairseq, and planning a recipe's runs (a dry run)
imports neither fairseq nor torch."""

import ast
import os
import subprocess
import sys

import pytest

from conftest import REPO

sys.path.insert(0, os.path.join(REPO, "tests", "golden"))
from make_golden import make_inputs  # noqa: E402

PACKAGE = os.path.join(REPO, "r3f_runs")

# Top to bottom, as r3f_runs/__init__.py lays them out.
FLOORS = ["cli", "hydra", "launching", "planners", "plan_glue", "plan_xnli", "plan_summarization",
          "plan_translation", "plan", "settings", "status", "identity", "configuration", "train_log", "folder",
          "tables", "vocabulary", "values"]
# The imports kept inside a function, each for a light path: the modules past planning (cli), the plugin's
# metric flags of the installed fairseq (asked at a launch, never in a dry run), torch's GPU question.
LATE_IMPORTS = {("cli", "past_planning", "r3f_runs"), ("settings", "metric_flags_supported", "fairseq_r3f.compat"),
                ("settings", "cuda_available", "torch")}


def modules():
    return sorted(name[:-3] for name in os.listdir(PACKAGE) if name.endswith(".py") and not name.startswith("__"))


def tree(name):
    with open(os.path.join(PACKAGE, name + ".py"), encoding="utf-8") as f:
        return ast.parse(f.read())


def test_every_module_is_on_a_floor_and_in_the_layout():
    assert sorted(FLOORS) == modules()
    import r3f_runs

    for name in FLOORS:
        assert f"{name}.py" in r3f_runs.__doc__, name


@pytest.mark.parametrize("name", FLOORS)
def test_a_module_imports_only_from_the_floors_below_it(name):
    below = set(FLOORS[FLOORS.index(name) + 1:])
    for node in tree(name).body:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "r3f_runs":
            imported = node.module.split(".")[1] if "." in node.module else None
            assert imported in below, f"r3f_runs/{name}.py imports r3f_runs.{imported}, which is not below it"


@pytest.mark.parametrize("name", FLOORS)
def test_imports_wait_inside_a_function_only_for_a_light_path(name):
    late = set()
    for function in ast.walk(tree(name)):
        if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for node in ast.walk(function):
                if isinstance(node, ast.ImportFrom):
                    late.add((name, function.name, node.module))
                elif isinstance(node, ast.Import):
                    late.update((name, function.name, alias.name) for alias in node.names)
    ours = {entry for entry in late if entry[2].split(".")[0] in ("r3f_runs", "fairseq_r3f", "fairseq", "torch")}
    assert ours <= LATE_IMPORTS, ours - LATE_IMPORTS


def test_planning_a_recipe_imports_neither_fairseq_nor_torch(tmp_path):
    inputs = make_inputs(str(tmp_path))
    code = ("import sys\n"
            "from r3f_runs.cli import main\n"
            "status = main(sys.argv[1:])\n"
            "heavy = sorted({'fairseq', 'fairseq_r3f', 'torch'} & set(sys.modules))\n"
            "print('imported:', heavy)\n"
            "sys.exit(status or bool(heavy))\n")
    env = {**os.environ, "PYTHONPATH": REPO, "DRY_RUN": "1", "FP16": "0", "SAVE_ROOT": str(tmp_path / "runs"),
           **inputs["glue"]}
    proc = subprocess.run([sys.executable, "-c", code, "glue", "RTE", "r4f"], capture_output=True, text=True,
                          env=env, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "imported: []" in proc.stdout
    assert "--arch roberta_sn_large" in proc.stdout  # the plan was made: R4F's head, from the tables
