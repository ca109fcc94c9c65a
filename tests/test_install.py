"""The plugin runs on the fairseq the user has, and says so clearly when there is none or it is too old."""

import importlib.metadata
import logging
import os
import subprocess
import sys

import pytest
from conftest import REPO

from fairseq_r3f.tools import CommandFailed, run_logged


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
    # what it does declare: tests/test_dependencies.py
    requirements = importlib.metadata.requires("fairseq-r3f") or []
    assert not any(r.lower().startswith(("fairseq", "torch")) for r in requirements), requirements


def test_ci_runs_the_readme_test_command():
    with open(os.path.join(REPO, "README.md")) as f:
        readme = f.read()
    with open(os.path.join(REPO, ".ci", "run")) as f:
        ci = f.read()
    with open(os.path.join(REPO, "Makefile")) as f:
        makefile = f.read()
    assert "make test" in readme and "make demo" in readme
    assert "make test" in ci and "make lint" in ci  # the suite and the linter
    assert "ruff check ." in makefile and '-m "not slow"' in makefile  # make lint, make test-fast


def test_importing_the_plugin_leaves_logging_alone_and_the_terminal_quiet():
    # fairseq's speech modules call logging.basicConfig(level=DEBUG) and log "Please install tensorboardX"
    # when they are imported; our tools import fairseq through the plugin and must not inherit that.
    code = "import logging, fairseq_r3f; root = logging.getLogger(); print(root.level, len(root.handlers))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [str(logging.WARNING), "0"]
    assert "tensorboardX" not in proc.stderr and "INFO" not in proc.stderr, proc.stderr


def test_run_logged_keeps_the_output_in_the_log_and_shows_only_its_tail_on_failure(tmp_path, capfd):
    log = tmp_path / "sub" / "tool.log"
    lines = "; ".join(f"print('line {i}')" for i in range(40))
    ok = run_logged([sys.executable, "-c", lines + "; import sys; print('to stderr', file=sys.stderr)"], str(log))
    assert ok.returncode == 0 and "line 0\n" in ok.stdout and "to stderr\n" in ok.stdout
    assert capfd.readouterr() == ("", "")  # nothing reached the terminal
    with pytest.raises(CommandFailed) as failed:
        run_logged([sys.executable, "-c", lines + "; raise SystemExit(3)"], str(log), append=True, tail_lines=5)
    assert capfd.readouterr() == ("", "")
    message = str(failed.value)
    assert failed.value.returncode == 3 and failed.value.log_path == str(log)
    assert f"exit status 3); its full output is in {log}" in message
    assert "line 39" in message and "line 35" in message and "line 34" not in message
    text = log.read_text()
    assert text.count("line 0\n") == 2 and text.count("# " + sys.executable) == 2  # appended, command first
    assert run_logged([sys.executable, "-c", "raise SystemExit(2)"], str(log), check=False).returncode == 2
