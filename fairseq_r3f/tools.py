"""What the plugin's command-line tools share: where the plugin is (for ``--user-dir``), how to start a
fairseq console script of this environment (and run one with its output in a log file), and how to import fairseq
without its start-up noise. The hyper-parameter tables are read by r3f_runs.tables.
"""

import contextlib
import logging
import os
import shlex
import subprocess
import sys
from typing import Dict, Iterator, List, Optional, Sequence

# The package folder: what fairseq's --user-dir takes.
USER_DIR = os.path.dirname(os.path.abspath(__file__))


def fairseq_command(name: str) -> List[str]:
    """The fairseq console script ``name`` (fairseq-train, ...) of the running Python environment."""
    script = os.path.join(os.path.dirname(sys.executable), name)
    if os.path.exists(script):
        return [script]
    return [sys.executable, "-m", "fairseq_cli." + name.split("-", 1)[1]]


class CommandFailed(RuntimeError):
    """A command run by :func:`run_logged` exited with a non-zero status; the message ends with its log's tail."""

    def __init__(self, message: str, returncode: int, log_path: str):
        super().__init__(message)
        self.returncode = returncode
        self.log_path = log_path


def log_tail(text: str, lines: int = 15) -> str:
    """The last ``lines`` lines of ``text``, indented, for an error message."""
    return "\n".join("  " + line for line in text.splitlines()[-lines:])


def run_logged(command: Sequence[str], log_path: str, *, append: bool = False, check: bool = True,
               tail_lines: int = 15, env: Optional[Dict[str, str]] = None,
               cwd: Optional[str] = None) -> subprocess.CompletedProcess:
    """Runs ``command`` with its stdout and stderr going only to ``log_path`` (the command line first, as a
    ``# ...`` line), so that fairseq's Namespace dumps and per-update records stay off the terminal.

    Returns the completed process with ``stdout`` set to what this run wrote to the log (stderr included).
    With ``check`` (the default) a non-zero exit raises :class:`CommandFailed` naming the command, its exit
    status and the log, followed by the log's last ``tail_lines`` lines."""
    command = [str(part) for part in command]
    os.makedirs(os.path.dirname(os.path.abspath(log_path)), exist_ok=True)
    with open(log_path, "a" if append else "w", encoding="utf-8") as log:
        start = log.tell()
        log.write("# " + shlex.join(command) + "\n")
        log.flush()
        proc = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                              env=env, cwd=cwd)
    with open(log_path, encoding="utf-8", errors="replace") as log:
        log.seek(start)
        output = log.read()
    result = subprocess.CompletedProcess(command, proc.returncode, stdout=output, stderr="")
    if check and proc.returncode != 0:
        name = command[2] if command[:2] == [sys.executable, "-m"] else os.path.basename(command[0])
        raise CommandFailed(
            f"{name} failed (exit status {proc.returncode}); its full output is in {log_path}, which ends:\n"
            f"{log_tail(output, tail_lines)}", proc.returncode, log_path,
        )
    return result


@contextlib.contextmanager
def quiet_fairseq_import() -> Iterator[None]:
    """Import fairseq (and modules that import it) inside this block to keep its import-time side effects off
    the terminal: some of fairseq's modules call ``logging.basicConfig`` (the root logger at DEBUG, with a
    stderr handler, so every library's debug lines show) and log "Please install tensorboardX". INFO and
    lower records are dropped during the block, and the root logger's level and handlers are put back after.
    Inside ``fairseq-train`` (which configures logging first) nothing changes."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    disabled = logging.root.manager.disable
    logging.disable(logging.INFO)
    try:
        yield
    finally:
        logging.disable(disabled)
        root.setLevel(level)
        root.handlers[:] = handlers
