"""The run folder: its files, reading them (a damaged one is named), writing them atomically, and its lock.

A folder is locked with ``flock`` on the folder itself, by the launcher and by the fairseq-train it starts, which
inherits the lock and holds it while it lives (also when the launcher is killed); ``lock`` records the holders, so
a second launch is refused naming those still alive. Deleting ``lock`` releases nothing. The standard library
only.
"""

import contextlib
import errno
import fcntl
import json
import os
import socket
from typing import Any, Dict, Iterator, List

from r3f_runs.values import fail, now_iso


# The files of a run folder.
LABEL_FILE = "run.json"  # the recipe's label, the planned command and configuration (written before training)
LOG_FILE = "train.log"  # fairseq's json records, one "# TIME start" line before each launch
CHECKPOINT = "checkpoint_last.pt"
IDENTITY_FILE = "identity.json"  # what ran, read from the checkpoint
DONE_FILE = "done"  # {"num_updates", "finished"}: written last, after verification
LOCK_FILE = "lock"  # who holds the folder's flock (the lock itself is on the folder)
PLAN_FILE = "plan.json"  # in a sweep folder: every planned (configuration, seed)


class RunError(Exception):
    """A run folder that cannot be read as it should: named, with what to do."""


def read_json(path: str) -> Any:
    """A run folder's JSON file; a damaged one is a RunError naming it."""
    try:
        with open(path) as f:
            return json.load(f)
    except json.JSONDecodeError as error:
        raise RunError(f"{path} is damaged (not JSON: {error}): restore it, or delete the run folder and run it "
                       f"again") from None


def read_json_file(path: str, what: str):
    """A JSON file the launcher wrote; a damaged one stops with its name and what to do."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        fail(f"{path} is damaged (not JSON: {error}); it records {what}: delete the run folder "
             f"{os.path.dirname(path) or '.'} to run it again from the start")


def write_json_atomic(path: str, data) -> None:
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1, sort_keys=False)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_text_atomic(path: str, text: str) -> None:
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


class RunLock:
    """A run folder held by this process (``run_lock``): ``fd`` is the locked folder, which a training process
    inherits to hold it too; ``add_holder`` names such a process in the folder's holder record."""

    def __init__(self, run_dir: str, fd: int, holders: List[Dict]):
        self.run_dir, self.fd, self.holders = run_dir, fd, holders

    def add_holder(self, program: str, pid: int) -> None:
        self.holders.append(_holder(program, pid))
        write_text_atomic(os.path.join(self.run_dir, LOCK_FILE), json.dumps({"holders": self.holders}) + "\n")


def _holder(program: str, pid: int) -> Dict:
    return {"program": program, "pid": pid, "host": socket.gethostname(), "started": now_iso()}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def lock_holders_text(run_dir: str) -> str:
    """The processes that hold RUN_DIR, from its holder record: those still alive on this host (a holder on
    another host cannot be checked: named as recorded)."""
    path = os.path.join(run_dir, LOCK_FILE)
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
    except FileNotFoundError:
        return f"a process whose record {path} was deleted"
    try:
        holders = json.loads(text)["holders"]
        described = [f"{h['program']} pid {h['pid']} host {h['host']} started {h['started']}" for h in holders
                     if h["host"] != socket.gethostname() or _alive(int(h["pid"]))]
    except (ValueError, KeyError, TypeError):  # not the launcher's record: shown as it is
        return " ".join(text.split()) or "another launch"
    return " and ".join(described) or f"a process not in its record {path}"


@contextlib.contextmanager
def run_lock(run_dir: str, program: str = "launcher") -> Iterator[RunLock]:
    """Holds the run folder itself locked (``flock`` on the folder) while the block runs; a second launch is
    refused naming the processes that hold it (RUN_DIR/lock, the holder record: ``program`` and this pid, then
    each process ``add_holder`` names). The lock is the folder's, not a file's: deleting RUN_DIR/lock releases
    nothing. A training process inherits the locked descriptor (``RunLock.fd``), so the folder stays locked
    while it lives, also after the launcher itself was killed."""
    fd = os.open(run_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            if error.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise
            fail(f"{run_dir} is in use by {lock_holders_text(run_dir)} (the folder is locked; "
                 f"{os.path.join(run_dir, LOCK_FILE)} names who holds it): wait until that ends, or stop it; two "
                 f"launches on one run folder would train it twice")
        lock = RunLock(run_dir, fd, [])
        lock.add_holder(program, os.getpid())
        yield lock
    finally:
        os.close(fd)  # releases the lock, unless a training process that inherited it still lives
