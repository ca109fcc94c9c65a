"""The hyper-parameter tables (``fairseq_r3f/hparams/*.tsv``) and the plugin's shipped files.

One reader (``read_table_file``) for the planners, the probing drivers, the config generator and the tests; the
plugin's folder is located (importlib's find_spec), not imported, so that planning never imports fairseq.
"""

import importlib.util
import os
from typing import Dict, List, Optional, Tuple

from r3f_runs.values import fail
from r3f_runs.vocabulary import HYDRA_CONFIG_METHODS


def _plugin_folder() -> str:
    spec = importlib.util.find_spec("fairseq_r3f")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the run layer needs the plugin fairseq_r3f beside it (pip install fairseq-r3f)")
    return os.path.abspath(list(spec.submodule_search_locations)[0])


# The plugin's folder (fairseq's --user-dir) and its tables, found without importing it: importing the plugin
# imports fairseq (seconds per recipe call), and planning needs neither.
USER_DIR = _plugin_folder()
HPARAMS = os.path.join(USER_DIR, "hparams")


def read_table_file(path: str) -> Tuple[List[str], Dict[str, Dict[str, str]]]:
    """(header, {first cell: {column: value}}) of a hyper-parameter table: tab-separated, ``#`` comment lines and
    blank lines skipped, then a header. The one reader of the tables (``read_table`` below is it by name).

    A row with another number of cells than the header, or a second row with a first cell already seen, is
    refused (ValueError naming the file and the lines): either would make a value silently come from the wrong
    cell or the wrong row. A missing file is a FileNotFoundError naming it."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such hyper-parameter table")
    header: Optional[List[str]] = None
    rows: Dict[str, Dict[str, str]] = {}
    first_line: Dict[str, int] = {}
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            line = line.rstrip("\r\n")
            if not line.strip() or line.startswith("#"):
                continue
            cells = line.split("\t")
            if header is None:
                header, header_line = cells, number
                continue
            if len(cells) != len(header):
                raise ValueError(f"{path}:{number}: {len(cells)} tab-separated cells, but the header (line "
                                 f"{header_line}) has {len(header)} columns: give every row one cell per column")
            key = cells[0]
            if key in rows:
                raise ValueError(f"{path}:{number}: a second row {key!r} (the first is line {first_line[key]}): "
                                 f"keep one of lines {first_line[key]} and {number}")
            rows[key], first_line[key] = dict(zip(header, cells)), number
    return header or [], rows


class Tables:
    """The hyper-parameter tables (:func:`read_table_file`): one value by row and column; a missing or malformed
    table, or a missing value, stops the launcher naming the file."""

    def __init__(self, folder: str = HPARAMS):
        self.folder = folder
        self._cache: Dict[str, Tuple[List[str], Dict[str, Dict[str, str]]]] = {}

    def path(self, name: str) -> str:
        return os.path.join(self.folder, name)

    def rows(self, name: str) -> Tuple[List[str], Dict[str, Dict[str, str]]]:
        if name not in self._cache:
            try:
                self._cache[name] = read_table_file(self.path(name))
            except (OSError, ValueError) as error:
                fail(str(error))
        return self._cache[name]

    def get(self, name: str, row: str, column: str) -> str:
        value = self.rows(name)[1].get(row, {}).get(column)
        if value is None:
            fail(f"{self.path(name)} has no value for {row} / {column}")
        return value


def hparams_path(name: str) -> str:
    """The path of a shipped table (``glue.tsv``, ``glue_tasks.tsv``, ``xnli.tsv``, ``summarization.tsv``)."""
    path = os.path.join(HPARAMS, name)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"fairseq_r3f ships no hyper-parameter table {name!r} (in fairseq_r3f/hparams)")
    return path


def tiny_model_flags(family: str) -> List[str]:
    """fairseq-train flags of the tiny randomly initialised model (``roberta`` or ``seq2seq``) that TINY=1, the
    probing drivers' --tiny and the tests train on the CPU (fairseq_r3f/hparams/tiny.tsv)."""
    return read_table("tiny.tsv")[family]["flags"].split()


def read_table(path: str) -> Dict[str, Dict[str, str]]:
    """A hyper-parameter table as {first column: {column: value}}: tab-separated, ``#`` comment lines, then a
    header; a duplicated first cell or a row with another number of cells is refused (ValueError naming the file
    and lines).

    ``path`` is a file, or the name of a shipped table (``glue.tsv``)."""
    if os.sep not in path and not os.path.exists(path):
        path = hparams_path(path)
    return read_table_file(path)[1]


def hydra_config_family(config_name: str) -> Optional[Tuple[str, str]]:
    """(family, method of the name) for the name of one of the plugin's configs (fairseq_r3f/config/*/NAME.yaml:
    rte_r3f -> ("rte", "r3f"), xnli_std, cnn_dm_r3f); None for any other config name."""
    family, _, method = (config_name or "").rpartition("_")
    if not family or method not in HYDRA_CONFIG_METHODS or "/" in config_name or not any(
            os.path.isfile(os.path.join(USER_DIR, "config", folder, config_name + ".yaml"))
            for folder in ("glue", "xnli", "summarization")):
        return None
    return family, method
