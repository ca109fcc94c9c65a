"""The preprocessing scripts on damaged or unusual files in the official formats, through their command lines:
STS-B scores that are not finite or outside [0, 5], invalid UTF-8, byte-order marks, empty training splits,
repeated or space-separated XNLI languages, the PEGASUS-compatible Reddit TIFU split, and progress bars."""

import json
import os
import random
import subprocess

import pytest

from conftest import REPO
from test_glue_recipes import MNLI_TRAIN, PYTHON, env, tiny_gpt2_bpe, write_glue, write_tsv
from test_summarization_pipeline import write_gpt2_bpe
from test_xnli import NLI, XNLI_HEADER, words_for

GLUE = os.path.join(REPO, "preprocess", "glue.py")
XNLI = os.path.join(REPO, "preprocess", "xnli.py")
SUMMARIZATION = [PYTHON, "-m", "fairseq_r3f.preprocess.summarization"]


def run(command):
    return subprocess.run(command, capture_output=True, text=True, env=env(), cwd=REPO)


# ---------------------------------------------------------------- GLUE

@pytest.fixture(scope="module")
def glue(tmp_path_factory):
    root = tmp_path_factory.mktemp("glue")
    expected = write_glue(str(root / "glue_data"), n_train=20, n_dev=6, n_test=2)
    return {"root": root, "expected": expected, "bpe": tiny_gpt2_bpe(str(root))}


def glue_preprocess(glue, out, tasks, *extra):
    bpe = glue["bpe"]
    return run([PYTHON, GLUE, "--glue-dir", str(glue["root"] / "glue_data"), "--encoder-json", bpe["encoder.json"],
                "--vocab-bpe", bpe["vocab.bpe"], "--dict", bpe["dict.txt"], "--out-dir", str(out), "--tasks", tasks,
                *extra])


def test_glue_counts_bad_scores_and_invalid_utf8_as_malformed_rows(glue, tmp_path):
    data = glue["root"] / "glue_data"
    stsb = data / "STS-B" / "train.tsv"
    lines = stsb.read_bytes().split(b"\n")
    fields = lines[1].split(b"\t")
    bad = [b"nan", b"inf", b"-inf", b"7.5", b"-1"]
    rows = [b"\t".join(fields[:9] + [score]) for score in bad]
    rows.append(b"\t".join(fields[:7] + [b"caf\xe9 au lait", fields[8], b"3.0"]))  # latin-1, not UTF-8
    stsb.write_bytes(b"\n".join(lines[:3] + rows + lines[3:]))  # rows at lines 4..9
    rte = data / "RTE" / "train.tsv"
    lines = rte.read_bytes().split(b"\n")
    lines[2] = lines[2].replace(b"\t", b"\t\xff", 1)
    rte.write_bytes(b"\n".join(lines))

    proc = glue_preprocess(glue, tmp_path / "out", "STS-B,RTE", "--max-malformed-fraction", "0.3", "--keep-raw")
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "out" / "STS-B-bin" / "report.json").read_text())["splits"]["train"]
    assert report["rows"] == 20 + 6 and report["kept"] == 20 and report["malformed"] == 6
    reasons = {row["line"]: row["reason"] for row in report["malformed_rows"]}
    column = rows[-1].index(b"\xe9") + 1
    assert reasons == {4: "score 'nan' is not a finite number", 5: "score 'inf' is not a finite number",
                       6: "score '-inf' is not a finite number", 7: "score 7.5 outside [0, 5]",
                       8: "score -1 outside [0, 5]", 9: f"not UTF-8 (byte 0xe9 at column {column})"}
    labels = [float(x) for x in (tmp_path / "out" / "STS-B-bin" / "label" / "train.label").read_text().split()]
    assert labels == pytest.approx([float(label) / 5 for _, label in glue["expected"]["STS-B"]["train"]])
    assert all(0 <= x <= 1 for x in labels)
    rte_report = json.loads((tmp_path / "out" / "RTE-bin" / "report.json").read_text())["splits"]["train"]
    assert rte_report["malformed"] == 1 and rte_report["malformed_rows"][0]["line"] == 3
    assert rte_report["malformed_rows"][0]["reason"].startswith("not UTF-8 (byte 0xff")
    assert f"{rte}: dropped 1 malformed of 20 rows (line 3: not UTF-8" in proc.stderr
    # progress of the BPE encoding, with counts, on stderr
    assert "STS-B bpe train.input0: 100%" in proc.stderr and "20/20 [" in proc.stderr


def test_glue_refuses_an_empty_training_split_and_an_unreadable_header(glue, tmp_path):
    data = glue["root"] / "glue_data"
    sst = data / "SST-2" / "train.tsv"
    sst.write_text("sentence\tlabel\n")
    proc = glue_preprocess(glue, tmp_path / "out", "SST-2")
    assert proc.returncode == 2 and f"{sst} has no data rows: the train split would be empty" in proc.stderr
    mrpc = data / "MRPC" / "dev.tsv"
    mrpc.write_bytes(b"\xefQuality\t#1 ID\n")  # a damaged byte-order mark
    proc = glue_preprocess(glue, tmp_path / "out", "MRPC")
    assert proc.returncode == 2 and f"{mrpc}:1: the header is not UTF-8" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "out").exists()


# ---------------------------------------------------------------- XNLI

@pytest.fixture(scope="module")
def xnli(tmp_path_factory):
    import sentencepiece as spm

    root = tmp_path_factory.mktemp("xnli")
    rng = random.Random(5)
    mnli = root / "MNLI"
    mnli.mkdir()
    train = [(words_for("en", rng, 4), words_for("en", rng, 3), rng.choice(NLI)) for _ in range(12)]
    write_tsv(mnli / "train.tsv", MNLI_TRAIN, [[k, k, k, "fiction", "x", "y", "x", "y", s1, s2, label, label]
                                               for k, (s1, s2, label) in enumerate(train)])
    xnli_dir = root / "XNLI-1.0"
    xnli_dir.mkdir()
    texts = [s for s1, s2, _ in train for s in (s1, s2)]
    for split in ("dev", "test"):
        rows = []
        for lang in ("en", "fr", "de"):
            for k in range(5):
                s1, s2 = words_for(lang, rng, 4), words_for(lang, rng, 3)
                texts += [s1, s2]
                label = rng.choice(NLI)
                rows.append([lang, label, "x", "y", "x", "y", s1, s2, k, k, "travel", label, label, label, label,
                             label, s1, s2, "True"])
        write_tsv(xnli_dir / f"xnli.{split}.tsv", XNLI_HEADER, rows)
    spm.SentencePieceTrainer.train(sentence_iterator=iter(texts), model_prefix=str(root / "spm"), vocab_size=60,
                                   model_type="bpe", character_coverage=1.0, hard_vocab_limit=False, minloglevel=2)
    sp = spm.SentencePieceProcessor(model_file=str(root / "spm.model"))
    with open(root / "dict.txt", "w") as f:
        f.write("".join(f"{sp.id_to_piece(i)} {1000 - i}\n" for i in range(3, sp.get_piece_size())))
    return root


def xnli_preprocess(root, out, *extra, mnli=None, xnli_dir=None):
    xnli_dir = xnli_dir or root / "XNLI-1.0"
    return run([PYTHON, XNLI, "--mnli-dir", str(mnli or root / "MNLI"), "--xnli-dir", str(xnli_dir),
                "--sentencepiece-model", str(root / "spm.model"), "--dict", str(root / "dict.txt"),
                "--out-dir", str(out), *extra])


def test_xnli_languages_with_commas_spaces_and_repeats(xnli, tmp_path):
    runs = {"repeated": ["--languages", "en,en,fr"], "spaces": ["--languages", "en fr"],
            "both": ["--languages", " en, fr "]}
    for name, flags in runs.items():
        proc = xnli_preprocess(xnli, tmp_path / name, *flags)
        assert proc.returncode == 0, (name, proc.stderr[-3000:])
        report = json.loads((tmp_path / name / "report.json").read_text())
        assert report["languages"] == ["en", "fr"], name
        for subset in ("valid_en", "valid_fr", "test_en", "test_fr"):
            assert report["subsets"][subset]["kept"] == 5
            assert (tmp_path / name / "input0" / f"{subset}.bin").exists()
        assert not (tmp_path / name / "input0" / "valid_de.bin").exists()
    assert "names en more than once" in xnli_preprocess(xnli, tmp_path / "again", "--languages", "en,en").stderr
    assert "sentencepiece train.input0: 100%" in proc.stderr and "12/12 [" in proc.stderr


def test_xnli_refuses_an_empty_training_split_and_counts_invalid_utf8(xnli, tmp_path):
    empty = tmp_path / "MNLI"
    empty.mkdir()
    write_tsv(empty / "train.tsv", MNLI_TRAIN, [])
    proc = xnli_preprocess(xnli, tmp_path / "out", "--languages", "en", mnli=empty)
    assert proc.returncode == 2 and "the training split would be empty" in proc.stderr
    assert not (tmp_path / "out").exists()  # nothing written

    damaged = tmp_path / "XNLI-1.0"
    damaged.mkdir()
    for split in ("dev", "test"):
        lines = (xnli / "XNLI-1.0" / f"xnli.{split}.tsv").read_bytes().split(b"\n")
        lines[3] = lines[3].replace(b"\ttravel\t", b"\ttr\xc3avel\t")  # a cut two-byte sequence
        (damaged / f"xnli.{split}.tsv").write_bytes(b"\n".join(lines))
    proc = xnli_preprocess(xnli, tmp_path / "out", "--languages", "en", "--max-malformed-fraction", "0.1",
                           xnli_dir=damaged)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "out" / "report.json").read_text())["subsets"]
    assert report["valid"]["malformed"] == 1 and report["valid"]["malformed_rows"][0]["line"] == 4
    assert report["valid"]["malformed_rows"][0]["reason"].startswith("not UTF-8 (byte 0xc3")
    assert report["valid_en"]["kept"] == 4


# ---------------------------------------------------------------- summarization

@pytest.fixture(scope="module")
def bpe(tmp_path_factory):
    return write_gpt2_bpe(["ab", "cd", "abc", "bcd", "ce"], str(tmp_path_factory.mktemp("bpe")))


def summarization(bpe, raw, out, *extra):
    return run([*SUMMARIZATION, "--raw-dir", str(raw), "--out-dir", str(out), "--encoder-json", bpe[0],
                "--vocab-bpe", bpe[1], "--dict", bpe[2], "--workers", "1", *extra])


def write_cnn_dm(raw, n=4):
    raw.mkdir()
    for split in ("train", "val", "test"):
        (raw / f"{split}.source").write_text("".join(f"ab cd abc {k}\n" for k in range(n)))
        (raw / f"{split}.target").write_text("".join(f"ab {k}\n" for k in range(n)))


def test_summarization_bom_invalid_utf8_and_empty_training_split(bpe, tmp_path):
    raw = tmp_path / "raw"
    write_cnn_dm(raw)
    (raw / "train.source").write_text("\ufeff" + (raw / "train.source").read_text(), encoding="utf-8")
    proc = summarization(bpe, raw, tmp_path / "out", "--dataset", "cnn_dm")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "out" / "raw" / "train.source").read_text(encoding="utf-8").splitlines()[0] == "ab cd abc 0"

    (raw / "test.target").write_bytes(b"ab 0\nab 1\nab \xe9 2\nab 3\n")
    proc = summarization(bpe, raw, tmp_path / "bad", "--dataset", "cnn_dm")
    assert proc.returncode == 2 and f"{raw / 'test.target'}:3: not UTF-8 (byte 0xe9 at column 4)" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "bad").exists()

    for side in ("source", "target"):
        (raw / f"train.{side}").write_bytes(b"")
    (raw / "test.target").write_text("".join(f"ab {k}\n" for k in range(4)))
    proc = summarization(bpe, raw, tmp_path / "bad", "--dataset", "cnn_dm")
    assert proc.returncode == 2 and "the train split has no examples" in proc.stderr


def test_reddit_tifu_pegasus_split_in_file_order_by_default(bpe, tmp_path):
    rng = random.Random(2)
    words = ["ab", "cd", "abc", "bcd", "ce"]
    posts = [{"selftext_without_tldr": " ".join(rng.choice(words) for _ in range(8)),
              "tldr": f"ab {k}" if k % 5 else None, "trimmed_title": f"cd {k}"} for k in range(50)]
    path = tmp_path / "tifu.json"
    path.write_text("".join(json.dumps(p) + "\n" for p in posts))
    proc = summarization(bpe, tmp_path, tmp_path / "out", "--dataset", "reddit_tifu", "--reddit-file", str(path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    kept = [p["tldr"] for p in posts if p["tldr"]]  # 40 posts with a TL;DR, in file order
    split = {s: (tmp_path / "out" / "raw" / f"{s}.target").read_text().splitlines()
             for s in ("train", "valid", "test")}
    assert split == {"train": kept[:32], "valid": kept[32:36], "test": kept[36:]}  # train[:80%], [80%:90%], [90%:]
    report = json.loads((tmp_path / "out" / "preprocess_report.json").read_text())
    assert report["split_method"] == "pegasus" and report["split_seed"] is None
    assert report["split_fractions"] == [0.8, 0.1, 0.1]
    proc = summarization(bpe, tmp_path, tmp_path / "o2", "--dataset", "reddit_tifu", "--reddit-file", str(path),
                         "--split-seed", "3")
    assert proc.returncode == 2 and "--split-method seeded" in proc.stderr
    path.write_bytes(b'{"selftext_without_tldr": "ab", "tldr": "cd"}\n{"selftext_without_tldr": "\xff"}\n')
    proc = summarization(bpe, tmp_path, tmp_path / "o3", "--dataset", "reddit_tifu", "--reddit-file", str(path))
    assert proc.returncode == 2 and f"{path}:2: not UTF-8" in proc.stderr
