#!/usr/bin/env python3
r"""Parallel text -> joint sentencepiece -> fairseq binaries (``fairseq-preprocess --joined-dictionary``).

IWSLT'14 German-English from the release archive (de-en.tgz, unpacked):

    python preprocess/translation.py --iwslt14-dir de-en --out-dir OUT [--vocab-size 10000] [--workers N]

Any other pair from aligned plain-text files (PREFIX.SRC and PREFIX.TGT, one sentence per line):

    python preprocess/translation.py --source-lang en --target-lang ro --train-prefix raw/train \
        --valid-prefix raw/valid --test-prefix raw/test --out-dir OUT

The IWSLT'14 folder holds what fairseq's examples/translation/prepare-iwslt14.sh reads:
  train.tags.de-en.{de,en}     the training talks, one sentence per line, with metadata lines between talks
                               (<url>, <keywords>, <talkid>, <speaker>, <reviewer ...>, <translator ...>, ...).
                               As in that script, <title> and <description> lines keep their text without the
                               tags; every other tag line is dropped (counted per tag in the report). A tag
                               line on one side facing text on the other is an error: the files are misaligned.
  IWSLT14.TED.dev2010.de-en.{de,en}.xml, IWSLT14.TEDX.dev2012..., IWSLT14.TED.tst2010/tst2011/tst2012...
                               <seg id="N"> text </seg> lines; both sides must hold the same segment ids in the
                               same order. Their concatenation, in that order, is the test set (as in that script).
  valid = every 23rd training pair, train = the rest (that script's split).
By default, unlike that script, we do not Moses-tokenise, lowercase or length-filter: sentencepiece works on raw
text and BLEU is computed on detokenised, cased output with sacrebleu (docs/translation.md).

--tokenization moses (IWSLT'14 only) instead follows that script step by step -- its tag filtering, Moses
tokenisation (sacremoses), length/ratio cleaning, lowercasing, split, and joint BPE with subword-nmt
(--vocab-size merges) -- the data behind the published IWSLT'14 scores (fairseq_r3f/preprocess/iwslt14_tokenized.py;
score it with fairseq_r3f.evaluation.tokenized_bleu). It writes OUT/raw (tokenised, lowercased text: the
references of tokenised BLEU), OUT/bpe (the BPE text and its codes) and OUT/bin (one dictionary for both sides).

Every line is whitespace-normalised. A pair with an empty side is dropped and counted per split and side; an
empty training split, files of different line counts (both counts named) and bytes that are not UTF-8 (file
and line named) stop the run. One sentencepiece model is trained on the training text of both languages
(--spm-model applies an existing one instead, e.g. mBART's sentence.bpe.model, with --dict its dict.txt).

Writes OUT/raw/{train,valid,test}.{SRC,TGT} (the cleaned aligned text; test.TGT is what BLEU scores against),
OUT/spm/ (the model and the encoded text), OUT/bin/ (fairseq-preprocess output, with sentencepiece.model) and
OUT/report.json (every count).
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from typing import Dict, List, Optional, Sequence, Tuple

from fairseq_r3f.preprocess import iwslt14_tokenized
from fairseq_r3f.preprocess.files import DataError, read_lines
from fairseq_r3f.tools import fairseq_command

SPLITS = ("train", "valid", "test")
IWSLT14_TEST_SETS = ("TED.dev2010", "TEDX.dev2012", "TED.tst2010", "TED.tst2011", "TED.tst2012")
IWSLT14_VALID_EVERY = 23
KEEP_TEXT_TAGS = ("title", "description")  # prepare-iwslt14.sh strips these tags and keeps their text
_TAG_LINE = re.compile(r"^\s*<(/?)([A-Za-z_][\w-]*)[^>]*>")
_SEG = re.compile(r"<seg\s+id\s*=\s*\"?([^\">\s]+)\"?\s*>(.*?)</seg>", re.IGNORECASE)

Pairs = List[Tuple[str, str]]


def clean(text: str) -> str:
    """One line: runs of whitespace become one space, none at the ends."""
    return " ".join(text.split())


def _require(path: str, fix: str) -> str:
    if not os.path.isfile(path):
        raise DataError(f"{path}: no such file. {fix}")
    return path


def read_aligned(source_path: str, target_path: str) -> Pairs:
    """Line i of one file with line i of the other; files of different lengths are refused."""
    sources, targets = read_lines(source_path), read_lines(target_path)
    if len(sources) != len(targets):
        raise DataError(f"{source_path} has {len(sources)} lines but {target_path} has {len(targets)}: line i of "
                        f"one must translate line i of the other; fix the pair (a sentence holding a newline "
                        f"splits into two lines)")
    return list(zip(sources, targets))


def _tag(line: str) -> Optional[str]:
    match = _TAG_LINE.match(line)
    return match.group(2).lower() if match else None


def strip_tags(pairs: Pairs, where: str, report: Dict) -> Pairs:
    """prepare-iwslt14.sh's treatment of the training talks' metadata lines, checked on both sides at once."""
    kept, dropped = [], report.setdefault("train_tag_lines_dropped", {})
    for number, (source, target) in enumerate(pairs, 1):
        source_tag, target_tag = _tag(source), _tag(target)
        if (source_tag is None) != (target_tag is None) or (source_tag and source_tag != target_tag):
            raise DataError(f"{where} line {number}: one side is {source_tag or 'text'!r}, the other "
                            f"{target_tag or 'text'!r}: the two files are misaligned from here on")
        if source_tag is None:
            kept.append((source, target))
        elif source_tag in KEEP_TEXT_TAGS:
            tags = re.compile(rf"</?{source_tag}>", re.IGNORECASE)
            kept.append((tags.sub(" ", source), tags.sub(" ", target)))
        else:
            dropped[source_tag] = dropped.get(source_tag, 0) + 1
    return kept


def read_segments(path: str) -> List[Tuple[str, str]]:
    """(id, text) of each <seg id=...> line of an IWSLT xml file, entities unescaped, whitespace-normalised."""
    from xml.sax.saxutils import unescape

    segments = []
    for line in read_lines(path):
        match = _SEG.search(line)
        if match:
            segments.append((match.group(1), clean(unescape(match.group(2), {"&quot;": '"', "&apos;": "'"}))))
    return segments


def read_iwslt14(folder: str, source: str, target: str, test_sets: Sequence[str], report: Dict) -> Dict[str, Pairs]:
    languages = {source, target}
    if languages != {"de", "en"}:
        raise DataError(f"IWSLT'14 de-en has the languages de and en, not {source}-{target}: pass "
                        f"--source-lang de --target-lang en (or en/de)")
    fix = "Pass --iwslt14-dir the de-en folder unpacked from the release's de-en.tgz."
    paths = [_require(os.path.join(folder, f"train.tags.de-en.{lang}"), fix) for lang in (source, target)]
    train = strip_tags(read_aligned(*paths), f"{paths[0]} / {paths[1]}", report)
    test = []
    for name in test_sets:
        paths = [_require(os.path.join(folder, f"IWSLT14.{name}.de-en.{lang}.xml"), fix) for lang in (source, target)]
        source_segments, target_segments = (read_segments(path) for path in paths)
        if len(source_segments) != len(target_segments):
            raise DataError(f"{paths[0]} has {len(source_segments)} segments but {paths[1]} has "
                            f"{len(target_segments)}: a test set must hold the same segments on both sides")
        for (source_id, source_text), (target_id, target_text) in zip(source_segments, target_segments):
            if source_id != target_id:
                raise DataError(f"{paths[0]} segment id {source_id} faces id {target_id} in {paths[1]}: the two "
                                f"files are not the same test set")
            test.append((source_text, target_text))
        report.setdefault("test_sets", {})[name] = len(source_segments)
    # prepare-iwslt14.sh splits after its own cleaning; here after the empty pairs are gone
    train = drop_empty({"train": train}, report)["train"]
    return {"train": [p for i, p in enumerate(train, 1) if i % IWSLT14_VALID_EVERY],
            "valid": [p for i, p in enumerate(train, 1) if not i % IWSLT14_VALID_EVERY], "test": test}


def read_prefixes(prefixes: Dict[str, str], source: str, target: str) -> Dict[str, Pairs]:
    fix = "Each --*-prefix P needs the files P.SRC and P.TGT (--source-lang / --target-lang)."
    return {split: read_aligned(_require(f"{prefix}.{source}", fix), _require(f"{prefix}.{target}", fix))
            for split, prefix in prefixes.items()}


def drop_empty(pairs: Dict[str, Pairs], report: Dict) -> Dict[str, Pairs]:
    """Whitespace-normalised pairs; those with an empty side are left out and counted per split and side."""
    kept = {}
    for split, examples in pairs.items():
        out = []
        for source, target in examples:
            source, target = clean(source), clean(target)
            if source and target:
                out.append((source, target))
                continue
            side = "both" if not (source or target) else "source" if not source else "target"
            key = f"{split}_dropped_empty_{side}"
            report[key] = report.get(key, 0) + 1
        kept[split] = out
    if "train" in kept and not kept["train"]:
        raise DataError("the training split has no pairs with text on both sides: check the input files")
    return kept


def train_sentencepiece(files: Sequence[str], prefix: str, vocab_size: int, model_type: str, workers: int) -> str:
    import sentencepiece as spm

    try:
        spm.SentencePieceTrainer.train(
            input=",".join(files), model_prefix=prefix, vocab_size=vocab_size, model_type=model_type,
            character_coverage=1.0, num_threads=workers, input_sentence_size=2_000_000,
            shuffle_input_sentence=True, minloglevel=2,
        )
    except RuntimeError as error:
        raise DataError(f"sentencepiece could not train a {vocab_size}-piece model ({error}); for a small "
                        f"training text pass a smaller --vocab-size") from None
    return prefix + ".model"


def encode(model_path: str, lines: List[str], desc: str, workers: int) -> List[str]:
    import sentencepiece as spm
    from tqdm import tqdm

    processor = spm.SentencePieceProcessor(model_file=model_path)
    out, chunk = [], 10_000
    with tqdm(total=len(lines), desc=desc, unit="lines", file=sys.stderr, mininterval=2) as bar:
        for start in range(0, len(lines), chunk):
            pieces = processor.encode(lines[start:start + chunk], out_type=str, num_threads=workers)
            out.extend(" ".join(p) for p in pieces)
            bar.update(len(pieces))
    return out


def write_lines(path: str, lines: Sequence[str]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write("".join(line + "\n" for line in lines))


def binarise(spm_dir: str, bin_dir: str, source: str, target: str, dict_path: Optional[str], workers: int,
             report: Dict) -> None:
    if os.path.isdir(bin_dir):
        shutil.rmtree(bin_dir)  # fairseq-preprocess would mix old and new files otherwise
    command = fairseq_command("fairseq-preprocess") + [
        "--source-lang", source, "--target-lang", target, "--joined-dictionary",
        *(f"--{split}pref={os.path.join(spm_dir, split)}" for split in SPLITS),
        "--destdir", bin_dir, "--workers", str(workers),
        *(["--srcdict", dict_path] if dict_path else []),
    ]
    print("running: " + " ".join(command), file=sys.stderr)
    proc = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        raise DataError(f"fairseq-preprocess failed ({proc.returncode}):\n{proc.stdout[-3000:]}")
    # "[de] .../valid.de: 350 sents, 9000 tokens, 0.1% replaced (by <unk>)"
    report["fairseq_preprocess"] = [line[line.find("["):] for line in proc.stdout.splitlines() if "% replaced" in line]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iwslt14-dir", help="the de-en folder of the IWSLT'14 release (see above)")
    parser.add_argument("--iwslt14-test-sets", default=",".join(IWSLT14_TEST_SETS),
                        help="the xml sets concatenated into the test split (default: prepare-iwslt14.sh's five)")
    for split in SPLITS:
        parser.add_argument(f"--{split}-prefix", help=f"plain text: {split} files PREFIX.SRC / PREFIX.TGT")
    parser.add_argument("--source-lang", default=None, help="source language suffix (IWSLT'14: de)")
    parser.add_argument("--target-lang", default=None, help="target language suffix (IWSLT'14: en)")
    parser.add_argument("--out-dir", required=True)
    parser.add_argument("--tokenization", choices=("sentencepiece", "moses"), default="sentencepiece",
                        help="sentencepiece on raw text (default), or moses: IWSLT'14 exactly as fairseq's "
                             "prepare-iwslt14.sh (Moses tokens, lowercased, joint subword-nmt BPE), for BLEU "
                             "comparable with published IWSLT'14 scores")
    parser.add_argument("--vocab-size", type=int, default=10000,
                        help="joint sentencepiece vocabulary, or with --tokenization moses the BPE merges "
                             "(10000: prepare-iwslt14.sh's BPE_TOKENS)")
    parser.add_argument("--model-type", choices=("bpe", "unigram"), default="bpe", help="sentencepiece model type")
    parser.add_argument("--spm-model", help="apply this sentencepiece model instead of training one")
    parser.add_argument("--dict", help="with --spm-model: the model's fairseq dict.txt (e.g. mBART's)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)

    for flag, value in (("--vocab-size", args.vocab_size), ("--workers", args.workers)):
        if value < 1:
            parser.error(f"{flag} {value}: must be a positive integer")
    prefixes = {split: getattr(args, f"{split}_prefix") for split in SPLITS if getattr(args, f"{split}_prefix")}
    if bool(args.iwslt14_dir) == bool(prefixes):
        parser.error("pass either --iwslt14-dir or --train-prefix/--valid-prefix/--test-prefix")
    if prefixes and len(prefixes) < len(SPLITS):
        parser.error(f"plain text needs all three of --train-prefix, --valid-prefix, --test-prefix "
                     f"(missing: {', '.join(s for s in SPLITS if s not in prefixes)})")
    if args.tokenization == "moses":
        if not args.iwslt14_dir:
            parser.error("--tokenization moses follows prepare-iwslt14.sh and needs --iwslt14-dir")
        if args.spm_model or args.dict:
            parser.error("--tokenization moses learns its own BPE: drop --spm-model / --dict")
    if args.dict and not args.spm_model:
        parser.error("--dict goes with --spm-model (the dictionary of that sentencepiece model)")
    for path, flag in ((args.spm_model, "--spm-model"), (args.dict, "--dict")):
        if path and not os.path.isfile(path):
            parser.error(f"{flag} {path}: no such file")
    source = args.source_lang or ("de" if args.iwslt14_dir else None)
    target = args.target_lang or ("en" if args.iwslt14_dir else None)
    if not (source and target) or source == target:
        parser.error("plain text needs two different --source-lang and --target-lang (the files' suffixes)")

    report: Dict = {"source_lang": source, "target_lang": target}
    try:
        if args.tokenization == "moses":
            test_sets = [name for name in args.iwslt14_test_sets.split(",") if name]
            report.update(dataset="iwslt14", tokenization="moses, as prepare-iwslt14.sh", test=test_sets,
                          valid="every 23rd cleaned training pair")
            pairs = iwslt14_tokenized.read_and_tokenise(args.iwslt14_dir, source, target, test_sets, report)
            raw_dir, bpe_dir, bin_dir = (os.path.join(args.out_dir, name) for name in ("raw", "bpe", "bin"))
            os.makedirs(raw_dir, exist_ok=True)
            for split, examples in pairs.items():
                report[f"{split}_pairs"] = len(examples)
                for lang, side in ((source, 0), (target, 1)):
                    write_lines(os.path.join(raw_dir, f"{split}.{lang}"), [example[side] for example in examples])
            iwslt14_tokenized.learn_and_apply_bpe(raw_dir, bpe_dir, source, target, args.vocab_size, report)
            binarise(bpe_dir, bin_dir, source, target, None, args.workers, report)
            shutil.copyfile(os.path.join(bpe_dir, "code"), os.path.join(bin_dir, "code"))
            return finish(args.out_dir, report)
        if args.iwslt14_dir:
            test_sets = [name for name in args.iwslt14_test_sets.split(",") if name]
            report.update(dataset="iwslt14", valid="every 23rd training pair", test=test_sets)
            pairs = read_iwslt14(args.iwslt14_dir, source, target, test_sets, report)
        else:
            report.update(dataset="plain text", prefixes=prefixes)
            pairs = read_prefixes(prefixes, source, target)
        pairs = drop_empty(pairs, report)
        for split in ("valid", "test"):
            if not pairs[split]:
                raise DataError(f"the {split} split has no pairs with text on both sides: check its files")

        raw_dir, spm_dir, bin_dir = (os.path.join(args.out_dir, name) for name in ("raw", "spm", "bin"))
        for folder in (raw_dir, spm_dir):
            os.makedirs(folder, exist_ok=True)
        for split, examples in pairs.items():
            report[f"{split}_pairs"] = len(examples)
            for lang, side in ((source, 0), (target, 1)):
                write_lines(os.path.join(raw_dir, f"{split}.{lang}"), [example[side] for example in examples])
        if args.spm_model:
            model = os.path.join(spm_dir, "sentencepiece.model")
            shutil.copyfile(args.spm_model, model)
            report["sentencepiece"] = {"model": args.spm_model, "trained": False}
        else:
            model = train_sentencepiece([os.path.join(raw_dir, f"train.{lang}") for lang in (source, target)],
                                        os.path.join(spm_dir, "sentencepiece"), args.vocab_size, args.model_type,
                                        args.workers)
            report["sentencepiece"] = {"trained": True, "vocab_size": args.vocab_size, "model_type": args.model_type}
        for split, examples in pairs.items():
            for lang, side in ((source, 0), (target, 1)):
                pieces = encode(model, [example[side] for example in examples], f"spm {split}.{lang}", args.workers)
                write_lines(os.path.join(spm_dir, f"{split}.{lang}"), pieces)
        binarise(spm_dir, bin_dir, source, target, args.dict, args.workers, report)
        shutil.copyfile(model, os.path.join(bin_dir, "sentencepiece.model"))
    except DataError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    return finish(args.out_dir, report)


def finish(out_dir: str, report: Dict) -> int:
    """Writes OUT/report.json and shows it."""
    with open(os.path.join(out_dir, "report.json"), "w") as f:
        json.dump(report, f, indent=1)
    print(json.dumps(report, indent=1))
    dropped = {key: value for key, value in report.items() if "_dropped_empty_" in key}
    if dropped:
        print(f"note: pairs with an empty side were dropped: {dropped}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
