"""A plan and what every planner builds it from: a run (its folder and fairseq-train arguments), the search
grid, the seeds, the batch split and the GLUE-style sentence-prediction command shared by GLUE, XNLI and the
probing drivers. Pure functions: no file is read or written here.
"""

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from r3f_runs.settings import R3FSettings, Settings
from r3f_runs.tables import Tables
from r3f_runs.values import fail, flag_value, json_value, quoted, same_value


@dataclass
class Run:
    dir: str
    command: List[str]          # fairseq-train's arguments, without the launcher
    label: Dict                 # run.json's label keys
    sweep_dir: str
    config: str
    seed: int


@dataclass
class Plan:
    recipe: str
    launch: List[str]
    runs: List[Run] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)   # lines for stderr, in order
    overrides: List[str] = field(default_factory=list)
    swept: List[str] = field(default_factory=list)
    env: Dict[str, str] = field(default_factory=dict)


@dataclass
class Axis:
    key: str
    flag: str
    name: str
    values: List[str]


def search_grid(settings: Settings, method: str, axes: List[Axis], args: Sequence[str], notes: List[str]):
    """The configurations of ``axes``: [(name, flags, labels)] and the search record. A setting the flags after
    METHOD give another value becomes that value, in the label and in the folder name, so that the label says
    what runs; a swept setting cannot be overridden. With SWEEP=1 a grid larger than SWEEP_SIZE keeps SWEEP_SIZE
    configurations evenly spaced over its list (configuration floor(k x size / SWEEP_SIZE))."""
    configs: List[Tuple[str, List[str], Dict]] = [("", [], {})]
    grid: Dict[str, List] = {}
    swept: List[str] = []
    for axis in axes:
        values, name = list(axis.values), axis.name
        if axis.flag:
            given = flag_value(args, axis.flag)
            if given is not None and not same_value(given, " ".join(values)):
                if len(values) > 1:
                    fail(f"{axis.flag} {given} overrides a setting SWEEP=1 searches ({axis.key}: {' '.join(values)}): "
                         f"drop it, or run without SWEEP=1")
                values = [given]
                if name == "!":
                    name = axis.flag[2:]
        if len(values) > 1:
            swept.append(axis.key)
        grid[axis.key] = [json_value(v) for v in values]
        new = []
        for config_name, flags, labels in configs:
            for value in values:
                new_name = config_name if name == "!" else (config_name + "_" if config_name else "") + name + value
                new_flags = flags + [axis.flag, value] if axis.flag else flags
                new.append((new_name, new_flags, {**labels, axis.key: json_value(value)}))
        configs = new
    size = len(configs)
    sweep_size = int(settings.sweep_size)
    if settings.sweep and size > sweep_size:
        configs = [configs[k * size // sweep_size] for k in range(sweep_size)]
        notes.append(f"# SWEEP_SIZE={sweep_size}: {sweep_size} of the {size} configurations of {method}'s grid, "
                     f"evenly spaced")
    configs = [(name or "default", flags, labels) for name, flags, labels in configs]
    search = {"configurations": len(configs), "grid": grid, "grid_size": size, "sweep": settings.sweep}
    return configs, search, swept


def epochs_of(updates: int, batch: int, size: int, cap: int = 0) -> str:
    e = updates * batch / size
    if cap > 0 and e > cap:
        e = cap
    return f"{e:.2f}"


def r3f_axes(r3f: R3FSettings) -> List[Axis]:
    eps_name = "!" if float(r3f.eps) == float(r3f.table_eps) else "eps"
    return [Axis("r3f_lambda", "--r3f-lambda", "lambda", r3f.lambdas), Axis("noise_type", "--noise-type", "",
                                                                             r3f.noise_types),
            Axis("eps", "--eps", eps_name, [r3f.eps])]


def sentence_model(settings: Settings, tables: Tables, arch: str, checkpoint_variable: str, max_update: int,
                   warmup: int, max_positions: str) -> Tuple[List[str], int, int, str]:
    """(--arch's value and the model flags after it, max update, warm-up updates, max positions) of a GLUE or
    XNLI run: the table's large model fine-tuned from the checkpoint that ``checkpoint_variable`` names
    (ROBERTA_PATH, XLMR_PATH) on the table's schedule; with TINY=1 the base-shaped tiny model of tiny.tsv,
    randomly initialised, for TINY_UPDATES updates (one of them warm-up) on 64 positions."""
    if not settings.tiny:
        return [arch, "--finetune-from-model", settings.env.get(checkpoint_variable, "")], max_update, warmup, \
            max_positions
    tiny = tables.get("tiny.tsv", "roberta", "flags").split()
    return [arch.replace("large", "base", 1), *tiny], int(settings.tiny_updates), 1, "64"


def split_batch(settings: Settings, batch: int) -> Tuple[int, int]:
    """(per-GPU batch, effective batch) of a table's sentence batch under BATCH_READING."""
    if settings.batch_reading == "per_gpu":
        return batch, batch * settings.world_size * int(settings.update_freq)
    return settings.per_gpu_batch(batch), batch


def sentence_prediction_command(data: str, task: str, num_classes: str, max_positions: str, model: List[str],
                                criterion: str, method_flags: List[str], values: Dict[str, str], max_update: int,
                                warmup: int, budget_flags: List[str], batch: int, valid: str, metric: str, seed: str,
                                run_dir: str, last: List[str], shorten: bool = True,
                                total_num_update: Optional[int] = None) -> List[str]:
    """One GLUE or XNLI fine-tuning run's fairseq-train arguments (``model``: --arch's value and the flags
    after it; ``method_flags``: the configuration's and the task's metric flags; ``last``: the shared,
    distributed and user flags). The released configurations give ``max_update`` 0 (no --max-update: the run
    ends at its --max-epoch), their own ``total_num_update`` and no --shorten-method."""
    return [data, "--task", task, "--num-classes", num_classes, "--init-token", "0", "--separator-token", "2",
            "--max-positions", max_positions, *(["--shorten-method", "truncate"] if shorten else []), "--arch",
            *model, "--criterion",
            criterion, *method_flags, "--dropout", values["dropout"], "--attention-dropout",
            values["attention_dropout"], "--weight-decay", values["weight_decay"], "--optimizer", "adam",
            "--adam-betas", values["adam_betas"], "--adam-eps", values["adam_eps"], "--clip-norm", values["clip_norm"],
            "--lr-scheduler", values["lr_scheduler"], "--total-num-update", str(total_num_update or max_update),
            "--warmup-updates", str(warmup), *(["--max-update", str(max_update)] if max_update else []),
            *budget_flags, "--batch-size", str(batch), "--max-tokens",
            values["max_tokens"], "--valid-subset", valid, "--best-checkpoint-metric", metric,
            "--maximize-best-checkpoint-metric", "--seed", seed, "--save-dir", run_dir, *last]


def sentence_runs(plan: Plan, prefix: str, configs, seeds: List[str], label: Dict, search: Dict, command) -> None:
    for name, config_flags, labels in configs:
        for seed in seeds:
            run_dir = f"{prefix}/{name}/seed{seed}"
            meta = {**label, "config": name, "seed": int(seed), **labels, "search": search}
            plan.runs.append(Run(run_dir, command(config_flags, seed, run_dir), meta, prefix, name, int(seed)))


def dry_run_text(plan: Plan) -> str:
    """What DRY_RUN=1 prints on stdout: every run's folder and command."""
    return "".join(f"# run: {run.dir}\n{quoted(plan.launch + run.command)}\n" for run in plan.runs)
