"""The plugin runs on the fairseq the user has, and says so clearly when there is none or it is too old."""

import importlib.metadata
import os
import subprocess
import sys

from conftest import REPO


def import_plugin_with(fake_fairseq_source, tmp_path):
    """Imports fairseq_r3f in a fresh interpreter where ``import fairseq`` finds the given fake module
    (None: fairseq is missing)."""
    prelude = "import sys\n"
    if fake_fairseq_source is None:
        prelude += "sys.modules['fairseq'] = None\n"
    else:
        (tmp_path / "fairseq").mkdir()
        (tmp_path / "fairseq" / "__init__.py").write_text(fake_fairseq_source)
        prelude += f"sys.path.insert(0, {str(tmp_path)!r})\n"
    return subprocess.run([sys.executable, "-c", prelude + "import fairseq_r3f"], capture_output=True, text=True,
                          cwd=REPO)


def test_missing_fairseq_is_named_in_one_sentence(tmp_path):
    proc = import_plugin_with(None, tmp_path)
    assert proc.returncode != 0
    assert "ImportError: fairseq_r3f needs fairseq >= 0.12, which is not installed" in proc.stderr


def test_old_fairseq_is_named_in_one_sentence(tmp_path):
    proc = import_plugin_with("__version__ = '0.10.2'\n", tmp_path)
    assert proc.returncode != 0
    assert "fairseq_r3f needs fairseq >= 0.12, but fairseq 0.10.2 is installed: upgrade it" in proc.stderr


def test_installing_the_plugin_never_pulls_fairseq_or_torch():
    requirements = importlib.metadata.requires("fairseq-r3f") or []
    unconditional = [r for r in requirements if "extra ==" not in r]
    assert not any(r.lower().startswith(("fairseq", "torch")) for r in requirements), requirements
    assert unconditional == []


def test_ci_runs_the_readme_test_command():
    with open(os.path.join(REPO, "README.md")) as f:
        readme = f.read()
    with open(os.path.join(REPO, ".ci", "run")) as f:
        ci = f.read()
    assert "make test" in readme and "make demo" in readme
    assert "make test" in ci
