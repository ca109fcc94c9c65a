"""The summarization planner (recipes/summarization.sh): BART with label_smoothed_cross_entropy_r3f on one
dataset (summarization.tsv). Arguments, environment and tables in, a Plan out: it writes nothing, and reads
nothing but whether the data and checkpoints it names exist.
"""

from typing import List

from r3f_runs.plan import Plan, Run
from r3f_runs.settings import Settings, check_overrides, r3f_settings, require_dir, require_file, seeds_of
from r3f_runs.tables import Tables
from r3f_runs.values import die, fail, flag_value, json_value
from r3f_runs.vocabulary import SEQ2SEQ_CRITERION


def plan_summarization(args: List[str], settings: Settings, tables: Tables) -> Plan:
    if len(args) < 1:
        die("give a DATASET")
    dataset, args = args[0], args[1:]
    tsv = "summarization.tsv"
    header = tables.rows(tsv)[0]
    if dataset not in header[1:-1]:
        die(f"unknown DATASET {dataset}: choose cnn_dm, gigaword or reddit_tifu")
    data_bin = settings.env.get("DATA_BIN", "")
    require_dir("DATA_BIN", data_bin, "the bin/ folder written by preprocess/summarization.py")
    require_file("DATA_BIN", f"{data_bin}/train.source-target.source.bin",
                 f"not a binarised summarization set: run preprocess/summarization.py --dataset {dataset} first")
    if not settings.tiny:
        require_file("BART_PATH", settings.env.get("BART_PATH", ""),
                     "the BART-large checkpoint, model.pt of bart.large.tar.gz")
    settings.check_launch()
    notes = settings.notes
    settings.fp16_note(notes)
    launch, dist = settings.launch_prefix()
    shared = settings.shared_flags()
    names = ("arch max_tokens total_updates warmup_updates lr lr_scheduler optimizer adam_betas adam_eps dropout "
             "attention_dropout weight_decay clip_norm label_smoothing r3f_lambda r3f_lambda_grid r3f_kl_normalization "
             "noise_type noise_type_grid eps reference_gpus reference_update_freq").split()
    hp = {name: tables.get(tsv, name, dataset) for name in names}
    max_update, warmup = int(hp["total_updates"]), int(hp["warmup_updates"])
    tokens = int(hp["max_tokens"]) * int(hp["reference_gpus"]) * int(hp["reference_update_freq"])
    per_gpu = settings.per_gpu_batch(tokens)
    model = ["--arch", hp["arch"], "--finetune-from-model", settings.env.get("BART_PATH", "")]
    if settings.tiny:
        model = ["--arch", "bart_base", *tables.get("tiny.tsv", "seq2seq", "flags").split()]
        max_update, warmup, per_gpu = int(settings.tiny_updates), 1, 512
    elif per_gpu < 1024:
        die(f"{per_gpu} tokens per GPU step cannot hold a 1024-token article: lower UPDATE_FREQ (the effective batch "
            f"is {tokens} tokens)")
    normalization = settings.env.get("R3F_KL_NORMALIZATION") or hp["r3f_kl_normalization"]
    seeds = seeds_of(settings, 1)
    save_root = settings.text("SAVE_ROOT", "runs/summarization")
    r3f = r3f_settings(settings, True, hp.__getitem__)
    if normalization not in ("sentence", "token"):
        die(f"R3F_KL_NORMALIZATION={normalization}: choose sentence or token")
    sweeping = settings.sweep
    check_overrides(settings, "r3f", SEQ2SEQ_CRITERION, "translation", True, {
        "--r3f-lambda": ("LAMBDAS" if sweeping else "R3F_LAMBDA", r3f.lambdas),
        "--noise-type": ("NOISE_TYPES" if sweeping else "NOISE_TYPE", r3f.noise_types),
        "--eps": ("R3F_EPS", [r3f.eps])}, args, seq2seq=True)
    value = flag_value(args, "--r3f-kl-normalization")
    if value is not None and value != normalization:
        fail(f"--r3f-kl-normalization {value} contradicts the run's label ({normalization}): set "
             f"R3F_KL_NORMALIZATION={value} instead")
    configurations = len(r3f.lambdas) * len(r3f.noise_types)
    search = {"configurations": configurations, "sweep": settings.sweep}
    notes.append(f"# {dataset}: lr {hp['lr']}, {max_update} updates ({warmup} warm-up), {tokens} tokens per update = "
                 f"{settings.world_size} GPU(s) x {per_gpu} x update-freq {settings.update_freq}")
    plan = Plan("summarization", launch, notes=notes, overrides=list(args),
                swept=[k for k, v in (("r3f_lambda", r3f.lambdas), ("noise_type", r3f.noise_types)) if len(v) > 1])
    eps_named = float(r3f.eps) != float(r3f.table_eps)
    for noise in r3f.noise_types:
        for lam in r3f.lambdas:
            config = f"lambda{lam}_{noise}" + (f"_eps{r3f.eps}" if eps_named else "")
            if normalization != "sentence":
                config += f"_per_{normalization}"
            for seed in seeds:
                run_dir = f"{save_root}/{dataset}/{config}/seed{seed}"
                meta = {"dataset": dataset, "config": config, "seed": int(seed), "r3f_lambda": json_value(lam),
                        "noise_type": noise, "eps": json_value(r3f.eps), "r3f_kl_normalization": normalization,
                        "search": search}
                command = [
                    data_bin, "--task", "translation", "--source-lang", "source", "--target-lang", "target",
                    "--truncate-source", *model, "--layernorm-embedding", "--share-all-embeddings",
                    "--share-decoder-input-output-embed", "--criterion", SEQ2SEQ_CRITERION, "--label-smoothing",
                    hp["label_smoothing"], "--r3f-lambda", lam, "--noise-type", noise, "--eps", r3f.eps,
                    "--r3f-kl-normalization", normalization, "--dropout", hp["dropout"], "--attention-dropout",
                    hp["attention_dropout"], "--weight-decay", hp["weight_decay"], "--optimizer", hp["optimizer"],
                    "--adam-betas", hp["adam_betas"], "--adam-eps", hp["adam_eps"], "--clip-norm", hp["clip_norm"],
                    "--lr-scheduler", hp["lr_scheduler"], "--lr", hp["lr"], "--total-num-update", str(max_update),
                    "--max-update", str(max_update), "--warmup-updates", str(warmup), "--max-tokens", str(per_gpu),
                    "--skip-invalid-size-inputs-valid-test", "--seed", seed, "--save-dir", run_dir, *shared, *dist,
                    *args]
                plan.runs.append(Run(run_dir, command, meta, f"{save_root}/{dataset}", config, int(seed)))
    return plan
