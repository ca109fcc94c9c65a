"""The packages the plugin imports besides the standard library, and the check the run layer makes before a
launch writes or trains anything: that every module its runs will import can be imported here.

pyproject.toml declares them: ``dependencies`` holds what importing the plugin, a recipe's training or a
scoring tool imports; the extras add what only some paths import. fairseq, torch and fairseq's own
configuration packages (hydra-core, omegaconf, pinned by each fairseq release) are the environment's and never
declared: pip must not pull a second fairseq or torch, nor move fairseq's pins. tests/test_dependencies.py
checks that every import in the package is listed here and declared there.

No fairseq import here: the run layer checks before it imports anything heavy.
"""

import importlib.util
import sys
from typing import Dict, List, Optional, Sequence, Tuple

# import name -> the pip distribution that provides it; each is declared in pyproject.toml
DECLARED = {
    "numpy": "numpy",
    "nltk": "nltk",
    "rouge_score": "rouge-score",
    "sacrebleu": "sacrebleu",
    "scipy": "scipy",
    "sentencepiece": "sentencepiece",
    "sklearn": "scikit-learn",
    "tqdm": "tqdm",
    "yaml": "PyYAML",
}
# extra -> {import name: distribution}: pip install 'fairseq-r3f[eval]' (the plots, IWSLT'14's Moses tokenizer and
# BPE), 'fairseq-r3f[hf]' (rxf.hf, the HuggingFace side)
EXTRAS = {
    "eval": {"matplotlib": "matplotlib", "sacremoses": "sacremoses", "subword_nmt": "subword-nmt"},
    "hf": {"transformers": "transformers", "accelerate": "accelerate", "trl": "trl", "peft": "peft"},
}
# the environment's: fairseq (and its console scripts' package), torch, and fairseq's configuration packages
FROM_THE_ENVIRONMENT = {
    "fairseq": "fairseq",
    "fairseq_cli": "fairseq",
    "torch": "torch",
    "hydra": "hydra-core",
    "omegaconf": "omegaconf",
}

# What every training run imports: fairseq-train itself, and the plugin (--user-dir) with its module-level imports.
TRAINING_MODULES = ("fairseq", "torch", "numpy")
# fairseq-train flags whose work imports a module: flag -> (module, what imports it)
FLAG_MODULES: Dict[str, Tuple[str, str]] = {
    "--report-mcc": ("sklearn.metrics", "the Matthews correlation of --report-mcc"),
    "--report-acc-and-f1": ("sklearn.metrics", "the F1 of --report-acc-and-f1"),
    "--report-pearson-and-spearman": ("scipy.stats", "the correlations of --report-pearson-and-spearman"),
    "--eval-bleu": ("sacrebleu", "--eval-bleu's validation BLEU"),
}
# (flag, value) -> (module, what imports it)
VALUE_MODULES: Dict[Tuple[str, str], Tuple[str, str]] = {
    ("--eval-bleu-detok", "moses"): ("sacremoses", "--eval-bleu-detok moses"),
    ("--eval-bleu-detok", "space"): ("sacrebleu", "--eval-bleu-detok space"),
    ("--bpe", "sentencepiece"): ("sentencepiece", "--bpe sentencepiece"),
    ("--bpe", "subword_nmt"): ("subword_nmt", "--bpe subword_nmt"),
    ("--tokenizer", "moses"): ("sacremoses", "--tokenizer moses"),
}


def distribution(module: str) -> str:
    """The pip distribution of an import name (its top-level package)."""
    top = module.split(".")[0]
    for table in (DECLARED, *EXTRAS.values(), FROM_THE_ENVIRONMENT):
        if top in table:
            return table[top]
    raise KeyError(f"{module}: not a module the plugin imports (add it to {__name__})")


def modules_of_command(command: Sequence[str]) -> List[Tuple[str, str]]:
    """[(module, what imports it)] that a fairseq-train run with these arguments imports, in a stable order."""
    needed = [(module, "fairseq-train and the plugin") for module in TRAINING_MODULES]
    for i, arg in enumerate(command):
        if arg in FLAG_MODULES:
            needed.append(FLAG_MODULES[arg])
        value = command[i + 1] if i + 1 < len(command) else None
        if value is not None and (arg, value) in VALUE_MODULES:
            needed.append(VALUE_MODULES[(arg, value)])
    seen, unique = set(), []
    for module, why in needed:
        if module not in seen:
            seen.add(module)
            unique.append((module, why))
    return unique


def importable(module: str) -> bool:
    """Whether ``module`` can be found here; for a submodule (``sklearn.metrics``) its package is imported, so a
    package that is installed but fails to import (a dependency of its own missing) counts as missing."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def missing_message(commands: Sequence[Sequence[str]], python: Optional[str] = None) -> Optional[str]:
    """None when every module the commands' runs import is importable; otherwise one message naming each missing
    module, what needs it and the pip command that installs it."""
    python = python or sys.executable
    missing: Dict[str, List[str]] = {}
    for command in commands:
        for module, why in modules_of_command(command):
            if not importable(module):
                missing.setdefault(module, [])
                if why not in missing[module]:
                    missing[module].append(why)
    if not missing:
        return None
    named = "; ".join(f"{module} (for {', '.join(whys)})" for module, whys in missing.items())
    environment = sorted({distribution(m) for m in missing if distribution(m) in FROM_THE_ENVIRONMENT.values()})
    packages = sorted({distribution(m) for m in missing} - set(environment))
    fixes = []
    if packages:
        fixes.append(f"{python} -m pip install {' '.join(packages)}")
    if environment:
        fixes.append(f"install {' and '.join(environment)} into this environment (scripts/install.sh does)")
    return (f"{python} cannot import what the planned runs need: {named}. Nothing was written or trained; "
            f"{' and '.join(fixes)} (installing the plugin with pip installs the packages it declares)")
