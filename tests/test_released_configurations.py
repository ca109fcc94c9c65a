"""The authors' released configurations as METHODs of recipes/glue.sh (r3f-readme, r4f-readme, r3f-released,
r4f-released, smart-released), FreeLB's per-task single runs, and IWSLT'14's comparable path (TOKENIZATION=moses, --bleu
tokenized). Fast: the planned commands, flag by flag, and the label checks. Slow: tiny real runs through the
recipes, in the tables under their own labels."""

import csv
import json
import os
import re
import shlex
import subprocess
import sys

import pytest

from conftest import REPO
from fairseq_r3f.evaluation import bleu
from fairseq_r3f.logs import read_json_log
from r3f_runs.identity import label_mismatches
from r3f_runs.launching import parse_flags
from r3f_runs.planners import make_plan
from r3f_runs.values import Stop, same_value
from r3f_runs.vocabulary import is_outproj_sn_arch, is_sn_arch, plain_arch, sn_arch

BIN = os.path.dirname(sys.executable)
GLUE_SH = os.path.join(REPO, "recipes", "glue.sh")
TRANSLATION_SH = os.path.join(REPO, "recipes", "translation.sh")
HPARAMS = os.path.join(REPO, "fairseq_r3f", "hparams")

# fairseq's examples/rxf/README.md, "to run R3F on RTE from GLUE", as published (its variables filled in:
# TOTAL_NUM_UPDATES=3120, WARMUP_UPDATES=187, LR=1e-05, NUM_CLASSES=2, MAX_SENTENCES=8).
README_COMMAND = """fairseq-train RTE-bin \
    --restore-file ROBERTA_PATH \
    --max-positions 512 \
    --max-sentences 8 \
    --max-tokens 4400 \
    --task sentence_prediction \
    --reset-optimizer --reset-dataloader --reset-meters \
    --required-batch-size-multiple 1 \
    --init-token 0 --separator-token 2 \
    --arch roberta_large \
    --criterion sentence_prediction_r3f \
    --num-classes 2 \
    --dropout 0.1 --attention-dropout 0.1 \
    --weight-decay 0.1 --optimizer adam --adam-betas "(0.9, 0.98)" --adam-eps 1e-06 \
    --clip-norm 0.0 \
    --lr-scheduler polynomial_decay --lr 1e-05 --total-num-update 3120 --warmup-updates 187 \
    --fp16 --fp16-init-scale 4 --threshold-loss-scale 1 --fp16-scale-window 128 \
    --max-epoch 10 \
    --find-unused-parameters \
    --best-checkpoint-metric accuracy --maximize-best-checkpoint-metric \
    --noise-type uniform --r3f-lambda 0.7 \
    --user-dir examples/rxf/rxf_src"""

# How the recipe's command may differ from the README's, and why it runs the same thing.
RENAMED = {"--max-sentences": "--batch-size",  # fairseq's alias
           "--restore-file": "--finetune-from-model"}  # the same weights, fresh optimizer/data/meters
# The README's --reset-* flags are what --finetune-from-model does; --user-dir is the plugin's (its
# sentence_prediction_r3f); ROBERTA_PATH and the data folder are paths.
DROPPED = {"--reset-optimizer", "--reset-dataloader", "--reset-meters", "--user-dir"}
# Flags the recipe adds: fairseq's defaults the README relies on, the rxf criterion's default eps, and what
# changes no number (logging, checkpoint files, the output folder).
ADDED = {"--seed": "1", "--valid-subset": "valid", "--update-freq": "1", "--eps": "1e-5", "--log-format": None,
         "--log-interval": None, "--no-epoch-checkpoints": True, "--save-dir": None, "--lr": "1e-05"}


def parse(argv):
    """{flag: value or True}, the positional data folder as "<data>"."""
    return parse_flags(argv)


def plan(args, **env):
    variables = {"DATA_DIR": env.pop("DATA_DIR"), "DRY_RUN": "1", "SEEDS": env.pop("SEEDS", ""), **env}
    return make_plan("glue", args, {k: str(v) for k, v in variables.items() if v != ""})


@pytest.fixture
def fake_glue(tmp_path):
    for task in ("RTE", "MRPC", "CoLA", "MNLI", "QNLI", "QQP", "SST-2"):
        for part in ("input0", "label"):
            os.makedirs(tmp_path / f"{task}-bin" / part)
            open(tmp_path / f"{task}-bin" / part / "dict.txt", "w").close()
    model = tmp_path / "model.pt"
    model.write_text("")
    return {"DATA_DIR": str(tmp_path), "ROBERTA_PATH": str(model)}


@pytest.mark.parametrize("method", ["r3f-readme", "r3f-released"])
def test_the_rxf_methods_are_the_readme_command_flag_by_flag(fake_glue, method):
    runs_planned = plan(["RTE", method], FP16="1", **fake_glue).runs
    assert len(runs_planned) == 1  # the README runs one seed, fairseq's default 1
    ours = parse(runs_planned[0].command)
    readme = parse(shlex.split(README_COMMAND)[1:])
    for name, value in readme.items():
        if name == "<data>" or name in DROPPED:
            continue
        mine = RENAMED.get(name, name)
        assert mine in ours, f"the README's {name} is missing"
        if name == "--restore-file":
            assert ours[mine] == fake_glue["ROBERTA_PATH"]
        elif name == "--adam-betas":
            assert ours[mine].replace(" ", "") == value.replace(" ", "")
        elif name == "--noise-type" and method == "r3f-released":
            assert ours[mine] == "none"  # the released computation: no noise reached RoBERTa's encoder
        else:
            assert same_value(str(ours[mine]), str(value)), (name, ours[mine], value)
    for name in ("--reset-optimizer", "--reset-dataloader", "--reset-meters", "--restore-file"):
        assert name not in ours
    known = {RENAMED.get(name, name) for name in readme} | set(ADDED) | {"<data>"}
    extra = {name: value for name, value in ours.items() if name not in known}
    assert extra == {}, f"flags the README does not have: {extra}"
    for name, value in ADDED.items():
        if value is not None and name in ours:
            assert same_value(str(ours[name]), str(value)), name
    # what the README leaves out stays out: the run ends at --max-epoch 10, nothing is truncated
    assert "--max-update" not in ours and "--shorten-method" not in ours
    assert ours["<data>"].endswith("RTE-bin")


@pytest.mark.parametrize("pair", [("r3f-readme", "r4f-readme"), ("r3f-released", "r4f-released")])
def test_r4f_is_the_same_command_on_the_out_proj_head(fake_glue, pair):
    r3f, r4f = (plan(["RTE", method], FP16="1", **fake_glue).runs[0] for method in pair)
    a, b = parse(r3f.command), parse(r4f.command)
    assert {k for k in a if a[k] != b.get(k)} == {"--arch", "--save-dir"}
    assert b["--arch"] == "roberta_sn_outproj_large"
    assert is_outproj_sn_arch(b["--arch"]) and not is_sn_arch(b["--arch"])
    assert plain_arch(b["--arch"]) == "roberta_large" and sn_arch(b["--arch"]) == "roberta_sn_large"
    for run in (r3f, r4f):  # the label carries the method's own name, never r3f / r4f
        assert run.label["method"] in pair and "rxf/README.md" in run.label["released"]
        assert run.dir.split(os.sep)[-3] == run.label["method"]


def test_readme_and_released_differ_in_the_noise_alone_and_say_so(fake_glue):
    """r3f-readme: the README's flags with the noise reaching the encoder; r3f-released: the same flags as the
    released code computed them, without noise."""
    readme, released = (plan(["RTE", m], FP16="1", **fake_glue).runs[0] for m in ("r3f-readme", "r3f-released"))
    a, b = parse(readme.command), parse(released.command)
    assert {k for k in set(a) | set(b) if a.get(k) != b.get(k)} == {"--noise-type", "--save-dir"}
    assert (a["--noise-type"], b["--noise-type"]) == ("uniform", "none")
    assert (readme.label["noise_type"], released.label["noise_type"]) == ("uniform", "none")
    assert "the noise reaching the encoder" in readme.label["released"]
    assert "as released" in released.label["released"] and "no noise reaching the encoder" in released.label["released"]
    notes = []
    make_plan("glue", ["RTE", "r3f-released"], {"DATA_DIR": fake_glue["DATA_DIR"], "DRY_RUN": "1",
                                                        "ROBERTA_PATH": fake_glue["ROBERTA_PATH"]}, notes=notes)
    assert any("as released" in note and "--noise-type none" in note for note in notes), notes


def test_the_released_criterions_noise_never_reached_robertas_encoder(toy_task):
    """Why r3f-released runs --noise-type none: the released criterion (fairseq examples/rxf) computes its noised
    logits as model(..., token_embeddings=embeddings + noise), and RoBERTa's encoder drops that argument, so they
    are the clean logits; with dropout off its term is 0, as --noise-type none's is, while the noise of
    r3f-readme (the plugin's perturbation) changes the logits."""
    import torch

    from conftest import NO_DROPOUT, build_in_process, first_batch
    from fairseq_r3f.perturb import perturbed_token_embeddings, random_noise

    task, model, criterion = build_in_process(toy_task, *NO_DROPOUT, "--noise-type", "none", "--r3f-lambda", "1")
    model.train()
    batch = first_batch(task)
    net = dict(batch["net_input"], features_only=True, classification_head_name=criterion.classification_head_name)
    tokens = batch["net_input"]["src_tokens"]
    with torch.no_grad():
        clean = model(**net)[0]
        embeddings = model.encoder.sentence_encoder.embed_tokens(tokens)
        released = model(**net, token_embeddings=embeddings + torch.randn_like(embeddings))[0]
        with perturbed_token_embeddings(model, random_noise("normal", 1.0)):
            readme = model(**net)[0]
    assert torch.equal(released, clean)
    assert (readme - clean).abs().max() > 1e-2
    _, _, log = criterion(model, batch)
    assert log["symm_kl"] == 0


def test_released_values_are_read_from_their_table(fake_glue):
    """Every value of the command is the table's, whose every row cites the README."""
    with open(os.path.join(HPARAMS, "glue_released.tsv")) as f:
        rows = [line.rstrip("\n").split("\t") for line in f if line.strip() and not line.startswith("#")]
    header = rows[0]
    table = {row[0]: dict(zip(header, row)) for row in rows[1:]}
    assert all(row["source"].startswith("README") for name, row in table.items() if name != "computation")
    for method in ("r3f-readme", "r3f-released"):
        flags = parse(plan(["RTE", method], **fake_glue).runs[0].command)
        for name in ("lr", "weight_decay", "r3f_lambda", "noise_type", "dropout", "attention_dropout", "adam_eps",
                     "clip_norm", "max_tokens", "max_positions", "warmup_updates", "total_num_update", "max_epoch"):
            assert same_value(flags["--" + name.replace("_", "-")], table[name][method]), (method, name)


def test_released_methods_refuse_what_would_change_them(fake_glue):
    notes = []
    for args, env, message in (
            (["MRPC", "r3f-released"], {}, "for RTE only"),
            (["RTE", "r4f-released"], {"SWEEP": "1"}, "one released configuration, not a search"),
            (["RTE", "r3f-released"], {"R3F_LAMBDA": "1"}, "R3F_LAMBDA=1 would change r3f-released's"),
            (["RTE", "r3f-released", "--r3f-lambda", "1"], {}, "changes r3f-released's released command"),
            (["RTE", "r4f-released", "--arch", "roberta_sn_large"], {}, "drops r4f-released's released head"),
            (["RTE", "r3f-readme", "--noise-type", "none"], {}, "changes r3f-readme's released command"),
            (["RTE", "r3f-released", "--noise-type", "uniform"], {}, "changes r3f-released's released command"),
            (["RTE", "r4f", "--arch", "roberta_sn_outproj_large"], {}, "fairseq's released head"),
            (["RTE", "r3f", "--arch", "roberta_sn_outproj_large"], {}, "fairseq's released head")):
        with pytest.raises(Stop) as stop:
            plan(args, **fake_glue, **env)
        assert message in str(stop.value), (args, str(stop.value))
        notes.append(str(stop.value))
    assert len(set(notes)) == len(notes)


def test_smart_released_runs_the_released_variant_with_mt_dnn_defaults(fake_glue):
    smart, released = (parse(plan(["MRPC", m], SEEDS="1", **fake_glue).runs[0].command)
                       for m in ("smart", "smart-released"))
    assert released["--smart-variant"] == "released" and "--smart-variant" not in smart
    expected = {"--smart-lambda": "1", "--smart-steps": "1", "--smart-step-size": "1e-5", "--smart-eps": "1e-6",
                "--smart-init": "1e-5", "--smart-norm": "linf"}  # mt-dnn train.py's defaults (glue.tsv cites them)
    assert {k: released[k] for k in expected} == expected
    for name in ("--lr", "--max-update", "--batch-size", "--weight-decay", "--criterion"):
        assert smart[name] == released[name], name
    label = plan(["MRPC", "smart-released"], SEEDS="1", **fake_glue).runs[0].label
    assert label["method"] == "smart-released" and label["smart_variant"] == "released"


def test_freelb_single_runs_take_each_tasks_published_settings(fake_glue):
    with open(os.path.join(HPARAMS, "freelb_tasks.tsv")) as f:
        table = {row["task"]: row for row in csv.DictReader((line for line in f if not line.startswith("#")),
                                                            delimiter="\t")}
    seen = set()
    for task in ("RTE", "MRPC", "CoLA", "MNLI", "QNLI", "QQP", "SST-2"):
        flags = parse(plan([task, "freelb"], SEEDS="1", **fake_glue).runs[0].command)
        got = tuple(float(flags[f"--freelb-{name}"]) for name in ("step-size", "steps", "init-mag", "max-norm"))
        row = table[task]
        assert got == tuple(float(row[c]) for c in ("adv_lr", "adv_steps", "init_mag", "max_norm")), task
        seen.add(got)
    assert len(seen) > 3  # not one setting for every task
    # SWEEP=1 still searches glue.tsv's grid
    swept = plan(["RTE", "freelb"], SEEDS="1", SWEEP="1", **fake_glue)
    assert len(swept.runs) == 8 and "criterion.freelb_step_size" in swept.swept


def test_labels_tell_the_out_proj_head_from_r4fs():
    plain = {"criterion": "sentence_prediction_r3f", "task": "sentence_prediction", "arch": "roberta_large",
             "spectral_norm_head": False, "outproj_spectral_norm_head": False}
    outproj = {**plain, "arch": "roberta_sn_outproj_large", "outproj_spectral_norm_head": True}
    full = {**plain, "arch": "roberta_sn_large", "spectral_norm_head": True}
    ok = {("r3f", "plain"), ("r3f-readme", "plain"), ("r3f-released", "plain"), ("r4f", "full"),
          ("r4f-readme", "outproj"), ("r4f-released", "outproj")}
    for method in ("r3f", "r4f", "r3f-readme", "r4f-readme", "r3f-released", "r4f-released"):
        for name, ident in (("plain", plain), ("outproj", outproj), ("full", full)):
            problems = label_mismatches({"method": method}, ident)
            assert (problems == []) == ((method, name) in ok), (method, name, problems)


def test_bleu_table_says_which_bleu():
    lines = bleu.results_table([{"method": "std", "config": "c", "seed": 1, "bleu": 30.0}])
    tokenized = bleu.markdown(lines, "tokenised BLEU-4 (fairseq-score), compound-split", bleu_kind="tokenized")
    sacre = bleu.markdown(lines, "nrefs:1|tok:13a")
    assert "BLEU: tokenised BLEU-4" in tokenized and "not comparable with sacrebleu" in tokenized
    assert "BLEU: sacrebleu on detokenised, cased text; nrefs:1|tok:13a" in sacre


# ------------------------------------------------------------------------------- tiny real runs (slow)

def env(**extra):
    return {**os.environ, "PATH": BIN + os.pathsep + os.environ["PATH"], "OMP_NUM_THREADS": "1",
            **{k: str(v) for k, v in extra.items()}}


@pytest.mark.slow
def test_tiny_released_runs_are_their_own_rows_of_the_glue_table(tmp_path):
    from fairseq_r3f.toy_data import write_toy_task

    data_bin = write_toy_task(str(tmp_path / "toy"), n_train=64, n_valid=16, pairs=True)
    os.makedirs(tmp_path / "glue")
    os.symlink(data_bin, tmp_path / "glue" / "RTE-bin")
    save = tmp_path / "runs"
    for method in ("r3f", "r3f-readme", "r3f-released", "r4f-released"):
        proc = subprocess.run([GLUE_SH, "RTE", method], capture_output=True, text=True, cwd=REPO,
                              env=env(DATA_DIR=tmp_path / "glue", SAVE_ROOT=save, TINY=1, TINY_UPDATES=3, SEEDS=1,
                                      FP16=0))
        assert proc.returncode == 0, proc.stderr[-3000:]
    for method, arch, noise in (("r3f-readme", "roberta_base", "uniform"), ("r3f-released", "roberta_base", "none"),
                                ("r4f-released", "roberta_sn_outproj_base", "none")):
        run_dir = save / "RTE" / method / f"lambda0.7_{noise}" / "seed1"
        identity = json.loads((run_dir / "identity.json").read_text())
        assert identity["mismatches"] == [] and identity["arch"] == arch and identity["num_updates"] == 3
        assert identity["noise_type"] == noise
        configuration = identity["configuration"]
        assert [v for k, v in configuration.items() if k.endswith(".weight_decay")] == [0.1]
        assert configuration.get("optimization.max_update") == 3
        assert identity["r3f_lambda"] == 0.7
    proc = subprocess.run([sys.executable, "-m", "fairseq_r3f.evaluation.results", "glue", str(save), "--out",
                           str(tmp_path / "out")], capture_output=True, text=True, cwd=REPO, env=env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = (tmp_path / "out" / "table2.md").read_text()
    rows = [line.split("|")[1].strip() for line in table.split("Median")[0].splitlines() if line.startswith("| ")]
    assert rows[1:] == ["R3F", "R3F-readme (rxf README flags, noise reaching the encoder)",
                        "R3F-released (as released: rxf README flags, no noise reached the encoder)",
                        "R4F-released (as released: rxf README flags, no noise reached the encoder, out_proj-only SN "
                        "head)"]
    assert "*-readme and *-released rows: the authors' released configurations" in table


@pytest.mark.slow
def test_tiny_moses_translation_scored_with_tokenized_bleu(tmp_path):
    from test_iwslt14_tokenized import release

    from fairseq_r3f.evaluation import tokenized_bleu

    release(tmp_path / "de-en")
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, os.path.join(REPO, "preprocess", "translation.py"), "--iwslt14-dir",
                           str(tmp_path / "de-en"), "--out-dir", str(out), "--tokenization", "moses", "--vocab-size",
                           "40", "--workers", "1"], capture_output=True, text=True, cwd=REPO, env=env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    save = tmp_path / "runs"
    proc = subprocess.run(["bash", TRANSLATION_SH, "iwslt14_de_en", "--lr", "5e-3", "--lr-scheduler", "fixed"],
                          capture_output=True, text=True, cwd=REPO,
                          env=env(DATA_BIN=out / "bin", SAVE_ROOT=save, TINY=1, TINY_UPDATES=20, METHODS="std"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = save / "iwslt14_de_en" / "std" / "lambda0_none" / "seed1"
    label = json.loads((run_dir / "run.json").read_text())
    assert label["tokenization"] == "moses" and "--share-all-embeddings" in label["command"]
    configuration = json.loads((run_dir / "identity.json").read_text())["configuration"]
    assert configuration["model.share_all_embeddings"] is True
    # checkpoint_best.pt is the best validation BLEU, as the published training commands choose it
    assert configuration["checkpoint.best_checkpoint_metric"] == "bleu"
    assert configuration["checkpoint.maximize_best_checkpoint_metric"] is True
    valid = read_json_log((run_dir / "train.log").read_text()).get("valid", [])
    assert valid and all("valid_bleu" in record for record in valid)

    def table(*extra):
        return subprocess.run([sys.executable, "-m", "fairseq_r3f.evaluation.bleu", "--config", "iwslt14_de_en",
                               "--data-bin", str(out / "bin"), "--references", str(out / "raw" / "test.en"), "--runs",
                               str(save), *extra], capture_output=True, text=True, cwd=REPO, env=env())

    refused = table()  # sacrebleu on Moses-tokenised, lowercased output: refused, naming the fix
    assert refused.returncode == 2 and "pass --bleu tokenized" in refused.stderr
    proc = table("--bleu", "tokenized")
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((save / "bleu-test.json").read_text())
    assert result["bleu"] == "tokenized" and "compound splitting" in result["bleu_description"]
    with open(run_dir / "bleu-test" / "generate-test.txt", encoding="utf-8") as f:
        log = f.readlines()
    hypotheses = [line for line in log if line.startswith("H-")]
    assert hypotheses and not any("@@" in line for line in hypotheses)  # the BPE was removed
    expected = tokenized_bleu.score_generate_output(log)["bleu"]
    assert [row["bleu"] for row in result["runs"]] == [pytest.approx(expected, abs=1e-9)]
    markdown = (save / "bleu-test.md").read_text()
    assert "BLEU: tokenised BLEU-4" in markdown
    # the test set decoded as the published generate commands do: fairseq-generate's length limits, not the
    # validation BLEU's 1.2 x source + 10; the table says so, and how checkpoint_best.pt was chosen
    assert "checkpoint_best.pt: the highest validation bleu" in markdown
    assert "decoding: beam 5, lenpen 1.0, max length 0 x source + 200" in markdown
    assert result["decoding"] == "decoding: beam 5, lenpen 1.0, max length 0 x source + 200"
    assert any(re.search(r"'max_len_a': 0(\.0)?, 'max_len_b': 200,", line) for line in log), "not decoded so"
    again = table("--bleu", "tokenized")
    assert "bleu.json of the same checkpoint" in again.stderr


def test_only_the_comparable_path_keeps_checkpoint_best_by_validation_bleu(tmp_path):
    for tokenization in ("moses", "sentencepiece"):
        data = tmp_path / tokenization
        data.mkdir()
        (data / "train.de-en.de.bin").write_text("")
        (data / ("code" if tokenization == "moses" else "sentencepiece.model")).write_text("")
        (run,) = make_plan("translation", ["iwslt14_de_en"], {
            "DATA_BIN": str(data), "DRY_RUN": "1", "METHODS": "std", "SAVE_ROOT": str(tmp_path / "runs")}).runs
        flags = parse(run.command)
        if tokenization == "moses":  # fairseq's examples/translation/README.md training command
            assert flags["--eval-bleu"] is True and flags["--eval-bleu-detok"] == "moses"
            assert json.loads(flags["--eval-bleu-args"]) == {"beam": 5, "max_len_a": 1.2, "max_len_b": 10}
            assert flags["--eval-bleu-remove-bpe"] is True and flags["--best-checkpoint-metric"] == "bleu"
            assert flags["--maximize-best-checkpoint-metric"] is True
        else:
            assert not {"--eval-bleu", "--best-checkpoint-metric"} & set(flags)


def test_the_comparable_path_decodes_the_test_set_as_the_published_commands():
    settings = bleu.settings_for("iwslt14_de_en")
    assert (settings["max_len_a"], settings["max_len_b"]) == ("1.2", "10")  # the validation BLEU's limits
    comparable = bleu.comparable_decoding(settings)
    assert (comparable["max_len_a"], comparable["max_len_b"], comparable["beam"]) == ("0", "200", "5")
    with pytest.raises(bleu.EvaluationError, match="no comparable"):
        bleu.comparable_decoding(bleu.settings_for("mbart_en_ro"))


def test_probing_refuses_the_out_proj_head():
    from fairseq_r3f.probing import methods

    for name, sn in (("r3f", False), ("r4f", True)):
        method = methods.Method(name, "sentence_prediction_r3f", [], spectral_norm_head=sn, builtin=True)
        with pytest.raises(ValueError, match="released out_proj-only head"):
            methods.check_overrides(method, "roberta_large", ["--arch", "roberta_sn_outproj_large"])
    assert methods.Method("r4f", "sentence_prediction_r3f", [], True).train_flags("roberta_large")[-1] == \
        "roberta_sn_large"


def test_hydra_configs_refuse_the_out_proj_head():
    from hydra_plugins.fairseq_r3f_plugin import method_override_problem

    for config in ("rte_r3f", "rte_r4f"):
        problem = method_override_problem(["--config-name", config, "model._name=roberta_sn_outproj_large"])
        assert "released out_proj-only head" in problem, problem
    assert method_override_problem(["--config-name", "rte_r4f", "model._name=roberta_sn_base"]) == ""
