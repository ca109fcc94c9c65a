"""What a run folder is: the versions it ran with, and the method it actually trained, read from its checkpoint.

    python -m fairseq_r3f.runs versions         prints the plugin, fairseq and torch versions and the git commit
    python -m fairseq_r3f.runs identify RUN_DIR  writes RUN_DIR/identity.json from RUN_DIR/checkpoint_last.pt

A recipe writes its label of a run (``run.json``: task, method, lambda, noise type, ...) before the run starts;
what ran is whatever fairseq-train was finally given. ``identify`` reads the configuration fairseq saved in the
checkpoint (architecture, criterion and its settings, seed), writes it as ``identity.json``, and exits with
status 2 and one line naming every disagreement when it contradicts ``run.json`` -- e.g. an ``r4f`` label on a
run trained with a plain classification head. The results tables refuse such runs.

The methods and what each needs: ``std`` and ``std++`` the plain ``sentence_prediction`` criterion; ``r3f``
``sentence_prediction_r3f`` on an architecture without the spectrally normalised head; ``r4f`` the same
criterion on one of the plugin's SN architectures (``roberta_sn_*``, ``bart_sn_*``); ``smart`` the
``sentence_prediction_smart`` criterion; ``freelb`` the ``sentence_prediction_freelb`` criterion and task; a
summarization run (its label names a ``dataset``) ``label_smoothed_cross_entropy_r3f``. Every setting the label
states (lambda, noise type, eps, the SMART/FreeLB settings, the seed) must equal the checkpoint's.
"""

import argparse
import json
import math
import os
import subprocess
import sys
from typing import Dict, List, Optional

from fairseq_r3f.tools import USER_DIR

IDENTITY_FILE = "identity.json"
LABEL_FILE = "run.json"
CHECKPOINT = "checkpoint_last.pt"

# method -> (criterion, fairseq task or None for any, needs the plugin's spectrally normalised head)
METHOD_NEEDS = {
    "std": ("sentence_prediction", None, False),
    "std++": ("sentence_prediction", None, False),
    "r3f": ("sentence_prediction_r3f", None, False),
    "r4f": ("sentence_prediction_r3f", None, True),
    "smart": ("sentence_prediction_smart", None, False),
    "freelb": ("sentence_prediction_freelb", "sentence_prediction_freelb", False),
}
SUMMARIZATION_CRITERION = "label_smoothed_cross_entropy_r3f"
# The plugin's models whose classification head is spectrally normalised (R4F).
SN_MODELS = ("roberta_sn", "bart_sn")
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
    import torch

    import fairseq_r3f  # noqa: F401  (registers the plugin's names and allows fairseq's checkpoint classes)

    if not os.path.isfile(checkpoint_path):
        raise RunError(f"{checkpoint_path}: no such checkpoint")
    try:
        state = torch.load(checkpoint_path, map_location="cpu", mmap=True)  # the weights stay on disk
    except Exception as error:
        raise RunError(f"{checkpoint_path}: not a readable checkpoint ({type(error).__name__}: {error})") from error
    if state.get("cfg") is None:  # written by fairseq < 0.10 (an argparse.Namespace): fairseq upgrades it
        from fairseq import checkpoint_utils

        state = checkpoint_utils.load_checkpoint_to_cpu(checkpoint_path)
    cfg = state["cfg"]
    history = state.get("optimizer_history") or [{}]
    return {"cfg": cfg, "num_updates": history[-1].get("num_updates"),
            "epoch": (state.get("extra_state") or {}).get("train_iterator", {}).get("epoch")}


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
        # fairseq's own option (RoBERTa): torch's spectral norm on the head's output projection only
        "fairseq_spectral_norm_classification_head": bool(model.get("spectral_norm_classification_head", False)),
        "criterion": criterion.get("_name"),
        "seed": _as_dict(cfg.get("common")).get("seed"),
        "num_updates": saved["num_updates"],
        "epoch": saved["epoch"],
    }
    for key, value in criterion.items():
        if key in CRITERION_SETTINGS or key.startswith(("smart_", "freelb_")):
            result[key] = value
    return result


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
    if needs_sn and not ident.get("spectral_norm_head"):
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
        with open(label_path) as f:
            ident["mismatches"] = label_mismatches(json.load(f), ident)
    else:
        ident["mismatches"] = [f"{run_dir} has no {LABEL_FILE} to check the checkpoint against"]
    with open(os.path.join(run_dir, IDENTITY_FILE), "w") as f:
        json.dump(ident, f, indent=1)
    return ident


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fairseq_r3f.runs", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("versions", help="print the versions as json")
    identify_parser = commands.add_parser("identify", help="write RUN_DIR/identity.json and check it against run.json")
    identify_parser.add_argument("run_dir")
    args = parser.parse_args(argv)
    if args.command == "versions":
        print(json.dumps(versions()))
        return 0
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
