"""The XNLI planner (recipes/xnli.sh): XLM-R on the English training set, validated on the dev languages
(xnli.tsv). Arguments, environment and tables in, a Plan out: it writes nothing, and reads nothing but whether
the data and checkpoints it names exist.
"""

from typing import List

from r3f_runs.plan import (
    Axis, Plan, epochs_of, r3f_axes, search_grid, sentence_model, sentence_prediction_command, sentence_runs,
    split_batch,
)
from r3f_runs.settings import Settings, check_overrides, r3f_settings, require_dir, require_file, seeds_of
from r3f_runs.tables import Tables
from r3f_runs.values import die, words
from r3f_runs.vocabulary import SENTENCE_METHODS, XNLI_LANGUAGES


def plan_xnli(args: List[str], settings: Settings, tables: Tables) -> Plan:
    if len(args) < 1:
        die("give a METHOD")
    method, args = args[0], args[1:]
    if method not in ("std", "r3f", "r4f"):
        die(f"unknown METHOD {method}: choose std, r3f or r4f")

    def value(row):
        return tables.get("xnli.tsv", row, "value")

    languages = words(settings.env.get("LANGUAGES") or " ".join(XNLI_LANGUAGES))
    data_dir = settings.env.get("DATA_DIR", "")
    require_dir("DATA_DIR", data_dir, "the output folder of preprocess/xnli.py")
    require_file("DATA_DIR", f"{data_dir}/input0/dict.txt", "run preprocess/xnli.py first")
    require_file("DATA_DIR", f"{data_dir}/label/dict.txt", "run preprocess/xnli.py first")
    for lang in languages:
        require_file("DATA_DIR", f"{data_dir}/input0/valid_{lang}.bin",
                     f"no valid_{lang} subset: run preprocess/xnli.py with this language")
    valid = ",".join(f"valid_{lang}" for lang in languages)
    if not valid:
        die("LANGUAGES is empty: give the validation languages, English first")
    if not settings.tiny:
        require_file("XLMR_PATH", settings.env.get("XLMR_PATH", ""),
                     "the XLM-R large checkpoint, model.pt of xlmr.large.tar.gz")
    seeds = seeds_of(settings, int(value("seeds")))
    settings.sweep_size = settings.sweep_size or value("sweep_size")
    uses_r3f = method != "std"
    r3f = r3f_settings(settings, uses_r3f, value)
    settings.check_launch()
    notes = settings.notes
    settings.fp16_note(notes)
    criterion, _, needs_sn = SENTENCE_METHODS[method]
    arch = "roberta_sn_large" if needs_sn else "roberta_large"  # XLM-R large has RoBERTa-large's shape
    sweeping = settings.sweep
    check_overrides(settings, method, criterion, "sentence_prediction", uses_r3f, {
        "--r3f-lambda": ("LAMBDAS" if sweeping else "R3F_LAMBDA", r3f.lambdas),
        "--noise-type": ("NOISE_TYPES" if sweeping else "NOISE_TYPE", r3f.noise_types),
        "--eps": ("R3F_EPS", [r3f.eps])}, args)
    launch, dist = settings.launch_prefix()
    shared = settings.shared_flags()
    per_gpu, effective = split_batch(settings, int(value("batch_size")))
    max_update = int(value("max_update"))
    warmup = int(float(value("warmup_ratio")) * max_update)
    max_positions, train_size = value("max_positions"), int(value("train_size"))
    model, max_update, warmup, max_positions = sentence_model(settings, tables, arch, "XLMR_PATH", max_update,
                                                              warmup, max_positions)
    save_root = settings.text("SAVE_ROOT", "runs/xnli")
    notes.append(f"# XNLI {method}: {max_update} updates ({warmup} warm-up), effective batch {effective} = "
                 f"{settings.world_size} GPU(s) x {per_gpu} x update-freq {settings.update_freq} "
                 f"(BATCH_READING={settings.batch_reading}): at most {epochs_of(max_update, effective, train_size)} "
                 f"MNLI epochs; checkpoint chosen on {valid.split(',')[0]}")
    v = {name: value(name) for name in ("num_classes", "dropout", "attention_dropout", "weight_decay", "adam_betas",
                                        "adam_eps", "clip_norm", "lr_scheduler", "lr", "max_tokens")}
    if method == "std":
        lr_axis = Axis("lr", "--lr", "lr", words(value("std_lr_grid"))) if settings.sweep else \
            Axis("lr", "--lr", "!", [v["lr"]])
        axes = [lr_axis, Axis("r3f_lambda", "", "!", ["0"]), Axis("noise_type", "", "!", ["none"])]
    else:
        axes = r3f_axes(r3f) + [Axis("lr", "--lr", "!", [v["lr"]])]
    configs, search, swept = search_grid(settings, method, axes, args, notes)
    label = {"task": "XNLI", "method": method, "metric": "accuracy", "valid_subsets": valid,
             "batch_reading": settings.batch_reading, "effective_batch": effective}

    def command(config_flags, seed, run_dir):
        return sentence_prediction_command(
            data_dir, "sentence_prediction", v["num_classes"], max_positions, model, criterion, config_flags, v,
            max_update, warmup, [], per_gpu, valid, "accuracy", seed, run_dir, [*shared, *dist, *args])

    plan = Plan("xnli", launch, notes=notes, overrides=list(args), swept=swept)
    sentence_runs(plan, f"{save_root}/{method}", configs, seeds, label, search, command)
    return plan
