"""GLUE: preprocess/glue.py on task folders in the official layouts, recipes/glue.sh (dry run for the launch
lines, tiny CPU mode for real runs over methods, seeds and the sweep), the hyper-parameters against the paper,
and the result table and figure of fairseq_r3f.evaluation.results on those runs."""

import json
import os
import random
import re
import shlex
import subprocess
import sys

import pytest

from conftest import REPO

HPARAMS = os.path.join(REPO, "fairseq_r3f", "hparams")
GLUE_SH = os.path.join(REPO, "recipes", "glue.sh")
PYTHON = sys.executable
BIN = os.path.dirname(sys.executable)

WORDS = "the a cat dog sat ran on under big small red house tree river quickly never".split()


# ---------------------------------------------------------------- generated inputs in the official formats

def tiny_gpt2_bpe(folder):
    """A GPT-2 byte-level BPE (encoder.json, vocab.bpe) over the 256 byte symbols plus a few merges, and a
    RoBERTa-style dict.txt listing its ids."""
    from fairseq.data.encoders.gpt2_bpe_utils import bytes_to_unicode

    symbols = list(bytes_to_unicode().values())
    merges = [("Ġ", "t"), ("h", "e"), ("Ġt", "he"), ("Ġ", "a"), ("a", "t"), ("Ġc", "at")]
    merges.insert(5, ("Ġ", "c"))
    encoder = {s: i for i, s in enumerate(symbols)}
    for a, b in merges:
        encoder.setdefault(a + b, len(encoder))
    paths = {name: os.path.join(folder, name) for name in ("encoder.json", "vocab.bpe", "dict.txt")}
    with open(paths["encoder.json"], "w") as f:
        json.dump(encoder, f)
    with open(paths["vocab.bpe"], "w") as f:
        f.write("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    with open(paths["dict.txt"], "w") as f:
        f.write("".join(f"{i} {1000 - i}\n" for i in range(len(encoder))))
    return paths


def sentence(rng, n=None):
    return " ".join(rng.choice(WORDS) for _ in range(n or rng.randint(3, 9))).capitalize() + "."


def write_tsv(path, header, rows):
    with open(path, "w", encoding="utf-8", newline="") as f:
        if header is not None:
            f.write("\t".join(header) + "\n")
        for row in rows:
            f.write((row if isinstance(row, str) else "\t".join(map(str, row))) + "\n")


MNLI_TRAIN = ["index", "promptID", "pairID", "genre", "sentence1_binary_parse", "sentence2_binary_parse",
              "sentence1_parse", "sentence2_parse", "sentence1", "sentence2", "label1", "gold_label"]
MNLI_DEV = MNLI_TRAIN[:10] + ["label1", "label2", "label3", "label4", "label5", "gold_label"]


def write_glue(root, n_train=48, n_dev=16, n_test=6, seed=0):
    """GLUE task folders as GLUE's download script writes them. Returns {task: {split: [(inputs, label)]}} of
    the well-formed rows, in file order; QQP and MNLI train get malformed rows, as the official files do."""
    rng = random.Random(seed)
    expected = {}

    def pairs(n, labels):
        return [((sentence(rng), sentence(rng)), rng.choice(labels)) for _ in range(n)]

    def task_dir(name):
        path = os.path.join(root, name)
        os.makedirs(path, exist_ok=True)
        return path

    # MNLI: many columns, the inputs at 8 and 9, gold_label last; dev has five annotator labels.
    d = task_dir("MNLI")
    nli = ["entailment", "neutral", "contradiction"]
    expected["MNLI"] = {}
    for split, name, header in (("train", "train.tsv", MNLI_TRAIN), ("valid", "dev_matched.tsv", MNLI_DEV),
                                ("valid1", "dev_mismatched.tsv", MNLI_DEV)):
        good = pairs(n_train if split == "train" else n_dev, nli)
        rows = []
        for k, ((s1, s2), label) in enumerate(good):
            extra = [label] * (len(header) - 10)
            rows.append([k, 100 + k, f"{k}e", "fiction", f"( {s1} )", f"( {s2} )", f"(ROOT {s1})", f"(ROOT {s2})",
                         s1, s2] + extra)
        if split == "train":  # a row cut short by a stray line break inside sentence2
            rows.insert(7, "77\t1\t2\tfiction\t(x)\t(y)\t(ROOT x)\t(ROOT y)\tHalf a row\tbroken")
            rows.insert(9, "78\t1\t2\tfiction\t(x)\t(y)\t(ROOT x)\t(ROOT y)\tA\tB\t-\t-")  # no gold label
        write_tsv(os.path.join(d, name), header, rows)
        expected["MNLI"][split] = good
    for name in ("test_matched.tsv", "test_mismatched.tsv"):
        write_tsv(os.path.join(d, name), MNLI_TRAIN[:10],
                  [[k, k, k, "g", "x", "y", "x", "y", sentence(rng), sentence(rng)] for k in range(n_test)])

    def standard(task, header, test_header, inputs_at, label_at, labels, make_row, malformed=()):
        d = task_dir(task)
        expected[task] = {}
        for split, name in (("train", "train.tsv"), ("valid", "dev.tsv")):
            good = [((sentence(rng), sentence(rng))[: len(inputs_at)], rng.choice(labels))
                    for _ in range(n_train if split == "train" else n_dev)]
            rows = [make_row(k, inputs, label) for k, (inputs, label) in enumerate(good)]
            if split == "train":
                for position, row in malformed:
                    rows.insert(position, row)
            write_tsv(os.path.join(d, name), header, rows)
            expected[task][split] = good
        write_tsv(os.path.join(d, "test.tsv"), test_header,
                  [[k] * (len(test_header) - len(inputs_at)) + [sentence(rng) for _ in inputs_at] for k in range(n_test)])

    standard("QNLI", ["index", "question", "sentence", "label"], ["index", "question", "sentence"], (1, 2), 3,
             ["entailment", "not_entailment"], lambda k, i, l: [k, i[0], i[1], l])
    standard("RTE", ["index", "sentence1", "sentence2", "label"], ["index", "sentence1", "sentence2"], (1, 2), 3,
             ["entailment", "not_entailment"], lambda k, i, l: [k, i[0], i[1], l])
    # QQP: the official train.tsv has rows broken by line breaks inside questions.
    standard("QQP", ["id", "qid1", "qid2", "question1", "question2", "is_duplicate"], ["id", "question1", "question2"],
             (3, 4), 5, ["0", "1"], lambda k, i, l: [k, 2 * k, 2 * k + 1, i[0], i[1], l],
             malformed=[(3, "9001\t1\t2\tWhat is the first half of a"), (4, "question broken in two?\t0"),
                        (20, "9002\t3\t4\tOne question\tAnother one\tyes")])
    standard("MRPC", ["\ufeffQuality", "#1 ID", "#2 ID", "#1 String", "#2 String"],
             ["index", "#1 ID", "#2 ID", "#1 String", "#2 String"], (3, 4), 0, ["0", "1"],
             lambda k, i, l: [l, k, k + 1, i[0], i[1]])
    standard("SST-2", ["sentence", "label"], ["index", "sentence"], (0,), 1, ["0", "1"], lambda k, i, l: [i[0], l])
    standard("STS-B", ["index", "genre", "filename", "year", "old_index", "source1", "source2", "sentence1",
                       "sentence2", "score"],
             ["index", "genre", "filename", "year", "old_index", "source1", "source2", "sentence1", "sentence2"],
             (7, 8), 9, ["0.000", "1.500", "2.750", "4.000", "5.000"],
             lambda k, i, l: [k, "main-captions", "MSRvid", "2012test", k, "none", "none", i[0], i[1], l])
    # CoLA: train/dev without a header (source, label, original mark, sentence); test with one.
    d = task_dir("CoLA")
    expected["CoLA"] = {}
    for split, name in (("train", "train.tsv"), ("valid", "dev.tsv")):
        good = [((sentence(rng),), rng.choice(["0", "1"])) for _ in range(n_train if split == "train" else n_dev)]
        rows = [["gj04", label, "" if label == "1" else "*", inputs[0]] for inputs, label in good]
        write_tsv(os.path.join(d, name), None, rows)
        expected["CoLA"][split] = good
    write_tsv(os.path.join(d, "test.tsv"), ["index", "sentence"], [[k, sentence(rng)] for k in range(n_test)])
    return expected


# ---------------------------------------------------------------- running the scripts

def env(**extra):
    return {**os.environ, "PATH": BIN + os.pathsep + os.environ["PATH"], "OMP_NUM_THREADS": "1",
            "PYTHONHASHSEED": "0", **{k: str(v) for k, v in extra.items()}}


def run_recipe(script, args, check=True, **variables):
    proc = subprocess.run([script] + list(args), capture_output=True, text=True, cwd=REPO, env=env(**variables))
    if check and proc.returncode != 0:
        raise AssertionError(f"{script} {args} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def dry_run_commands(stdout):
    """[(run folder, argv)] from a DRY_RUN=1 listing."""
    commands, folder = [], None
    for line in stdout.splitlines():
        if line.startswith("# run: "):
            folder = line[len("# run: "):]
        elif line.strip() and folder is not None:
            commands.append((folder, shlex.split(line)))
            folder = None
    return commands


def flag(argv, name):
    values = [argv[i + 1] for i, a in enumerate(argv) if a == name]
    assert values, f"{name} missing from {argv}"
    return values[-1]


def read_hparams(name):
    with open(os.path.join(HPARAMS, name)) as f:
        lines = [line.rstrip("\n").split("\t") for line in f if line.strip() and not line.startswith("#")]
    header = lines[0]
    return {row[0]: dict(zip(header, row)) for row in lines[1:]}


@pytest.fixture(scope="module")
def glue_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("glue")
    expected = write_glue(str(root / "glue_data"))
    bpe = tiny_gpt2_bpe(str(root))
    proc = subprocess.run(
        [PYTHON, os.path.join(REPO, "preprocess", "glue.py"), "--glue-dir", str(root / "glue_data"),
         "--encoder-json", bpe["encoder.json"], "--vocab-bpe", bpe["vocab.bpe"], "--dict", bpe["dict.txt"],
         "--out-dir", str(root / "glue-bin"), "--tasks", "ALL", "--max-malformed-fraction", "0.1"],
        capture_output=True, text=True, env=env(),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {"root": root, "bin": str(root / "glue-bin"), "expected": expected, "bpe": bpe, "stdout": proc.stdout,
            "stderr": proc.stderr}


# ---------------------------------------------------------------- hyper-parameters against the paper

# The paper's appendix Table 5 (per task), as printed: learning rate, max updates, max sentences.
PAPER_TABLE_5 = {
    "MNLI": ("5e-6", 123873, 8), "QNLI": ("5e-6", 33112, 8), "QQP": ("5e-6", 113272, 32),
    "SST-2": ("5e-6", 20935, 32), "RTE": ("1e-5", 3120, 8), "MRPC": ("1e-5", 2296, 16), "CoLA": ("1e-5", 5336, 16),
}
# The paper's appendix Table 6 (R3F/R4F on GLUE).
PAPER_TABLE_6 = {
    "adam_betas": "(0.9,0.98)", "adam_eps": "1e-6", "lr_scheduler": "polynomial_decay", "dropout": "0.1",
    "weight_decay": "0.01", "warmup_ratio": "0.06", "r3f_lambda_grid": "0.1,0.5,1.0,5.0",
    "noise_type_grid": "uniform,normal", "eps": "1e-5",
}


def test_hparams_match_papers_tables_5_and_6():
    ours = read_hparams("glue_tasks.tsv")
    for task, (lr, max_update, batch) in PAPER_TABLE_5.items():
        assert float(ours[task]["lr"]) == float(lr), task
        assert int(ours[task]["max_update"]) == max_update, task
        assert int(ours[task]["batch_size"]) == batch, task
    glue = {k: v["value"] for k, v in read_hparams("glue.tsv").items()}
    for name, value in PAPER_TABLE_6.items():
        if name.endswith("_grid") and name != "noise_type_grid":
            assert [float(x) for x in glue[name].split(",")] == [float(x) for x in value.split(",")], name
        elif name in ("adam_betas", "lr_scheduler", "noise_type_grid"):
            assert glue[name] == value, name
        else:
            assert float(glue[name]) == float(value), name


# ---------------------------------------------------------------- preprocessing

def _decoded(bin_dir, key, split, bpe):
    from fairseq.data import Dictionary, data_utils
    from fairseq.data.encoders.gpt2_bpe_utils import get_encoder

    dictionary = Dictionary.load(os.path.join(bin_dir, key, "dict.txt"))
    dataset = data_utils.load_indexed_dataset(os.path.join(bin_dir, key, split), dictionary)
    items = [[dictionary[t] for t in dataset[i][:-1]] for i in range(len(dataset))]  # drop </s>
    if key == "label":
        return [item[0] for item in items]
    encoder = get_encoder(bpe["encoder.json"], bpe["vocab.bpe"])
    return [encoder.decode([int(t) for t in item]) for item in items]


def test_preprocess_keeps_inputs_and_labels_aligned_and_counts_malformed_rows(glue_data):
    out, expected, bpe = glue_data["bin"], glue_data["expected"], glue_data["bpe"]
    for task, splits in expected.items():
        data = os.path.join(out, f"{task}-bin")
        report = json.load(open(os.path.join(data, "report.json")))["splits"]
        for split, rows in splits.items():
            assert report[split]["kept"] == len(rows), (task, split)
            for k in range(len(rows[0][0])):
                assert _decoded(data, f"input{k}", split, bpe) == [inputs[k] for inputs, _ in rows], (task, split, k)
            if task == "STS-B":
                with open(os.path.join(data, "label", f"{split}.label")) as f:
                    assert [float(x) for x in f] == pytest.approx([float(label) / 5 for _, label in rows])
            else:
                assert _decoded(data, "label", split, bpe) == [label for _, label in rows], (task, split)
        assert os.path.exists(os.path.join(data, "input0", "test.bin"))
        assert os.path.exists(os.path.join(data, "input1", "valid.bin")) == (len(rows[0][0]) == 2)
    qqp = json.load(open(os.path.join(out, "QQP-bin", "report.json")))["splits"]["train"]
    assert qqp["malformed"] == 3 and qqp["rows"] == 48 + 3
    assert [r["line"] for r in qqp["malformed_rows"]] == [5, 6, 22]  # header is line 1
    mnli = json.load(open(os.path.join(out, "MNLI-bin", "report.json")))["splits"]
    assert mnli["train"]["malformed"] == 2 and mnli["valid"]["malformed"] == 0
    assert os.path.exists(os.path.join(out, "MNLI-bin", "input0", "test1.bin"))  # mismatched test
    assert "QQP" in glue_data["stderr"] and "dropped 3 malformed of 51 rows" in glue_data["stderr"]


def test_preprocess_stops_on_a_damaged_file_and_on_missing_bpe_files(glue_data, tmp_path):
    root, bpe = glue_data["root"], glue_data["bpe"]
    base = [PYTHON, os.path.join(REPO, "preprocess", "glue.py"), "--glue-dir", str(root / "glue_data"),
            "--vocab-bpe", bpe["vocab.bpe"], "--dict", bpe["dict.txt"], "--out-dir", str(tmp_path / "out")]
    # 3 of 51 QQP rows are malformed: more than the default 1% stops with the reason.
    proc = subprocess.run(base + ["--encoder-json", bpe["encoder.json"], "--tasks", "QQP"],
                          capture_output=True, text=True, env=env())
    assert proc.returncode == 2
    assert "3 of 51 rows are malformed" in proc.stderr and "--max-malformed-fraction" in proc.stderr
    proc = subprocess.run(base + ["--encoder-json", str(tmp_path / "nope.json"), "--tasks", "RTE"],
                          capture_output=True, text=True, env=env())
    assert proc.returncode == 2 and "--encoder-json" in proc.stderr and "no such file" in proc.stderr
    assert not os.path.exists(tmp_path / "out")


# ---------------------------------------------------------------- recipe checks without running

def test_recipe_stops_before_running_when_inputs_are_missing(glue_data, tmp_path):
    save = tmp_path / "runs"
    cases = [
        ({}, ["RTE", "r3f"], "DATA_DIR is not set"),
        ({"DATA_DIR": glue_data["bin"]}, ["RTE", "r3f"], "ROBERTA_PATH is not set"),
        ({"DATA_DIR": glue_data["bin"], "ROBERTA_PATH": str(tmp_path / "model.pt")}, ["RTE", "r3f"],
         "no such file"),
        ({"DATA_DIR": str(tmp_path)}, ["RTE", "std"], "run preprocess/glue.py --tasks RTE first"),
        ({"DATA_DIR": glue_data["bin"], "TINY": 1}, ["WNLI", "r3f"], "unknown TASK WNLI"),
        ({"DATA_DIR": glue_data["bin"], "TINY": 1}, ["RTE", "mixout"], "unknown METHOD mixout"),
        ({"DATA_DIR": glue_data["bin"], "TINY": 1, "SWEEP": 1}, ["RTE", "std"], "SWEEP=1"),
    ]
    for variables, args, message in cases:
        proc = run_recipe(GLUE_SH, args, check=False, SAVE_ROOT=save, **variables)
        assert proc.returncode == 2, (args, variables, proc.stderr)
        assert message in proc.stderr and proc.stdout == "", (message, proc.stderr)
        assert "DATA_DIR=GLUE_BIN ROBERTA_PATH" in proc.stderr  # the usage header follows the error
    assert not save.exists()


def test_a_value_missing_from_the_tables_stops_the_recipe(glue_data, tmp_path):
    import shutil

    shutil.copytree(os.path.join(REPO, "recipes"), tmp_path / "recipes")
    shutil.copytree(HPARAMS, tmp_path / "fairseq_r3f" / "hparams")
    table = tmp_path / "fairseq_r3f" / "hparams" / "glue.tsv"
    table.write_text("".join(line for line in table.read_text().splitlines(True) if not line.startswith("adam_eps")))
    proc = run_recipe(str(tmp_path / "recipes" / "glue.sh"), ["RTE", "r3f"], check=False, DATA_DIR=glue_data["bin"],
                      ROBERTA_PATH=__file__, DRY_RUN=1, SEEDS="1")
    assert proc.returncode == 2 and "glue.tsv has no value for adam_eps" in proc.stderr
    assert "fairseq-train" not in proc.stdout


def test_dry_run_launch_lines_keep_the_papers_effective_batch(glue_data, tmp_path):
    model = tmp_path / "model.pt"
    model.write_bytes(b"")
    tasks = read_hparams("glue_tasks.tsv")
    common = {"DATA_DIR": glue_data["bin"], "ROBERTA_PATH": model, "DRY_RUN": 1, "SEEDS": "1", "SAVE_ROOT": tmp_path}
    launches = [
        ({"NGPUS": 4, "UPDATE_FREQ": 2}, "fairseq-train", 4),
        ({"LAUNCHER": "torchrun", "NGPUS": 2, "NNODES": 2, "MASTER_ADDR": "node0", "MASTER_PORT": 1234},
         "torchrun", 4),
        ({"LAUNCHER": "slurm", "NGPUS": 8}, "srun", 8),
    ]
    for variables, program, world in launches:
        for task in ("RTE", "QQP", "MNLI"):
            proc = run_recipe(GLUE_SH, [task, "r4f"], **common, **variables)
            [(folder, argv)] = dry_run_commands(proc.stdout)
            assert os.path.basename(argv[0]) == program
            update_freq = int(flag(argv, "--update-freq"))
            assert int(flag(argv, "--batch-size")) * world * update_freq == int(tasks[task]["batch_size"])
            assert int(flag(argv, "--distributed-world-size")) == world
            assert "--find-unused-parameters" in argv
            assert {"--fp16", "--fp16-init-scale", "--threshold-loss-scale"} <= set(argv)
            assert flag(argv, "--restore-file") == str(model) and flag(argv, "--arch") == "roberta_sn_large"
            assert flag(argv, "--required-batch-size-multiple") == "1" and flag(argv, "--log-format") == "json"
            assert folder == f"{tmp_path}/{task}/r4f/lambda1.0_uniform/seed1"
            if program == "torchrun":
                assert argv[1:9] == ["--nnodes", "2", "--nproc-per-node", "2", "--rdzv-backend", "c10d",
                                     "--rdzv-endpoint", "node0:1234"]
            if program == "srun":
                assert argv[1:7] == ["--nodes", "1", "--ntasks-per-node", "8", "--gpus-per-node", "8"]
                assert flag(argv, "--distributed-port") == "29500"
    # RTE's batch of 8 cannot be split over 16 GPUs: stop and say why.
    proc = run_recipe(GLUE_SH, ["RTE", "r3f"], check=False, **common, NGPUS=8, NNODES=2, LAUNCHER="slurm")
    assert proc.returncode == 2 and "effective batch 8" in proc.stderr and "not divisible" in proc.stderr
    # Flags after METHOD reach fairseq-train last, overriding the recipe.
    proc = run_recipe(GLUE_SH, ["RTE", "std", "--lr", "3e-5"], **common)
    [(_, argv)] = dry_run_commands(proc.stdout)
    assert argv[-2:] == ["--lr", "3e-5"] and flag(argv, "--lr") == "3e-5"


def test_methods_differ_as_documented(glue_data, tmp_path):
    common = {"DATA_DIR": glue_data["bin"], "ROBERTA_PATH": __file__, "DRY_RUN": 1, "SEEDS": "3",
              "SAVE_ROOT": tmp_path, "FP16": 0}
    argv = {m: dry_run_commands(run_recipe(GLUE_SH, ["RTE", m], **common).stdout)[0][1]
            for m in ("std", "std++", "r3f", "r4f")}
    # STD: RoBERTa's published RTE settings.
    assert [flag(argv["std"], f) for f in ("--lr", "--max-update", "--warmup-updates", "--weight-decay", "--max-epoch")] \
        == ["2e-5", "2036", "122", "0.1", "10"]
    assert int(flag(argv["std"], "--batch-size")) == 16
    # STD++, R3F, R4F: Table 5 and 6 (3120 updates, 6% warm-up = 187, as in the authors' RTE command).
    for m in ("std++", "r3f", "r4f"):
        assert [flag(argv[m], f) for f in ("--lr", "--max-update", "--warmup-updates", "--weight-decay", "--adam-eps")] \
            == ["1e-5", "3120", "187", "0.01", "1e-6"]
        assert "--max-epoch" not in argv[m] and "--fp16" not in argv[m] and flag(argv[m], "--seed") == "3"
    assert flag(argv["std++"], "--criterion") == "sentence_prediction" and "--r3f-lambda" not in argv["std++"]
    assert flag(argv["r3f"], "--criterion") == "sentence_prediction_r3f" and flag(argv["r3f"], "--eps") == "1e-5"
    assert flag(argv["r3f"], "--arch") == "roberta_large" and flag(argv["r4f"], "--arch") == "roberta_sn_large"
    different = [(a, b) for a, b in zip(argv["r3f"], argv["r4f"]) if a != b]
    assert len(argv["r3f"]) == len(argv["r4f"])
    assert different == [("roberta_large", "roberta_sn_large"),
                         (f"{tmp_path}/RTE/r3f/lambda1.0_uniform/seed3", f"{tmp_path}/RTE/r4f/lambda1.0_uniform/seed3")]


def test_each_task_validates_on_its_papers_metric(glue_data, tmp_path):
    expected = {"MNLI": ("valid,valid1", "accuracy", []), "QQP": ("valid", "accuracy", ["--report-acc-and-f1"]),
                "MRPC": ("valid", "accuracy", ["--report-acc-and-f1"]), "CoLA": ("valid", "mcc", ["--report-mcc"]),
                "STS-B": ("valid", "pearson", ["--regression-target", "--report-pearson-and-spearman"]),
                "SST-2": ("valid", "accuracy", []), "QNLI": ("valid", "accuracy", []), "RTE": ("valid", "accuracy", [])}
    tasks = read_hparams("glue_tasks.tsv")
    for task, (subsets, metric, reports) in expected.items():
        proc = run_recipe(GLUE_SH, [task, "std++"], DATA_DIR=glue_data["bin"], ROBERTA_PATH=__file__, DRY_RUN=1,
                          SEEDS="1", SAVE_ROOT=tmp_path)
        [(_, argv)] = dry_run_commands(proc.stdout)
        assert flag(argv, "--valid-subset") == subsets and flag(argv, "--best-checkpoint-metric") == metric
        assert "--maximize-best-checkpoint-metric" in argv and set(reports) <= set(argv)
        assert flag(argv, "--num-classes") == tasks[task]["num_classes"] == ("1" if task == "STS-B" else
                                                                              "3" if task == "MNLI" else "2")


def test_dry_run_sweep_covers_table_6_for_every_seed(glue_data, tmp_path):
    proc = run_recipe(GLUE_SH, ["MRPC", "r3f"], DATA_DIR=glue_data["bin"], ROBERTA_PATH=__file__, DRY_RUN=1,
                      SWEEP=1, SAVE_ROOT=tmp_path)
    commands = dry_run_commands(proc.stdout)
    grid = {(flag(a, "--r3f-lambda"), flag(a, "--noise-type"), flag(a, "--seed")) for _, a in commands}
    assert len(commands) == len(grid) == 4 * 2 * 10
    assert {(l, n) for l, n, _ in grid} == {(l, n) for l in ("0.1", "0.5", "1.0", "5.0") for n in ("uniform", "normal")}
    assert {s for _, _, s in grid} == {str(s) for s in range(1, 11)}
    assert len({folder for folder, _ in commands}) == 80


# ---------------------------------------------------------------- tiny CPU runs, then the results

@pytest.fixture(scope="module")
def glue_runs(glue_data, tmp_path_factory):
    save = tmp_path_factory.mktemp("runs")
    common = {"DATA_DIR": glue_data["bin"], "TINY": 1, "SAVE_ROOT": save}
    # Kept small for the CPU (each fairseq-train start costs seconds): the seed loop over two seeds, a two-point
    # sweep (the full grid and the ten seeds are checked by dry run above; STD++ differs from STD only in the
    # numbers checked there), and the tasks whose metrics or layouts differ. The trailing --no-save reaches
    # fairseq-train (no checkpoint is needed here).
    run_recipe(GLUE_SH, ["RTE", "std"], SEEDS="1 2", **common)
    run_recipe(GLUE_SH, ["RTE", "r4f", "--no-save"], SEEDS="1", **common)
    run_recipe(GLUE_SH, ["RTE", "r3f", "--no-save"], SEEDS="1", SWEEP=1, LAMBDAS="0.1", NOISE_TYPES="uniform normal",
               **common)
    for task in ("MNLI", "CoLA", "STS-B"):
        run_recipe(GLUE_SH, [task, "r3f", "--no-save"], SEEDS="1", **common)
    # The full (non-tiny) command line: --restore-file of a checkpoint and the --reset-* flags, fp32 on the
    # CPU, with the tiny shape given as trailing overrides; the STD checkpoint above stands in for RoBERTa's.
    full = tmp_path_factory.mktemp("full")
    run_recipe(GLUE_SH, ["RTE", "r4f", "--arch", "roberta_sn_base", "--encoder-layers", "2", "--encoder-embed-dim", "32",
                         "--encoder-ffn-embed-dim", "64", "--encoder-attention-heads", "2", "--max-positions", "64",
                         "--cpu", "--num-workers", "0", "--max-update", "2", "--no-save"],
               DATA_DIR=glue_data["bin"], ROBERTA_PATH=save / "RTE/std/default/seed1/checkpoint_best.pt", FP16=0,
               SEEDS="1", SAVE_ROOT=full)
    out = save / "results"
    proc = subprocess.run([PYTHON, "-m", "fairseq_r3f.evaluation.results", "glue", str(save), "--out", str(out)],
                          capture_output=True, text=True, cwd=REPO, env=env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {"save": save, "out": out, "stdout": proc.stdout, "full": full}


def _valid_records(run_dir):
    from fairseq_r3f.logs import read_json_log

    return read_json_log(open(os.path.join(run_dir, "train.log")).read())


def test_tiny_runs_cover_methods_seeds_and_the_sweep(glue_data, glue_runs):
    save = glue_runs["save"]
    expected = ["RTE/std/default/seed1", "RTE/std/default/seed2", "RTE/r4f/lambda1.0_uniform/seed1",
                "RTE/r3f/lambda0.1_uniform/seed1", "RTE/r3f/lambda0.1_normal/seed1"]
    for run in expected:
        folder = save / run
        assert (folder / "done").exists(), run
        meta = json.load(open(folder / "run.json"))
        assert f"{meta['task']}/{meta['method']}/{meta['config']}/seed{meta['seed']}" == run
        records = _valid_records(folder)
        assert records["valid"] and records["train"][-1]["train_num_updates"] == 4.0
        if meta["method"] in ("r3f", "r4f"):
            assert "train_symm_kl" in records["train"][-1]  # the R3F criterion ran
            assert f"--r3f-lambda {meta['r3f_lambda']}" in open(folder / "command.sh").read()
        else:
            assert "train_symm_kl" not in records["train"][-1]
    # The task metrics Table 2 needs were logged.
    assert "valid1_accuracy" in _valid_records(save / "MNLI/r3f/lambda1.0_uniform/seed1")["valid1"][0]
    assert "valid_mcc" in _valid_records(save / "CoLA/r3f/lambda1.0_uniform/seed1")["valid"][0]
    assert "valid_pearson" in _valid_records(save / "STS-B/r3f/lambda1.0_uniform/seed1")["valid"][0]
    # A finished run is not run again.
    proc = run_recipe(GLUE_SH, ["RTE", "std"], DATA_DIR=glue_data["bin"], TINY=1, SAVE_ROOT=save, SEEDS="1")
    assert "already done" in proc.stderr


def test_full_command_line_restores_the_checkpoint(glue_runs):
    folder = glue_runs["full"] / "RTE/r4f/lambda1.0_uniform/seed1"
    log = open(folder / "train.log").read()
    checkpoint = glue_runs["save"] / "RTE/std/default/seed1/checkpoint_best.pt"
    assert f"Loaded checkpoint {checkpoint}" in log
    assert "(out_proj): SpectralNormLinear" in log  # R4F's head
    records = _valid_records(folder)
    assert records["valid"] and records["train"][-1]["train_num_updates"] == 2.0
    assert "--reset-optimizer --reset-dataloader --reset-meters" in open(folder / "command.sh").read()


def test_results_table_and_figure_from_the_runs(glue_runs):
    import statistics

    from fairseq_r3f.evaluation.results import best_validation, GLUE_COLUMNS

    save, out = glue_runs["save"], glue_runs["out"]
    table = open(out / "table2.md").read()
    assert table == glue_runs["stdout"].split("wrote ")[0].rstrip("\n") + "\n"
    max_half, median_half = table.split("Median over the seeds")
    rows = {line.split(" | ")[0].strip("| "): line for line in max_half.splitlines() if line.startswith("| ")}
    assert set(rows) == {"Method", "STD", "R3F", "R4F"}
    assert rows["Method"].split(" | ")[1:4] == ["MNLI Acc-m/mm", "QQP Acc/F1", "RTE Acc"]
    assert "STS-B Pearson" in rows["Method"]

    def rte(method, config, seeds):
        return [best_validation(_valid_records(save / f"RTE/{method}/{config}/seed{s}"), GLUE_COLUMNS["RTE"][1])[0]
                for s in seeds]

    for method, name, config, seeds in (("std", "STD", "default", (1, 2)), ("r4f", "R4F", "lambda1.0_uniform", (1,))):
        scores = rte(method, config, seeds)
        assert rows[name].split(" | ")[3] == f"{max(scores):.1f}"
        median_row = [line for line in median_half.splitlines() if line.startswith(f"| {name} |")][0]
        assert median_row.split(" | ")[3] == f"{statistics.median(scores):.1f}"
    # R3F: the configuration with the best median over its seeds is the one shown.
    configs = {c: rte("r3f", c, (1,)) for c in ("lambda0.1_uniform", "lambda0.1_normal")}
    best = max(configs.values(), key=lambda s: (statistics.median(s), max(s)))
    assert rows["R3F"].split(" | ")[3] == f"{max(best):.1f}"
    median_row = [line for line in median_half.splitlines() if line.startswith("| R3F |")][0]
    assert median_row.split(" | ")[3] == f"{statistics.median(best):.1f}"
    mnli = best_validation(_valid_records(save / "MNLI/r3f/lambda1.0_uniform/seed1"), GLUE_COLUMNS["MNLI"][1])
    assert rows["R3F"].split(" | ")[1] == f"{mnli[0]:.1f}/{mnli[1]:.1f}"
    assert rows["STD"].split(" | ")[1] == "-"  # no STD run on MNLI
    runs = open(out / "runs.tsv").read().splitlines()
    assert len(runs) == 1 + 5 + 3
    with open(out / "figure2.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert os.path.getsize(out / "figure2.png") > 5000


def test_adversarial_baselines_are_methods_of_the_recipe(glue_data, tmp_path):
    """smart and freelb: the STD++ budget with their own criterion (FreeLB also with its task)."""
    common = {"DATA_DIR": glue_data["bin"], "ROBERTA_PATH": __file__, "DRY_RUN": 1, "SEEDS": "1",
              "SAVE_ROOT": tmp_path, "FP16": 0}
    argv = {m: dry_run_commands(run_recipe(GLUE_SH, ["RTE", m], **common).stdout)[0][1]
            for m in ("std++", "smart", "freelb")}
    assert (flag(argv["smart"], "--criterion"), flag(argv["smart"], "--task")) == \
        ("sentence_prediction_smart", "sentence_prediction")
    assert (flag(argv["freelb"], "--criterion"), flag(argv["freelb"], "--task")) == \
        ("sentence_prediction_freelb", "sentence_prediction_freelb")
    for m in ("smart", "freelb"):
        for f in ("--lr", "--max-update", "--warmup-updates", "--weight-decay", "--batch-size"):
            assert flag(argv[m], f) == flag(argv["std++"], f), (m, f)
    # and they train, through the recipe, on the CPU
    for method, logged in (("smart", "train_symm_kl"), ("freelb", "train_adv_loss")):
        run_recipe(GLUE_SH, ["RTE", method, "--no-save"], DATA_DIR=glue_data["bin"], TINY=1, SEEDS="1",
                   SAVE_ROOT=tmp_path / "tiny", FP16=0)
        records = _valid_records(tmp_path / "tiny" / "RTE" / method / "default" / "seed1")
        assert records["train"][-1]["train_num_updates"] == 4.0 and logged in records["train"][-1]
