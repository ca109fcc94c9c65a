"""fairseq-hydra-train's runs of the plugin's configs, through the same launch, record and verify steps.

fairseq-hydra-train composes a config and trains it in one process: there is no argument list to plan. The
plugin's hydra module (hydra_plugins/fairseq_r3f_plugin) hands the composed config of one of the plugin's
configs to ``launch_composed``: the run folder is checkpoint.save_dir, the planned configuration is the composed
config's, and the label comes from what the config composed to. fairseq's log lines also go to the folder's
train.log, in fairseq's format, which the tables read.
"""

import contextlib
import logging
import os
import sys
from typing import Callable, Dict, Iterator, List, Mapping, Optional, Sequence

from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf, open_dict, read_write

from r3f_runs.configuration import configuration_of_composed, configuration_differences, effective_configuration
from r3f_runs.folder import (
    DONE_FILE, LABEL_FILE, LOG_FILE, read_json_file, run_lock, write_json_atomic, write_text_atomic,
)
from r3f_runs.identity import versions
from r3f_runs.launching import train_verify_and_finish
from r3f_runs.tables import Tables, hydra_config_family
from r3f_runs.values import fail, now_iso, quoted
from r3f_runs.vocabulary import (
    HYDRA_CONFIG_METHODS, HYDRA_SUMMARIZATION_DATASETS, OUTPROJ_HEAD, SEQ2SEQ_CRITERION, head_of_arch,
)


# fairseq's own log format, which the tables read train.log in (fairseq_cli/train.py, fairseq.utils.reset_logging)
FAIRSEQ_LOG_FORMAT = "%(asctime)s | %(levelname)s | %(name)s | %(message)s"


def _first(value):
    """A one-item list's item (an OmegaConf ListConfig too); anything else as it is."""
    if value is not None and not isinstance(value, (str, bytes)) and hasattr(value, "__len__"):
        return value[0] if len(value) == 1 else list(value)
    return value


def hydra_label(cfg, config_name: str, tables: Optional[Tables] = None) -> Dict:
    """run.json's label of a fairseq-hydra-train run of the plugin's config ``config_name``, from the composed
    config ``cfg`` (what will run): the method from its criterion and head, checked against the config's name;
    the GLUE task from the name, checked against the composed number of classes and the data folder's name."""
    tables = tables or Tables()
    family, name_method = hydra_config_family(config_name) or ("", "")
    criterion = str(cfg.criterion._name)
    arch = str(cfg.model._name)
    common = {"config": config_name, "seed": int(cfg.common.seed),
              "search": {"configurations": 1, "grid": {}, "grid_size": 1, "sweep": False}}
    r3f_values = {key: cfg.criterion[key] for key in ("r3f_lambda", "noise_type", "eps") if key in cfg.criterion}
    if family in HYDRA_SUMMARIZATION_DATASETS:
        if criterion != SEQ2SEQ_CRITERION:
            fail(f"criterion._name={criterion}: {config_name} trains {SEQ2SEQ_CRITERION}; drop the override")
        return {"dataset": family, **common, **r3f_values,
                "r3f_kl_normalization": cfg.criterion.get("r3f_kl_normalization")}
    head = head_of_arch(arch)
    if head == OUTPROJ_HEAD:
        fail(f"model._name={arch} is fairseq's released out_proj-only head, not {config_name}'s: drop it")
    method = {"sentence_prediction": "std" if family == "xnli" else "std++",
              "sentence_prediction_r3f": "r4f" if head else "r3f"}.get(criterion)
    if method is None or (head and method != "r4f"):
        fail(f"criterion._name={criterion} with model._name={arch} is none of the methods of the plugin's configs "
             f"(std/std++: sentence_prediction; r3f: sentence_prediction_r3f; r4f: the same on an *_sn_* model): "
             f"run {config_name} as it is, or the recipes for other methods")
    if method != HYDRA_CONFIG_METHODS[name_method]:
        fail(f"{config_name} composed to {method} (criterion._name={criterion}, model._name={arch}), not "
             f"{HYDRA_CONFIG_METHODS[name_method]}: drop the overrides that change the method, or run the config of "
             f"the method you mean")
    if family == "xnli":
        task = "XNLI"
    else:
        known = {t.lower().replace("-", "_"): t for t in tables.rows("glue_tasks.tsv")[1]}
        if family not in known:
            fail(f"{config_name}: no GLUE task {family!r} in {tables.path('glue_tasks.tsv')}")
        task = known[family]
        classes = tables.get("glue_tasks.tsv", task, "num_classes")
        if int(cfg.task.num_classes) != int(classes):
            fail(f"task.num_classes={cfg.task.num_classes}: {task} has {classes} classes; drop the override (the "
                 f"tables would list the run as {task})")
        data = os.path.basename(os.path.normpath(str(cfg.task.data)))
        other = {f"{t}-bin": t for t in known.values()}.get(data)
        if other is not None and other != task:
            fail(f"task.data={cfg.task.data} holds {other}, and {config_name} is {task}: give {task}'s data, or "
                 f"run {other.lower().replace('-', '_')}_{name_method}")
    batch = cfg.dataset.batch_size
    world = int(cfg.distributed_training.distributed_world_size or 1)
    update_freq = int(_first(cfg.optimization.update_freq) or 1)
    if not r3f_values:  # as the recipes label a method without the R3F term
        r3f_values = {"r3f_lambda": 0, "noise_type": "none"}
    return {"task": task, "method": method, "metric": str(cfg.checkpoint.best_checkpoint_metric),
            "valid_subsets": str(cfg.dataset.valid_subset), "batch_reading": "effective",
            "effective_batch": None if batch is None else int(batch) * world * update_freq,
            **common, **r3f_values, "lr": _first(cfg.optimization.lr)}


TRAIN_LOG_HANDLER = "fairseq_r3f_train_log"


def _add_to_hydra_job_logging(path: str) -> Callable[[], None]:
    """Adds a handler of ``path`` on fairseq's loggers to Hydra's job logging config, and returns what undoes it.
    fairseq-hydra-train hands that config to fairseq-train (cfg.job_logging_cfg), which applies it in its first
    worker: with distributed_training.distributed_world_size > 1 a spawned process, which only logs what that
    config says. (With common.reset_logging=true fairseq hands no config over.)"""
    if not HydraConfig.initialized() or HydraConfig.get().get("job_logging") is None:
        return lambda: None
    node = HydraConfig.get().job_logging
    previous = {key: OmegaConf.to_container(node[key]) if key in node else None
                for key in ("formatters", "handlers", "loggers")}
    with read_write(node), open_dict(node):
        node.formatters = {**(previous["formatters"] or {}),
                           TRAIN_LOG_HANDLER: {"format": FAIRSEQ_LOG_FORMAT, "datefmt": "%Y-%m-%d %H:%M:%S"}}
        node.handlers = {**(previous["handlers"] or {}), TRAIN_LOG_HANDLER: {
            "class": "logging.FileHandler", "formatter": TRAIN_LOG_HANDLER, "filename": path, "encoding": "utf-8"}}
        loggers = dict(previous["loggers"] or {})
        for name in ("fairseq", "fairseq_cli"):
            entry = dict(loggers.get(name) or {})
            entry["handlers"] = [*(entry.get("handlers") or []), TRAIN_LOG_HANDLER]
            loggers[name] = entry
        node.loggers = loggers

    def undo():
        with read_write(node), open_dict(node):
            for key, value in previous.items():
                if value is None:
                    node.pop(key, None)
                else:
                    node[key] = value

    return undo


@contextlib.contextmanager
def _train_log(path: str) -> Iterator[None]:
    """Appends fairseq's log lines (its json records and checkpoint messages) to ``path`` in fairseq-train's format,
    whatever Hydra does with the console: a handler on fairseq's loggers, which Hydra's logging setup and fairseq's
    reset_logging (both of the root logger only) leave alone, and the same handler in Hydra's job logging config,
    which fairseq-train applies in its first worker."""
    path = os.path.abspath(path)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter(FAIRSEQ_LOG_FORMAT, datefmt="%Y-%m-%d %H:%M:%S"))
    loggers = [logging.getLogger(name) for name in ("fairseq", "fairseq_cli")]
    for logger in loggers:
        logger.addHandler(handler)
    undo = _add_to_hydra_job_logging(path)
    try:
        yield
    finally:
        undo()
        for logger in loggers:  # this one, and those fairseq-train made from Hydra's config
            for found in list(logger.handlers):
                if found is handler or getattr(found, "baseFilename", None) == path:
                    logger.removeHandler(found)
                    found.close()
        handler.close()


def _job_overrides(argv: Sequence[str]) -> List[str]:
    """This job's overrides as Hydra records them (under --multirun, the job's values, not the sweep's lists);
    the command line's when Hydra has none."""
    try:
        if HydraConfig.initialized():
            return [str(item) for item in HydraConfig.get().overrides.task]
    except (AttributeError, KeyError):
        pass
    return [arg for arg in argv if "=" in arg and not arg.startswith("-")]


def launch_composed(cfg, train: Callable, config_name: str, argv: Sequence[str], env: Optional[Mapping] = None):
    """One fairseq-hydra-train run of the plugin's config ``config_name`` through the run layer; ``train(cfg)``
    is fairseq-hydra-train's own training (its _hydra_main). The run folder checkpoint.save_dir is locked for
    the whole launch; run.json (label, the command line, the planned configuration), versions.json and
    command.sh are written before training, train.log gets a ``# TIME start`` line and fairseq's records; after
    training the checkpoint is verified against the plan, identity.json written, then ``done``. A folder whose
    recorded plan differs is refused naming the field; a done run is not trained again; a checkpoint at its
    planned end is not trained one update further. Returns what ``train`` returns (None when nothing trained)."""
    env = os.environ if env is None else env
    if int(env.get("WORLD_SIZE") or 1) > 1 or int(env.get("SLURM_NTASKS") or 1) > 1:
        fail("fairseq-hydra-train of the plugin's configs runs as one process (its run folder is locked and "
             "recorded by it): set distributed_training.distributed_world_size=N for N GPUs of one machine, or use "
             "the recipes (LAUNCHER=torchrun / slurm) for several processes or machines")
    label = hydra_label(cfg, config_name)
    planned = effective_configuration(configuration_of_composed(cfg))
    if int(cfg.distributed_training.distributed_world_size or 1) > 1 and cfg.common.reset_logging:
        print("note: with common.reset_logging=true fairseq's workers (one per GPU) log to the console only: this "
              "run's train.log gets no records, and the tables will list it as truncated; drop the override",
              file=sys.stderr)
    run_dir = os.path.abspath(str(cfg.checkpoint.save_dir))
    label_path, done_path = os.path.join(run_dir, LABEL_FILE), os.path.join(run_dir, DONE_FILE)
    os.makedirs(run_dir, exist_ok=True)
    with run_lock(run_dir, "fairseq-hydra-train"):
        if os.path.exists(label_path):
            recorded = read_json_file(label_path, "what the run is")
            recorded = recorded if isinstance(recorded, dict) else {}
            differing = [f"{key}: {recorded.get(key)!r} recorded, {label.get(key)!r} now"
                         for key in ("task", "dataset", "method", "seed") if recorded.get(key) != label.get(key)]
            if recorded.get("recipe", "hydra") != "hydra":
                differing.insert(0, f"a run of recipes/{recorded['recipe']}.sh, not of fairseq-hydra-train")
            if not differing:
                keys = configuration_differences(recorded.get("planned_configuration") or {}, planned)
                differing = [f"{key}: {(recorded.get('planned_configuration') or {}).get(key)!r} recorded, "
                             f"{planned.get(key)!r} now" for key in keys[:1]]
            if differing:
                fail(f"{run_dir} holds a run of another plan ({differing[0]}; see {label_path}): launch it with the "
                     f"overrides it was started with, or give another checkpoint.save_dir (or delete the folder)")
        if os.path.exists(done_path):
            print(f"skip {run_dir}: already done (delete the folder to run it again)", file=sys.stderr)
            return None
        command = ["fairseq-hydra-train", *argv]
        write_json_atomic(label_path, {**label, "recipe": "hydra", "command": command,
                                       "overrides": _job_overrides(argv), "swept": [],
                                       "planned_configuration": planned})
        write_text_atomic(os.path.join(run_dir, "command.sh"), quoted(command) + "\n")
        write_json_atomic(os.path.join(run_dir, "versions.json"), versions())

        def train_in_this_process():
            log_path = os.path.join(run_dir, LOG_FILE)
            with open(log_path, "a", encoding="utf-8") as log:
                log.write(f"# {now_iso()} start\n")
            with _train_log(log_path):
                return train(cfg)

        max_update = int(cfg.optimization.max_update or 0)
        return train_verify_and_finish(run_dir, planned, ["--max-update", str(max_update)], train_in_this_process)
