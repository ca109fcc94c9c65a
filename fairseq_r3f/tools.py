"""What the plugin's command-line tools share: where the plugin is (for ``--user-dir``), how to start a
fairseq console script of this environment, and the hyper-parameter tables shipped with the package.

The tables live in ``fairseq_r3f/hparams/`` (package data), so an installed copy reads the same values as a
source checkout; recipes/*.sh read the same files.
"""

import os
import sys
from importlib import resources
from typing import Dict, List

# The package folder: what fairseq's --user-dir takes.
USER_DIR = os.path.dirname(os.path.abspath(__file__))


def fairseq_command(name: str) -> List[str]:
    """The fairseq console script ``name`` (fairseq-train, ...) of the running Python environment."""
    script = os.path.join(os.path.dirname(sys.executable), name)
    if os.path.exists(script):
        return [script]
    return [sys.executable, "-m", "fairseq_cli." + name.split("-", 1)[1]]


def hparams_path(name: str) -> str:
    """The path of a shipped table (``glue.tsv``, ``glue_tasks.tsv``, ``xnli.tsv``, ``summarization.tsv``)."""
    path = resources.files("fairseq_r3f").joinpath("hparams", name)
    if not path.is_file():
        raise FileNotFoundError(f"fairseq_r3f ships no hyper-parameter table {name!r} (in fairseq_r3f/hparams)")
    return str(path)


def read_table(path: str) -> Dict[str, Dict[str, str]]:
    """A tab-separated table (``#`` comment lines, then a header) as {first column: {column: value}}.

    ``path`` is a file, or the name of a shipped table (``glue.tsv``)."""
    if os.sep not in path and not os.path.exists(path):
        path = hparams_path(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such hyper-parameter table")
    rows, header = {}, None
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line.strip() or line.startswith("#"):
                continue
            cells = line.split("\t")
            if header is None:
                header = cells
                continue
            if len(cells) != len(header):
                raise ValueError(f"{path}:{number}: {len(cells)} columns, the header has {len(header)}")
            rows[cells[0]] = dict(zip(header, cells))
    return rows
