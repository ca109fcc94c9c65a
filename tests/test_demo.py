"""The demo (`make demo`) end to end, shortened: one row per method, with the numbers it promises."""

import subprocess
import sys

from conftest import REPO


def test_demo_prints_a_row_per_method(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "fairseq_r3f.demo", "--work-dir", str(tmp_path), "--max-update", "20",
         "--methods", "std", "r4f"], capture_output=True, text=True, cwd=REPO, check=True,
    )
    table = proc.stdout[proc.stdout.index("method"):].splitlines()
    assert table[0].split() == ["method", "valid", "acc", "(%)", "mean", "symm_kl", "s", "/", "update"]
    rows = {line.split()[0]: line.split()[1:] for line in table[1:]}
    assert set(rows) == {"STD", "R4F"}
    for accuracy, _, seconds in rows.values():
        assert 0 <= float(accuracy) <= 100 and float(seconds) > 0
    assert rows["STD"][1] == "-" and float(rows["R4F"][1]) > 0  # only the R3F criterion logs symm_kl
    assert (tmp_path / "r4f" / "checkpoint_best.pt").exists()
