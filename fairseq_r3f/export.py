r"""A fine-tuned checkpoint for plain fairseq: no ``--user-dir``, no plugin installed.

    python -m fairseq_r3f.export RUN_DIR/checkpoint_best.pt model.pt
    python -m fairseq_r3f.export checkpoint_last.pt model.pt --keep-optimizer --force

What changes (every other weight is copied as it is; docs/export.md has the details):
- R4F heads: every spectrally normalised matrix is replaced by the matrix the model applies at evaluation,
  W / sigma with sigma = u^T W v from the stored power-iteration vector u (computed by the plugin's own
  layer, so logits are identical); the ``u`` buffers go. A head normalised by fairseq's own
  --spectral-norm-classification-head is folded the same way, which makes it loadable again.
- Names: the *_sn_* architecture becomes its plain one (roberta_sn_large -> roberta_large, bart_sn_base ->
  bart_base); the plugin's criterions become their fairseq parents with only the parent's settings
  (sentence_prediction_r3f/smart/freelb -> sentence_prediction, label_smoothed_cross_entropy_r3f ->
  label_smoothed_cross_entropy), the FreeLB task becomes sentence_prediction, and common.user_dir is cleared.
- Plain containers where fairseq allows them: torch >= 2.6 loads checkpoints weights-only and plain fairseq
  then refuses the argparse.Namespace in which every fairseq checkpoint of RoBERTa or BART keeps the model's
  settings. A RoBERTa/XLM-R export holds a dict instead and loads there as it is. fairseq's BART (and
  transformer) code reads its settings fully only from a Namespace, so those exports keep it; plain fairseq
  loads them on torch >= 2.6 with argparse.Namespace allowed. Legacy ``args`` are converted to ``cfg``.
- The optimizer state is dropped; with --keep-optimizer it is kept, recorded as the parent criterion's, so
  plain fairseq-train can continue the run with the parent criterion (without the regulariser).
"""

import argparse
import dataclasses
import os
import sys
from typing import Dict, List, Tuple

import torch
from fairseq.criterions import CRITERION_DATACLASS_REGISTRY, CRITERION_REGISTRY
from fairseq.models import ARCH_MODEL_REGISTRY
from fairseq.models.transformer import TransformerModel
from fairseq.tasks import TASK_DATACLASS_REGISTRY, TASK_REGISTRY

import fairseq_r3f  # noqa: F401  (registers the plugin's components, allows fairseq checkpoints to load)
from fairseq_r3f.compat import FAIRSEQ_OWN_CRITERION_CONFIGS
from rxf.spectral_norm import folded_weight

PLAIN_ARCH = {
    "roberta_sn_base": "roberta_base",
    "roberta_sn_large": "roberta_large",
    "bart_sn_base": "bart_base",
    "bart_sn_large": "bart_large",
    "roberta_sn_outproj_base": "roberta_base",
    "roberta_sn_outproj_large": "roberta_large",
    "bart_sn_outproj_base": "bart_base",
    "bart_sn_outproj_large": "bart_large",
}
PARENT_CRITERION = {
    "sentence_prediction_r3f": "sentence_prediction",
    "sentence_prediction_smart": "sentence_prediction",
    "sentence_prediction_freelb": "sentence_prediction",
    "label_smoothed_cross_entropy_r3f": "label_smoothed_cross_entropy",
}
PARENT_TASK = {"sentence_prediction_freelb": "sentence_prediction"}


class ExportError(ValueError):
    """A checkpoint that cannot be exported, or an output that must not be written."""


def load_checkpoint(path: str) -> Dict:
    from fairseq_r3f.checkpoints import UnsafeCheckpoint
    from fairseq_r3f.checkpoints import load_checkpoint as load_weights_only

    if not os.path.isfile(path):
        raise ExportError(f"{path}: no such file")
    try:
        state = load_weights_only(path)
    except UnsafeCheckpoint as error:
        raise ExportError(str(error)) from None
    except Exception as error:  # torch raises many kinds for a file that is not a torch pickle
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ExportError(f"{path} is not a fairseq checkpoint: torch.load failed ({first_line})") from error
    if not isinstance(state, dict) or "model" not in state or not ({"cfg", "args"} & state.keys()):
        raise ExportError(f"{path} is not a fairseq checkpoint: it has no 'model' state with a 'cfg' or 'args'")
    if state.get("cfg") is None and state.get("args") is None:
        raise ExportError(f"{path} is not a fairseq checkpoint: its 'cfg' and 'args' are both empty")
    return state


def fold_spectral_norms(model_state: Dict[str, torch.Tensor]) -> List[str]:
    """Replaces every normalised head matrix by its effective matrix, in place; returns the layers folded."""
    folded, heads = [], [k for k in model_state if ".classification_heads." in "." + k]
    for key in [k for k in heads if k.endswith(".u") and k[:-1] + "weight" in model_state]:
        layer = key[:-2]
        model_state[layer + ".weight"] = folded_weight(model_state[layer + ".weight"], model_state.pop(key),
                                                       model_state.pop(layer + ".v", None))
        folded.append(layer)
    # fairseq's --spectral-norm-classification-head (torch's spectral_norm): weight_orig / (u^T W v) in eval
    for key in [k for k in heads if k.endswith(".weight_orig")]:
        layer = key[: -len(".weight_orig")]
        w = model_state.pop(key)
        u, v = model_state.pop(layer + ".weight_u"), model_state.pop(layer + ".weight_v")
        model_state[layer + ".weight"] = w / torch.dot(u, torch.mv(w.flatten(1), v))
        folded.append(layer)
    return folded


def _field_names(config_class) -> set:
    return {f.name for f in dataclasses.fields(config_class)}


def _plain_component(section: Dict, parents: Dict[str, str], registry):
    """The section of a plugin criterion/task as its fairseq parent: the parent's name and fields only.
    Returns (section, names of the settings that only the plugin knows)."""
    name = section.get("_name")
    if name not in parents:
        return section, set()
    parent = parents[name]
    keep = _field_names(registry[parent]) - {"_name"}
    return {"_name": parent, **{k: v for k, v in section.items() if k in keep}}, set(section) - keep - {"_name"}


def _refuse_other_plugin_components(cfg: Dict) -> None:
    task = (cfg.get("task") or {}).get("_name")
    criterion = (cfg.get("criterion") or {}).get("_name")
    checks = [("task", task, TASK_REGISTRY.get(task), PARENT_TASK),
              ("criterion", criterion, CRITERION_REGISTRY.get(criterion), PARENT_CRITERION)]
    model = cfg.get("model")
    arch = getattr(model, "arch", None) if isinstance(model, argparse.Namespace) else (model or {}).get("arch")
    checks.append(("architecture", arch, ARCH_MODEL_REGISTRY.get(arch), PLAIN_ARCH))
    for kind, name, cls, parents in checks:
        if cls is not None and cls.__module__.startswith("fairseq_r3f") and name not in parents:
            raise ExportError(f"the {kind} {name!r} is the plugin's and has no plain fairseq counterpart to export to")


def plain_config(cfg: Dict) -> Dict:
    """A copy of a checkpoint's cfg (a dict of sections) that names only fairseq's own components."""
    cfg = dict(cfg)
    _refuse_other_plugin_components(cfg)
    cfg["criterion"], criterion_only = _plain_component(
        cfg["criterion"], PARENT_CRITERION, {**CRITERION_DATACLASS_REGISTRY, **FAIRSEQ_OWN_CRITERION_CONFIGS})
    own = FAIRSEQ_OWN_CRITERION_CONFIGS.get(cfg["criterion"].get("_name"))
    if own is not None:  # fairseq's criterion with options the plugin added to it (compat): plain fairseq's only
        added = set(cfg["criterion"]) - _field_names(own) - {"_name"}
        cfg["criterion"] = {k: v for k, v in cfg["criterion"].items() if k not in added}
        criterion_only = criterion_only | added
    cfg["task"], task_only = _plain_component(cfg["task"], PARENT_TASK, TASK_DATACLASS_REGISTRY)
    cfg["common"] = {**cfg["common"], "user_dir": None}

    model = cfg["model"]
    was_namespace = isinstance(model, argparse.Namespace)
    model = dict(vars(model)) if was_namespace else dict(model)
    for key in criterion_only | task_only:
        model.pop(key, None)
    for key in ("_name", "arch"):
        if key in model:
            model[key] = PLAIN_ARCH.get(model[key], model[key])
    if model.get("criterion") in PARENT_CRITERION:
        model["criterion"] = PARENT_CRITERION[model["criterion"]]
    if model.get("task") in PARENT_TASK:
        model["task"] = PARENT_TASK[model["task"]]
    if "user_dir" in model:
        model["user_dir"] = None
    if "spectral_norm_classification_head" in model:
        model["spectral_norm_classification_head"] = False  # folded into plain matrices
    cfg["model"] = argparse.Namespace(**model) if was_namespace and needs_namespace(model) else model
    return cfg


def needs_namespace(model_cfg: Dict) -> bool:
    """Whether fairseq's model code reads its configuration fully only from an argparse.Namespace.

    Models on fairseq's legacy TransformerModel (transformer, BART, mBART) copy the settings that their
    TransformerConfig lacks (BART's pooler_activation_fn, pooler_dropout) with vars(), which finds none in a
    dict config: BART would fail to build. RoBERTa reads its configuration by attribute and builds from a dict."""
    cls = ARCH_MODEL_REGISTRY.get(model_cfg.get("arch") or model_cfg.get("_name"))
    return cls is not None and issubclass(cls, TransformerModel)


def _config_of(state: Dict) -> Dict:
    """The checkpoint's cfg as plain dicts; legacy ``args`` (an argparse.Namespace) converted as fairseq does."""
    from omegaconf import OmegaConf

    if state.get("cfg") is not None:
        cfg = state["cfg"]
        return OmegaConf.to_container(cfg) if OmegaConf.is_config(cfg) else dict(cfg)
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf

    return OmegaConf.to_container(convert_namespace_to_omegaconf(state["args"]))


def export(state: Dict, keep_optimizer: bool = False) -> Tuple[Dict, List[str]]:
    """The exported checkpoint of a loaded one (which is not modified), and the layers whose matrices were
    folded."""
    cfg = plain_config(_config_of(state))
    model_state = dict(state["model"])
    folded = fold_spectral_norms(model_state)
    history = [dict(entry) for entry in state.get("optimizer_history") or []]
    criterion_class = CRITERION_REGISTRY[cfg["criterion"]["_name"]].__name__
    for entry in history:
        entry["criterion_name"] = criterion_class
    exported = {**state, "args": None, "cfg": cfg, "model": model_state, "optimizer_history": history}
    if not keep_optimizer:
        exported["last_optimizer_state"] = None
    return exported, folded


def _check_paths(checkpoint: str, out: str, force: bool) -> None:
    if os.path.realpath(checkpoint) == os.path.realpath(out):
        raise ExportError(f"{out} is the checkpoint itself: write the export to another file")
    if os.path.exists(out) and not force:
        raise ExportError(f"{out} exists: pass --force to overwrite it")
    if not os.path.isdir(os.path.dirname(os.path.abspath(out))):
        raise ExportError(f"{out}: its folder does not exist; create it first")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fairseq_r3f.export", description=__doc__.split("\n\n")[0].strip(),
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1],
    )
    parser.add_argument("checkpoint", help="a fairseq checkpoint written with the plugin (or without it)")
    parser.add_argument("out", help="where to write the exported checkpoint")
    parser.add_argument("--keep-optimizer", action="store_true",
                        help="keep the optimizer state (it then continues training with the parent criterion)")
    parser.add_argument("--force", action="store_true", help="overwrite OUT if it exists")
    args = parser.parse_args(argv)
    try:
        _check_paths(args.checkpoint, args.out, args.force)
        exported, folded = export(load_checkpoint(args.checkpoint), keep_optimizer=args.keep_optimizer)
    except ExportError as error:
        print(f"fairseq_r3f.export: {error}", file=sys.stderr)
        return 2
    temporary = args.out + ".partial"
    torch.save(exported, temporary)
    os.replace(temporary, args.out)
    model = exported["cfg"]["model"]
    model = vars(model) if isinstance(model, argparse.Namespace) else model
    print(f"wrote {args.out}: arch {model.get('arch') or model.get('_name')}, "
          f"criterion {exported['cfg']['criterion']['_name']}, task {exported['cfg']['task']['_name']}, "
          f"{len(folded)} normalised head matrices folded, "
          f"optimizer state {'kept' if args.keep_optimizer else 'dropped'}")
    if isinstance(exported["cfg"]["model"], argparse.Namespace):
        print(f"note: the {model['arch']} configuration stays an argparse.Namespace (fairseq's code for it needs "
              "one): plain fairseq on torch >= 2.6 loads it with argparse.Namespace allowed (see docs/export.md)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
