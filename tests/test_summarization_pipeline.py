"""The summarization pipeline through its real commands, on generated document/summary pairs: tiny GPT-2 BPE
files, preprocess/summarization.py, recipes/summarization.sh (tiny CPU overrides), fairseq-generate and
ROUGE via python -m fairseq_r3f.evaluation.rouge."""

import json
import os
import random
import subprocess
import sys

import pytest
from rouge_score import rouge_scorer

from conftest import NO_DROPOUT, REPO, TINY_BART, USER_DIR, run_fairseq
from fairseq_r3f.evaluation import rouge
from fairseq_r3f.logs import read_json_log

PREPROCESS = os.path.join(REPO, "preprocess", "summarization.py")
RECIPE = os.path.join(REPO, "recipes", "summarization.sh")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0",
       "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")}
N_TEST = 13  # not a multiple of 8: every test document must still get a hypothesis


def run(command, check=True, **env):
    proc = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env={**ENV, **env})
    if check and proc.returncode != 0:
        raise AssertionError(f"{command[:2]} failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return proc


def write_gpt2_bpe(words, folder):
    """A small encoder.json / vocab.bpe in GPT-2's format: the 256 byte symbols, plus merges that build every
    word (with and without its leading-space symbol) left to right; and a BART-style dict.txt of the ids."""
    from fairseq.data.encoders.gpt2_bpe_utils import bytes_to_unicode

    symbols = list(bytes_to_unicode().values())
    merges = []
    for word in words:
        for form in (word, "\u0120" + word):  # \u0120 is GPT-2's symbol for a leading space
            for end in range(2, len(form) + 1):
                merge = (form[: end - 1], form[end - 1])
                if merge not in merges:
                    merges.append(merge)
                    symbols.append("".join(merge))
    encoder = {symbol: i for i, symbol in enumerate(dict.fromkeys(symbols))}
    paths = [os.path.join(folder, name) for name in ("encoder.json", "vocab.bpe", "dict.txt")]
    with open(paths[0], "w") as f:
        json.dump(encoder, f)
    with open(paths[1], "w") as f:
        f.write("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    with open(paths[2], "w") as f:
        f.write("".join(f"{i} {1000 - i % 1000}\n" for i in encoder.values()))
    return paths


def documents(n, rng, words):
    """Three short sentences per document; the summary is the first (lead-1)."""
    pairs = []
    for _ in range(n):
        sentences = [" ".join(rng.choice(words) for _ in range(rng.randint(4, 7))).capitalize() + "."
                     for _ in range(3)]
        pairs.append((" ".join(sentences), sentences[0]))
    return pairs


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """Raw CNN/DM-format files (with one empty summary in train), BPE files, and the preprocessed output."""
    root = tmp_path_factory.mktemp("summ")
    rng = random.Random(0)
    words = ["".join(rng.choice("abcdefghij") for _ in range(rng.randint(2, 5))) for _ in range(30)]
    encoder_json, vocab_bpe, dict_txt = write_gpt2_bpe(sorted(set(words)), str(root))
    raw = root / "raw"
    raw.mkdir()
    splits = {"train": documents(96, rng, words), "val": documents(8, rng, words),
              "test": documents(N_TEST, rng, words)}
    splits["train"][5] = (splits["train"][5][0], "")
    for split, pairs in splits.items():
        (raw / f"{split}.source").write_text("".join(s + "\n" for s, _ in pairs))
        (raw / f"{split}.target").write_text("".join(t + "\n" for _, t in pairs))
    out = root / "out"
    proc = run([sys.executable, PREPROCESS, "--dataset", "cnn_dm", "--raw-dir", str(raw), "--out-dir", str(out),
                "--encoder-json", encoder_json, "--vocab-bpe", vocab_bpe, "--dict", dict_txt, "--workers", "2"])
    return dict(root=root, raw=raw, out=out, bpe=(encoder_json, vocab_bpe, dict_txt), splits=splits,
                stderr=proc.stderr)


def test_preprocess_counts_skips_and_keeps_alignment(prepared):
    out, splits = prepared["out"], prepared["splits"]
    report = json.loads((out / "preprocess_report.json").read_text())
    assert report["train_skipped_empty_target"] == 1 and report["train_examples"] == 95
    assert report["valid_examples"] == 8 and report["test_examples"] == N_TEST
    assert "skipped" in prepared["stderr"]
    assert all(" 0.0% replaced" in line for line in report["fairseq_preprocess"])
    kept = [pair for i, pair in enumerate(splits["train"]) if i != 5]
    assert (out / "raw" / "train.target").read_text().splitlines() == [t for _, t in kept]
    assert (out / "raw" / "test.source").read_text().splitlines() == [s for s, _ in splits["test"]]
    # the BPE round-trips to the raw text with fairseq's own GPT-2 decoder
    from fairseq.data.encoders.gpt2_bpe_utils import get_encoder

    bpe = get_encoder(*prepared["bpe"][:2])
    ids = (out / "bpe" / "valid.target").read_text().splitlines()
    assert [bpe.decode([int(t) for t in line.split()]) for line in ids] == [t for _, t in splits["val"]]
    for name in ("train", "valid", "test"):
        assert (out / "bin" / f"{name}.source-target.source.bin").exists()


def test_recipe_trains_with_r3f_then_generates_and_scores(prepared, tmp_path):
    """The shipped recipe in its tiny CPU mode; only the regulariser's test settings are overridden."""
    out = prepared["out"]
    run(["bash", RECIPE, "cnn_dm", *NO_DROPOUT, "--lr", "3e-3"],
        TINY="1", TINY_UPDATES="12", DATA_BIN=str(out / "bin"), SAVE_ROOT=str(tmp_path), R3F_LAMBDA="0.1",
        NOISE_TYPE="normal", R3F_EPS="1e-2")
    [run_dir] = (tmp_path / "cnn_dm").glob("lambda0.1_normal*/seed1")
    assert json.loads((run_dir / "identity.json").read_text())["eps"] == 1e-2
    logs = read_json_log((run_dir / "train.log").read_text())
    steps = logs["train_inner"]
    assert len(steps) == 12
    # dropout is 0: the only difference between the two forwards is the noise on the encoder's embeddings
    assert all(step["symm_kl"] > 0 and step["noise_kept"] == 100 for step in steps)
    assert steps[-1]["loss"] < steps[0]["loss"]
    assert "symm_kl" not in logs["valid"][0]

    evaluation = tmp_path / "eval"
    encoder_json, vocab_bpe, _ = prepared["bpe"]
    proc = run([sys.executable, "-m", "fairseq_r3f.evaluation.rouge", "--dataset", "cnn_dm",
                "--checkpoint", str(run_dir / "checkpoint_last.pt"), "--data-bin", str(out / "bin"),
                "--references", str(out / "raw" / "test.target"), "--encoder-json", encoder_json,
                "--vocab-bpe", vocab_bpe, "--output-dir", str(evaluation), "--workers", "1",
                "--", "--min-len", "1", "--max-len-b", "20", "--beam", "2"])
    assert "ROUGE-Lsum" in proc.stdout
    result = json.loads((evaluation / "rouge.json").read_text())
    hypotheses = (evaluation / "test.hypo").read_text().split("\n")[:-1]
    references = (out / "raw" / "test.target").read_text().splitlines()
    assert result["documents"] == len(hypotheses) == N_TEST
    assert any(h.strip() for h in hypotheses)
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    for name in ("rouge1", "rouge2", "rougeL"):
        expected = 100 * sum(scorer.score(r, h)[name].fmeasure for h, r in zip(hypotheses, references)) / N_TEST
        assert result[name] == pytest.approx(expected, abs=1e-9)

    # the table over the SAVE_ROOT: the finished run, a GLUE run beside it skipped and left as it was
    glue = tmp_path / "RTE" / "std" / "default" / "seed1"
    glue.mkdir(parents=True)
    (glue / "run.json").write_text(json.dumps({"task": "RTE", "method": "std", "config": "default", "seed": 1}))
    over_runs = [sys.executable, "-m", "fairseq_r3f.evaluation.rouge", "--dataset", "cnn_dm", "--runs",
                 str(tmp_path), "--data-bin", str(out / "bin"), "--references", str(out / "raw" / "test.target"),
                 "--encoder-json", encoder_json, "--vocab-bpe", vocab_bpe, "--workers", "1",
                 "--", "--min-len", "1", "--max-len-b", "20", "--beam", "2"]
    proc = run(over_runs)
    assert "note: 1 run(s) of other recipes or datasets are not in this table" in proc.stderr
    assert os.listdir(glue) == ["run.json"]
    per_run = json.loads((run_dir / "rouge-test" / "rouge.json").read_text())
    line = [row for row in proc.stdout.splitlines() if row.startswith(f"| r3f | {run_dir.parent.name} |")]
    assert line == [f"| r3f | {run_dir.parent.name} | 1 | {per_run['rouge1']:.2f} | {per_run['rouge2']:.2f} | "
                    f"{per_run['rougeL']:.2f} | {per_run['rougeLsum']:.2f} |"]
    assert (tmp_path / "rouge-test.md").read_text() == proc.stdout
    assert "not generated again" in run(over_runs).stderr


def test_lambda_zero_through_the_cli_equals_the_parent_criterion(prepared, tmp_path):
    common = [str(prepared["out"] / "bin"), "--user-dir", USER_DIR, "--task", "translation", "--source-lang",
              "source", "--target-lang", "target", "--truncate-source", "--arch", "bart_base", *TINY_BART,
              *NO_DROPOUT, "--label-smoothing", "0.1", "--report-accuracy", "--optimizer", "adam", "--lr", "1e-3",
              "--max-tokens", "512", "--required-batch-size-multiple", "1", "--max-update", "4", "--no-save",
              "--save-dir", str(tmp_path),  # fairseq-train makes its save dir even with --no-save
              "--cpu", "--num-workers", "0", "--seed", "1", "--log-format", "json", "--log-interval", "1"]
    _, parent = run_fairseq("train", common + ["--criterion", "label_smoothed_cross_entropy"])
    _, r3f = run_fairseq("train", common + ["--criterion", "label_smoothed_cross_entropy_r3f", "--r3f-lambda", "0"])
    strip = lambda record: {k: v for k, v in record.items() if not k.endswith(("wps", "ups", "wall"))}  # noqa: E731
    assert len(parent["train_inner"]) == 4
    assert [strip(r) for r in r3f["train_inner"]] == [strip(r) for r in parent["train_inner"]]
    assert [strip(r) for r in r3f["valid"]] == [strip(r) for r in parent["valid"]]


def test_recipe_keeps_the_effective_batch_and_checks_inputs(prepared, tmp_path):
    bin_dir = str(prepared["out"] / "bin")
    hparams = rouge.read_hparams()["gigaword"]
    checkpoint = tmp_path / "model.pt"
    checkpoint.write_bytes(b"")
    tokens = int(hparams["max_tokens"]) * int(hparams["reference_gpus"]) * int(hparams["reference_update_freq"])
    for gpus, update_freq in (("1", "8"), ("2", "2"), ("8", "1")):
        proc = run(["bash", RECIPE, "gigaword", "--keep-last-epochs", "1"], DATA_BIN=bin_dir, BART_PATH=str(checkpoint),
                   NGPUS=gpus, UPDATE_FREQ=update_freq, DRY_RUN="1")
        command = proc.stdout.split()
        value = lambda flag: command[command.index(flag) + 1]  # noqa: E731
        assert int(value("--max-tokens")) * int(gpus) * int(update_freq) == tokens == 16384
        assert value("--update-freq") == update_freq and command[-2:] == ["--keep-last-epochs", "1"]
        assert value("--max-update") == value("--total-num-update") == hparams["total_updates"] == "200000"
        assert value("--warmup-updates") == "5000" and value("--lr") == "3e-05" and "--fp16" in command
        assert value("--criterion") == "label_smoothed_cross_entropy_r3f" and value("--clip-norm") == "0.1"
        assert value("--finetune-from-model") == str(checkpoint)  # and a restarted run resumes its own
    # SWEEP=1: Table 8's grid, 3 lambdas x 2 noise types, one run folder each
    proc = run(["bash", RECIPE, "reddit_tifu"], DATA_BIN=bin_dir, BART_PATH=str(checkpoint), SWEEP="1", DRY_RUN="1",
               SAVE_ROOT="R")
    runs = [line.split()[-1] for line in proc.stdout.splitlines() if line.startswith("# run:")]
    assert runs == [f"R/reddit_tifu/lambda{lam}_{noise}/seed1" for noise in ("uniform", "normal")
                    for lam in ("0.001", "0.01", "0.1")]
    bad = [
        (dict(NGPUS="3"), "gigaword", "not divisible"),
        (dict(UPDATE_FREQ="16"), "cnn_dm", "cannot hold a 1024-token article"),
        (dict(), "xsum", "unknown DATASET"),
        (dict(DATA_BIN=str(tmp_path)), "cnn_dm", "run preprocess/summarization.py"),
        (dict(BART_PATH=""), "cnn_dm", "BART_PATH is not set"),
        (dict(BART_PATH=str(tmp_path / "missing.pt")), "cnn_dm", "no such file"),
        (dict(R3F_LAMBDA="big"), "cnn_dm", "lambda big is not a non-negative number"),
        (dict(NOISE_TYPE="gauss"), "cnn_dm", "noise type gauss"),
        (dict(R3F_KL_NORMALIZATION="batch"), "cnn_dm", "choose sentence or token"),
    ]
    for env, dataset, message in bad:
        env = {"DATA_BIN": bin_dir, "BART_PATH": str(checkpoint), "DRY_RUN": "1", **env}
        proc = run(["bash", RECIPE, dataset], check=False, **env)
        assert proc.returncode == 2 and message in proc.stderr, (env, proc.stderr)


def preprocess(raw, out, bpe, *extra):
    return run([sys.executable, PREPROCESS, "--raw-dir", str(raw), "--out-dir", str(out), "--encoder-json", bpe[0],
                "--vocab-bpe", bpe[1], "--dict", bpe[2], "--workers", "1", *extra], check=False)


def test_preprocess_refuses_bad_inputs(prepared, tmp_path):
    raw, bpe = tmp_path / "raw", prepared["bpe"]
    raw.mkdir()
    for name in ("train", "val", "test"):
        for side in ("source", "target"):
            (raw / f"{name}.{side}").write_text((prepared["raw"] / f"{name}.{side}").read_text())
    (raw / "val.target").write_text("".join(line + "\n" for line in (raw / "val.target").read_text().splitlines()[:-1]))
    proc = preprocess(raw, tmp_path / "o", bpe, "--dataset", "cnn_dm")
    assert proc.returncode == 2 and "has 8 lines but" in proc.stderr and "val.target has 7" in proc.stderr
    proc = preprocess(raw, tmp_path / "o", (bpe[0], bpe[1], str(tmp_path / "missing.txt")), "--dataset", "cnn_dm")
    assert proc.returncode == 2 and "--dict file not found" in proc.stderr
    proc = preprocess(prepared["raw"], tmp_path / "o", (bpe[1], bpe[0], bpe[2]), "--dataset", "cnn_dm")
    assert proc.returncode == 2 and "is not a GPT-2 encoder.json" in proc.stderr
    proc = preprocess(prepared["raw"], tmp_path / "o", bpe, "--dataset", "cnn_dm", "--on-empty", "error")
    assert proc.returncode == 2 and "train example 6 has an empty target" in proc.stderr
    proc = preprocess(raw, tmp_path / "o", bpe, "--dataset", "gigaword")
    assert proc.returncode == 2 and "train.article.txt" in proc.stderr
    assert not (tmp_path / "o").exists()


def test_reddit_tifu_configurations_and_seeded_split(prepared, tmp_path):
    rng = random.Random(1)
    words = ["ab", "cd", "abc", "bcd", "ce"]
    text = lambda n: " ".join(rng.choice(words) for _ in range(n))  # noqa: E731
    posts = [{"selftext_without_tldr": text(12), "tldr": text(5) if i % 4 else "", "trimmed_title": text(3),
              "title": "tifu by " + text(3)} for i in range(40)]
    path = tmp_path / "tifu.json"
    path.write_text("".join(json.dumps(p) + "\n" for p in posts))
    bpe = prepared["bpe"]
    outputs, reports = {}, {}
    for config in ("long", "short"):
        proc = preprocess(tmp_path, tmp_path / config, bpe, "--dataset", "reddit_tifu", "--reddit-file", str(path),
                          "--reddit-config", config, "--split-method", "seeded", "--split-seed", "7")
        assert proc.returncode == 0, proc.stderr
        outputs[config] = {s: (tmp_path / config / "raw" / f"{s}.target").read_text().splitlines()
                           for s in ("train", "valid", "test")}
        reports[config] = json.loads((tmp_path / config / "preprocess_report.json").read_text())
        assert reports[config]["reddit_config"] == config and reports[config]["split_seed"] == 7
    assert reports["long"]["reddit_posts_without_tldr"] == 10
    assert "reddit_posts_without_trimmed_title" in reports["short"]
    assert [reports["long"][f"{s}_examples"] for s in ("train", "valid", "test")] == [24, 3, 3]
    # the documented split: the kept posts in file order, shuffled by random.Random(seed), cut 80/10/10
    for config, field in (("long", "tldr"), ("short", "trimmed_title")):
        kept = [p[field] for p in posts if p[field]]
        random.Random(7).shuffle(kept)
        n_train, n_valid = round(0.8 * len(kept)), round(0.1 * len(kept))
        assert outputs[config] == {"train": kept[:n_train], "valid": kept[n_train:n_train + n_valid],
                                   "test": kept[n_train + n_valid:]}
    path.write_text("not json\n")
    proc = preprocess(tmp_path, tmp_path / "bad", bpe, "--dataset", "reddit_tifu", "--reddit-file", str(path))
    assert proc.returncode == 2 and "line 1 is not JSON" in proc.stderr


def test_rouge_equals_rouge_score_on_fixed_pairs():
    pairs = [
        ("the cat sat on the mat. it was happy.", "a cat was sitting on the mat. the cat was happy."),
        ("running dogs run", "the dog runs"),
        ("", "an empty hypothesis scores zero."),
        ("an empty reference too.", ""),
        ("Police said. Two men were arrested!", "Two men were arrested, police said. Nobody was hurt."),
    ] * 90  # 450 pairs: enough for two scoring processes
    hypotheses, references = zip(*pairs)
    result = rouge.score(hypotheses, references, lsum=True, workers=2, progress=False)
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL", "rougeLsum"], use_stemmer=True)
    _, split = rouge.sentence_splitter()
    for name in ("rouge1", "rouge2", "rougeL", "rougeLsum"):
        if name == "rougeLsum":
            own = [scorer.score("\n".join(split(r)), "\n".join(split(h)))[name].fmeasure for h, r in pairs]
        else:
            own = [scorer.score(r, h)[name].fmeasure for h, r in pairs]
        assert result[name] == pytest.approx(100 * sum(own) / len(own), abs=1e-9)
    # sentence splitting matters for Lsum: on one line it is plain ROUGE-L
    assert result["rougeLsum"] != pytest.approx(result["rougeL"])
    assert rouge.score(["the cat"], ["the cat"], progress=False) == {"rouge1": 100.0, "rouge2": 100.0, "rougeL": 100.0}
    with pytest.raises(ValueError, match="must align"):
        rouge.score(["a"], ["a", "b"])


def test_rouge_cli_refuses_misaligned_files(tmp_path, capsys):
    (tmp_path / "hyp").write_text("a\nb\n")
    (tmp_path / "ref").write_text("a\n")
    proc = run([sys.executable, "-m", "fairseq_r3f.evaluation.rouge", "--dataset", "gigaword", "--hypotheses",
                str(tmp_path / "hyp"), "--references", str(tmp_path / "ref"), "--output-dir", str(tmp_path)],
               check=False)
    assert proc.returncode == 1 and "has 2 lines but" in proc.stderr
    with pytest.raises(SystemExit) as exit_:
        rouge.main(["--dataset", "gigaword", "--references", str(tmp_path / "ref")])
    assert exit_.value.code == 2 and "--checkpoint" in capsys.readouterr().err
