"""What a run folder is: the versions it ran with, and the method it actually trained, read from its checkpoint.

    python -m fairseq_r3f.runs versions         prints the plugin, fairseq and torch versions and the git commit
    python -m fairseq_r3f.runs identify RUN_DIR  writes RUN_DIR/identity.json from RUN_DIR/checkpoint_last.pt
    python -m fairseq_r3f.runs status RUN_DIR    prints whether the run finished (see run_status), and why not

A recipe writes its label of a run (``run.json``: task, method, lambda, noise type, ...) before the run starts;
what ran is whatever fairseq-train was finally given. ``identify`` reads the configuration fairseq saved in the
checkpoint (architecture, criterion and its settings, seed), writes it as ``identity.json``, and exits with
status 2 and one line naming every disagreement when it contradicts ``run.json`` -- e.g. an ``r4f`` label on a
run trained with a plain classification head. The results tables refuse such runs. identity.json also holds the
run's effective configuration (``effective_configuration``: every saved setting that can change a number), by
which the tables group runs, and the update the checkpoint was saved at, by which ``run_status`` tells a
finished run from an unfinished or truncated one.

The methods and what each needs: ``std`` and ``std++`` the plain ``sentence_prediction`` criterion; ``r3f``
``sentence_prediction_r3f`` on an architecture without the spectrally normalised head; ``r4f`` the same
criterion on one of the plugin's SN architectures (``roberta_sn_*``, ``bart_sn_*``); ``smart`` the
``sentence_prediction_smart`` criterion; ``freelb`` the ``sentence_prediction_freelb`` criterion and task; the
authors' released configurations ``r3f-released`` (a plain head), ``r4f-released`` (fairseq's out_proj-only
head, ``roberta_sn_outproj_*``, which no other method may have) and ``smart-released``; a
summarization run (its label names a ``dataset``) ``label_smoothed_cross_entropy_r3f``. Every setting the label
states (lambda, noise type, eps, the SMART/FreeLB settings, the seed) must equal the checkpoint's.
"""

import argparse
import ast
import json
import math
import os
import subprocess
import sys
from typing import Any, Dict, List, Optional, Sequence, Tuple

from fairseq_r3f.launch import OUTPROJ_HEAD, SENTENCE_METHODS
from fairseq_r3f.tools import USER_DIR

IDENTITY_FILE = "identity.json"
LABEL_FILE = "run.json"
CHECKPOINT = "checkpoint_last.pt"
DONE_FILE = "done"
PLAN_FILE = "plan.json"
LOG_FILE = "train.log"
# run_status's answers; only "finished" runs enter a table.
STATUSES = ("finished", "unfinished", "truncated", "failed", "foreign")

# method -> (criterion, fairseq task or None for any, needs the plugin's spectrally normalised head)
METHOD_NEEDS = SENTENCE_METHODS  # the run layer's map (fairseq_r3f/launch.py), which the recipes plan with
SUMMARIZATION_CRITERION = "label_smoothed_cross_entropy_r3f"
# The plugin's models whose classification head is spectrally normalised (R4F).
SN_MODELS = ("roberta_sn", "bart_sn")
# The plugin's models with fairseq's released head (out_proj only normalised): r4f-released, never r4f.
OUTPROJ_SN_MODELS = ("roberta_sn_outproj", "bart_sn_outproj")
# Criterion settings identity() records, besides every smart_* and freelb_* option.
CRITERION_SETTINGS = ("r3f_lambda", "noise_type", "eps", "r3f_kl_normalization")


class RunError(Exception):
    pass


def git_commit(folder: str = USER_DIR) -> Optional[str]:
    """The commit of the git checkout the plugin is imported from ("+dirty" when tracked files are modified);
    None for an installed copy (a package inside some other repository is not that repository's code)."""
    def git(*args):
        return subprocess.run(["git", "-C", folder, *args], capture_output=True, text=True)

    try:
        top = git("rev-parse", "--show-toplevel")
    except OSError:  # no git on this machine
        return None
    if top.returncode != 0 or os.path.realpath(os.path.join(top.stdout.strip(), "fairseq_r3f")) != os.path.realpath(
            folder):
        return None
    commit = git("rev-parse", "HEAD").stdout.strip() or None
    if commit and git("status", "--porcelain", "--untracked-files=no").stdout.strip():
        commit += "+dirty"
    return commit


def versions() -> Dict[str, Optional[str]]:
    import fairseq
    import torch

    import fairseq_r3f

    return {"fairseq_r3f": fairseq_r3f.__version__, "fairseq": fairseq.__version__, "torch": torch.__version__,
            "git_commit": git_commit()}


def _saved_config(checkpoint_path: str) -> Dict:
    import fairseq_r3f  # noqa: F401  (registers the plugin's names and allows fairseq's checkpoint classes)
    from fairseq_r3f.checkpoints import load_checkpoint

    if not os.path.isfile(checkpoint_path):
        raise RunError(f"{checkpoint_path}: no such checkpoint")
    try:
        state = load_checkpoint(checkpoint_path)  # memory-mapped where torch can: the weights stay on disk
    except Exception as error:
        raise RunError(f"{checkpoint_path}: not a readable checkpoint ({type(error).__name__}: {error})") from error
    if state.get("cfg") is None:  # written by fairseq < 0.10 (an argparse.Namespace): fairseq upgrades it
        from fairseq import checkpoint_utils

        state = checkpoint_utils.load_checkpoint_to_cpu(checkpoint_path)
    cfg = state["cfg"]
    history = state.get("optimizer_history") or [{}]
    return {"cfg": cfg, "num_updates": history[-1].get("num_updates"),
            "epoch": (state.get("extra_state") or {}).get("train_iterator", {}).get("epoch")}


def _stat(path: str) -> List[int]:
    info = os.stat(path)
    return [info.st_size, info.st_mtime_ns]


def read_json(path: str) -> Any:
    """A run folder's JSON file; a damaged one is a RunError naming it."""
    try:
        with open(path) as f:
            return json.load(f)
    except json.JSONDecodeError as error:
        raise RunError(f"{path} is damaged (not JSON: {error}): restore it, or delete the run folder and run it "
                       f"again") from None


def _as_dict(section) -> Dict:
    """A section of a saved fairseq config: a dict, or for models with legacy arguments an argparse.Namespace."""
    if isinstance(section, argparse.Namespace):
        return vars(section)
    return dict(section or {})


def identity(checkpoint_path: str) -> Dict:
    """What trained the checkpoint, from the configuration fairseq saved in it."""
    from fairseq.models import ARCH_MODEL_NAME_REGISTRY

    saved = _saved_config(checkpoint_path)
    cfg = saved["cfg"]
    model, criterion, task = (_as_dict(cfg.get(key)) for key in ("model", "criterion", "task"))
    arch = model.get("_name") or model.get("arch")
    result = {
        "checkpoint": os.path.abspath(checkpoint_path),
        "task": task.get("_name"),
        "arch": arch,
        "spectral_norm_head": ARCH_MODEL_NAME_REGISTRY.get(arch) in SN_MODELS,
        "outproj_spectral_norm_head": ARCH_MODEL_NAME_REGISTRY.get(arch) in OUTPROJ_SN_MODELS,
        # fairseq's own option (RoBERTa): torch's spectral norm on the head's output projection only
        "fairseq_spectral_norm_classification_head": bool(model.get("spectral_norm_classification_head", False)),
        "criterion": criterion.get("_name"),
        "seed": _as_dict(cfg.get("common")).get("seed"),
        "num_updates": saved["num_updates"],
        "epoch": saved["epoch"],
        # which file this was read from: a later checkpoint_last.pt makes the identity stale
        "checkpoint_stat": _stat(checkpoint_path),
        "configuration": effective_configuration(cfg),
    }
    for key, value in criterion.items():
        if key in CRITERION_SETTINGS or key.startswith(("smart_", "freelb_")):
            result[key] = value
    return result


# -- the effective configuration ----------------------------------------------------------------------------------
#
# Two runs are one configuration when every cfg field that can change a number is equal. The sections and fields
# that cannot (paths, logging, the seed, the device, the data loader's workers, how generation would be run later)
# are left out; everything else is in, so that a setting nobody thought of still splits a table's cells.

# Sections taken whole (minus LEFT_OUT); the checkpoint section contributes only CHECKPOINT_FIELDS.
CONFIGURATION_SECTIONS = ("model", "criterion", "task", "optimization", "optimizer", "lr_scheduler", "dataset", "ema")
# Fields of the common section that change numbers: the floating-point precision and its loss scaling.
PRECISION_FIELDS = (
    "fp16", "bf16", "memory_efficient_fp16", "memory_efficient_bf16", "amp", "fp16_init_scale", "fp16_scale_window",
    "fp16_scale_tolerance", "min_loss_scale", "threshold_loss_scale", "amp_init_scale", "amp_scale_window",
    "amp_batch_retries", "on_cpu_convert_precision", "fp16_no_flatten_grads",
)
# How a run starts (from a pretrained model or from scratch) and what decides its validations and its end.
CHECKPOINT_FIELDS = (
    "reset_dataloader", "reset_lr_scheduler", "reset_meters", "reset_optimizer", "optimizer_overrides",
    "best_checkpoint_metric", "maximize_best_checkpoint_metric", "patience", "save_interval", "save_interval_updates",
)
LEFT_OUT = {
    # how the model is sharded and which activations are recomputed: memory, not numbers (fairseq's
    # build_model fills min_params_to_wrap in, so a checkpoint has it where the parsed arguments do not)
    "model": {"min_params_to_wrap", "checkpoint_activations", "offload_activations"},
    # paths, and the seed (a table's cell pools seeds)
    "task": {"data", "seed"},
    "ema": {"ema_seed_model"},
    # the per-GPU batch, the world size and update_freq enter as their product (dataset.effective_batch_size)
    "dataset": {"num_workers", "data_buffer_size", "dataset_impl", "batch_size", "max_tokens", "batch_size_valid",
                "max_tokens_valid", "gen_subset", "num_shards", "shard_id", "ignore_unused_valid_subsets"},
    "optimization": {"update_freq", "stop_time_hours", "debug_param_names"},
    # copies of optimization.lr, and the device
    "optimizer": {"lr", "tpu"},
    "lr_scheduler": {"lr"},
}
# Names of components (each has its own section) and fairseq's architecture key, in a legacy model's namespace.
COMPONENT_KEYS = {"arch", "task", "criterion", "optimizer", "lr_scheduler", "tokenizer", "bpe", "scoring"}


def _plain(value: Any) -> Any:
    """A cfg value as plain JSON: OmegaConf containers and namespaces as lists and dicts, tuples as lists, a string
    that fairseq evaluates ("(0.9, 0.98)", "{}") as its value, integral floats as ints (a yaml 0 and a command line
    0.0 are one value), and nan/inf as the strings "nan", "inf", "-inf" (they stay equal to themselves)."""
    from omegaconf import DictConfig, ListConfig, OmegaConf

    if isinstance(value, (DictConfig, ListConfig)):
        value = OmegaConf.to_container(value, resolve=True)
    if isinstance(value, argparse.Namespace):
        value = vars(value)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in sorted(value.items(), key=lambda item: str(item[0]))}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return int(value) if value.is_integer() and abs(value) < 2 ** 53 else value
    if isinstance(value, str):
        if value[:1] in "([{":
            try:
                return _plain(ast.literal_eval(value))
            except (ValueError, SyntaxError):
                pass
        return value
    return str(value)


def _section_dict(cfg, name: str) -> Dict:
    section = cfg.get(name) if hasattr(cfg, "get") else getattr(cfg, name, None)
    if section is None:
        return {}
    return _plain(section)


def _other_section_keys(cfg) -> set:
    """Every field name of the cfg's sections other than the model: in a legacy model's namespace (fairseq copies
    all arguments into it) these belong to their own section."""
    from fairseq.dataclass.configs import FairseqConfig

    keys = set()
    for name, field in FairseqConfig.__dataclass_fields__.items():
        if name == "model":
            continue
        fields = getattr(field.type, "__dataclass_fields__", None)
        if fields:
            keys |= set(fields)
        keys |= set(_section_dict(cfg, name))
    return keys


def _model_fields(cfg) -> Dict:
    """The model's settings. A legacy architecture (RoBERTa, BART) keeps them in a namespace of every argument, or
    -- from a hydra config -- in a dict of the given ones: both are completed with the model's argument defaults
    and its architecture function, as fairseq does when it builds the model, and reduced to the model's own keys."""
    from fairseq.models import ARCH_CONFIG_REGISTRY, ARCH_MODEL_REGISTRY

    model = _section_dict(cfg, "model")
    arch = model.get("_name") or model.get("arch")
    other = _other_section_keys(cfg)
    model_class = ARCH_MODEL_REGISTRY.get(arch)
    if model_class is not None and getattr(model_class, "__dataclass", None) is None and arch in ARCH_CONFIG_REGISTRY:
        defaults = {}
        # as fairseq's parse_args_and_arch: an option not given is absent, so the architecture's default applies
        parser = argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS)
        try:
            model_class.add_args(parser)
            defaults = vars(parser.parse_args([]))
        except (Exception, SystemExit):  # noqa: BLE001 (arguments that need fairseq's full parser: none added)
            pass
        namespace = argparse.Namespace(**{**defaults, **model})
        ARCH_CONFIG_REGISTRY[arch](namespace)
        from fairseq.models.transformer import TransformerModel
        from fairseq.models.transformer.transformer_legacy import base_architecture

        if issubclass(model_class, TransformerModel):  # its build_model completes the arguments once more
            base_architecture(namespace)
        model = _plain(vars(namespace))
    fields = {key: value for key, value in model.items() if key not in other and key not in COMPONENT_KEYS
              and key != "_name" and key not in LEFT_OUT["model"] and not _is_path_key(key)}
    fields["_name"] = arch
    return fields


def _is_path_key(key: str) -> bool:
    return key in ("data", "save_dir", "user_dir", "restore_file", "finetune_from_model") or key.endswith(
        ("_path", "_dir", "_file", "_checkpoint"))


def effective_configuration(cfg) -> Dict[str, Any]:
    """Every setting of a fairseq cfg (saved in a checkpoint, or from ``configuration_from_args``) that can change
    a number, flattened as "section.field" with plain JSON values. Left out: paths, logging, the seed, the device,
    data loading workers, and generation/evaluation settings training does not use. The batch enters as the
    effective batch only (per-GPU batch x world size x update_freq): one GPU with update_freq 4 and four GPUs
    with update_freq 1 are one configuration."""
    if isinstance(cfg, argparse.Namespace):  # a checkpoint of fairseq < 0.10
        from fairseq.dataclass.utils import convert_namespace_to_omegaconf

        cfg = convert_namespace_to_omegaconf(cfg)
    result = {}
    for section in CONFIGURATION_SECTIONS:
        values = _model_fields(cfg) if section == "model" else _section_dict(cfg, section)
        for key, value in values.items():
            if key in LEFT_OUT.get(section, ()) or (section != "model" and _is_path_key(key)):
                continue
            if section == "ema" and not _section_dict(cfg, "ema").get("store_ema"):
                continue  # no EMA: its settings change nothing
            if key == "_name" and value is None:
                continue  # a section that is not a choice of component
            result[f"{section}.{key}"] = value
    common = _section_dict(cfg, "common")
    for key in PRECISION_FIELDS:
        if key in common:
            result[f"common.{key}"] = common[key]
    checkpoint = _section_dict(cfg, "checkpoint")
    for key in CHECKPOINT_FIELDS:
        if key in checkpoint:
            result[f"checkpoint.{key}"] = checkpoint[key]
    restore = checkpoint.get("restore_file") or "checkpoint_last.pt"
    pretrained = bool(checkpoint.get("finetune_from_model")) or os.path.basename(str(restore)) != "checkpoint_last.pt"
    result["checkpoint.pretrained"] = pretrained
    if checkpoint.get("finetune_from_model"):  # fairseq resets all four when it fine-tunes from a model
        for key in ("reset_dataloader", "reset_lr_scheduler", "reset_meters", "reset_optimizer"):
            result[f"checkpoint.{key}"] = True
    dataset = _section_dict(cfg, "dataset")
    world = int(_section_dict(cfg, "distributed_training").get("distributed_world_size") or 1)
    update_freq = _section_dict(cfg, "optimization").get("update_freq") or [1]
    update_freq = update_freq if isinstance(update_freq, list) else [update_freq]
    for key, name in (("batch_size", "effective_batch_size"), ("max_tokens", "effective_max_tokens")):
        per_gpu = dataset.get(key)
        products = None if per_gpu is None else sorted({per_gpu * world * int(freq) for freq in update_freq})
        result[f"dataset.{name}"] = products if products is None or len(products) > 1 else products[0]
    if result.get("optimization.use_bmuf"):
        for key, value in _section_dict(cfg, "bmuf").items():
            if key not in ("_name", "distributed_world_size"):
                result[f"bmuf.{key}"] = value
    return dict(sorted(result.items()))


def configuration_from_args(argv: Sequence[str]):
    """The cfg fairseq-train builds from this argument list (its own parser; --user-dir honoured). A leading
    "fairseq-train" is skipped. A list fairseq refuses raises RunError with fairseq's message."""
    import contextlib
    import io
    import warnings

    from fairseq import options
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf

    argv = [str(arg) for arg in argv]
    if argv and os.path.basename(argv[0]) == "fairseq-train":
        argv = argv[1:]
    parser = options.get_training_parser()
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            args = options.parse_args_and_arch(parser, argv)
    except SystemExit as error:
        message = stderr.getvalue().strip().splitlines()
        raise RunError("fairseq-train refuses the arguments: " + (message[-1] if message else str(error))) from None
    with warnings.catch_warnings():  # hydra's deprecation notices about fairseq's own config store
        warnings.simplefilter("ignore")
        return convert_namespace_to_omegaconf(args)


def configuration_differences(a: Dict, b: Dict) -> List[str]:
    """The keys whose values differ between two effective configurations (a key missing on one side counts)."""
    return sorted(key for key in set(a) | set(b) if key not in a or key not in b or not _equal(a[key], b[key]))


def _equal(a, b) -> bool:
    return json.dumps(_plain(a), sort_keys=True) == json.dumps(_plain(b), sort_keys=True)


def _same(a, b) -> bool:
    try:
        x, y = float(a), float(b)
    except (TypeError, ValueError):
        return str(a) == str(b)
    return x == y or math.isclose(x, y, rel_tol=1e-9)


def label_mismatches(label: Dict, ident: Dict) -> List[str]:
    """Every way the recipe's label (run.json) disagrees with what ran (identity()); empty when they agree."""
    problems = []
    if "dataset" in label:  # a summarization run
        criterion, task, needs_sn, method = SUMMARIZATION_CRITERION, None, False, f"summarization {label['dataset']}"
    else:
        method = label.get("method")
        if method not in METHOD_NEEDS:
            return [f"run.json names method {method!r}, not one of {sorted(METHOD_NEEDS)}"]
        criterion, task, needs_sn = METHOD_NEEDS[method]
    if ident.get("criterion") != criterion:
        problems.append(f"{method} needs --criterion {criterion}, the checkpoint was trained with "
                        f"{ident.get('criterion')}")
    if task is not None and ident.get("task") != task:
        problems.append(f"{method} needs --task {task}, the checkpoint was trained with {ident.get('task')}")
    if needs_sn == OUTPROJ_HEAD:
        if not ident.get("outproj_spectral_norm_head"):
            problems.append(f"{method} needs fairseq's released head (roberta_sn_outproj_*, bart_sn_outproj_*), the "
                            f"checkpoint has --arch {ident.get('arch')}")
    elif ident.get("outproj_spectral_norm_head"):
        problems.append(f"{method} does not run fairseq's released out_proj-only head, the checkpoint has "
                        f"{ident.get('arch')} (only r4f-released uses it)")
    elif needs_sn and not ident.get("spectral_norm_head"):
        problems.append(f"{method} needs an SN architecture (roberta_sn_*, bart_sn_*), the checkpoint has "
                        f"--arch {ident.get('arch')} (a plain classification head)")
    if not needs_sn and ident.get("spectral_norm_head"):
        problems.append(f"{method} needs a plain classification head, the checkpoint has the SN architecture "
                        f"{ident.get('arch')} (only r4f uses it)")
    if ident.get("fairseq_spectral_norm_classification_head"):
        problems.append(f"the checkpoint was trained with fairseq's --spectral-norm-classification-head, which is "
                        f"not {method}")
    for key in sorted(set(label) & set(ident)):
        if key in CRITERION_SETTINGS or key.startswith(("smart_", "freelb_")) or key == "seed":
            if not _same(label[key], ident[key]):
                problems.append(f"run.json has {key} {label[key]}, the checkpoint {ident[key]}")
    return problems


def identify(run_dir: str) -> Dict:
    """Writes RUN_DIR/identity.json from RUN_DIR/checkpoint_last.pt; returns the identity with "mismatches"."""
    checkpoint = os.path.join(run_dir, CHECKPOINT)
    if not os.path.isfile(checkpoint):
        raise RunError(f"{run_dir} has no {CHECKPOINT}: nothing to identify (has the run saved a checkpoint?)")
    ident = identity(checkpoint)
    label_path = os.path.join(run_dir, LABEL_FILE)
    if os.path.isfile(label_path):
        ident["mismatches"] = label_mismatches(read_json(label_path), ident)
    else:
        ident["mismatches"] = [f"{run_dir} has no {LABEL_FILE} to check the checkpoint against"]
    _write_atomically(os.path.join(run_dir, IDENTITY_FILE), ident)
    return ident


def _write_atomically(path: str, value) -> None:
    temporary = f"{path}.{os.getpid()}.tmp"
    with open(temporary, "w") as f:
        json.dump(value, f, indent=1)
    os.replace(temporary, path)


# -- what a run folder holds -----------------------------------------------------------------------------------

def run_identity(run_dir: str) -> Optional[Dict]:
    """What ran in RUN_DIR: its identity.json while it describes the current checkpoint_last.pt (or the
    checkpoint was deleted), else read from checkpoint_last.pt; None when there is neither. Nothing is
    written into the folder."""
    path, checkpoint = os.path.join(run_dir, IDENTITY_FILE), os.path.join(run_dir, CHECKPOINT)
    recorded = read_json(path) if os.path.isfile(path) else None
    if not os.path.isfile(checkpoint):
        return recorded
    if recorded is not None and "configuration" in recorded and recorded.get("checkpoint_stat") == _stat(checkpoint):
        return recorded
    return identity(checkpoint)


def log_last_update(run_dir: str) -> Optional[int]:
    """The last update train.log reports on the trajectory of the final checkpoint (None: no update record)."""
    from fairseq_r3f.evaluation.results import final_trajectory, record_updates

    path = os.path.join(run_dir, LOG_FILE)
    if not os.path.isfile(path):
        return None
    with open(path, errors="replace") as f:
        records = final_trajectory(f.read())
    updates = [record_updates(tag, r) for tag, rs in records.items() for r in rs]
    updates = [u for u in updates if u is not None]
    return int(max(updates)) if updates else None


def log_problem(run_dir: str) -> Optional[str]:
    """Why train.log cannot be one training's record (its update numbers repeat or interleave), or None."""
    from fairseq_r3f.evaluation.results import log_order_problem

    path = os.path.join(run_dir, LOG_FILE)
    if not os.path.isfile(path):
        return None
    with open(path, errors="replace") as f:
        return log_order_problem(f.read())


def planned_end(run_dir: str) -> Optional[int]:
    """The update the launcher recorded in ``done`` as the run's planned end (None: an older, empty done)."""
    path = os.path.join(run_dir, DONE_FILE)
    with open(path) as f:
        text = f.read().strip()
    if not text:
        return None
    try:
        value = json.loads(text).get("num_updates")
    except (json.JSONDecodeError, AttributeError):
        raise RunError(f"{path} is damaged (not the launcher's JSON): delete it and run the same command again "
                       f"to finish the run") from None
    return None if value is None else int(value)


def run_status(run_dir: str, accepts=None) -> Tuple[str, str]:
    """(status, reason) of a run folder, status one of STATUSES. ``accepts(label) -> bool`` says which runs a
    table reads (the others are "foreign"). "finished": ``done`` exists, and the checkpoint's update equals the
    last update train.log reports and the planned end recorded in ``done``; "unfinished": no ``done`` (still
    running, stopped or killed); "truncated": the log and the checkpoint disagree on the last update (a log cut
    short, a checkpoint replaced); "failed": what ran contradicts the label or the plan, it stopped at another
    update than planned, or its log's update numbers repeat or interleave (two trainings wrote the folder)."""
    if not os.path.isfile(os.path.join(run_dir, LABEL_FILE)):
        raise RunError(f"{run_dir} has no {LABEL_FILE}: not a run folder (give the folder of one run)")
    label = read_json(os.path.join(run_dir, LABEL_FILE))
    if accepts is not None and not accepts(label):
        what = label.get("recipe") or ("summarization" if "dataset" in label else None)
        return "foreign", f"a run of {label.get('task') or label.get('dataset')}" + (f" ({what})" if what else "")
    if not os.path.isfile(os.path.join(run_dir, DONE_FILE)):
        return "unfinished", "no done file: not finished (running, stopped or killed; the same command resumes it)"
    ident = run_identity(run_dir)
    if ident is None:
        return "failed", f"done, but neither {CHECKPOINT} nor {IDENTITY_FILE}: what ran is unknown"
    mismatches = label_mismatches(label, ident)
    if mismatches:
        return "failed", "run.json contradicts its checkpoint: " + "; ".join(mismatches)
    planned = label.get("planned_configuration")
    if planned and ident.get("configuration"):
        differ = configuration_differences(planned, ident["configuration"])
        if differ:
            return "failed", "the checkpoint's configuration differs from the plan in " + ", ".join(differ)
    problem = log_problem(run_dir)
    if problem:
        return "failed", f"{LOG_FILE}: {problem}"
    checkpoint_updates = ident.get("num_updates")
    logged = log_last_update(run_dir)
    if logged is None:
        return "truncated", f"{LOG_FILE} reports no update (missing or cut short); the checkpoint is at update " \
                            f"{checkpoint_updates}"
    if checkpoint_updates is None or int(checkpoint_updates) != logged:
        side = "cut short" if checkpoint_updates is not None and logged < int(checkpoint_updates) else \
            "ahead of the checkpoint"
        return "truncated", f"{LOG_FILE} ends at update {logged}, the checkpoint is at update {checkpoint_updates} " \
                            f"(the log is {side})"
    end = planned_end(run_dir)
    if end is not None and end != logged:
        return "failed", f"stopped at update {logged}, the planned end recorded in done is {end}"
    return "finished", f"update {logged}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fairseq_r3f.runs", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("versions", help="print the versions as json")
    identify_parser = commands.add_parser("identify", help="write RUN_DIR/identity.json and check it against run.json")
    identify_parser.add_argument("run_dir")
    status_parser = commands.add_parser("status", help="print STATUS: REASON (finished, unfinished, truncated, "
                                                       "failed); exit status 0 only when finished")
    status_parser.add_argument("run_dir")
    args = parser.parse_args(argv)
    if args.command == "versions":
        print(json.dumps(versions()))
        return 0
    if args.command == "status":
        try:
            status, reason = run_status(args.run_dir)
        except (RunError, OSError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        print(f"{status}: {reason}")
        return 0 if status == "finished" else 1
    try:
        ident = identify(args.run_dir)
    except RunError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if ident["mismatches"]:
        print(f"error: {args.run_dir}: run.json contradicts its checkpoint: " + "; ".join(ident["mismatches"]),
              file=sys.stderr)
        return 2
    print(json.dumps({k: v for k, v in ident.items() if k != "mismatches"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
