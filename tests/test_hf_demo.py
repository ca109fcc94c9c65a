"""The HuggingFace demo (`make demo-hf`, python -m rxf.hf.demo), shortened, in process: a row per method with the
numbers it promises."""

import pytest

pytest.importorskip("transformers")
from rxf.hf import demo  # noqa: E402


def test_demo_prints_a_row_per_method(tmp_path, capsys):
    rows = demo.main(["--output-dir", str(tmp_path), "--max-steps", "10", "--methods", "std", "r4f"])
    printed = capsys.readouterr().out
    table = printed[printed.index("method"):].splitlines()
    assert table[0].split() == ["method", "valid", "acc", "(%)", "mean", "symm_kl", "noise_kept", "(%)", "s", "/",
                                "update"]
    cells = {line.split()[0]: line.split()[1:] for line in table[1:]}
    assert set(cells) == {"STD", "R4F"}
    for accuracy, _, _, seconds in cells.values():
        assert 0 <= float(accuracy) <= 100 and float(seconds) > 0
    # only R3F's trainer logs symm_kl and noise_kept; in fp32 every entry of the noise survives
    assert cells["STD"][1:3] == ["-", "-"] and float(cells["R4F"][1]) > 0 and float(cells["R4F"][2]) == 100.0
    assert [row["method"] for row in rows] == ["std", "r4f"]


def test_the_demo_refuses_too_few_steps():
    with pytest.raises(SystemExit):
        demo.main(["--max-steps", "3"])
