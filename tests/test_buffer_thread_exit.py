"""A process that stops reading fairseq's buffered batch iterator before its end (fairseq-train at --max-update,
mid-epoch) exits cleanly with the plugin loaded. Without it, fairseq's daemon read-ahead thread is still in torch
when the interpreter exits, and the process aborts ("terminate called without an active exception", SIGABRT)."""

import os
import signal
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The read-ahead thread collates a batch in about 50 ms of torch work; the main thread takes one batch and exits,
# as fairseq-train does when it reaches --max-update with batches of the epoch left.
SCRIPT = '''
import sys
import torch
if sys.argv[1] == "plugin":
    import fairseq_r3f  # noqa: F401
from fairseq.data.iterators import BufferedIterator

class Batches:
    def __len__(self):
        return 1000

    def __iter__(self):
        x = torch.randn(256, 256)
        for _ in range(1000):
            for _ in range(40):
                x = torch.tanh(x @ x)
            yield x

batches = BufferedIterator(4, Batches())
next(batches)
print("took one batch", flush=True)
'''


def run_and_exit(tmp_path, mode):
    """Three runs of the script, side by side (each spends most of its time importing fairseq): (exit status,
    stdout, stderr) of each."""
    script = tmp_path / "stop_early.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "PYTHONPATH": REPO, "OMP_NUM_THREADS": "1"}
    runs = [subprocess.Popen([sys.executable, str(script), mode], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, env=env) for _ in range(3)]
    outputs = [proc.communicate(timeout=120) for proc in runs]
    return [(proc.returncode, *output) for proc, output in zip(runs, outputs)]


def test_with_the_plugin_the_process_exits_cleanly_after_stopping_early(tmp_path):
    for returncode, stdout, stderr in run_and_exit(tmp_path, "plugin"):
        assert returncode == 0, stderr[-2000:]
        assert "took one batch" in stdout
        assert "terminate called" not in stderr


def test_without_the_plugin_the_same_process_aborts_at_exit(tmp_path):
    """The hazard the plugin removes is real on this torch and Python: the same script without the plugin."""
    aborted = [stderr for returncode, _, stderr in run_and_exit(tmp_path, "plain") if returncode == -signal.SIGABRT]
    assert aborted, "no run aborted: the scenario no longer shows the hazard, so the test above proves nothing"
    assert "terminate called without an active exception" in aborted[0]
