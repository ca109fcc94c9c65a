"""XNLI zero-shot: preprocess/xnli.py on MNLI + XNLI-1.0 files in the official layouts with a sentencepiece
model trained here, recipes/xnli.sh in tiny CPU mode and by dry run, Table 9 against the paper, and the
per-language table of fairseq_r3f.evaluation.results for the trained checkpoint."""

import json
import os
import random
import shutil
import subprocess

import pytest

from conftest import REPO
from test_glue_recipes import MNLI_TRAIN, PYTHON, dry_run_commands, env, flag, read_hparams, run_recipe, write_tsv

XNLI_SH = os.path.join(REPO, "recipes", "xnli.sh")
LANGUAGES = ["en", "fr", "es", "de", "el", "bg", "ru", "tr", "ar", "vi", "th", "zh", "hi", "sw", "ur"]
XNLI_HEADER = ["language", "gold_label", "sentence1_binary_parse", "sentence2_binary_parse", "sentence1_parse",
               "sentence2_parse", "sentence1", "sentence2", "promptID", "pairID", "genre", "label1", "label2",
               "label3", "label4", "label5", "sentence1_tokenized", "sentence2_tokenized", "match"]
NLI = ["entailment", "neutral", "contradiction"]
PER_LANGUAGE = 7  # prime: an accuracy over fewer examples than this could not be a multiple of 100/7


def words_for(lang, rng, n):
    # Each language its own "alphabet", including non-Latin scripts, so sentencepiece sees several scripts.
    base = {"zh": "的是不了人我在有他这", "th": "กขคงจฉชซ", "ar": "ابتثجحخد", "ru": "абвгдежз", "el": "αβγδεζηθ"}
    letters = base.get(lang, "abcdefghij")
    return " ".join("".join(rng.choice(letters) for _ in range(rng.randint(2, 5))) for _ in range(n))


@pytest.fixture(scope="module")
def xnli(tmp_path_factory):
    import sentencepiece as spm

    root = tmp_path_factory.mktemp("xnli")
    rng = random.Random(0)
    mnli = root / "MNLI"
    mnli.mkdir()
    train = [(words_for("en", rng, rng.randint(3, 8)), words_for("en", rng, rng.randint(3, 8)), rng.choice(NLI))
             for _ in range(40)]
    write_tsv(mnli / "train.tsv", MNLI_TRAIN,
              [[k, k, k, "fiction", "x", "y", "x", "y", s1, s2, label, label]
               for k, (s1, s2, label) in enumerate(train)])
    xnli_dir = root / "XNLI-1.0"
    xnli_dir.mkdir()
    expected = {}
    for split in ("dev", "test"):
        rows = []
        for lang in LANGUAGES:
            examples = [(words_for(lang, rng, 4), words_for(lang, rng, 3), rng.choice(NLI))
                        for _ in range(PER_LANGUAGE)]
            expected[(split, lang)] = examples
            rows += [[lang, label, "x", "y", "x", "y", s1, s2, k, k, "travel", label, label, label, label, label,
                      s1, s2, "True"] for k, (s1, s2, label) in enumerate(examples)]
        rows.insert(30, "fr\tneutral\tbroken row")  # counted and dropped, not shifted
        write_tsv(xnli_dir / f"xnli.{split}.tsv", XNLI_HEADER, rows)

    text = [s for s1, s2, _ in train for s in (s1, s2)] + [s for rows in expected.values() for r in rows for s in r[:2]]
    spm.SentencePieceTrainer.train(sentence_iterator=iter(text), model_prefix=str(root / "spm"), vocab_size=120,
                                   model_type="bpe", character_coverage=1.0, hard_vocab_limit=False,
                                   minloglevel=2)
    sp = spm.SentencePieceProcessor(model_file=str(root / "spm.model"))
    with open(root / "dict.txt", "w") as f:  # XLM-R's dict.txt: "piece count", specials left to fairseq
        f.write("".join(f"{sp.id_to_piece(i)} {1000 - i}\n" for i in range(3, sp.get_piece_size())))
    out = root / "xnli-bin"
    proc = subprocess.run(
        [PYTHON, os.path.join(REPO, "preprocess", "xnli.py"), "--mnli-dir", str(mnli), "--xnli-dir", str(xnli_dir),
         "--sentencepiece-model", str(root / "spm.model"), "--dict", str(root / "dict.txt"), "--out-dir", str(out),
         "--max-malformed-fraction", "0.05"],
        capture_output=True, text=True, env=env(),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {"root": root, "bin": str(out), "expected": expected, "train": train, "sp": sp}


# The paper's appendix Table 9 (R3F/R4F on XNLI), as printed.
PAPER_TABLE_9 = {
    "r3f_lambda_grid": "0.5,1,3,5", "noise_type_grid": "uniform,normal", "eps": "1e-5", "max_update": "450000",
    "max_positions": "512", "max_tokens": "4400", "batch_size": "8", "adam_betas": "(0.9,0.98)",
    "adam_eps": "1e-8", "lr_scheduler": "polynomial_decay", "lr": "3e-05", "dropout": "0.1", "weight_decay": "0.01",
}


def test_xnli_hparams_match_table_9():
    ours = {k: v["value"] for k, v in read_hparams("xnli.tsv").items()}
    for name, value in PAPER_TABLE_9.items():
        if name == "r3f_lambda_grid":
            assert [float(x) for x in ours[name].split(",")] == [float(x) for x in value.split(",")]
        elif name in ("adam_betas", "lr_scheduler", "noise_type_grid"):
            assert ours[name] == value, name
        else:
            assert float(ours[name]) == float(value), name


def test_preprocess_writes_one_aligned_subset_per_language(xnli):
    from fairseq.data import Dictionary, data_utils

    data, sp = xnli["bin"], xnli["sp"]
    report = json.load(open(os.path.join(data, "report.json")))
    assert report["subsets"]["valid"]["malformed"] == 1 and report["subsets"]["test"]["malformed"] == 1
    dictionaries = {k: Dictionary.load(os.path.join(data, k, "dict.txt")) for k in ("input0", "input1", "label")}

    def decoded(key, subset):
        dataset = data_utils.load_indexed_dataset(os.path.join(data, key, subset), dictionaries[key])
        pieces = [[dictionaries[key][t] for t in dataset[i][:-1]] for i in range(len(dataset))]
        return [p[0] if key == "label" else sp.decode(p) for p in pieces]

    for (split, lang), examples in xnli["expected"].items():
        subset = f"{'valid' if split == 'dev' else 'test'}_{lang}"
        assert decoded("input0", subset) == [s1 for s1, _, _ in examples], subset
        assert decoded("input1", subset) == [s2 for _, s2, _ in examples], subset
        assert decoded("label", subset) == [label for _, _, label in examples], subset
    assert decoded("label", "train") == [label for _, _, label in xnli["train"]]
    assert not os.path.exists(os.path.join(data, "input0", "valid1.bin"))  # renamed to valid_<lang>


def test_recipe_checks_inputs_and_launch_lines(xnli, tmp_path):
    proc = run_recipe(XNLI_SH, ["r3f"], check=False, DATA_DIR=xnli["bin"], SAVE_ROOT=tmp_path / "runs")
    assert proc.returncode == 2 and "XLMR_PATH is not set" in proc.stderr and proc.stdout == ""
    proc = run_recipe(XNLI_SH, ["r3f"], check=False, DATA_DIR=xnli["bin"], TINY=1, LANGUAGES="en xx")
    assert proc.returncode == 2 and "no valid_xx subset" in proc.stderr
    assert not (tmp_path / "runs").exists()

    proc = run_recipe(XNLI_SH, ["r4f"], DATA_DIR=xnli["bin"], XLMR_PATH=__file__, DRY_RUN=1, SWEEP=1,
                      LAUNCHER="torchrun", NNODES=2, NGPUS=4, MASTER_ADDR="node0", SAVE_ROOT=tmp_path)
    commands = dry_run_commands(proc.stdout)
    grid = {(flag(a, "--r3f-lambda"), flag(a, "--noise-type"), flag(a, "--seed")) for _, a in commands}
    assert len(commands) == len(grid) == 4 * 2 * 5  # Table 9's grid, Table 3's five runs
    argv = commands[0][1]
    assert argv[0] == "torchrun" and flag(argv, "--arch") == "roberta_sn_large"
    assert int(flag(argv, "--batch-size")) * 8 == 8 and flag(argv, "--distributed-world-size") == "8"
    assert flag(argv, "--valid-subset") == ",".join(f"valid_{lang}" for lang in LANGUAGES)
    assert [flag(argv, f) for f in ("--lr", "--max-update", "--warmup-updates", "--adam-eps", "--max-tokens")] \
        == ["3e-05", "450000", "27000", "1e-8", "4400"]
    assert flag(argv, "--finetune-from-model") == __file__ and "--restore-file" not in argv


def test_tiny_run_and_table_3(xnli, tmp_path):
    save = tmp_path / "runs"
    run_recipe(XNLI_SH, ["r4f"], DATA_DIR=xnli["bin"], TINY=1, SEEDS="1", SAVE_ROOT=save)
    run_dir = save / "r4f" / "lambda1_uniform" / "seed1"
    from fairseq_r3f.logs import read_json_log

    records = read_json_log(open(run_dir / "train.log").read())
    for lang in LANGUAGES:  # every language validated during training
        assert f"valid_{lang}_accuracy" in records[f"valid_{lang}"][-1], lang
    assert "train_symm_kl" in records["train"][-1]
    identity = json.load(open(run_dir / "identity.json"))  # what ran, read back from the checkpoint
    assert identity["spectral_norm_head"] and identity["criterion"] == "sentence_prediction_r3f"
    assert identity["mismatches"] == [] and json.load(open(run_dir / "run.json"))["task"] == "XNLI"

    out = tmp_path / "table"
    proc = subprocess.run(
        [PYTHON, "-m", "fairseq_r3f.evaluation.results", "xnli", "--data", xnli["bin"], "--checkpoint",
         str(run_dir / "checkpoint_best.pt"), "--cpu", "--batch-size", "4", "--out", str(out)],
        capture_output=True, text=True, cwd=REPO, env=env(),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [line for line in proc.stdout.splitlines() if line.startswith("| ")]
    assert lines[0] == "| Model | " + " | ".join(LANGUAGES) + " | Avg |"
    result = json.load(open(out / "xnli.json"))
    scores = result["rows"][0]["accuracy"]
    assert result["rows"][0]["scored"] == {lang: PER_LANGUAGE for lang in LANGUAGES}
    cells = lines[1].split(" | ")[1:]
    assert [float(c) for c in cells[:-1]] == pytest.approx([scores[lang] for lang in LANGUAGES], abs=0.051)
    assert float(cells[-1].rstrip(" |")) == pytest.approx(sum(scores.values()) / 15, abs=0.051)
    possible = [round(100 * k / PER_LANGUAGE, 1) for k in range(PER_LANGUAGE + 1)]
    assert all(min(abs(v - p) for p in possible) < 0.051 for v in scores.values())

    # --runs: the finished runs of a SAVE_ROOT (a GLUE run beside them skipped with a note, a killed copy named),
    # each run's scores kept under the key of its checkpoint, data and settings
    glue = save / "RTE" / "std" / "default" / "seed1"
    glue.mkdir(parents=True)
    (glue / "run.json").write_text(json.dumps({"task": "RTE", "method": "std", "config": "default", "seed": 1}))
    killed = save / "r4f" / "lambda1_uniform" / "seed2"  # killed before its first checkpoint
    killed.mkdir()
    (killed / "run.json").write_text(json.dumps({**json.load(open(run_dir / "run.json")), "seed": 2}))
    shutil.copy(run_dir / "train.log", killed / "train.log")

    def table_of_runs():
        proc = subprocess.run(
            [PYTHON, "-m", "fairseq_r3f.evaluation.results", "xnli", "--data", xnli["bin"], "--runs", str(save),
             "--cpu", "--batch-size", "4"], capture_output=True, text=True, cwd=REPO, env=env())
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc

    proc = table_of_runs()
    assert "note: 1 run(s) of other tasks or recipes are not in these tables" in proc.stderr
    rows = {line.split(" | ")[0][2:]: line for line in proc.stdout.splitlines() if line.startswith("| ")}
    assert rows["R4F lambda1_uniform seed 1"].split(" | ")[1:] == lines[1].split(" | ")[1:]
    assert "R4F lambda1_uniform: mean of 1/2 seeds" in rows
    assert f"Not in the table: {killed}: unfinished (no done file" in proc.stdout
    assert (run_dir / "xnli-test" / "xnli.json").exists() and not (glue / "xnli-test").exists()
    again = table_of_runs()
    assert "1 checkpoint(s) scored before on the same data and settings" in again.stderr
    assert again.stdout == proc.stdout


def test_languages_take_commas_or_spaces_and_std_sweeps_as_many_configurations(xnli, tmp_path):
    common = {"DATA_DIR": xnli["bin"], "XLMR_PATH": __file__, "DRY_RUN": 1, "SEEDS": "1", "FP16": 0,
              "SAVE_ROOT": tmp_path}
    for languages in ("en,fr es", "en, fr,es", "en fr es"):
        [(_, argv)] = dry_run_commands(run_recipe(XNLI_SH, ["r3f"], LANGUAGES=languages, **common).stdout)
        assert flag(argv, "--valid-subset") == "valid_en,valid_fr,valid_es", languages
    sizes = {}
    for method in ("std", "r3f", "r4f"):
        commands = dry_run_commands(run_recipe(XNLI_SH, [method], SWEEP=1, **common).stdout)
        sizes[method] = len(commands)
    assert sizes == {"std": 8, "r3f": 8, "r4f": 8}
    ours = read_hparams("xnli.tsv")
    commands = dry_run_commands(run_recipe(XNLI_SH, ["std"], SWEEP=1, **common).stdout)
    assert [float(flag(a, "--lr")) for _, a in commands] == [float(x) for x in ours["std_lr_grid"]["value"].split(",")]
    assert "use --arch roberta_sn_large, or METHOD r3f" in run_recipe(
        XNLI_SH, ["r4f", "--arch", "roberta_large"], check=False, **common).stderr
    proc = run_recipe(XNLI_SH, ["r3f"], check=False, R3F_LAMBDA="inf", **common)
    assert proc.returncode == 2 and proc.stderr.startswith("error: R3F_LAMBDA")

