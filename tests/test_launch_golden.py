"""The launcher's dry run against the recipes' golden output (tests/golden, written by make_golden.py from the
bash recipes before the run layer replaced them): the same commands, folders and messages, case by case, except
the differences listed in CHANGED (each a defect fix). In-process: the planner is called directly."""

import io
import json
import os
import sys
import tempfile

import pytest

from conftest import REPO

sys.path.insert(0, os.path.join(REPO, "tests", "golden"))
import make_golden  # noqa: E402
from r3f_runs.cli import run_recipe, usage_text


GOLDEN = os.path.join(REPO, "tests", "golden")
RECIPES = ("glue", "xnli", "summarization", "translation")
FP16_NOTE = "# note: FP16=1 needs a CUDA GPU"

# (recipe, case) -> why the launcher's output differs from the golden one (a defect of the bash recipes).
CHANGED = {
    ("translation", "err_criterion"): "the bash recipe advised 'use METHOD one whose criterion it is'",
    ("summarization", "err_criterion"): "the bash recipe advised 'use METHOD one whose criterion it is'",
}


@pytest.fixture(scope="module")
def inputs():
    with tempfile.TemporaryDirectory() as root:
        root = os.path.realpath(root)
        yield root, make_golden.make_inputs(root)


def golden(recipe):
    with open(os.path.join(GOLDEN, f"dry_run_{recipe}.json")) as f:
        return json.load(f)


def dry_run(recipe, args, env, root):
    out, err = io.StringIO(), io.StringIO()
    usage = usage_text(os.path.join(REPO, "recipes", f"{recipe}.sh"))
    status = run_recipe(recipe, args, make_golden.environment(env), usage=usage, stdout=out, stderr=err)
    return status, make_golden.normalise(out.getvalue(), root), make_golden.normalise(err.getvalue(), root)


def without_fp16_note(text):
    """The FP16 note depends on whether this machine has a GPU; the golden files were written without one."""
    return "".join(line for line in text.splitlines(True) if not line.startswith(FP16_NOTE))


@pytest.mark.parametrize("recipe", RECIPES)
def test_dry_run_equals_the_recipes_golden_output(recipe, inputs):
    root, paths = inputs
    cases = {name: (env, args) for r, name, env, args in make_golden.cases(paths) if r == recipe}
    expected = golden(recipe)
    assert set(cases) == set(expected), "make_golden.py's cases and the golden file differ: regenerate the files"
    failures = []
    for name, (env, args) in cases.items():
        status, out, err = dry_run(recipe, args, env, root)
        want = expected[name]
        if (recipe, name) in CHANGED:
            assert status == want["rc"] and out == want["stdout"] and err != want["stderr"], name
            continue
        if (status, out, without_fp16_note(err)) != (want["rc"], want["stdout"], without_fp16_note(want["stderr"])):
            failures.append(f"{name}: rc {status} vs {want['rc']}\n--- got stderr\n{err}\n--- want\n{want['stderr']}"
                            f"\n--- got stdout\n{out[:2000]}\n--- want\n{want['stdout'][:2000]}")
    assert not failures, f"{len(failures)} of {len(cases)} cases differ:\n" + "\n".join(failures[:3])
