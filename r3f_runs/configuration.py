"""A run's effective configuration: every cfg field that can change a number, flattened ("section.field").

Two runs are one configuration when every such field is equal. The sections and fields that cannot (paths,
logging, the seed, the device, the data loader's workers, how generation would be run later) are left out;
everything else is in, so that a setting nobody thought of still splits a table's cells. The cfg comes from
the checkpoint (what ran), from fairseq-train's parser on a planned argument list (``configuration_from_args``)
or from a composed hydra config (``configuration_of_composed``); a legacy architecture's model section is
completed in one place, ``_model_fields``, as fairseq completes it when it builds the model. Imports fairseq.
"""

import argparse
import ast
import contextlib
import copy
import io
import json
import math
import os
import warnings
from typing import Any, Dict, List, Sequence

import fairseq_r3f  # noqa: F401  (first: imports fairseq without its start-up noise, registers the plugin)
from fairseq import options
from fairseq.dataclass.configs import FairseqConfig
from fairseq.dataclass.initialize import add_defaults
from fairseq.dataclass.utils import convert_namespace_to_omegaconf
from fairseq.models import ARCH_CONFIG_REGISTRY, ARCH_MODEL_REGISTRY
from fairseq.models.transformer import TransformerModel
from fairseq.models.transformer.transformer_legacy import base_architecture
from omegaconf import DictConfig, ListConfig, OmegaConf

from r3f_runs.folder import RunError


def configuration_of_composed(cfg):
    """The config fairseq-hydra-train's _hydra_main hands to fairseq-train: the composed one with fairseq's
    defaults added (add_defaults) and every interpolation resolved. ``cfg`` itself is left as it is. Its model
    section is completed where every cfg's is, in ``_model_fields`` (the plugin's configs are all of legacy
    architectures: RoBERTa, XLM-R, BART)."""
    cfg = copy.deepcopy(cfg)
    add_defaults(cfg)
    cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True, enum_to_str=True))
    if str(cfg.task.get("_name")).startswith("sentence_prediction") and "max_positions" in cfg.task:
        cfg.model.max_positions = cfg.task.max_positions  # as the task's build_model does before the model is built
    return cfg


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
