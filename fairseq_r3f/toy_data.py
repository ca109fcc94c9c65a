"""A small built-in sentence classification task, generated on the fly, for the demo and the tests.

Sentences are drawn from a vocabulary of neutral words plus two marked sets; the label says which marked set
occurs more often (classification), or is their difference per token (regression, the STS-B case);
``label_noise`` flips that share of the classification labels, so that no method can reach 100%. With
``pairs`` the sentence is split into two inputs, like RTE or MNLI. It is written as raw text and binarised
with the real ``fairseq-preprocess`` into the layout fairseq's ``sentence_prediction`` task reads:
``input0/``, ``input1/``, ``label/``.

``write_toy_reversal_task`` writes a small sequence-to-sequence task instead (each target is its source
reversed), as raw text in the layout fairseq's ``translation`` task reads with ``--dataset-impl raw``.
"""

import json
import os
import random
import subprocess
import sys
from typing import List, Tuple

POSITIVE = [f"p{i}" for i in range(6)]
NEGATIVE = [f"n{i}" for i in range(6)]
NEUTRAL = [f"w{i}" for i in range(40)]

# fairseq-preprocess's main for each argument list of a JSON list, in one Python process; each main adds a
# file handler for its destdir's preprocess.log, removed after it so that each log holds only its own lines
_PREPROCESS_EACH = """
import json, logging, sys
from fairseq import options
from fairseq_cli.preprocess import logger, main
for arguments in json.loads(sys.argv[1]):
    handlers = list(logger.handlers)
    main(options.get_preprocessing_parser().parse_args(arguments))
    for handler in set(logger.handlers) - set(handlers):
        logger.removeHandler(handler)
        handler.close()
"""


def _examples(n: int, rng: random.Random, regression: bool, label_noise: float) -> List[Tuple[List[str], str]]:
    examples = []
    while len(examples) < n:
        length = rng.randint(8, 20)
        words = [rng.choice(NEUTRAL) for _ in range(length)]
        n_pos, n_neg = rng.randint(0, 4), rng.randint(0, 4)
        if n_pos == n_neg and not regression:
            continue
        for word in [rng.choice(POSITIVE) for _ in range(n_pos)] + [rng.choice(NEGATIVE) for _ in range(n_neg)]:
            words.insert(rng.randint(0, len(words)), word)
        label = f"{(n_pos - n_neg) / 4:.3f}" if regression else ("1" if n_pos > n_neg else "0")
        if label_noise and not regression and rng.random() < label_noise:
            label = "1" if label == "0" else "0"
        examples.append((words, label))
    return examples


def write_toy_task(
    out_dir: str, n_train: int = 800, n_valid: int = 200, seed: int = 0, regression: bool = False,
    pairs: bool = False, label_noise: float = 0.0,
) -> str:
    """Generates, writes and binarises the task; returns the data-bin folder for fairseq-train."""
    rng = random.Random(seed)
    raw, data_bin = os.path.join(out_dir, "raw"), os.path.join(out_dir, "data-bin")
    os.makedirs(raw, exist_ok=True)
    inputs = ["input0", "input1"] if pairs else ["input0"]
    for split, n in (("train", n_train), ("valid", n_valid)):
        examples = _examples(n, rng, regression, label_noise)
        columns = {name: [] for name in inputs + ["label"]}
        for words, label in examples:
            cut = len(words) // 2 if pairs else len(words)
            columns["input0"].append(" ".join(words[:cut]))
            if pairs:
                columns["input1"].append(" ".join(words[cut:]))
            columns["label"].append(label)
        for name, lines in columns.items():
            with open(os.path.join(raw, f"{split}.{name}"), "w") as f:
                f.write("\n".join(lines) + "\n")

    # one fairseq-preprocess argument list per binarised folder, all run in one process (fairseq's import
    # costs seconds); label/ stays text for regression targets, which sentence_prediction reads as text
    arguments = []
    for name in inputs:
        extra = ["--srcdict", os.path.join(data_bin, "input0", "dict.txt")] if name == "input1" else []
        arguments.append(["--only-source", "--trainpref", os.path.join(raw, f"train.{name}"),
                          "--validpref", os.path.join(raw, f"valid.{name}"),
                          "--destdir", os.path.join(data_bin, name), "--workers", "1"] + extra)
    if regression:
        os.makedirs(os.path.join(data_bin, "label"), exist_ok=True)
        for split in ("train", "valid"):
            with open(os.path.join(raw, f"{split}.label")) as src:
                with open(os.path.join(data_bin, "label", f"{split}.label"), "w") as dst:
                    dst.write(src.read())
    else:
        arguments.append(["--only-source", "--trainpref", os.path.join(raw, "train.label"),
                          "--validpref", os.path.join(raw, "valid.label"),
                          "--destdir", os.path.join(data_bin, "label"), "--workers", "1"])
    subprocess.run([sys.executable, "-c", _PREPROCESS_EACH, json.dumps(arguments)], check=True, capture_output=True)
    return data_bin


def write_toy_reversal_task(out_dir: str, n_train: int, n_valid: int, vocab: int = 20, min_words: int = 3,
                            max_words: int = 8, seed: int = 0) -> str:
    """Writes ``{train,valid}.src-tgt.{src,tgt}`` and one dictionary per side (the same words: BART shares its
    embeddings) into ``out_dir``; each target is its source, of ``min_words`` to ``max_words`` words, reversed.
    Returns ``out_dir``, the data folder for ``--task translation --source-lang src --target-lang tgt``."""
    rng = random.Random(seed)
    words = [f"w{i}" for i in range(vocab)]
    os.makedirs(out_dir, exist_ok=True)
    for lang in ("src", "tgt"):
        with open(os.path.join(out_dir, f"dict.{lang}.txt"), "w") as f:
            f.write("".join(f"{word} 1\n" for word in words))
    for split, n in (("train", n_train), ("valid", n_valid)):
        sources = [[rng.choice(words) for _ in range(rng.randint(min_words, max_words))] for _ in range(n)]
        for lang, lines in (("src", sources), ("tgt", [source[::-1] for source in sources])):
            with open(os.path.join(out_dir, f"{split}.src-tgt.{lang}"), "w") as f:
                f.write("".join(" ".join(line) + "\n" for line in lines))
    return out_dir
