#!/usr/bin/env python3
r"""Raw summarization data -> GPT-2 BPE -> fairseq binaries for BART fine-tuning.

    python preprocess/summarization.py --dataset cnn_dm --raw-dir RAW --out-dir OUT \
        --encoder-json encoder.json --vocab-bpe vocab.bpe --dict dict.txt [--workers N]

Inputs per dataset (RAW is --raw-dir):
  cnn_dm       RAW/{train,val,test}.{source,target}: one article / one summary per line (the files BART's
               CNN/DM instructions produce).
  gigaword     RAW/{train,valid,test}.{article,title}.txt: one article / one headline per line. Link the
               release's files to these names (see docs/summarization.md).
  reddit_tifu  RAW/tifu_all_tokenized_and_filtered.json (or --reddit-file): the public JSON-lines release.
               --reddit-config long: document = selftext_without_tldr, summary = tldr (posts without a
               TL;DR are skipped and counted); short: summary = trimmed_title. The release has no splits:
               --split-method pegasus (default) cuts the kept posts in file order by --split-fractions
               (default 0.8,0.1,0.1: PEGASUS's train[:80%], train[80%:90%], train[90%:]); seeded shuffles
               them with --split-seed first.

Writes OUT/raw/{train,valid,test}.{source,target} (the cleaned, aligned text; test.target is what ROUGE
scores against), OUT/bpe/... (GPT-2 BPE ids) and OUT/bin (fairseq-preprocess, source-target, with the
BART dict.txt for both sides). Pairs whose source or target is empty are skipped, counted and reported
(--on-empty error stops instead). Line-count mismatches and missing files are errors.
"""

import argparse
import importlib.util
import json
import multiprocessing
import os
import random
import shutil
import subprocess
import sys
from typing import Dict, Iterator, List, Optional, Tuple

from fairseq_r3f.preprocess.files import DataError, read_lines
from fairseq_r3f.tools import fairseq_command

SPLITS = ("train", "valid", "test")
DATASETS = ("cnn_dm", "gigaword", "reddit_tifu")
REDDIT_FIELDS = {"long": ("selftext_without_tldr", "tldr"), "short": ("selftext_without_tldr", "trimmed_title")}


def clean(text: str) -> str:
    """One line of text: inner newlines and runs of whitespace become single spaces."""
    return " ".join(text.split())


def _require(path: str, what: str, fix: str) -> str:
    if not os.path.isfile(path):
        raise DataError(f"{what} not found: {path}. {fix}")
    return path


def _paired_files(raw_dir: str, files: Dict[str, Tuple[str, str]], dataset: str) -> Dict[str, List[Tuple[str, str]]]:
    pairs = {}
    for split, (source_name, target_name) in files.items():
        source_path = _require(os.path.join(raw_dir, source_name), f"{dataset} {split} source file",
                               f"Put the {dataset} files in --raw-dir under the names in docs/summarization.md.")
        target_path = _require(os.path.join(raw_dir, target_name), f"{dataset} {split} target file",
                               f"Put the {dataset} files in --raw-dir under the names in docs/summarization.md.")
        sources, targets = read_lines(source_path), read_lines(target_path)
        if len(sources) != len(targets):
            raise DataError(
                f"{source_path} has {len(sources)} lines but {target_path} has {len(targets)}: line i of one "
                f"must be the summary of line i of the other. Re-create the pair (a document containing a "
                f"newline or carriage return splits into two lines)."
            )
        pairs[split] = list(zip(sources, targets))
    return pairs


def read_cnn_dm(raw_dir: str) -> Dict[str, List[Tuple[str, str]]]:
    return _paired_files(raw_dir, {s: (f"{r}.source", f"{r}.target") for s, r in
                                   (("train", "train"), ("valid", "val"), ("test", "test"))}, "cnn_dm")


def read_gigaword(raw_dir: str) -> Dict[str, List[Tuple[str, str]]]:
    return _paired_files(raw_dir, {s: (f"{s}.article.txt", f"{s}.title.txt") for s in SPLITS}, "gigaword")


SPLIT_METHODS = ("pegasus", "seeded")


def read_reddit_tifu(path: str, config: str, method: str, seed: Optional[int], fractions: List[float],
                     report: Dict) -> Dict:
    """train/valid/test of the posts that have the configuration's summary: in file order (``pegasus``), or
    shuffled by ``random.Random(seed)`` first (``seeded``), then cut by ``fractions``."""
    _require(path, "Reddit TIFU JSON-lines file", "Pass --reddit-file, or put tifu_all_tokenized_and_filtered.json "
             "in --raw-dir.")
    source_field, target_field = REDDIT_FIELDS[config]
    examples, no_summary = [], 0
    for number, line in enumerate(read_lines(path), 1):
        if not line.strip():
            continue
        try:
            post = json.loads(line)
        except json.JSONDecodeError as error:
            raise DataError(f"{path} line {number} is not JSON ({error}): the file must hold one JSON "
                            f"object per line, as in the public Reddit TIFU release") from None
        if not isinstance(post, dict) or source_field not in post:
            raise DataError(f"{path} line {number} has no field {source_field!r}: is this the Reddit TIFU "
                            f"release (tifu_all_tokenized_and_filtered.json)?")
        if not post.get(target_field):
            no_summary += 1  # the 'long' configuration is the posts that have a TL;DR
            continue
        examples.append((post[source_field] or "", post[target_field]))
    report["reddit_posts_without_" + target_field] = no_summary
    if method == "seeded":
        random.Random(seed).shuffle(examples)
    n_train = int(round(fractions[0] * len(examples)))
    n_valid = int(round(fractions[1] * len(examples)))
    return {"train": examples[:n_train], "valid": examples[n_train:n_train + n_valid],
            "test": examples[n_train + n_valid:]}


def drop_empty(pairs: Dict[str, List[Tuple[str, str]]], on_empty: str, report: Dict) -> Dict:
    kept = {}
    for split, examples in pairs.items():
        out = []
        for number, (source, target) in enumerate(examples, 1):
            source, target = clean(source), clean(target)
            if source and target:
                out.append((source, target))
                continue
            side = "source" if not source else "target"
            if on_empty == "error":
                raise DataError(f"{split} example {number} has an empty {side}. Fix the data, or pass "
                                f"--on-empty skip to leave such pairs out (they are counted and reported).")
            key = f"{split}_skipped_empty_{side}"
            report[key] = report.get(key, 0) + 1
        if not out:
            raise DataError(f"the {split} split has no examples left: check the input files")
        kept[split] = out
    return kept


def check_bpe_files(encoder_json: str, vocab_bpe: str) -> None:
    """Catches swapped or wrong BPE files here, with a message, rather than as a traceback in a worker."""
    try:
        with open(encoder_json, encoding="utf-8") as f:
            encoder = json.load(f)
    except ValueError:
        encoder = None
    if not (isinstance(encoder, dict) and all(isinstance(i, int) for i in encoder.values())):
        raise DataError(f"--encoder-json {encoder_json} is not a GPT-2 encoder.json (a JSON object of token -> id): "
                        f"pass BART's encoder.json")
    merges = read_lines(vocab_bpe)[1:]  # the first line is a '#version' header
    if not merges or any(len(merge.split()) != 2 for merge in merges):
        raise DataError(f"--vocab-bpe {vocab_bpe} is not a GPT-2 vocab.bpe (a header line, then one merge "
                        f"'a b' per line): pass BART's vocab.bpe")


_ENCODER = None


def _load_encoder(encoder_json: str, vocab_bpe: str) -> None:
    """fairseq's GPT-2 BPE (fairseq/data/encoders/gpt2_bpe_utils.py), loaded from its file: importing it as
    fairseq.data... would import all of fairseq and torch into every worker, seconds each."""
    global _ENCODER
    spec = importlib.util.find_spec("fairseq")
    if spec is None or not spec.origin:
        raise DataError("fairseq is not installed in this Python: activate the plugin's environment")
    path = os.path.join(os.path.dirname(spec.origin), "data", "encoders", "gpt2_bpe_utils.py")
    module_spec = importlib.util.spec_from_file_location("_gpt2_bpe_utils", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    _ENCODER = module.get_encoder(encoder_json, vocab_bpe)


def _encode(line: str) -> str:
    return " ".join(map(str, _ENCODER.encode(line)))


def bpe_encode(pool, lines: List[str], desc: str) -> Iterator[str]:
    from tqdm import tqdm

    encoded = map(_encode, lines) if pool is None else pool.imap(_encode, lines, chunksize=256)
    yield from tqdm(encoded, total=len(lines), desc=desc, unit="lines", file=sys.stderr, mininterval=2)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True, choices=DATASETS)
    parser.add_argument("--raw-dir", required=True, help="folder with the raw files named above")
    parser.add_argument("--out-dir", required=True)
    parser.add_argument("--encoder-json", required=True, help="GPT-2 BPE encoder.json (as used by BART)")
    parser.add_argument("--vocab-bpe", required=True, help="GPT-2 BPE vocab.bpe (as used by BART)")
    parser.add_argument("--dict", required=True, help="the dict.txt of the BART checkpoint to fine-tune")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="BPE/binarisation processes")
    parser.add_argument("--on-empty", choices=("skip", "error"), default="skip",
                        help="pairs with an empty source or target: skip and count them (default), or stop")
    parser.add_argument("--reddit-config", choices=tuple(REDDIT_FIELDS), default="long",
                        help="Reddit TIFU summary: 'long' = the TL;DR (the paper's Table 4), 'short' = the title")
    parser.add_argument("--reddit-file",
                        help="Reddit TIFU JSON lines (default RAW/tifu_all_tokenized_and_filtered.json)")
    parser.add_argument("--split-method", choices=SPLIT_METHODS, default="pegasus",
                        help="Reddit TIFU: 'pegasus' (default) cuts the posts in file order, as PEGASUS (followed by "
                        "the paper) did; 'seeded' shuffles them with --split-seed first")
    parser.add_argument("--split-seed", type=int, help="seed of the 'seeded' Reddit TIFU split (default 1)")
    parser.add_argument("--split-fractions", default="0.8,0.1,0.1", help="Reddit TIFU train,valid,test fractions")
    args = parser.parse_args(argv)

    try:
        for path, what in ((args.encoder_json, "--encoder-json"), (args.vocab_bpe, "--vocab-bpe"),
                           (args.dict, "--dict")):
            _require(path, f"{what} file", "Download the GPT-2 BPE files and the BART dict.txt as described in "
                     "docs/summarization.md and pass their paths.")
        check_bpe_files(args.encoder_json, args.vocab_bpe)
        report: Dict = {"dataset": args.dataset}
        if args.dataset == "cnn_dm":
            pairs = read_cnn_dm(args.raw_dir)
        elif args.dataset == "gigaword":
            pairs = read_gigaword(args.raw_dir)
        else:
            try:
                fractions = [float(x) for x in args.split_fractions.split(",")]
            except ValueError:
                fractions = []
            if len(fractions) != 3 or min(fractions) <= 0 or abs(sum(fractions) - 1) > 1e-6:
                raise DataError(f"--split-fractions must be three positive numbers summing to 1, got "
                                f"{args.split_fractions!r}")
            if args.split_method == "pegasus" and args.split_seed is not None:
                raise DataError("--split-seed shuffles the posts, which --split-method pegasus keeps in file order: "
                                "pass --split-method seeded with it, or drop it")
            seed = (1 if args.split_seed is None else args.split_seed) if args.split_method == "seeded" else None
            path = args.reddit_file or os.path.join(args.raw_dir, "tifu_all_tokenized_and_filtered.json")
            report.update(reddit_config=args.reddit_config, split_method=args.split_method, split_seed=seed,
                          split_fractions=fractions)
            pairs = read_reddit_tifu(path, args.reddit_config, args.split_method, seed, fractions, report)
        pairs = drop_empty(pairs, args.on_empty, report)
    except DataError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    raw_dir, bpe_dir, bin_dir = (os.path.join(args.out_dir, name) for name in ("raw", "bpe", "bin"))
    for folder in (raw_dir, bpe_dir):
        os.makedirs(folder, exist_ok=True)
    pool = None
    if args.workers > 1:
        pool = multiprocessing.get_context("spawn").Pool(args.workers, _load_encoder,
                                                         (args.encoder_json, args.vocab_bpe))
    else:
        _load_encoder(args.encoder_json, args.vocab_bpe)
    try:
        for split, examples in pairs.items():
            report[f"{split}_examples"] = len(examples)
            for side, index in (("source", 0), ("target", 1)):
                lines = [example[index] for example in examples]
                with open(os.path.join(raw_dir, f"{split}.{side}"), "w", encoding="utf-8") as f:
                    f.write("\n".join(lines) + "\n")
                with open(os.path.join(bpe_dir, f"{split}.{side}"), "w", encoding="utf-8") as f:
                    for encoded in bpe_encode(pool, lines, f"bpe {split}.{side}"):
                        f.write(encoded + "\n")
    finally:
        if pool is not None:
            pool.close()
            pool.join()

    if os.path.isdir(bin_dir):
        shutil.rmtree(bin_dir)  # fairseq-preprocess would mix old and new files otherwise
    command = fairseq_command("fairseq-preprocess") + [
        "--source-lang", "source", "--target-lang", "target",
        "--trainpref", os.path.join(bpe_dir, "train"), "--validpref", os.path.join(bpe_dir, "valid"),
        "--testpref", os.path.join(bpe_dir, "test"), "--destdir", bin_dir,
        "--srcdict", args.dict, "--tgtdict", args.dict, "--workers", str(args.workers),
    ]
    print("running: " + " ".join(command), file=sys.stderr)
    proc = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        print(proc.stdout[-4000:], file=sys.stderr)
        print("error: fairseq-preprocess failed (see above)", file=sys.stderr)
        return proc.returncode
    # fairseq-preprocess maps BPE ids missing from dict.txt to <unk>: with BART's own dict there are none
    coverage = [line[line.find("["):] for line in proc.stdout.splitlines() if "% replaced" in line]
    report["fairseq_preprocess"] = coverage
    if any(" 0.0% replaced" not in line for line in coverage):
        print("warning: some BPE ids are not in --dict and became <unk>: is it the dict.txt of the same BART "
              "model as encoder.json?\n  " + "\n  ".join(coverage), file=sys.stderr)
    with open(os.path.join(args.out_dir, "preprocess_report.json"), "w") as f:
        json.dump(report, f, indent=1)
    print(json.dumps(report, indent=1))
    skipped = {key: value for key, value in report.items() if "skipped" in key}
    if skipped:
        print(f"note: skipped pairs with an empty side: {skipped}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
