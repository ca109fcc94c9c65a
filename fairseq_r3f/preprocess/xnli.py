#!/usr/bin/env python
"""XNLI zero-shot data: train on English MNLI, validate and test on each of XNLI's 15 languages.

    python preprocess/xnli.py --mnli-dir GLUE_DIR/MNLI --xnli-dir XNLI_DIR \
        --sentencepiece-model XLMR_DIR/sentencepiece.bpe.model --dict XLMR_DIR/dict.txt --out-dir XNLI_BIN

MNLI's train.tsv (GLUE's folder) is the training set; XNLI_DIR is the XNLI-1.0 release (xnli.dev.tsv,
xnli.test.tsv, columns found by header name: language, gold_label, sentence1, sentence2). Text is cut into
pieces with the XLM-R sentencepiece model and binarised with XLM-R's dictionary into XNLI_BIN/{input0,
input1,label}, with one subset per language: valid_en ... valid_ur and test_en ... test_ur, so that
``fairseq-train --valid-subset valid_en,valid_fr,...`` logs each language's accuracy. Malformed rows are
counted in report.json and dropped whole, as in preprocess/glue.py.
"""

import argparse
import json
import os
import re
import shutil
import sys
from typing import List

from fairseq_r3f.preprocess.files import DataError
from fairseq_r3f.preprocess.glue import (
    NLI, TASKS, SplitFile, binarise, check_files, clean_text, progress, read_split, write_lines,
)

# Table 3's column order.
LANGUAGES = ("en", "fr", "es", "de", "el", "bg", "ru", "tr", "ar", "vi", "th", "zh", "hi", "sw", "ur")
INPUTS = ("sentence1", "sentence2")


def read_xnli(path: str, languages, max_malformed_fraction: float):
    """{language: [(inputs, label)]} and a report, for an XNLI-1.0 tsv holding every language."""
    spec = SplitFile("", os.path.basename(path), INPUTS + ("language",), "gold_label")
    examples, report = read_split(path, spec, NLI)
    if report["malformed"] > max_malformed_fraction * max(report["rows"], 1):
        raise DataError(f"{path}: {report['malformed']} of {report['rows']} rows are malformed "
                        f"(first: {report['malformed_rows'][:3]}); is this the XNLI-1.0 release file?")
    by_language = {lang: [] for lang in languages}
    for inputs, label in examples:
        lang = inputs[2]
        if lang in by_language:
            by_language[lang].append((inputs[:2], label))
    empty = [lang for lang, rows in by_language.items() if not rows]
    if empty:
        raise DataError(f"{path} has no rows for language(s) {empty}; pass --languages to choose others")
    return by_language, report


def parse_languages(value: str) -> List[str]:
    """Language codes separated by commas and/or spaces ("en,fr", "en fr", "en, fr"), each kept once."""
    languages = [lang for lang in re.split(r"[,\s]+", value) if lang]
    if not languages:
        raise DataError(f"--languages {value!r} names no language: pass codes such as en,fr (or 'en fr')")
    repeated = sorted({lang for lang in languages if languages.count(lang) > 1})
    if repeated:
        print(f"note: --languages names {', '.join(repeated)} more than once; each language is written once",
              file=sys.stderr)
    return list(dict.fromkeys(languages))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--mnli-dir", required=True, help="GLUE's MNLI folder (train.tsv)")
    parser.add_argument("--xnli-dir", required=True, help="XNLI-1.0 folder (xnli.dev.tsv, xnli.test.tsv)")
    parser.add_argument("--sentencepiece-model", required=True, help="XLM-R's sentencepiece.bpe.model")
    parser.add_argument("--dict", required=True, help="XLM-R's dict.txt")
    parser.add_argument("--out-dir", required=True)
    parser.add_argument("--languages", default=",".join(LANGUAGES),
                        help="language codes separated by commas or spaces (default: all 15, Table 3's order)")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--max-malformed-fraction", type=float, default=0.01)
    parser.add_argument("--keep-raw", action="store_true")
    args = parser.parse_args(argv)
    try:
        run(args, parse_languages(args.languages))
    except DataError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


def run(args, languages) -> None:
    train_tsv = os.path.join(args.mnli_dir, "train.tsv")
    dev_tsv, test_tsv = (os.path.join(args.xnli_dir, f"xnli.{s}.tsv") for s in ("dev", "test"))
    check_files({"--mnli-dir": train_tsv, "--xnli-dir": dev_tsv, "--xnli-dir ": test_tsv,
                 "--sentencepiece-model": args.sentencepiece_model, "--dict": args.dict})
    import sentencepiece

    sp = sentencepiece.SentencePieceProcessor(model_file=args.sentencepiece_model)

    def pieces(texts: List[str], desc: str) -> List[str]:
        return [" ".join(sp.encode(clean_text(text), out_type=str)) for text in progress(texts, len(texts), desc)]

    # Read and check everything before writing anything.
    mnli_train = next(f for f in TASKS["MNLI"].files if f.split == "train")
    train, train_report = read_split(train_tsv, mnli_train, NLI)
    if train_report["malformed"] > args.max_malformed_fraction * max(train_report["rows"], 1):
        raise DataError(f"{train_tsv}: {train_report['malformed']} of {train_report['rows']} rows are malformed "
                        f"(first: {train_report['malformed_rows'][:3]}); is this GLUE's MNLI train.tsv?")
    if not train:
        raise DataError(f"{train_tsv}: no usable MNLI row ({train_report['rows']} rows, {train_report['malformed']} "
                        f"malformed): the training split would be empty; pass GLUE's MNLI folder as --mnli-dir")
    subsets = {"train": train}
    reports = {"train": train_report}
    for name, path in (("valid", dev_tsv), ("test", test_tsv)):
        by_language, reports[name] = read_xnli(path, languages, args.max_malformed_fraction)
        for lang in languages:
            subsets[f"{name}_{lang}"] = by_language[lang]
            reports[f"{name}_{lang}"] = {"kept": len(by_language[lang])}

    raw = os.path.join(args.out_dir, "raw")
    os.makedirs(raw, exist_ok=True)
    # fairseq-preprocess names extra subsets valid1, valid2, ...: write them in language order, rename after.
    fairseq_names = {"train": "train"}
    for name in ("valid", "test"):
        for k, lang in enumerate(languages):
            fairseq_names[f"{name}_{lang}"] = name + (str(k) if k else "")
    for subset, examples in subsets.items():
        split = fairseq_names[subset]
        for k in range(2):
            write_lines(os.path.join(raw, f"{split}.input{k}"),
                        pieces([inputs[k] for inputs, _ in examples], f"sentencepiece {subset}.input{k}"))
        write_lines(os.path.join(raw, f"{split}.label"), [label for _, label in examples])
    splits = list(fairseq_names.values())
    for k in range(2):
        binarise(raw, os.path.join(args.out_dir, f"input{k}"), splits, f"input{k}", args.dict, args.workers)
    binarise(raw, os.path.join(args.out_dir, "label"), splits, "label", None, 1)
    for key in ("input0", "input1", "label"):
        folder = os.path.join(args.out_dir, key)
        for subset, split in fairseq_names.items():
            if subset != split:
                for ext in ("bin", "idx"):
                    os.replace(os.path.join(folder, f"{split}.{ext}"), os.path.join(folder, f"{subset}.{ext}"))
    if not args.keep_raw:
        shutil.rmtree(raw)
    with open(os.path.join(args.out_dir, "report.json"), "w") as f:
        json.dump({"languages": languages, "subsets": reports}, f, indent=1)
    print(f"XNLI: train {len(train)} MNLI pairs; " + ", ".join(
        f"{lang} {len(subsets['valid_' + lang])}/{len(subsets['test_' + lang])}" for lang in languages
    ) + f" valid/test pairs -> {args.out_dir}")


if __name__ == "__main__":
    sys.exit(main())
