"""Saves the recipes' DRY_RUN=1 output (stdout, stderr, exit status) for every recipe x task/config x method x
launch setting as the golden files ``tests/golden/dry_run_<recipe>.json``, which tests/test_launch_golden.py
compares the launcher's dry run with.

    python tests/golden/make_golden.py            # rewrites the golden files from recipes/*.sh

Each case is run with fixed fake inputs (folders holding only the files the recipes check for) under a
temporary root; absolute paths are written as placeholders ({ROOT} the fake inputs, {REPO} the checkout,
{BIN} the folder of fairseq-train), so the files do not depend on the machine. Only regenerate them for an
intended change of a recipe's commands, and say which in the commit.
"""

import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
BIN = os.path.dirname(sys.executable)

GLUE_TASKS = ("MNLI", "QNLI", "QQP", "SST-2", "RTE", "MRPC", "CoLA", "STS-B")
GLUE_METHODS = ("std", "std++", "r3f", "r4f", "smart", "freelb")


def make_inputs(root):
    """The fake data folders and checkpoints; returns the environment values naming them."""
    def touch(*parts):
        path = os.path.join(root, *parts)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        open(path, "w").close()

    for task in GLUE_TASKS:
        touch("glue-bin", f"{task}-bin", "input0", "dict.txt")
        touch("glue-bin", f"{task}-bin", "label", "train.label" if task == "STS-B" else "dict.txt")
    touch("xnli-bin", "input0", "dict.txt")
    touch("xnli-bin", "label", "dict.txt")
    for lang in "en fr es de el bg ru tr ar vi th zh hi sw ur".split():
        touch("xnli-bin", "input0", f"valid_{lang}.bin")
    touch("sum-bin", "train.source-target.source.bin")
    touch("iwslt-bin", "train.de-en.de.bin")
    touch("iwslt-moses-bin", "train.de-en.de.bin")
    touch("iwslt-moses-bin", "code")
    touch("mbart-bin", "train.en_XX-ro_RO.en_XX.bin")
    for name in ("roberta.pt", "xlmr.pt", "bart.pt", "mbart.pt"):
        touch("models", name)
    return {"glue": {"DATA_DIR": f"{root}/glue-bin", "ROBERTA_PATH": f"{root}/models/roberta.pt"},
            "xnli": {"DATA_DIR": f"{root}/xnli-bin", "XLMR_PATH": f"{root}/models/xlmr.pt"},
            "summarization": {"DATA_BIN": f"{root}/sum-bin", "BART_PATH": f"{root}/models/bart.pt"},
            "translation_iwslt": {"DATA_BIN": f"{root}/iwslt-bin"},
            "translation_moses": {"DATA_BIN": f"{root}/iwslt-moses-bin"},
            "translation_mbart": {"DATA_BIN": f"{root}/mbart-bin", "MBART_PATH": f"{root}/models/mbart.pt"}}


# Launch settings tried on one task per recipe (FP16=0 unless named: FP16=1's note depends on the machine).
LAUNCHES = {
    "ngpus2": {"NGPUS": "2"},
    "ngpus4_uf2": {"NGPUS": "4", "UPDATE_FREQ": "2"},
    "torchrun": {"LAUNCHER": "torchrun", "NGPUS": "2"},
    "torchrun_2nodes": {"LAUNCHER": "torchrun", "NGPUS": "2", "NNODES": "2", "MASTER_ADDR": "node0",
                        "MASTER_PORT": "1234"},
    "slurm": {"LAUNCHER": "slurm", "NGPUS": "4", "NNODES": "2"},
    "per_gpu": {"BATCH_READING": "per_gpu", "NGPUS": "2", "UPDATE_FREQ": "2"},
    "fp16": {"FP16": "1"},
    "tiny": {"TINY": "1"},
    "tiny_updates7": {"TINY": "1", "TINY_UPDATES": "7"},
}


def cases(paths):
    """(recipe, name, environment, arguments) of every case."""
    out = []

    def add(recipe, name, env, args, data):
        out.append((recipe, name, {"FP16": "0", "SEEDS": "1", **paths[data], **env}, list(args)))

    # GLUE: every task x method, then the sweep, launch settings, flags after METHOD and wrong inputs on RTE.
    for task in GLUE_TASKS:
        for method in GLUE_METHODS:
            add("glue", f"{task}_{method}", {}, [task, method], "glue")
    for method in GLUE_METHODS:
        add("glue", f"RTE_{method}_sweep", {"SWEEP": "1"}, ["RTE", method], "glue")
        add("glue", f"RTE_{method}_tiny", {"TINY": "1"}, ["RTE", method], "glue")
        add("glue", f"RTE_{method}_sweep_size3", {"SWEEP": "1", "SWEEP_SIZE": "3"}, ["RTE", method], "glue")
    for name, env in LAUNCHES.items():
        for method in ("std", "r4f"):
            add("glue", f"RTE_{method}_{name}", env, ["RTE", method], "glue")
    extra = {
        "seeds_default": ({"SEEDS": ""}, ["RTE", "r3f"]),
        "seeds_list": ({"SEEDS": "3,5 7"}, ["RTE", "r3f"]),
        "r3f_settings": ({"R3F_LAMBDA": "0.5", "NOISE_TYPE": "normal", "R3F_EPS": "1e-4"}, ["RTE", "r3f"]),
        "sweep_narrowed": ({"SWEEP": "1", "LAMBDAS": "0.1,1.0", "NOISE_TYPES": "normal"}, ["RTE", "r4f"]),
        "flags_after_method": ({}, ["RTE", "std", "--dropout", "0.0", "--max-update", "2", "--lr=3e-5"]),
        "same_lambda_flag": ({}, ["RTE", "r3f", "--r3f-lambda", "1"]),
        "smart_steps": ({}, ["RTE", "smart", "--smart-steps", "2"]),
        "sweep_lr_override": ({"SWEEP": "1"}, ["RTE", "std", "--lr", "1e-5"]),
        "sweep_lr_same": ({"SWEEP": "1", "SWEEP_SIZE": "2"}, ["RTE", "r3f", "--lr", "1e-5"]),
        "err_arch_sn": ({}, ["RTE", "r3f", "--arch", "roberta_sn_large"]),
        "err_arch_plain": ({}, ["RTE", "r4f", "--arch=roberta_large"]),
        "err_sn_head": ({}, ["RTE", "std", "--spectral-norm-classification-head"]),
        "err_criterion": ({}, ["RTE", "std", "--criterion", "sentence_prediction_r3f"]),
        "err_task": ({}, ["RTE", "r3f", "--task", "sentence_prediction_freelb"]),
        "err_lambda_flag": ({}, ["RTE", "r3f", "--r3f-lambda", "2"]),
        "err_lambda_std": ({}, ["RTE", "std", "--r3f-lambda", "2"]),
        "err_noise_sweep": ({"SWEEP": "1"}, ["RTE", "r3f", "--noise-type", "normal"]),
        "err_lambda_nan": ({"R3F_LAMBDA": "nan"}, ["RTE", "r3f"]),
        "err_eps_bad": ({"R3F_EPS": "-1"}, ["RTE", "r3f"]),
        "err_noise_bad": ({"NOISE_TYPE": "gauss"}, ["RTE", "r3f"]),
        "err_seed_bad": ({"SEEDS": "1 x"}, ["RTE", "r3f"]),
        "err_ngpus0": ({"NGPUS": "0"}, ["RTE", "r3f"]),
        "err_launcher": ({"LAUNCHER": "mpi"}, ["RTE", "r3f"]),
        "err_reading": ({"BATCH_READING": "total"}, ["RTE", "r3f"]),
        "err_nodes_local": ({"NNODES": "2"}, ["RTE", "r3f"]),
        "err_torchrun_addr": ({"LAUNCHER": "torchrun", "NNODES": "2"}, ["RTE", "r3f"]),
        "err_tiny_gpus": ({"TINY": "1", "NGPUS": "2"}, ["RTE", "r3f"]),
        "err_split": ({"NGPUS": "8", "NNODES": "2", "LAUNCHER": "slurm"}, ["RTE", "r3f"]),
        "err_uf3": ({"UPDATE_FREQ": "3"}, ["RTE", "r3f"]),
        "err_sweep_size": ({"SWEEP": "1", "SWEEP_SIZE": "0"}, ["RTE", "r3f"]),
        "err_task_name": ({}, ["WNLI", "r3f"]),
        "err_method_name": ({}, ["RTE", "mixout"]),
        "err_no_method": ({}, ["RTE"]),
    }
    for name, (env, args) in extra.items():
        add("glue", f"RTE_{name}" if not name.startswith("err_task") else name, env, args, "glue")
    # the authors' released configurations (the rxf methods exist for RTE only)
    for method in ("r3f-readme", "r4f-readme", "r3f-released", "r4f-released", "smart-released"):
        add("glue", f"RTE_{method}", {}, ["RTE", method], "glue")
        add("glue", f"RTE_{method}_tiny", {"TINY": "1"}, ["RTE", method], "glue")
    add("glue", "MRPC_smart-released", {}, ["MRPC", "smart-released"], "glue")
    add("glue", "RTE_smart-released_sweep", {"SWEEP": "1"}, ["RTE", "smart-released"], "glue")
    add("glue", "RTE_r3f-released_ngpus2", {"NGPUS": "2"}, ["RTE", "r3f-released"], "glue")
    for name, (env, args) in {
        "err_released_task": ({}, ["MRPC", "r3f-released"]),
        "err_released_sweep": ({"SWEEP": "1"}, ["RTE", "r4f-released"]),
        "err_released_lambda": ({"R3F_LAMBDA": "1"}, ["RTE", "r3f-released"]),
        "err_released_lambda_flag": ({}, ["RTE", "r3f-released", "--r3f-lambda", "1"]),
        "err_arch_outproj_r4f": ({}, ["RTE", "r4f", "--arch", "roberta_sn_outproj_large"]),
        "err_arch_outproj_r3f": ({}, ["RTE", "r3f", "--arch", "roberta_sn_outproj_large"]),
        "err_arch_r4f_released": ({}, ["RTE", "r4f-released", "--arch", "roberta_sn_large"]),
    }.items():
        add("glue", name, env, args, "glue")
    add("glue", "err_no_data", {"DATA_DIR": ""}, ["RTE", "r3f"], "glue")
    add("glue", "err_no_model", {"ROBERTA_PATH": ""}, ["RTE", "r3f"], "glue")
    add("glue", "err_missing_model", {"ROBERTA_PATH": "/nonexistent/model.pt"}, ["RTE", "r3f"], "glue")

    # XNLI
    for method in ("std", "r3f", "r4f"):
        add("xnli", method, {}, [method], "xnli")
        add("xnli", f"{method}_sweep", {"SWEEP": "1"}, [method], "xnli")
        add("xnli", f"{method}_tiny", {"TINY": "1"}, [method], "xnli")
        add("xnli", f"{method}_langs", {"LANGUAGES": "en,fr de"}, [method], "xnli")
    for name in ("ngpus4_uf2", "torchrun_2nodes", "slurm", "per_gpu", "fp16"):
        add("xnli", f"r3f_{name}", LAUNCHES[name], ["r3f"], "xnli")
    for name, (env, args) in {
        "seeds_default": ({"SEEDS": ""}, ["r3f"]),
        "sweep_size3": ({"SWEEP": "1", "SWEEP_SIZE": "3"}, ["std"]),
        "flags_after_method": ({}, ["std", "--dropout", "0.0"]),
        "err_method": ({}, ["std++"]),
        "err_lang": ({"LANGUAGES": "en xx"}, ["r3f"]),
        "err_criterion": ({}, ["r3f", "--criterion", "sentence_prediction"]),
        "err_lambda": ({"R3F_LAMBDA": "inf"}, ["r3f"]),
    }.items():
        add("xnli", name, env, args, "xnli")

    # Summarization
    for dataset in ("cnn_dm", "gigaword", "reddit_tifu"):
        add("summarization", dataset, {}, [dataset], "summarization")
        add("summarization", f"{dataset}_sweep", {"SWEEP": "1"}, [dataset], "summarization")
        add("summarization", f"{dataset}_tiny", {"TINY": "1"}, [dataset], "summarization")
    for name in ("ngpus2", "torchrun", "torchrun_2nodes", "slurm", "fp16", "tiny_updates7"):
        add("summarization", f"cnn_dm_{name}", LAUNCHES[name], ["cnn_dm"], "summarization")
    for name, (env, args) in {
        "token_norm": ({"R3F_KL_NORMALIZATION": "token", "R3F_EPS": "1e-4"}, ["cnn_dm"]),
        "settings": ({"R3F_LAMBDA": "0.1", "NOISE_TYPE": "normal", "SEEDS": "1 2"}, ["gigaword"]),
        "flags_after": ({}, ["cnn_dm", "--max-update", "2", "--dropout", "0.0"]),
        "err_dataset": ({}, ["xsum"]),
        "err_uf": ({"UPDATE_FREQ": "16"}, ["cnn_dm"]),
        "err_norm": ({"R3F_KL_NORMALIZATION": "word"}, ["cnn_dm"]),
        "err_norm_flag": ({}, ["cnn_dm", "--r3f-kl-normalization", "token"]),
        "err_criterion": ({}, ["cnn_dm", "--criterion", "label_smoothed_cross_entropy"]),
        "err_lambda_flag": ({}, ["cnn_dm", "--r3f-lambda", "0.1"]),
        "err_no_data": ({"DATA_BIN": ""}, ["cnn_dm"]),
        "err_no_model": ({"BART_PATH": ""}, ["cnn_dm"]),
    }.items():
        add("summarization", name, env, args, "summarization")

    # Translation
    for config, data in (("iwslt14_de_en", "translation_iwslt"), ("mbart_en_ro", "translation_mbart")):
        add("translation", config, {}, [config], data)
        add("translation", f"{config}_tiny", {"TINY": "1"}, [config], data)
        add("translation", f"{config}_ngpus2", {"NGPUS": "2"}, [config], data)
    for name in ("torchrun", "slurm", "fp16", "tiny_updates7"):
        add("translation", f"iwslt14_de_en_{name}", LAUNCHES[name], ["iwslt14_de_en"], "translation_iwslt")
    for name, (env, args) in {
        "methods_r3f": ({"METHODS": "r3f", "R3F_LAMBDA": "1 2", "SEEDS": "1 2"}, ["iwslt14_de_en"]),
        "drop_lambda": ({"METHODS": "drop,std", "DROP_LAMBDA": "0.5", "R3F_EPS": "1e-4"}, ["iwslt14_de_en"]),
        "noise_normal": ({"METHODS": "r3f", "NOISE_TYPE": "normal"}, ["iwslt14_de_en"]),
        "flags_after": ({"METHODS": "std"}, ["iwslt14_de_en", "--max-update", "2", "--dropout", "0.0"]),
        "err_method": ({"METHODS": "rdrop"}, ["iwslt14_de_en"]),
        "err_config": ({}, ["wmt14"]),
        "err_criterion": ({}, ["iwslt14_de_en", "--criterion", "label_smoothed_cross_entropy"]),
        "err_lambda_flag": ({"METHODS": "std"}, ["iwslt14_de_en", "--r3f-lambda", "1"]),
        "err_norm_flag": ({}, ["iwslt14_de_en", "--r3f-kl-normalization", "sentence"]),
        "err_no_data": ({"DATA_BIN": ""}, ["iwslt14_de_en"]),
        "err_uf": ({"UPDATE_FREQ": "3"}, ["iwslt14_de_en"]),
    }.items():
        add("translation", name, env, args, "translation_iwslt")
    add("translation", "mbart_err_no_model", {"MBART_PATH": ""}, ["mbart_en_ro"], "translation_mbart")
    # IWSLT'14 as prepare-iwslt14.sh (preprocess --tokenization moses): found in DATA_BIN, or named
    add("translation", "iwslt14_de_en_moses", {}, ["iwslt14_de_en"], "translation_moses")
    add("translation", "iwslt14_de_en_moses_named", {"TOKENIZATION": "moses"}, ["iwslt14_de_en"], "translation_moses")
    add("translation", "err_tokenization_data", {"TOKENIZATION": "moses"}, ["iwslt14_de_en"], "translation_iwslt")
    add("translation", "err_tokenization_name", {"TOKENIZATION": "bpe"}, ["iwslt14_de_en"], "translation_moses")
    return out


def normalise(text, root):
    # BIN first: it lies inside REPO when the interpreter is a virtual environment of the checkout (.venv/, ...)
    return text.replace(root, "{ROOT}").replace(BIN, "{BIN}").replace(REPO, "{REPO}")


def environment(env):
    """The recipe's environment: this interpreter's bin first on PATH, no launch setting from the caller."""
    base = {k: v for k, v in os.environ.items()
            if k not in ("NGPUS", "NNODES", "UPDATE_FREQ", "BATCH_READING", "LAUNCHER", "MASTER_ADDR",
                         "MASTER_PORT", "FP16", "DRY_RUN", "TINY", "TINY_UPDATES", "SWEEP", "SWEEP_SIZE", "SEEDS",
                         "SAVE_ROOT", "R3F_LAMBDA", "NOISE_TYPE", "R3F_EPS", "LAMBDAS", "NOISE_TYPES", "METHODS",
                         "DROP_LAMBDA", "LANGUAGES", "R3F_KL_NORMALIZATION", "DATA_DIR", "DATA_BIN",
                         "ROBERTA_PATH", "XLMR_PATH", "BART_PATH", "MBART_PATH", "RDZV_ID", "TOKENIZATION")}
    base["PATH"] = BIN + os.pathsep + base.get("PATH", "")
    base["DRY_RUN"] = "1"
    base.update({k: v for k, v in env.items() if v != ""})
    return base


def main():
    with tempfile.TemporaryDirectory() as root:
        root = os.path.realpath(root)
        paths = make_inputs(root)
        results = {}
        for recipe, name, env, args in cases(paths):
            proc = subprocess.run(["bash", os.path.join(REPO, "recipes", f"{recipe}.sh"), *args], capture_output=True,
                                  text=True, cwd=REPO, env=environment(env))
            results.setdefault(recipe, {})[name] = {
                "env": {k: normalise(v, root) for k, v in env.items()}, "args": args, "rc": proc.returncode,
                "stdout": normalise(proc.stdout, root), "stderr": normalise(proc.stderr, root)}
            print(recipe, name, proc.returncode, file=sys.stderr)
    for recipe, table in results.items():
        with open(os.path.join(HERE, f"dry_run_{recipe}.json"), "w") as f:
            json.dump(table, f, indent=1, sort_keys=True)
            f.write("\n")


if __name__ == "__main__":
    main()
