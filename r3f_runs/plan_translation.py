"""The translation planner (recipes/translation.sh): a transformer on IWSLT'14 or WMT'16 with
label_smoothed_cross_entropy_r3f (translation.tsv), and its tokenization for BLEU. Arguments, environment and
tables in, a Plan out: it writes nothing, and reads nothing but whether the data and checkpoints it names exist
(and which tokenization the data folder holds).
"""

import os
from typing import List

from r3f_runs.plan import Plan, Run
from r3f_runs.settings import Settings, check_overrides, r3f_settings, require_dir, require_file, seeds_of
from r3f_runs.tables import Tables
from r3f_runs.values import die, fail, flag_value, json_value, words
from r3f_runs.vocabulary import SEQ2SEQ_CRITERION


def plan_translation(args: List[str], settings: Settings, tables: Tables) -> Plan:
    if len(args) < 1:
        die("give a CONFIG")
    config, args = args[0], args[1:]
    tsv = "translation.tsv"
    if config not in ("iwslt14_de_en", "mbart_en_ro"):
        die(f"unknown CONFIG {config}: choose iwslt14_de_en or mbart_en_ro")
    names = ("arch task source_lang target_lang model_flags moses_model_flags langs optimizer adam_betas adam_eps "
             "clip_norm lr "
             "lr_scheduler warmup_updates max_update dropout attention_dropout weight_decay label_smoothing max_tokens "
             "reference_gpus reference_update_freq r3f_kl_normalization r3f_lambda noise_type eps drop_lambda "
             "comparable_validation_flags").split()
    hp = {name: tables.get(tsv, name, config) for name in names}
    data_bin = settings.env.get("DATA_BIN", "")
    src, tgt = hp["source_lang"], hp["target_lang"]
    require_dir("DATA_BIN", data_bin, "the bin/ folder written by preprocess/translation.py")
    require_file("DATA_BIN", f"{data_bin}/train.{src}-{tgt}.{src}.bin",
                 f"not a binarised {src}-{tgt} set: run preprocess/translation.py first (docs/translation.md)")
    settings.check_launch()
    if settings.sweep:
        die("SWEEP=1: recipes/translation.sh has no grid; list the values to run in R3F_LAMBDA / DROP_LAMBDA")
    notes = settings.notes
    settings.fp16_note(notes)
    launch, dist = settings.launch_prefix()
    shared = settings.shared_flags()
    pretrained: List[str] = []
    if config == "mbart_en_ro" and not settings.tiny:
        require_file("MBART_PATH", settings.env.get("MBART_PATH", ""),
                     "the mbart.cc25 checkpoint, model.pt of mbart.cc25.v2.tar.gz")
        pretrained = ["--finetune-from-model", settings.env["MBART_PATH"]]
    tokens = int(hp["max_tokens"]) * int(hp["reference_gpus"]) * int(hp["reference_update_freq"])
    per_gpu = settings.per_gpu_batch(tokens)
    max_update, warmup = int(hp["max_update"]), int(hp["warmup_updates"])
    tokenization = translation_tokenization(settings, data_bin, config, hp["moses_model_flags"])
    model_flags = hp["moses_model_flags"] if tokenization == "moses" else hp["model_flags"]
    model = ["--arch", hp["arch"], *model_flags.split()]
    # IWSLT'14's comparable path keeps checkpoint_best.pt by validation BLEU, as the published commands do
    validation = hp["comparable_validation_flags"].split() if tokenization == "moses" else []
    if settings.tiny:
        model += tables.get("tiny.tsv", "seq2seq", "flags").split()
        max_update, warmup, per_gpu = int(settings.tiny_updates), 1, 512
    task_flags = ["--task", hp["task"], "--source-lang", src, "--target-lang", tgt]
    if hp["langs"] != "-":
        task_flags += ["--langs", hp["langs"]]
    schedule = ["--lr-scheduler", hp["lr_scheduler"], "--lr", hp["lr"], "--warmup-updates", str(warmup),
                "--max-update", str(max_update)]
    if hp["lr_scheduler"] == "polynomial_decay":
        schedule += ["--total-num-update", str(max_update)]
    methods = words(settings.env.get("METHODS") or "std r3f drop")
    seeds = seeds_of(settings, 1)
    save_root = settings.text("SAVE_ROOT", "runs/translation")
    value = flag_value(args, "--r3f-kl-normalization")
    if value is not None and value != hp["r3f_kl_normalization"]:
        fail(f"--r3f-kl-normalization {value} contradicts the table's {hp['r3f_kl_normalization']}, for which lambda "
             f"was chosen: change it in {tables.path(tsv)}")
    notes.append(f"# {config}: lr {hp['lr']}, {max_update} updates ({warmup} warm-up), {tokens} tokens per update = "
                 f"{settings.world_size} GPU(s) x {per_gpu} x update-freq {settings.update_freq}")
    for method in methods:
        if method not in ("std", "r3f", "drop"):
            die(f'unknown method {method}: choose std, r3f or drop (METHODS="std r3f drop")')
    plan = Plan("translation", launch, notes=notes, overrides=list(args))
    swept = set()
    for method in methods:
        if method == "std":
            r3f = r3f_settings(settings, False, hp.__getitem__)
            uses_r3f = False
        elif method == "r3f":
            r3f = r3f_settings(settings, True, hp.__getitem__)
            uses_r3f = True
        else:
            r3f = r3f_settings(settings, True, hp.__getitem__, lambda_variable="DROP_LAMBDA",
                               lambda_env=settings.env.get("DROP_LAMBDA") or hp["drop_lambda"], noise_env="none")
            uses_r3f = True
        lambda_variable = "DROP_LAMBDA" if method == "drop" else "R3F_LAMBDA"
        check_overrides(settings, method, SEQ2SEQ_CRITERION, hp["task"], uses_r3f, {
            "--r3f-lambda": (lambda_variable, r3f.lambdas), "--noise-type": ("NOISE_TYPE", r3f.noise_types),
            "--eps": ("R3F_EPS", [r3f.eps])}, args, seq2seq=True)
        if len(r3f.lambdas) > 1:
            swept.add("r3f_lambda")
        search = {"configurations": len(r3f.lambdas) * len(r3f.noise_types), "sweep": False}
        eps_named = float(r3f.eps) != float(r3f.table_eps)
        for noise in r3f.noise_types:
            for lam in r3f.lambdas:
                name = f"lambda{lam}_{noise}" + (f"_eps{r3f.eps}" if eps_named else "")
                for seed in seeds:
                    run_dir = f"{save_root}/{config}/{method}/{name}/seed{seed}"
                    meta = {"task": config, "dataset": config, "method": method, "config": name, "seed": int(seed),
                            "metric": "bleu", "valid_subsets": "valid", "r3f_lambda": json_value(lam),
                            "noise_type": noise, "eps": json_value(r3f.eps),
                            "r3f_kl_normalization": hp["r3f_kl_normalization"], "tokenization": tokenization,
                            "search": search}
                    command = [
                        data_bin, *task_flags, *model, *pretrained, "--criterion", SEQ2SEQ_CRITERION,
                        "--label-smoothing", hp["label_smoothing"], "--r3f-lambda", lam, "--noise-type", noise, "--eps",
                        r3f.eps, "--r3f-kl-normalization", hp["r3f_kl_normalization"], "--dropout", hp["dropout"],
                        "--attention-dropout", hp["attention_dropout"], "--weight-decay", hp["weight_decay"],
                        "--optimizer", hp["optimizer"], "--adam-betas", hp["adam_betas"], "--adam-eps", hp["adam_eps"],
                        "--clip-norm", hp["clip_norm"], *schedule, "--max-tokens", str(per_gpu),
                        "--skip-invalid-size-inputs-valid-test", *validation, "--seed", seed, "--save-dir", run_dir,
                        *shared, *dist, *args]
                    plan.runs.append(Run(run_dir, command, meta, f"{save_root}/{config}/{method}", name, int(seed)))
    plan.swept = sorted(swept)
    return plan


def translation_tokenization(settings: Settings, data_bin: str, config: str, moses_flags: str) -> str:
    """TOKENIZATION (sentencepiece | moses), else what DATA_BIN holds: preprocess/translation.py --tokenization
    moses leaves its BPE codes (``code``) and no sentencepiece.model there."""
    found = "moses" if os.path.isfile(os.path.join(data_bin, "code")) and not os.path.isfile(
        os.path.join(data_bin, "sentencepiece.model")) else "sentencepiece"
    given = settings.env.get("TOKENIZATION") or found
    if given not in ("sentencepiece", "moses"):
        die(f"TOKENIZATION={given}: choose sentencepiece or moses (or leave it unset: DATA_BIN tells)")
    if given != found:
        die(f"TOKENIZATION={given}, but DATA_BIN={data_bin} holds {found} data: preprocess with "
            f"--tokenization {given}, or leave TOKENIZATION unset")
    if given == "moses" and moses_flags == "-":
        die(f"TOKENIZATION=moses is IWSLT'14's comparable path (preprocess/translation.py --tokenization moses); "
            f"{config} has none")
    return given
