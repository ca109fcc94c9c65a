#!/usr/bin/env python
"""Official GLUE task folders -> GPT-2 BPE -> the binaries fairseq's ``sentence_prediction`` task reads.

    python preprocess/glue.py --glue-dir GLUE_DIR --encoder-json ENCODER_JSON --vocab-bpe VOCAB_BPE \
        --dict DICT_TXT --out-dir GLUE_BIN [--tasks RTE,MRPC | ALL] [--workers 8]

GLUE_DIR holds the folders written by GLUE's download script (MNLI/, QQP/, RTE/, ...); ENCODER_JSON,
VOCAB_BPE and DICT_TXT are RoBERTa's GPT-2 BPE files and dictionary. For each task this writes
GLUE_BIN/<TASK>-bin/{input0,input1,label} (single-sentence tasks have no input1; STS-B's label/ holds the
scores divided by 5 as text, which is how fairseq reads regression targets), and report.json with the number
of rows read, kept and found malformed per split.

Columns are found by their header names where a file has a header (every file but CoLA's train/dev), so a
row is kept only when it is UTF-8, has exactly the header's number of fields and a label from the task's label
set (STS-B: a finite score in [0, 5]);
any other row is counted, listed in report.json and dropped as a whole, so inputs and labels stay aligned.
More than --max-malformed-fraction malformed rows in a split stops the run (a wrong or damaged file).

Splits: train -> train, dev -> valid, test -> test (inputs only; GLUE hides test labels). MNLI:
dev_matched -> valid, dev_mismatched -> valid1, test_matched -> test, test_mismatched -> test1.
"""

import argparse
import json
import logging
import math
import os
import shutil
import sys
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple, Union

from fairseq_r3f.preprocess.files import DataError, read_lines

Column = Union[str, int]  # a header name, or an index for header-less files


@dataclass(frozen=True)
class SplitFile:
    split: str  # the fairseq split name it becomes
    name: str  # the file in the task folder
    inputs: Tuple[Column, ...]
    label: Optional[Column]  # None: no labels (test files)
    header: bool = True
    n_columns: Optional[int] = None  # for header-less files
    optional: bool = False  # test files: binarised when present


@dataclass(frozen=True)
class GlueTask:
    files: Tuple[SplitFile, ...]
    labels: Optional[Tuple[str, ...]]  # None: a regression score (STS-B)


NLI = ("contradiction", "entailment", "neutral")
ENTAIL = ("entailment", "not_entailment")
BINARY = ("0", "1")


def _standard(inputs, label, labels, test_inputs=None):
    test_inputs = test_inputs or inputs
    return GlueTask(
        files=(
            SplitFile("train", "train.tsv", inputs, label),
            SplitFile("valid", "dev.tsv", inputs, label),
            SplitFile("test", "test.tsv", test_inputs, None, optional=True),
        ),
        labels=labels,
    )


TASKS: Dict[str, GlueTask] = {
    "MNLI": GlueTask(
        files=(
            SplitFile("train", "train.tsv", ("sentence1", "sentence2"), "gold_label"),
            SplitFile("valid", "dev_matched.tsv", ("sentence1", "sentence2"), "gold_label"),
            SplitFile("valid1", "dev_mismatched.tsv", ("sentence1", "sentence2"), "gold_label"),
            SplitFile("test", "test_matched.tsv", ("sentence1", "sentence2"), None, optional=True),
            SplitFile("test1", "test_mismatched.tsv", ("sentence1", "sentence2"), None, optional=True),
        ),
        labels=NLI,
    ),
    "QNLI": _standard(("question", "sentence"), "label", ENTAIL),
    "QQP": _standard(("question1", "question2"), "is_duplicate", BINARY),
    "RTE": _standard(("sentence1", "sentence2"), "label", ENTAIL),
    "MRPC": _standard(("#1 String", "#2 String"), "Quality", BINARY),
    "SST-2": _standard(("sentence",), "label", BINARY),
    "STS-B": _standard(("sentence1", "sentence2"), "score", None),
    # CoLA's train.tsv and dev.tsv have no header: source, label, original label mark, sentence.
    "CoLA": GlueTask(
        files=(
            SplitFile("train", "train.tsv", (3,), 1, header=False, n_columns=4),
            SplitFile("valid", "dev.tsv", (3,), 1, header=False, n_columns=4),
            SplitFile("test", "test.tsv", ("sentence",), None, optional=True),
        ),
        labels=BINARY,
    ),
}
STSB_MAX_SCORE = 5.0

# Characters that end a line for fairseq-preprocess's reader (universal newlines) or for str.splitlines:
# inside a field they would split one example in two, so they become spaces.
_LINE_BREAKS = str.maketrans({c: " " for c in "\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"})


def clean_text(text: str) -> str:
    return text.translate(_LINE_BREAKS).strip()


def read_split(path: str, spec: SplitFile, labels: Optional[Sequence[str]]):
    """(examples, report): examples are (inputs, label or None) of the well-formed rows, in file order."""
    undecodable: Dict[int, str] = {}
    rows = read_lines(path, undecodable)  # MRPC's files start with a byte-order mark: read_lines drops it
    if spec.header:
        if not rows:
            raise DataError(f"{path} is empty: expected a header line")
        if 1 in undecodable:
            raise DataError(f"{path}:1: the header is {undecodable[1]}; convert the file to UTF-8")
        header = rows[0].split("\t")
        missing = [c for c in spec.inputs + ((spec.label,) if spec.label is not None else ()) if c not in header]
        if missing:
            raise DataError(
                f"{path}: header has no column {', '.join(map(repr, missing))} (header: {header}); is this the "
                f"official GLUE file? Re-download it with GLUE's download_glue_data.py"
            )
        n_columns = len(header)
        index = {name: header.index(name) for name in header}
        input_idx = [index[c] for c in spec.inputs]
        label_idx = index[spec.label] if spec.label is not None else None
        body, first_line = rows[1:], 2
    else:
        n_columns, input_idx, label_idx = spec.n_columns, list(spec.inputs), spec.label
        body, first_line = rows, 1

    examples, malformed = [], []
    for line_no, row in enumerate(body, start=first_line):
        fields = row.split("\t")
        reason = None
        if line_no in undecodable:
            reason = undecodable[line_no]
        elif len(fields) != n_columns:
            reason = f"{len(fields)} fields, expected {n_columns}"
        elif label_idx is not None:
            label = fields[label_idx].strip()
            if labels is None:
                try:
                    score = float(label)
                except ValueError:
                    reason = f"score {label!r} is not a number"
                else:
                    if not math.isfinite(score):
                        reason = f"score {label!r} is not a finite number"
                    elif not 0 <= score <= STSB_MAX_SCORE:
                        reason = f"score {label} outside [0, {STSB_MAX_SCORE:g}]"
                    else:
                        label = f"{score / STSB_MAX_SCORE:.6g}"
            elif label not in labels:
                reason = f"label {label!r} not in {list(labels)}"
        if reason:
            malformed.append({"line": line_no, "reason": reason})
            continue
        inputs = [clean_text(fields[i]) for i in input_idx]
        examples.append((inputs, label if label_idx is not None else None))
    report = {"file": path, "rows": len(body), "kept": len(examples), "malformed": len(malformed),
              "malformed_rows": malformed[:100]}
    return examples, report


# GPT-2 BPE, one encoder per worker process.
_BPE = None


def _init_bpe(encoder_json: str, vocab_bpe: str) -> None:
    global _BPE
    from fairseq.data.encoders.gpt2_bpe_utils import get_encoder

    _BPE = get_encoder(encoder_json, vocab_bpe)


def _encode(text: str) -> str:
    return " ".join(map(str, _BPE.encode(text)))


def progress(iterable, total: int, desc: str):
    """A tqdm progress bar with rate and ETA on stderr (not stdout, which carries the tools' results)."""
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, unit="lines", file=sys.stderr, mininterval=2, dynamic_ncols=True)


def bpe_encode(texts: List[str], encoder_json: str, vocab_bpe: str, workers: int, desc: str = "bpe") -> List[str]:
    if workers <= 1:
        _init_bpe(encoder_json, vocab_bpe)
        return list(progress(map(_encode, texts), len(texts), desc))
    from multiprocessing import Pool

    with Pool(workers, initializer=_init_bpe, initargs=(encoder_json, vocab_bpe)) as pool:
        return list(progress(pool.imap(_encode, texts, chunksize=1000), len(texts), desc))


def fairseq_preprocess(argv: List[str]) -> None:
    """fairseq-preprocess, run in this process (one Python start-up instead of one per call)."""
    from fairseq import options
    from fairseq_cli import preprocess

    args = options.get_preprocessing_parser().parse_args(argv)
    try:
        preprocess.main(args)
    finally:  # main() adds a log file handler per call; keep later calls out of earlier folders
        for handler in list(preprocess.logger.handlers):
            if isinstance(handler, logging.FileHandler):
                preprocess.logger.removeHandler(handler)
                handler.close()


def binarise(raw_dir: str, dest: str, splits: List[str], name: str, srcdict: Optional[str], workers: int):
    """fairseq-preprocess --only-source on raw_dir/<split>.<name> for train, valid*, test* in order."""
    prefixes = {"train": [], "valid": [], "test": []}
    for split in splits:
        kind = split.rstrip("0123456789")
        prefixes[kind].append(os.path.join(raw_dir, f"{split}.{name}"))
    argv = ["--only-source", "--destdir", dest, "--workers", str(workers),
            "--trainpref", prefixes["train"][0]]
    for kind in ("valid", "test"):
        if prefixes[kind]:
            argv += [f"--{kind}pref", ",".join(prefixes[kind])]
    if srcdict:
        argv += ["--srcdict", srcdict]
    fairseq_preprocess(argv)


def write_lines(path: str, lines: List[str]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for line in lines:
            f.write(line + "\n")


def check_files(paths: Dict[str, str]) -> None:
    for flag, path in paths.items():
        if not os.path.isfile(path):
            raise DataError(f"{flag} {path}: no such file")


def preprocess_task(task: str, args) -> dict:
    spec = TASKS[task]
    task_dir = os.path.join(args.glue_dir, task)
    if not os.path.isdir(task_dir):
        raise DataError(f"{task_dir}: no such folder; --glue-dir must hold GLUE's task folders ({', '.join(TASKS)})")
    out = os.path.join(args.out_dir, f"{task}-bin")

    # Read and check every split before writing anything.
    read, reports = [], {}
    for split_file in spec.files:
        path = os.path.join(task_dir, split_file.name)
        if not os.path.isfile(path):
            if split_file.optional:
                print(f"{task}: {split_file.name} not found, no {split_file.split} split", file=sys.stderr)
                continue
            needed = ", ".join(f.name for f in spec.files if not f.optional)
            raise DataError(f"{path}: no such file; {task} needs {needed}")
        examples, report = read_split(path, split_file, spec.labels)
        reports[split_file.split] = report
        if not report["rows"]:
            raise DataError(f"{path} has no data rows: the {split_file.split} split would be empty; "
                            f"re-download the official GLUE file")
        if not examples:
            raise DataError(f"{path}: no well-formed row (first problems: {report['malformed_rows'][:3]})")
        if report["malformed"] > args.max_malformed_fraction * max(report["rows"], 1):
            raise DataError(
                f"{path}: {report['malformed']} of {report['rows']} rows are malformed (first: "
                f"{report['malformed_rows'][:3]}), more than --max-malformed-fraction {args.max_malformed_fraction}; "
                f"check that this is the official GLUE file, or raise the fraction to accept it"
            )
        read.append((split_file, examples))

    raw = os.path.join(out, "raw")
    os.makedirs(raw, exist_ok=True)
    splits = []
    for split_file, examples in read:
        report = reports[split_file.split]
        if report["malformed"]:
            first = "; ".join(f"line {row['line']}: {row['reason']}" for row in report["malformed_rows"][:3])
            print(f"{task}: {report['file']}: dropped {report['malformed']} malformed of {report['rows']} rows "
                  f"({first}{'; ...' if report['malformed'] > 3 else ''}; all in {out}/report.json)", file=sys.stderr)
        for k in range(len(split_file.inputs)):
            texts = [inputs[k] for inputs, _ in examples]
            write_lines(os.path.join(raw, f"{split_file.split}.input{k}"),
                        bpe_encode(texts, args.encoder_json, args.vocab_bpe, args.workers,
                                   f"{task} bpe {split_file.split}.input{k}"))
        if split_file.label is not None:
            write_lines(os.path.join(raw, f"{split_file.split}.label"), [label for _, label in examples])
        splits.append(split_file.split)

    labelled = [s.split for s in spec.files if s.label is not None and s.split in splits]
    for k in range(len(spec.files[0].inputs)):
        binarise(raw, os.path.join(out, f"input{k}"), splits, f"input{k}", args.dict, args.workers)
    if spec.labels is None:  # sentence_prediction reads regression targets as text: label/<split>.label
        os.makedirs(os.path.join(out, "label"), exist_ok=True)
        for split in labelled:
            shutil.copyfile(os.path.join(raw, f"{split}.label"), os.path.join(out, "label", f"{split}.label"))
    else:
        binarise(raw, os.path.join(out, "label"), labelled, "label", None, 1)
    if not args.keep_raw:
        shutil.rmtree(raw)
    with open(os.path.join(out, "report.json"), "w") as f:
        json.dump({"task": task, "splits": reports}, f, indent=1)
    return reports


def parse_tasks(value: str) -> List[str]:
    names = list(TASKS) if value.upper() == "ALL" else [t.strip() for t in value.split(",") if t.strip()]
    unknown = [t for t in names if t not in TASKS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown GLUE task(s) {unknown}: choose from {', '.join(TASKS)} or ALL")
    return names


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--glue-dir", required=True, help="folder with GLUE's task folders (MNLI/, RTE/, ...)")
    parser.add_argument("--encoder-json", required=True, help="GPT-2 BPE encoder.json (RoBERTa's)")
    parser.add_argument("--vocab-bpe", required=True, help="GPT-2 BPE vocab.bpe (RoBERTa's)")
    parser.add_argument("--dict", required=True, help="RoBERTa's dict.txt (from the model archive)")
    parser.add_argument("--out-dir", required=True, help="writes <out-dir>/<TASK>-bin")
    parser.add_argument("--tasks", type=parse_tasks, default=list(TASKS), help="comma-separated, or ALL (default)")
    parser.add_argument("--workers", type=int, default=1, help="processes for BPE and binarisation")
    parser.add_argument("--max-malformed-fraction", type=float, default=0.01,
                        help="stop when more than this fraction of a split's rows is malformed (default 0.01)")
    parser.add_argument("--keep-raw", action="store_true", help="keep the BPE text files in <TASK>-bin/raw")
    args = parser.parse_args(argv)
    try:
        check_files({"--encoder-json": args.encoder_json, "--vocab-bpe": args.vocab_bpe, "--dict": args.dict})
        for task in args.tasks:
            reports = preprocess_task(task, args)
            summary = ", ".join(f"{s}: {r['kept']}/{r['rows']}" for s, r in reports.items())
            print(f"{task}: kept/rows {summary} -> {os.path.join(args.out_dir, task + '-bin')}")
    except DataError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
