"""Translation through its real commands on generated parallel text: preprocess/translation.py (plain aligned
files and the IWSLT'14 release layout), recipes/translation.sh (tiny CPU mode; dry run for the launch lines)
and python -m fairseq_r3f.evaluation.bleu (fairseq-generate, sacrebleu, the table over methods and seeds)."""

import json
import os
import random
import shlex
import shutil
import statistics
import subprocess
import sys

import pytest
import sacrebleu

from conftest import REPO, run_fairseq
from fairseq_r3f.evaluation import bleu
from fairseq_r3f.logs import read_json_log
from fairseq_r3f.preprocess import translation
from r3f_runs.tables import read_table

PREPROCESS = os.path.join(REPO, "preprocess", "translation.py")
RECIPE = os.path.join(REPO, "recipes", "translation.sh")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0",
       "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")}
N_TEST = 13  # not a multiple of the batch size: every test sentence must still get its hypothesis
LEXICON = {"haus": "house", "katze": "cat", "hund": "dog", "rot": "red", "gross": "big", "klein": "small",
           "der": "the", "ist": "is", "ein": "a", "sehr": "very", "baum": "tree", "fluss": "river"}


def run(command, check=True, **env):
    proc = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env={**ENV, **env})
    if check and proc.returncode != 0:
        raise AssertionError(f"{command[:3]} failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    return proc


def sentence_pairs(n, rng):
    """German-like / English-like sentences translated word by word: a tiny model learns it in a few updates."""
    pairs = []
    for _ in range(n):
        words = [rng.choice(list(LEXICON)) for _ in range(rng.randint(3, 7))]
        pairs.append((" ".join(words).capitalize() + ".", " ".join(LEXICON[w] for w in words).capitalize() + "."))
    return pairs


def write_pairs(prefix, pairs, source="de", target="en"):
    for lang, side in ((source, 0), (target, 1)):
        with open(f"{prefix}.{lang}", "w", encoding="utf-8") as f:
            f.write("".join(pair[side] + "\n" for pair in pairs))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Plain aligned files (train has a pair with an empty target and one with an empty source), preprocessed."""
    root = tmp_path_factory.mktemp("translation")
    rng = random.Random(0)
    splits = {"train": sentence_pairs(300, rng), "valid": sentence_pairs(16, rng), "test": sentence_pairs(N_TEST, rng)}
    splits["train"][7] = (splits["train"][7][0], "   ")
    splits["train"][11] = ("", splits["train"][11][1])
    for split, pairs in splits.items():
        write_pairs(str(root / split), pairs)
    out = root / "out"
    proc = run([sys.executable, PREPROCESS, "--source-lang", "de", "--target-lang", "en", "--train-prefix",
                str(root / "train"), "--valid-prefix", str(root / "valid"), "--test-prefix", str(root / "test"),
                "--out-dir", str(out), "--vocab-size", "60", "--workers", "1"])
    return dict(root=root, out=out, splits=splits, stderr=proc.stderr)


def test_preprocess_drops_and_counts_empty_pairs_and_keeps_alignment(corpus):
    out, splits = corpus["out"], corpus["splits"]
    report = json.loads((out / "report.json").read_text())
    assert report["train_dropped_empty_target"] == 1 and report["train_dropped_empty_source"] == 1
    assert (report["train_pairs"], report["valid_pairs"], report["test_pairs"]) == (298, 16, N_TEST)
    assert "dropped" in corpus["stderr"]
    kept = [pair for i, pair in enumerate(splits["train"]) if i not in (7, 11)]
    assert (out / "raw" / "train.de").read_text().splitlines() == [s for s, _ in kept]
    assert (out / "raw" / "train.en").read_text().splitlines() == [t for _, t in kept]
    assert (out / "raw" / "test.en").read_text().splitlines() == [t for _, t in splits["test"]]
    # one joint model: both languages' pieces decode back to the raw text; fairseq's two dictionaries are one
    import sentencepiece as spm

    model = spm.SentencePieceProcessor(model_file=str(out / "bin" / "sentencepiece.model"))
    for lang in ("de", "en"):
        pieces = (out / "spm" / f"valid.{lang}").read_text().splitlines()
        raw = (out / "raw" / f"valid.{lang}").read_text().splitlines()
        assert [model.decode(line.split()) for line in pieces] == raw
    assert (out / "bin" / "dict.de.txt").read_text() == (out / "bin" / "dict.en.txt").read_text()
    assert all(" 0.0% replaced" in line for line in report["fairseq_preprocess"])


def test_preprocess_refuses_misaligned_undecodable_and_empty_input(corpus, tmp_path, capsys):
    rng = random.Random(1)
    write_pairs(str(tmp_path / "ok"), sentence_pairs(5, rng))
    (tmp_path / "short.de").write_text("Der hund.\nEin haus.\n")
    (tmp_path / "short.en").write_text("The dog.\n")
    proc = run([sys.executable, PREPROCESS, "--source-lang", "de", "--target-lang", "en", "--train-prefix",
                str(tmp_path / "short"), "--valid-prefix", str(tmp_path / "ok"), "--test-prefix", str(tmp_path / "ok"),
                "--out-dir", str(tmp_path / "out")], check=False)
    assert proc.returncode == 2
    assert "short.de has 2 lines but" in proc.stderr and "short.en has 1" in proc.stderr
    assert not (tmp_path / "out" / "bin").exists()

    def refused(train_prefix):
        code = translation.main(["--source-lang", "de", "--target-lang", "en", "--train-prefix", train_prefix,
                                 "--valid-prefix", str(tmp_path / "ok"), "--test-prefix", str(tmp_path / "ok"),
                                 "--out-dir", str(tmp_path / "out")])
        assert code == 2
        return capsys.readouterr().err

    for flag in ("--vocab-size", "--workers"):
        with pytest.raises(SystemExit):
            translation.main(["--train-prefix", "x", "--valid-prefix", "x", "--test-prefix", "x", "--source-lang", "de",
                              "--target-lang", "en", "--out-dir", str(tmp_path), flag, "0"])
        assert f"{flag} 0: must be a positive integer" in capsys.readouterr().err
    (tmp_path / "latin.de").write_bytes("Der hund.\nGr\u00f6\u00dfe.\n".encode("latin-1"))
    (tmp_path / "latin.en").write_text("The dog.\nSize.\n")
    assert "latin.de:2: not UTF-8" in refused(str(tmp_path / "latin"))
    (tmp_path / "blank.de").write_text("Der hund.\n\n")
    (tmp_path / "blank.en").write_text("\nEin haus.\n")
    assert "training split has no pairs with text on both sides" in refused(str(tmp_path / "blank"))


def iwslt_release(folder, rng, shift_tag=False):
    """The de-en folder of the IWSLT'14 release in miniature: tagged training talks and five xml sets."""
    folder.mkdir()
    talks = {"de": [], "en": []}
    for talk in range(3):
        for lang in ("de", "en"):
            talks[lang] += [f"<url>http://www.ted.com/talks/{talk}</url>", f"<keywords>talk{talk}</keywords>",
                            f"<talkid>{talk}</talkid>"]
        talks["de"].append(f"<title>Der baum {talk}</title>")
        talks["en"].append(f"<title>The tree {talk}</title>")
        for de, en in sentence_pairs(20, rng):
            talks["de"].append(de)
            talks["en"].append(en)
    if shift_tag:  # a tag line on one side only: everything after it is off by one line
        talks["en"].insert(30, "<speaker>Someone</speaker>")
        talks["en"].pop()
    for lang, lines in talks.items():
        (folder / f"train.tags.de-en.{lang}").write_text("".join(line + "\n" for line in lines))
    tests = {}
    for name in translation.IWSLT14_TEST_SETS:
        pairs = sentence_pairs(2, rng) + [("Haus & baum.", "House & tree.")]
        tests[name] = pairs
        for lang, side in (("de", 0), ("en", 1)):
            segs = "".join(f'<seg id="{i}"> {p[side].replace("&", "&amp;")} </seg>\n' for i, p in enumerate(pairs, 1))
            (folder / f"IWSLT14.{name}.de-en.{lang}.xml").write_text(
                f'<?xml version="1.0" encoding="UTF-8"?>\n<mteval>\n<srcset setid="x" srclang="german">\n'
                f'<doc docid="1" genre="lectures">\n<talkid>1</talkid>\n{segs}</doc>\n</srcset>\n</mteval>\n')
    return talks, tests


def test_iwslt14_release_layout(tmp_path, capsys):
    talks, tests = iwslt_release(tmp_path / "de-en", random.Random(2))
    report = {}
    pairs = translation.read_iwslt14(str(tmp_path / "de-en"), "de", "en", translation.IWSLT14_TEST_SETS, report)
    assert report["train_tag_lines_dropped"] == {"url": 3, "keywords": 3, "talkid": 3}
    sentences = [line for line in talks["en"] if not line.startswith(("<url", "<keywords", "<talkid"))]
    sentences = [line.replace("<title>", "").replace("</title>", "") for line in sentences]  # titles keep their text
    assert [t for _, t in pairs["valid"]] == sentences[22::23]
    assert [t for _, t in pairs["train"]] == [s for i, s in enumerate(sentences, 1) if i % 23]
    assert pairs["test"] == [p for name in translation.IWSLT14_TEST_SETS for p in tests[name]]  # &amp; unescaped
    assert report["test_sets"] == {name: 3 for name in translation.IWSLT14_TEST_SETS}
    (tmp_path / "de-en" / "IWSLT14.TED.tst2011.de-en.en.xml").write_text('<seg id="1"> One. </seg>\n')
    with pytest.raises(translation.DataError, match="has 3 segments but .*tst2011.de-en.en.xml has 1"):
        translation.read_iwslt14(str(tmp_path / "de-en"), "de", "en", translation.IWSLT14_TEST_SETS, {})

    talks, _ = iwslt_release(tmp_path / "shifted", random.Random(2), shift_tag=True)
    assert translation.main(["--iwslt14-dir", str(tmp_path / "shifted"), "--out-dir", str(tmp_path / "out2")]) == 2
    error = capsys.readouterr().err
    assert "line 31" in error and "misaligned" in error


# ---------------------------------------------------------------- the recipe and BLEU

@pytest.fixture(scope="module")
def runs(corpus, tmp_path_factory):
    """Every method for 80 updates; then the same command again after r3f's `done` is removed (a kill between the
    end of training and the record)."""
    save_root = tmp_path_factory.mktemp("translation_runs")
    env = dict(TINY="1", DATA_BIN=str(corpus["out"] / "bin"), SAVE_ROOT=str(save_root))
    fast = ["--lr", "5e-3", "--lr-scheduler", "fixed", "--dropout", "0.1"]  # a tiny model learns in 80 updates
    first = run(["bash", RECIPE, "iwslt14_de_en", *fast], TINY_UPDATES="80", METHODS="std r3f drop", **env)
    (save_root / "iwslt14_de_en" / "r3f" / "lambda1.25_uniform" / "seed1" / "done").unlink()
    second = run(["bash", RECIPE, "iwslt14_de_en", *fast], TINY_UPDATES="80", METHODS="r3f std", **env)
    return dict(root=save_root / "iwslt14_de_en", save_root=save_root, first=first.stderr, second=second.stderr)


def run_dir(runs, method, seed=1):
    config = {"std": "lambda0_none", "r3f": "lambda1.25_uniform", "drop": "lambda1.25_none"}[method]
    return runs["root"] / method / config / f"seed{seed}"


def test_recipe_methods_differ_as_documented(runs):
    table = read_table("translation.tsv")
    for method, expected in (("std", (0, "none")), ("r3f", (1.25, "uniform")), ("drop", (1.25, "none"))):
        label = json.loads((run_dir(runs, method) / "run.json").read_text())
        assert (label["method"], label["r3f_lambda"], label["noise_type"]) == (method, *expected)
        assert label["dataset"] == label["task"] == "iwslt14_de_en" and label["search"]["configurations"] == 1
        command = (run_dir(runs, method) / "command.sh").read_text()
        assert "--criterion label_smoothed_cross_entropy_r3f" in command and "--restore-file" not in command
        assert f"--label-smoothing {table['label_smoothing']['iwslt14_de_en']}" in command
        assert "--share-decoder-input-output-embed" in command and "--r3f-kl-normalization token" in command
        steps = read_json_log((run_dir(runs, method) / "train.log").read_text())["train_inner"]
        if method == "std":
            assert all("symm_kl" not in step for step in steps)  # lambda 0: no second forward
        else:
            # dropout differs between the two forwards in both; only r3f adds noise
            assert all(step["symm_kl"] > 0 for step in steps)
            kept = {step["noise_kept"] for step in steps}
            assert kept == {0.0} if method == "drop" else min(kept) > 90
    assert "skip" not in runs["first"]


def test_a_run_killed_before_its_record_is_recorded_without_training_again(runs):
    """Launched again, fairseq would train one update past --max-update; the run layer sees the checkpoint at the
    planned end and only checks and records it. (A run killed mid-training resumes from its checkpoint_last.pt:
    tests/test_glue_recipes.py.)"""
    log = (run_dir(runs, "r3f") / "train.log").read_text()
    assert log.count(" start\n") == 1
    assert [step["num_updates"] for step in read_json_log(log)["train_inner"]] == list(range(1, 81))
    assert "already reached the planned end (update 80)" in runs["second"]
    assert json.loads((run_dir(runs, "r3f") / "done").read_text())["num_updates"] == 80
    assert f"skip {run_dir(runs, 'std')}: already done" in runs["second"]
    assert (run_dir(runs, "std") / "train.log").read_text().count(" start\n") == 1


def test_lambda_zero_equals_label_smoothed_cross_entropy(runs, tmp_path):
    """The recipe's std run, replayed with fairseq's own criterion: the same losses, update by update."""
    args = shlex.split((run_dir(runs, "std") / "command.sh").read_text())[1:]  # without fairseq-train
    r3f_flags = {"--r3f-lambda", "--noise-type", "--eps", "--r3f-kl-normalization", "--save-dir"}
    plain = [a for i, a in enumerate(args) if a not in r3f_flags and (i == 0 or args[i - 1] not in r3f_flags)]
    plain[plain.index("label_smoothed_cross_entropy_r3f")] = "label_smoothed_cross_entropy"
    _, parent = run_fairseq("train", plain + ["--save-dir", str(tmp_path)])
    ours = read_json_log((run_dir(runs, "std") / "train.log").read_text())
    strip = lambda record: {k: v for k, v in record.items() if not k.endswith(("wps", "ups", "wall"))}  # noqa: E731
    assert len(parent["train_inner"]) == 80
    assert [strip(r) for r in parent["train_inner"]] == [strip(r) for r in ours["train_inner"]]
    assert [strip(r) for r in parent["valid"]] == [strip(r) for r in ours["valid"]]


def test_bleu_over_methods_and_seeds(runs, corpus):
    references = str(corpus["out"] / "raw" / "test.en")
    proc = run([sys.executable, "-m", "fairseq_r3f.evaluation.bleu", "--config", "iwslt14_de_en", "--data-bin",
                str(corpus["out"] / "bin"), "--references", references, "--runs", str(runs["save_root"])])
    assert "H-" not in proc.stdout + proc.stderr  # fairseq-generate's output goes to the log files only
    assert "nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:" in proc.stdout
    result = json.loads((runs["save_root"] / "bleu-test.json").read_text())
    reference_lines = corpus["splits"]["test"]
    per_run = {}
    for row in result["runs"]:
        folder = os.path.join(row["run"], "bleu-test")
        hypotheses = open(os.path.join(folder, "test.hyp"), encoding="utf-8").read().split("\n")[:-1]
        assert len(hypotheses) == N_TEST and any(hypotheses)
        log = open(os.path.join(folder, "generate-test.txt")).read()
        assert log.count("\nH-") == N_TEST and "--remove-bpe sentencepiece" in log
        assert "\u2581" not in "".join(hypotheses) and "  " not in "".join(hypotheses)  # sentencepiece removed
        expected = sacrebleu.corpus_bleu(hypotheses, [[t for _, t in reference_lines]]).score
        assert row["bleu"] == pytest.approx(expected, abs=1e-9)
        per_run[(row["method"], row["seed"])] = row["bleu"]
    assert sorted(per_run) == [("drop", 1), ("r3f", 1), ("std", 1)]
    assert min(per_run.values()) > 0  # 80 updates of the word-for-word toy already translate some words
    assert [(line["method"], line["seeds"], line["mean"], line["std"]) for line in result["table"]] == [
        (method, [1], per_run[(method, 1)], None) for method in ("std", "r3f", "drop")]
    assert "| r3f | lambda1.25_uniform | 1 |" in (runs["save_root"] / "bleu-test.md").read_text()


def bleu_table(root, references, data_bin, *extra):
    proc = run([sys.executable, "-m", "fairseq_r3f.evaluation.bleu", "--config", "iwslt14_de_en", "--data-bin",
                data_bin, "--references", str(references), "--runs", str(root), *extra])
    return proc, json.loads((root / "bleu-test.json").read_text())


def test_bleu_table_takes_finished_runs_once_and_keys_its_cache(runs, corpus, tmp_path):
    """Under one SAVE_ROOT: the recipe's runs, a second copy of them (one without its checkpoint_best.pt), a
    killed seed 2 (no done) and a GLUE run. Then a changed --references and --tokenize rescore."""
    root = tmp_path / "save_root"
    shutil.copytree(runs["save_root"], root)
    shutil.copytree(root / "iwslt14_de_en", root / "copy" / "iwslt14_de_en")
    (root / "copy" / "iwslt14_de_en" / "drop" / "lambda1.25_none" / "seed1" / "checkpoint_best.pt").unlink()
    killed = root / "iwslt14_de_en" / "std" / "lambda0_none" / "seed2"
    shutil.copytree(root / "iwslt14_de_en" / "std" / "lambda0_none" / "seed1", killed)
    (killed / "done").unlink()
    label = json.loads((killed / "run.json").read_text())
    (killed / "run.json").write_text(json.dumps({**label, "seed": 2}))
    glue = root / "RTE" / "std" / "default" / "seed1"
    glue.mkdir(parents=True)
    (glue / "run.json").write_text(json.dumps({"task": "RTE", "method": "std", "config": "default", "seed": 1}))
    shutil.copy(killed / "checkpoint_best.pt", glue / "checkpoint_best.pt")
    data_bin = str(corpus["out"] / "bin")
    references = corpus["out"] / "raw" / "test.en"

    proc, result = bleu_table(root, references, data_bin)
    assert "note: 1 run(s) of other recipes or configurations are not in this table" in proc.stderr
    assert not (glue / "bleu-test").exists()
    assert sorted((row["method"], row["seed"]) for row in result["runs"]) == [("drop", 1), ("r3f", 1), ("std", 1)]
    kept = {row["method"]: row["run"] for row in result["runs"]}
    assert kept["drop"] == str(root / "iwslt14_de_en" / "drop" / "lambda1.25_none" / "seed1")  # the copy has none
    for method in ("std", "r3f"):
        relative = os.path.relpath(kept[method], root).replace("copy" + os.sep, "")
        other = {str(root / relative), str(root / "copy" / relative)} - {kept[method]}
        assert f"warning: {other.pop()} is the same run as {kept[method]}" in proc.stderr
    table = (root / "bleu-test.md").read_text()
    assert f"{killed}: unfinished (no done file" in table
    assert "checkpoint_best.pt is gone (deleted?)" in table
    assert "| std | lambda0_none | 1/2 |" in table and "| r3f | lambda1.25_uniform | 1 |" in table

    # the references are now std's own hypotheses: std scores 100, whatever its cached bleu.json said
    own = tmp_path / "own.en"
    shutil.copy(os.path.join(kept["std"], "bleu-test", "test.hyp"), own)
    proc, result = bleu_table(root, own, data_bin)
    assert {row["method"]: row["bleu"] for row in result["runs"]}["std"] == pytest.approx(100.0)
    again, result = bleu_table(root, own, data_bin, "--tokenize", "none")
    assert result["signature"][0].split("|")[3] == "tok:none"
    assert "same checkpoint, references and settings" not in again.stderr
    again, _ = bleu_table(root, own, data_bin, "--tokenize", "none")
    assert again.stderr.count("(bleu.json of the same checkpoint, references and settings)") == 3


def test_results_table_over_seeds():
    runs = [("drop", "lambda1.25_none", 2, 30.0), ("r3f", "lambda1.25_uniform", 2, 31.5),
            ("std", "lambda0_none", 1, 29.0), ("r3f", "lambda1.25_uniform", 1, 32.5),
            ("r3f", "lambda0.5_uniform", 1, 31.0), ("drop", "lambda1.25_none", 1, 28.0),
            ("std", "lambda0_none", 3, 30.0)]
    rows = [{"method": m, "config": c, "seed": s, "bleu": b} for m, c, s, b in runs]
    lines = bleu.results_table(rows)
    assert [(line["method"], line["config"], line["seeds"]) for line in lines] == [
        ("std", "lambda0_none", [1, 3]), ("r3f", "lambda0.5_uniform", [1]), ("r3f", "lambda1.25_uniform", [1, 2]),
        ("drop", "lambda1.25_none", [1, 2])]
    r3f = lines[2]
    assert r3f["bleu"] == [32.5, 31.5] and r3f["mean"] == 32.0
    assert r3f["std"] == pytest.approx(statistics.stdev([32.5, 31.5]))
    assert lines[1]["std"] is None
    text = bleu.markdown(lines, "nrefs:1|tok:13a")
    assert "| r3f | lambda1.25_uniform | 2 | 32.00 | 0.71 | 1: 32.50, 2: 31.50 |" in text and "nrefs:1|tok:13a" in text


def test_bleu_equals_sacrebleu_on_fixed_pairs(tmp_path):
    hypotheses = ["The cat sat on the mat.", "A dog, quickly!", "Nothing like it", ""]
    references = ["The cat sat on the mat.", "The dog ran quickly!", "Something else entirely", "An empty one."]
    (tmp_path / "hyp").write_text("".join(h + "\n" for h in hypotheses))
    (tmp_path / "ref").write_text("".join(r + "\n" for r in references))
    proc = run([sys.executable, "-m", "fairseq_r3f.evaluation.bleu", "--hypotheses", str(tmp_path / "hyp"),
                "--references", str(tmp_path / "ref")])
    expected = sacrebleu.corpus_bleu(hypotheses, [references])
    result = json.loads(proc.stdout.splitlines()[1])
    assert result["bleu"] == pytest.approx(expected.score, abs=1e-12) and 0 < expected.score < 100
    assert proc.stdout.startswith(f"BLEU = {expected.score:.2f}  nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp")
    (tmp_path / "short").write_text("one line\n")
    proc = run([sys.executable, "-m", "fairseq_r3f.evaluation.bleu", "--hypotheses", str(tmp_path / "short"),
                "--references", str(tmp_path / "ref")], check=False)
    assert proc.returncode == 1 and "1 hypotheses but 4 references" in proc.stderr


def test_hypotheses_are_matched_by_sample_id():
    lines = ["S-2\tc", "H-2\t-0.1\tthird one", "D-2\t-0.1\tthird one", "H-0\t-0.2\t[ro_RO] first", "T-0\tx",
             "H-1\t-0.3\tsecond [ro_RO]", "P-1\t-0.1 -0.2", "H-1\t-0.9\tsecond-ranked"]  # --nbest 2: rank 1 wins
    assert bleu.hypotheses_by_id(lines) == {0: "[ro_RO] first", 1: "second [ro_RO]", 2: "third one"}
    assert bleu.hypotheses_by_id(lines, "ro_RO") == {0: "first", 1: "second", 2: "third one"}


def test_dry_run_launch_lines(corpus, tmp_path):
    table = read_table("translation.tsv")
    proc = run(["bash", RECIPE, "iwslt14_de_en"], DRY_RUN="1", DATA_BIN=str(corpus["out"] / "bin"),
               SAVE_ROOT=str(tmp_path), SEEDS="1 2")
    lines = [shlex.split(line) for line in proc.stdout.splitlines() if line.startswith("fairseq-train")]
    assert len(lines) == 6  # three methods x two seeds
    for line in lines:
        flags = dict(zip(line, line[1:]))
        for name in ("lr", "warmup_updates", "dropout", "weight_decay", "label_smoothing", "max_tokens", "max_update",
                     "adam_betas", "lr_scheduler", "arch"):
            assert flags["--" + name.replace("_", "-")] == table[name]["iwslt14_de_en"], name
        assert "--finetune-from-model" not in line and "--restore-file" not in line

    mbart_bin = tmp_path / "mbart_bin"
    mbart_bin.mkdir()
    (mbart_bin / "train.en_XX-ro_RO.en_XX.bin").touch()
    env = dict(DRY_RUN="1", DATA_BIN=str(mbart_bin), SAVE_ROOT=str(tmp_path), METHODS="drop")
    proc = run(["bash", RECIPE, "mbart_en_ro"], check=False, **env)
    assert proc.returncode == 2 and "MBART_PATH is not set" in proc.stderr
    (tmp_path / "model.pt").touch()
    proc = run(["bash", RECIPE, "mbart_en_ro"], MBART_PATH=str(tmp_path / "model.pt"), **env)
    (line,) = [shlex.split(line) for line in proc.stdout.splitlines() if line.startswith("fairseq-train")]
    flags = dict(zip(line, line[1:]))
    assert flags["--finetune-from-model"] == str(tmp_path / "model.pt") and "--restore-file" not in line
    assert flags["--task"] == "translation_from_pretrained_mbart" and flags["--langs"].count(",") == 24
    assert (flags["--source-lang"], flags["--target-lang"], flags["--noise-type"]) == ("en_XX", "ro_RO", "none")
    assert flags["--max-tokens"] == "2048"  # the README's 1024 tokens x update-freq 2, on one GPU
    assert flags["--total-num-update"] == flags["--max-update"] == "40000"
    assert "--layernorm-embedding" in line and "--encoder-normalize-before" in line

    proc = run(["bash", RECIPE, "iwslt14_de_en"], check=False, DRY_RUN="1", DATA_BIN=str(corpus["out"] / "bin"),
               METHODS="std rdrop")
    assert proc.returncode == 2 and "unknown method rdrop" in proc.stderr
    proc = run(["bash", RECIPE, "wmt14"], check=False, DRY_RUN="1", DATA_BIN=str(corpus["out"] / "bin"))
    assert proc.returncode == 2 and "unknown CONFIG wmt14" in proc.stderr
    # flags that would make a run something else than its label says are refused
    for flags, message in ((["--criterion", "label_smoothed_cross_entropy"], "is not std's"),
                           (["--r3f-kl-normalization", "sentence"], "contradicts the table's token")):
        proc = run(["bash", RECIPE, "iwslt14_de_en", *flags], check=False, DRY_RUN="1", METHODS="std",
                   DATA_BIN=str(corpus["out"] / "bin"))
        assert proc.returncode == 2 and message in proc.stderr and "fairseq-train" not in proc.stdout


def test_mbart_variant_trains_and_translates(corpus, tmp_path):
    """mbart_en_ro in TINY mode (a tiny random mBART instead of mbart.cc25) on the corpus renamed en_XX-ro_RO:
    the plugin's copy of translation_from_pretrained_bart trains with R3F and generates without the [ro_RO] tag."""
    data = tmp_path / "bin"
    data.mkdir()
    names = {"de": "en_XX", "en": "ro_RO"}
    for path in (corpus["out"] / "bin").iterdir():
        if path.name.startswith("dict."):
            target = f"dict.{names[path.name.split('.')[1]]}.txt"
        elif ".de-en." in path.name:
            split, _, lang, suffix = path.name.split(".")
            target = f"{split}.en_XX-ro_RO.{names[lang]}.{suffix}"
        else:
            continue
        os.symlink(path, data / target)
    references = tmp_path / "test.ro_RO"
    references.write_text((corpus["out"] / "raw" / "test.en").read_text())
    run(["bash", RECIPE, "mbart_en_ro", "--dropout", "0", "--attention-dropout", "0", "--lr", "5e-3"],
        TINY="1", TINY_UPDATES="10", METHODS="r3f", DATA_BIN=str(data), SAVE_ROOT=str(tmp_path / "runs"))
    folder = tmp_path / "runs" / "mbart_en_ro" / "r3f" / "lambda1.25_uniform" / "seed1"
    identity = json.loads((folder / "identity.json").read_text())
    assert identity["task"] == "translation_from_pretrained_mbart" and identity["mismatches"] == []
    steps = read_json_log((folder / "train.log").read_text())["train_inner"]
    # dropout 0: the KL comes from the noise alone, so the noise reaches mBART's encoder
    assert len(steps) == 10 and all(step["symm_kl"] > 0 and step["noise_kept"] == 100 for step in steps)
    proc = run([sys.executable, "-m", "fairseq_r3f.evaluation.bleu", "--config", "mbart_en_ro", "--data-bin", str(data),
                "--references", str(references), "--checkpoint", str(folder / "checkpoint_last.pt"),
                "--output-dir", str(tmp_path / "eval")])
    assert proc.stdout.startswith("BLEU = ") and f"({N_TEST} sentences)" in proc.stdout
    log = (tmp_path / "eval" / "generate-test.txt").read_text()
    assert "--task translation_from_pretrained_mbart" in log and log.count("\nH-") == N_TEST
    assert "[ro_RO]" not in (tmp_path / "eval" / "test.hyp").read_text()


def test_iwslt14_as_prepare_iwslt14_sh_through_the_command_line(tmp_path):
    """--tokenization moses: tokenised, lowercased text in raw/, joint BPE in bpe/, one dictionary for both
    sides in bin/ (what --share-all-embeddings needs)."""
    from test_iwslt14_tokenized import release

    release(tmp_path / "de-en")
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, PREPROCESS, "--iwslt14-dir", str(tmp_path / "de-en"), "--out-dir",
                           str(out), "--tokenization", "moses", "--vocab-size", "40", "--workers", "1"],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["tokenization"] == "moses, as prepare-iwslt14.sh" and report["bpe"]["merges"] == 40
    assert report["test_pairs"] == 10 and report["valid_pairs"] == (3 * 26) // 23
    assert (out / "raw" / "test.en").read_text().splitlines()[0] == "the house &amp; amp ; the tree &apos;s leaf ."
    assert (out / "bin" / "dict.de.txt").read_text() == (out / "bin" / "dict.en.txt").read_text()
    assert (out / "bin" / "code").read_text() == (out / "bpe" / "code").read_text()
    assert {p.name for p in (out / "bin").iterdir()} >= {"train.de-en.de.bin", "test.de-en.en.idx"}
    proc = subprocess.run([sys.executable, PREPROCESS, "--train-prefix", "x", "--valid-prefix", "x",
                           "--test-prefix", "x", "--source-lang", "de", "--target-lang", "en", "--out-dir",
                           str(out), "--tokenization", "moses"], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 2 and "--tokenization moses follows prepare-iwslt14.sh and needs --iwslt14-dir" in \
        proc.stderr
