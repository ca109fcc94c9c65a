"""python -m fairseq_r3f.evaluation.rouge through its command line: generation with a tiny BART whose 64
positions are fewer than the test articles' tokens, hypotheses matched to references by sample id, rank 1 of an
n-best list, the references' count checked against the test set, ROUGE-Lsum selectable, files read the same
way as by the preprocessing (empty file = no lines, invalid UTF-8 named by file and line), progress bars on
the terminal and fairseq's start-up output only in the generation log."""

import json
import random
import sys

import pytest

from conftest import NO_DROPOUT, TINY_BART, USER_DIR, run_fairseq
from test_summarization_pipeline import PREPROCESS, run, write_gpt2_bpe

ROUGE = [sys.executable, "-m", "fairseq_r3f.evaluation.rouge"]
N_TEST = 11
MAX_POSITIONS = 64  # TINY_BART's --max-source-positions / --max-target-positions


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """CNN/DM-format files whose articles are longer than 64 BPE tokens, preprocessed, and a tiny BART trained
    on them for two updates with --truncate-source (as recipes/summarization.sh trains)."""
    root = tmp_path_factory.mktemp("rouge")
    rng = random.Random(3)
    words = sorted({"".join(rng.choice("abcdefgh") for _ in range(rng.randint(2, 4))) for _ in range(20)})
    bpe = write_gpt2_bpe(words, str(root))
    raw = root / "raw"
    raw.mkdir()
    for split, n in (("train", 16), ("val", 4), ("test", N_TEST)):
        sources, targets = [], []
        for _ in range(n):
            article = [" ".join(rng.choice(words) for _ in range(10)) + "." for _ in range(10)]
            sources.append(" ".join(article))
            targets.append(article[0])
        (raw / f"{split}.source").write_text("".join(s + "\n" for s in sources))
        (raw / f"{split}.target").write_text("".join(t + "\n" for t in targets))
    out = root / "out"
    run([sys.executable, PREPROCESS, "--dataset", "cnn_dm", "--raw-dir", str(raw), "--out-dir", str(out),
         "--encoder-json", bpe[0], "--vocab-bpe", bpe[1], "--dict", bpe[2], "--workers", "1"])
    longest = max(len(line.split()) for line in (out / "bpe" / "test.source").read_text().splitlines())
    assert longest > 2 * MAX_POSITIONS  # the model cannot read a whole article
    save = root / "save"
    run_fairseq("train", [
        str(out / "bin"), "--user-dir", USER_DIR, "--task", "translation", "--source-lang", "source",
        "--target-lang", "target", "--truncate-source", "--arch", "bart_base", *TINY_BART, *NO_DROPOUT,
        "--criterion", "label_smoothed_cross_entropy_r3f", "--label-smoothing", "0.1", "--optimizer", "adam",
        "--lr", "1e-3", "--max-tokens", "1024", "--required-batch-size-multiple", "1", "--max-update", "2",
        "--save-dir", str(save), "--no-epoch-checkpoints", "--cpu", "--num-workers", "0", "--seed", "1",
        "--max-source-positions", str(MAX_POSITIONS), "--max-target-positions", str(MAX_POSITIONS),
    ])
    return {"root": root, "out": out, "bpe": bpe, "checkpoint": save / "checkpoint_last.pt"}


def rouge(model, output_dir, *extra, references=None, check=True):
    out, (encoder_json, vocab_bpe, _) = model["out"], model["bpe"]
    return run([*ROUGE, "--dataset", "cnn_dm", "--checkpoint", str(model["checkpoint"]),
                "--data-bin", str(out / "bin"), "--references", str(references or out / "raw" / "test.target"),
                "--encoder-json", encoder_json, "--vocab-bpe", vocab_bpe, "--output-dir", str(output_dir),
                "--workers", "1", *extra], check=check)


def first_ranked(log_text):
    """{sample id: hypothesis} from the first D- line of each id in fairseq-generate's output."""
    first = {}
    for line in log_text.splitlines():
        if line.startswith("D-"):
            fields = line.split("\t")
            first.setdefault(int(fields[0][2:]), fields[2].strip() if len(fields) > 2 else "")
    return first


def test_generation_with_the_checkpoints_positions_rank_one_by_sample_id_and_quiet(model, tmp_path):
    proc = rouge(model, tmp_path, "--", "--nbest", "2", "--beam", "2", "--min-len", "1", "--max-len-b", "10")
    log = (tmp_path / "generate-test.txt").read_text()
    assert f"--max-source-positions {MAX_POSITIONS} --max-target-positions {MAX_POSITIONS}" in log
    hypotheses = (tmp_path / "test.hypo").read_text().split("\n")[:-1]
    ids_in_log_order = [int(line.split("\t")[0][2:]) for line in log.splitlines() if line.startswith("S-")]
    assert sorted(ids_in_log_order) == list(range(N_TEST))
    first = first_ranked(log)
    assert hypotheses == [first[i] for i in range(N_TEST)]  # line i = rank 1 of sample id i
    second = {}
    for line in log.splitlines():
        if line.startswith("D-"):
            second[int(line.split("\t")[0][2:])] = line.split("\t")[2].strip()  # the last (second) per id
    assert hypotheses != [second[i] for i in range(N_TEST)]
    result = json.loads((tmp_path / "rouge.json").read_text())
    assert result["documents"] == N_TEST and result["nbest_generated"] == 2 and result["scored_rank"] == 1
    assert "scored the first-ranked" in proc.stdout
    # progress bars with ETA on stderr; fairseq's configuration dump only in the log
    assert "generate: 100%" in proc.stderr and f"{N_TEST}/{N_TEST} [" in proc.stderr
    assert "rouge: 100%" in proc.stderr
    terminal = proc.stdout + proc.stderr
    assert "fairseq_cli.generate" in log and "'_name':" in log
    for noise in ("fairseq_cli.generate", "'_name':", "Namespace(", "tensorboardX", "| INFO |"):
        assert noise not in terminal, noise


def test_a_saved_score_is_reused_only_for_the_same_checkpoint_references_and_flags(model, tmp_path):
    flags = ["--", "--beam", "2", "--min-len", "1", "--max-len-b", "10"]
    first = rouge(model, tmp_path, *flags)
    assert "generate: 100%" in first.stderr
    again = rouge(model, tmp_path, *flags)
    assert "not generated again" in again.stdout and "generate:" not in again.stderr
    assert again.stdout.splitlines()[:3] == first.stdout.splitlines()[:3]  # the same table
    # the references are now the hypotheses themselves: a rescored 100, not the saved score
    own = tmp_path / "own.target"
    own.write_text((tmp_path / "test.hypo").read_text())
    rescored = rouge(model, tmp_path, *flags, references=own)
    assert "not generated again" not in rescored.stdout
    assert json.loads((tmp_path / "rouge.json").read_text())["rouge1"] == 100.0
    other_flags = rouge(model, tmp_path, "--", "--beam", "1", "--min-len", "1", "--max-len-b", "10", references=own)
    assert "not generated again" not in other_flags.stdout and "generate: 100%" in other_flags.stderr


def test_references_must_have_one_document_per_test_example(model, tmp_path):
    lines = (model["out"] / "raw" / "test.target").read_text().splitlines()
    short = tmp_path / "short.target"
    short.write_text("".join(line + "\n" for line in lines[:-1]))
    proc = rouge(model, tmp_path / "eval", references=short, check=False)
    assert proc.returncode == 1
    assert f"has {N_TEST - 1} documents but the test set" in proc.stderr and f"has {N_TEST}:" in proc.stderr
    assert not (tmp_path / "eval" / "generate-test.txt").exists()  # refused before generating


def score_files(tmp_path, hypotheses: bytes, references: bytes, *extra, dataset="gigaword"):
    (tmp_path / "hyp").write_bytes(hypotheses)
    (tmp_path / "ref").write_bytes(references)
    return run([*ROUGE, "--dataset", dataset, "--hypotheses", str(tmp_path / "hyp"), "--references",
                str(tmp_path / "ref"), "--output-dir", str(tmp_path), "--workers", "1", *extra], check=False)


def test_rouge_lsum_selectable_and_by_dataset(tmp_path):
    pair = (b"the cat sat. a dog ran far.\n", b"a dog ran far. the cat sat.\n")
    results = {}
    for dataset, extra in (("gigaword", ()), ("gigaword", ("--rouge-lsum", "yes")), ("reddit_tifu", ()),
                           ("cnn_dm", ("--rouge-lsum", "no"))):
        proc = score_files(tmp_path, *pair, *extra, dataset=dataset)
        assert proc.returncode == 0, proc.stderr
        results[(dataset, extra)] = json.loads((tmp_path / "rouge.json").read_text())
    assert "rougeLsum" not in results[("gigaword", ())]
    assert "rougeLsum" not in results[("cnn_dm", ("--rouge-lsum", "no"))]
    with_lsum = results[("gigaword", ("--rouge-lsum", "yes"))]
    assert with_lsum["rougeLsum"] == pytest.approx(100.0) and with_lsum["rougeL"] < 100  # sentences swapped
    assert results[("reddit_tifu", ())]["rougeLsum"] == pytest.approx(100.0)  # the table: PEGASUS's ROUGE-L


def test_files_read_like_the_preprocessing(tmp_path):
    # an empty file is no documents: not one empty document to pair with a one-line file
    proc = score_files(tmp_path, b"", b"a cat\n")
    assert proc.returncode == 1 and "has 0 lines but" in proc.stderr and "has 1" in proc.stderr
    proc = score_files(tmp_path, b"", b"")
    assert proc.returncode == 1 and "is empty" in proc.stderr
    # invalid UTF-8: file and line named, no traceback
    proc = score_files(tmp_path, b"a\nb\nc\n", b"a\nb\xff c\nc\n")
    assert proc.returncode == 1 and f"{tmp_path / 'ref'}:2: not UTF-8 (byte 0xff at column 2)" in proc.stderr
    assert "Traceback" not in proc.stderr
    # a byte-order mark is not part of the first document
    proc = score_files(tmp_path, "\ufeffthe cat\n".encode(), b"the cat\n")
    assert proc.returncode == 0 and json.loads((tmp_path / "rouge.json").read_text())["rouge1"] == 100.0
