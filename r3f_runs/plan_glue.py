"""The GLUE planner (recipes/glue.sh): the paper's methods from glue.tsv, and the authors' released
configurations (``*-readme``, ``*-released``: glue_released.tsv; ``smart-released``). Arguments, environment and
tables in, a Plan out: it writes nothing, and reads nothing but whether the data and checkpoints it names exist.
"""

from typing import List

from r3f_runs.plan import (
    Axis, Plan, epochs_of, r3f_axes, search_grid, sentence_model, sentence_prediction_command, sentence_runs,
    split_batch,
)
from r3f_runs.settings import (
    R3FSettings, Settings, check_overrides, metric_flags_supported, r3f_settings, require_dir, require_file,
    seeds_of,
)
from r3f_runs.tables import Tables
from r3f_runs.values import die, fail, flag_value, same_value, words
from r3f_runs.vocabulary import GLUE_METHODS, GLUE_TASKS_ORDER, RXF_METHODS, SENTENCE_METHODS


def plan_glue(args: List[str], settings: Settings, tables: Tables) -> Plan:
    if len(args) < 2:
        die("give a TASK and a METHOD")
    task, method, args = args[0], args[1], args[2:]
    tasks_tsv, glue_tsv = "glue_tasks.tsv", "glue.tsv"
    if task not in tables.rows(tasks_tsv)[1]:
        die(f"unknown TASK {task}: choose {GLUE_TASKS_ORDER}")
    if method not in GLUE_METHODS:
        die(f"unknown METHOD {method}: choose std, std++, r3f, r4f, smart, freelb, or the authors' released "
            f"r3f-readme, r4f-readme, r3f-released, r4f-released (RTE), smart-released")
    data_dir = settings.env.get("DATA_DIR", "")
    data = f"{data_dir}/{task}-bin"
    require_dir("DATA_DIR", data_dir, "the output folder of preprocess/glue.py")
    require_file("DATA_DIR", f"{data}/input0/dict.txt", f"run preprocess/glue.py --tasks {task} first")
    require_file("DATA_DIR", f"{data}/label/{'train.label' if task == 'STS-B' else 'dict.txt'}",
                 f"run preprocess/glue.py --tasks {task} first")
    if not settings.tiny:
        require_file("ROBERTA_PATH", settings.env.get("ROBERTA_PATH", ""),
                     "the RoBERTa-large checkpoint, model.pt of roberta.large.tar.gz")
    if method in RXF_METHODS:
        return plan_glue_rxf_released(task, method, args, settings, tables, data)

    def task_value(column):
        return tables.get(tasks_tsv, task, column)

    def glue_value(row):
        return tables.get(glue_tsv, row, "value")

    seeds = seeds_of(settings, int(glue_value("seeds")))
    settings.sweep_size = settings.sweep_size or glue_value("sweep_size")
    uses_r3f = method in ("r3f", "r4f")
    r3f = r3f_settings(settings, uses_r3f, glue_value)
    settings.check_launch()
    notes = settings.notes
    settings.fp16_note(notes)
    criterion, fairseq_task, needs_sn = SENTENCE_METHODS[method]
    fairseq_task = fairseq_task or "sentence_prediction"
    arch = "roberta_sn_large" if needs_sn else "roberta_large"
    sweeping = "S" if settings.sweep else ""
    check_overrides(settings, method, criterion, fairseq_task, uses_r3f, {
        "--r3f-lambda": ("LAMBDAS" if sweeping else "R3F_LAMBDA", r3f.lambdas),
        "--noise-type": ("NOISE_TYPES" if sweeping else "NOISE_TYPE", r3f.noise_types),
        "--eps": ("R3F_EPS", [r3f.eps])}, args)
    launch, dist = settings.launch_prefix()
    shared = settings.shared_flags()
    num_classes, metric, train_size = task_value("num_classes"), task_value("metric"), int(task_value("train_size"))
    max_epoch = 0
    if method == "std":
        lr, max_update = task_value("std_lr"), int(task_value("std_max_update"))
        batch = int(task_value("std_batch_size"))
        warmup = int(task_value("std_warmup_updates"))
        weight_decay = glue_value("std_weight_decay")
        max_epoch = int(glue_value("std_max_epoch"))
        method_flags = ["--max-epoch", str(max_epoch)]
    else:
        lr, max_update, batch = task_value("lr"), int(task_value("max_update")), int(task_value("batch_size"))
        warmup = int(float(glue_value("warmup_ratio")) * max_update)
        weight_decay = glue_value("weight_decay")
        method_flags = []
    valid = task_value("valid_subsets")
    metric_flags = task_value("metric_flags")
    task_flags = [] if metric_flags == "-" else metric_flags_supported(metric_flags.split(), settings)
    per_gpu, effective = split_batch(settings, batch)
    max_positions = glue_value("max_positions")
    model, max_update, warmup, max_positions = sentence_model(settings, tables, arch, "ROBERTA_PATH", max_update,
                                                              warmup, max_positions)
    save_root = settings.text("SAVE_ROOT", "runs/glue")
    notes.append(f"# {task} {method}: lr {lr}, {max_update} updates ({warmup} warm-up), effective batch {effective} = "
                 f"{settings.world_size} GPU(s) x {per_gpu} x update-freq {settings.update_freq} "
                 f"(BATCH_READING={settings.batch_reading}): at most "
                 f"{epochs_of(max_update, effective, train_size, max_epoch)} epochs of {train_size}")
    values = {name: glue_value(name) for name in ("dropout", "attention_dropout", "adam_betas", "adam_eps", "clip_norm",
                                                   "lr_scheduler", "max_tokens")}

    def grid(key, flag, name, single, grid_row):
        if settings.sweep:
            return Axis(key, flag, name, words(glue_value(grid_row)))
        return Axis(key, flag, "!", [single])

    axes: List[Axis] = []
    if method in ("std", "std++"):
        axes.append(grid("lr", "--lr", "lr", lr, "std_lr_grid"))
    elif uses_r3f:
        axes += r3f_axes(r3f) + [Axis("lr", "--lr", "!", [lr])]
    elif method in ("smart", "smart-released"):
        # smart-released: glue.tsv's smart_released_* (mt-dnn's train.py defaults), the same budget and grid
        row = "smart_released_" if method == "smart-released" else "smart_"
        if method == "smart-released":
            axes.append(Axis("smart_variant", "--smart-variant", "!", [glue_value("smart_released_variant")]))
        axes.append(grid("smart_lambda", "--smart-lambda", "lambda", glue_value(row + "lambda"), "smart_lambda_grid"))
        axes.append(grid("lr", "--lr", "lr", lr, "smart_lr_grid"))
        for name in ("steps", "step_size", "eps", "init", "norm"):
            axes.append(Axis(f"smart_{name}", f"--smart-{name.replace('_', '-')}", "!", [glue_value(row + name)]))
    else:
        # single runs: the task's published FreeLB settings (freelb_tasks.tsv); SWEEP=1: glue.tsv's grids
        published = {"steps": "adv_steps", "step_size": "adv_lr", "init_mag": "init_mag", "max_norm": "max_norm"}
        for name in ("steps", "step_size", "init_mag", "max_norm"):
            axes.append(grid(f"freelb_{name}", f"--freelb-{name.replace('_', '-')}", name.replace("_", ""),
                             tables.get("freelb_tasks.tsv", task, published[name]), f"freelb_{name}_grid"))
        axes.append(Axis("freelb_norm", "--freelb-norm", "!", [glue_value("freelb_norm")]))
        axes.append(Axis("lr", "--lr", "!", [lr]))
    if not uses_r3f:  # labels without a flag: no R3F term
        axes += [Axis("r3f_lambda", "", "!", ["0"]), Axis("noise_type", "", "!", ["none"])]
    configs, search, swept = search_grid(settings, method, axes, args, notes)
    label = {"task": task, "method": method, "metric": metric, "valid_subsets": valid,
             "batch_reading": settings.batch_reading, "effective_batch": effective}

    def command(config_flags, seed, run_dir):
        return sentence_prediction_command(
            data, fairseq_task, num_classes, max_positions, model, criterion,
            [*config_flags, *task_flags], {**values, "weight_decay": weight_decay}, max_update, warmup, method_flags,
            per_gpu, valid, metric, seed, run_dir, [*shared, *dist, *args])

    plan = Plan("glue", launch, notes=notes, overrides=list(args), swept=swept)
    sentence_runs(plan, f"{save_root}/{task}/{method}", configs, seeds, label, search, command)
    return plan


def plan_glue_rxf_released(task: str, method: str, args: List[str], settings: Settings, tables: Tables,
                           data: str) -> Plan:
    """METHOD r3f-readme / r4f-readme / r3f-released / r4f-released: the command of fairseq's
    examples/rxf/README.md, every value from hparams/glue_released.tsv (r4f-* on fairseq's out_proj-only head;
    *-released with --noise-type none, the computation of the released code, whose noise never reached RoBERTa's
    encoder). It exists for RTE only; flags the README leaves out are left out (no --max-update: the run ends at
    --max-epoch; no --shorten-method, except on TINY=1's 64 positions)."""
    tsv = "glue_released.tsv"

    def value(row):
        return tables.get(tsv, row, method)

    paper = method[:3]
    if task != value("task"):
        die(f"{method} is the authors' released command for {value('task')} only (fairseq examples/rxf/README.md); "
            f"none was released for {task}: run METHOD {paper} (the paper's tables) there")
    if settings.sweep:
        die(f"SWEEP=1: {method} is one released configuration, not a search; run it without SWEEP=1 (or search "
            f"with METHOD {paper})")
    for variable in ("R3F_LAMBDA", "NOISE_TYPE", "R3F_EPS", "LAMBDAS", "NOISE_TYPES"):
        if settings.env.get(variable):
            die(f"{variable}={settings.env[variable]} would change {method}'s released command ({tables.path(tsv)}): "
                f"unset it, or run METHOD {paper}")
    seeds = seeds_of(settings, int(value("seeds")))
    settings.sweep_size = settings.sweep_size or "1"
    settings.check_launch()
    notes = settings.notes
    settings.fp16_note(notes)
    criterion, _, head = SENTENCE_METHODS[method]
    r3f = R3FSettings([value("r3f_lambda")], [value("noise_type")], value("eps"), value("eps"))
    for name, released in (("--r3f-lambda", value("r3f_lambda")), ("--noise-type", value("noise_type")),
                           ("--eps", value("eps"))):
        given = flag_value(args, name)
        if given is not None and not same_value(given, released):
            fail(f"{name} {given} changes {method}'s released command ({name} {released}, {tables.path(tsv)}): drop "
                 f"it, or run METHOD {paper} with that setting")
    check_overrides(settings, method, criterion, "sentence_prediction", True, {
        "--r3f-lambda": ("R3F_LAMBDA", r3f.lambdas), "--noise-type": ("NOISE_TYPE", r3f.noise_types),
        "--eps": ("R3F_EPS", [r3f.eps])}, args)
    launch, dist = settings.launch_prefix()
    shared = settings.shared_flags()
    per_gpu, effective = split_batch(settings, int(value("batch_size")))
    total, max_epoch = value("total_num_update"), value("max_epoch")
    # max_update 0: none, the README's run ends at --max-epoch
    model, max_update, warmup, max_positions = sentence_model(settings, tables, value("arch"), "ROBERTA_PATH", 0,
                                                              int(value("warmup_updates")), value("max_positions"))
    if settings.tiny:
        total = settings.tiny_updates
    train_size = int(tables.get("glue_tasks.tsv", task, "train_size"))
    notes.append(f"# {task} {method} (fairseq examples/rxf/README.md, {value('computation')}; not the paper's "
                 f"{paper}): --noise-type {value('noise_type')}, lr {value('lr')}, "
                 f"{total} updates planned by the schedule ({warmup} warm-up), ending at {max_epoch} epochs; "
                 f"effective batch {effective} = {settings.world_size} GPU(s) x {per_gpu} x update-freq "
                 f"{settings.update_freq} (BATCH_READING={settings.batch_reading}): "
                 f"{epochs_of(int(total), effective, train_size)} epochs of {train_size} at {total} updates")
    axes = r3f_axes(r3f) + [Axis("lr", "--lr", "!", [value("lr")])]
    configs, search, swept = search_grid(settings, method, axes, args, notes)
    metric = value("metric")
    label = {"task": task, "method": method, "metric": metric, "valid_subsets": "valid",
             "batch_reading": settings.batch_reading, "effective_batch": effective,
             "released": f"fairseq examples/rxf/README.md, {value('computation')} ({tables.path(tsv)})"}

    values = {name: value(name) for name in ("dropout", "attention_dropout", "weight_decay", "adam_betas",
                                              "adam_eps", "clip_norm", "lr_scheduler", "max_tokens")}

    def command(config_flags, seed, run_dir):
        return sentence_prediction_command(
            data, "sentence_prediction", value("num_classes"), max_positions, model, criterion,
            config_flags, values, max_update, warmup, ["--max-epoch", max_epoch, *value("flags").split()],
            per_gpu, "valid", metric, seed, run_dir, [*shared, *dist, *args], shorten=settings.tiny,
            total_num_update=int(total))

    plan = Plan("glue", launch, notes=notes, overrides=list(args), swept=swept)
    sentence_runs(plan, f"{settings.text('SAVE_ROOT', 'runs/glue')}/{task}/{method}", configs, seeds, label, search,
                  command)
    return plan
