"""What a run trained, read from its checkpoint, and whether its label says the same.

The recipe writes its label (``run.json``: task, method, lambda, noise type, ...) before the run starts; what
ran is whatever fairseq-train was finally given. ``identity`` reads the configuration fairseq saved in the
checkpoint (architecture, criterion and its settings, seed, the effective configuration, the update it was
saved at); ``label_mismatches`` names every disagreement with the label (an ``r4f`` label on a plain head,
another lambda). ``identify`` writes it as ``identity.json``. ``versions`` is the plugin, fairseq and torch
versions and the git commit. Imports fairseq and the plugin.
"""

import argparse
import math
import os
import subprocess
from typing import Dict, List, Optional

import fairseq_r3f  # first: imports fairseq without its start-up noise, registers the plugin
import fairseq
import torch
from fairseq import checkpoint_utils
from fairseq.models import ARCH_MODEL_NAME_REGISTRY

from fairseq_r3f.checkpoints import load_checkpoint

from r3f_runs.configuration import effective_configuration
from r3f_runs.folder import CHECKPOINT, IDENTITY_FILE, LABEL_FILE, RunError, read_json, write_json_atomic
from r3f_runs.tables import USER_DIR
from r3f_runs.vocabulary import (
    CRITERION_SETTINGS, OUTPROJ_HEAD, OUTPROJ_SN_MODELS, SENTENCE_METHODS, SEQ2SEQ_CRITERION, SN_MODELS,
)


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


    return {"fairseq_r3f": fairseq_r3f.__version__, "fairseq": fairseq.__version__, "torch": torch.__version__,
            "git_commit": git_commit()}


def saved_config(checkpoint_path: str) -> Dict:

    if not os.path.isfile(checkpoint_path):
        raise RunError(f"{checkpoint_path}: no such checkpoint")
    try:
        state = load_checkpoint(checkpoint_path)  # memory-mapped where torch can: the weights stay on disk
    except Exception as error:
        raise RunError(f"{checkpoint_path}: not a readable checkpoint ({type(error).__name__}: {error})") from error
    if state.get("cfg") is None:  # written by fairseq < 0.10 (an argparse.Namespace): fairseq upgrades it

        state = checkpoint_utils.load_checkpoint_to_cpu(checkpoint_path)
    cfg = state["cfg"]
    history = state.get("optimizer_history") or [{}]
    return {"cfg": cfg, "num_updates": history[-1].get("num_updates"),
            "epoch": (state.get("extra_state") or {}).get("train_iterator", {}).get("epoch")}


def file_stat(path: str) -> List[int]:
    info = os.stat(path)
    return [info.st_size, info.st_mtime_ns]


def _as_dict(section) -> Dict:
    """A section of a saved fairseq config: a dict, or for models with legacy arguments an argparse.Namespace."""
    if isinstance(section, argparse.Namespace):
        return vars(section)
    return dict(section or {})


def identity(checkpoint_path: str) -> Dict:
    """What trained the checkpoint, from the configuration fairseq saved in it."""
    saved = saved_config(checkpoint_path)
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
        "checkpoint_stat": file_stat(checkpoint_path),
        "configuration": effective_configuration(cfg),
    }
    for key, value in criterion.items():
        if key in CRITERION_SETTINGS or key.startswith(("smart_", "freelb_")):
            result[key] = value
    return result


def label_mismatches(label: Dict, ident: Dict) -> List[str]:
    """Every way the recipe's label (run.json) disagrees with what ran (identity()); empty when they agree."""
    problems = []
    if "dataset" in label:  # a summarization run
        criterion, task, needs_sn, method = SEQ2SEQ_CRITERION, None, False, f"summarization {label['dataset']}"
    else:
        method = label.get("method")
        if method not in SENTENCE_METHODS:
            return [f"run.json names method {method!r}, not one of {sorted(SENTENCE_METHODS)}"]
        criterion, task, needs_sn = SENTENCE_METHODS[method]
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
    write_json_atomic(os.path.join(run_dir, IDENTITY_FILE), ident)
    return ident


def _same(a, b) -> bool:
    try:
        x, y = float(a), float(b)
    except (TypeError, ValueError):
        return str(a) == str(b)
    return x == y or math.isclose(x, y, rel_tol=1e-9)
