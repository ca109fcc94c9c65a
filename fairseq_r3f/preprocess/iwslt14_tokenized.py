"""IWSLT'14 de-en prepared as fairseq's ``examples/translation/prepare-iwslt14.sh`` prepares it, the data behind
the published IWSLT'14 BLEU scores (fairseq's translation README, R-Drop):

1. training talks: lines holding ``<url>``, ``<talkid>`` or ``<keywords>`` are dropped (that script's
   ``grep -v``; other tag lines such as ``<speaker>`` stay, as there), ``<title>`` and ``<description>`` tags
   are removed and their text kept;
2. Moses tokenisation (``tokenizer.perl -l LANG``: special characters escaped, ``'`` as ``&apos;``, no
   aggressive hyphen splitting), here with sacremoses, a Python port of the Moses scripts;
3. training pairs cleaned as ``clean-corpus-n.perl -ratio 1.5 ... 1 175``: whitespace normalised, ``|``
   removed, pairs with a side of fewer than 1 or more than 175 tokens, or sides whose token counts differ by
   a factor above 1.5, dropped;
4. lowercasing (``lowercase.perl``);
5. valid = every 23rd cleaned training pair, train = the rest; test = the five xml sets in the script's order
   (``<seg>`` lines as they are, no entity unescaping, the right single quotation mark as ``'``);
6. joint BPE (subword-nmt, ``learn_bpe.py -s 10000`` on the training text of both languages) applied to every
   split, then ``fairseq-preprocess --joined-dictionary``: one vocabulary for both sides, as
   ``--share-all-embeddings`` needs.

BLEU on this data is tokenised BLEU on lowercased text (``fairseq_r3f.evaluation.tokenized_bleu``), not
sacrebleu on detokenised text: the two numbers are not comparable.
"""

import io
import os
import re
import sys
from typing import Dict, List, Sequence, Tuple

from fairseq_r3f.preprocess.files import DataError, read_lines

Pairs = List[Tuple[str, str]]

DROPPED_TAGS = ("<url>", "<talkid>", "<keywords>")
KEPT_TEXT_TAGS = ("<title>", "</title>", "<description>", "</description>")
MIN_TOKENS, MAX_TOKENS, MAX_RATIO = 1, 175, 1.5
VALID_EVERY = 23
BPE_MERGES = 10000
_SEG_OPEN = re.compile(r'<seg id="[0-9]*">\s*')
_SEG_CLOSE = re.compile(r"\s*</seg>\s*")


def _require(path: str) -> str:
    if not os.path.isfile(path):
        raise DataError(f"{path}: no such file. Pass --iwslt14-dir the de-en folder unpacked from the release's "
                        f"de-en.tgz.")
    return path


def training_lines(path: str) -> List[str]:
    """One side of the training talks after the script's grep and sed (before tokenisation)."""
    kept = []
    for line in read_lines(path):
        if any(tag in line for tag in DROPPED_TAGS):
            continue
        for tag in KEPT_TEXT_TAGS:
            line = line.replace(tag, "")
        kept.append(line)
    return kept


def test_lines(path: str) -> List[str]:
    """The ``<seg id`` lines of one xml file with the seg tags removed, as the script's sed leaves them."""
    out = []
    for line in read_lines(path):
        if "<seg id" in line:
            out.append(_SEG_CLOSE.sub("", _SEG_OPEN.sub("", line)).replace("\u2019", "'"))
    return out


def moses_tokenizer(lang: str):
    try:
        from sacremoses import MosesTokenizer
    except ImportError:
        raise DataError("--tokenization moses needs sacremoses: pip install 'fairseq-r3f[eval]' "
                        "(or pip install sacremoses)") from None
    tokenizer = MosesTokenizer(lang=lang)
    return lambda line: tokenizer.tokenize(line, escape=True, return_str=True)


def tokenise(lines: Sequence[str], lang: str, desc: str) -> List[str]:
    from tqdm import tqdm

    tokenize = moses_tokenizer(lang)
    return [tokenize(line) for line in tqdm(lines, desc=desc, unit="lines", file=sys.stderr, mininterval=2)]


def clean_corpus(pairs: Pairs, report: Dict) -> Pairs:
    """clean-corpus-n.perl with -ratio 1.5, min 1, max 175 (counts of what was dropped in ``report``)."""
    kept, too_short, too_long, ratio = [], 0, 0, 0
    for source, target in pairs:
        source = " ".join(source.replace("|", "").split())
        target = " ".join(target.replace("|", "").split())
        n_source, n_target = len(source.split()), len(target.split())
        if min(n_source, n_target) < MIN_TOKENS:
            too_short += 1
        elif max(n_source, n_target) > MAX_TOKENS:
            too_long += 1
        elif n_source / n_target > MAX_RATIO or n_target / n_source > MAX_RATIO:
            ratio += 1
        else:
            kept.append((source, target))
    report["train_cleaned_away"] = {"fewer_than_1_token": too_short, "more_than_175_tokens": too_long,
                                    "length_ratio_above_1.5": ratio}
    return kept


def lowercase(pairs: Pairs) -> Pairs:
    return [(source.lower(), target.lower()) for source, target in pairs]


def read_and_tokenise(folder: str, source: str, target: str, test_sets: Sequence[str], report: Dict
                      ) -> Dict[str, Pairs]:
    """Steps 1 to 5: the tokenised, cleaned, lowercased train / valid / test pairs."""
    if {source, target} != {"de", "en"}:
        raise DataError(f"IWSLT'14 de-en has the languages de and en, not {source}-{target}")
    sides = [training_lines(_require(os.path.join(folder, f"train.tags.de-en.{lang}"))) for lang in (source, target)]
    if len(sides[0]) != len(sides[1]):
        raise DataError(f"after dropping the <url>, <talkid> and <keywords> lines the training talks have "
                        f"{len(sides[0])} {source} lines but {len(sides[1])} {target} lines: the two files are "
                        f"misaligned")
    tokenised = [tokenise(lines, lang, f"moses train.{lang}") for lines, lang in zip(sides, (source, target))]
    report["train_lines"] = len(sides[0])
    train = lowercase(clean_corpus(list(zip(*tokenised)), report))
    if not train:
        raise DataError("no training pair is left after cleaning: check the training files")
    test = []
    for name in test_sets:
        paths = [_require(os.path.join(folder, f"IWSLT14.{name}.de-en.{lang}.xml")) for lang in (source, target)]
        segments = [test_lines(path) for path in paths]
        if len(segments[0]) != len(segments[1]):
            raise DataError(f"{paths[0]} has {len(segments[0])} segments but {paths[1]} has {len(segments[1])}: a "
                            f"test set must hold the same segments on both sides")
        tokenised = [tokenise(lines, lang, f"moses {name}.{lang}") for lines, lang in zip(segments, (source, target))]
        test += lowercase(list(zip(*tokenised)))
        report.setdefault("test_sets", {})[name] = len(segments[0])
    return {"train": [p for i, p in enumerate(train, 1) if i % VALID_EVERY],
            "valid": [p for i, p in enumerate(train, 1) if not i % VALID_EVERY], "test": test}


def learn_and_apply_bpe(text_dir: str, bpe_dir: str, source: str, target: str, merges: int, report: Dict) -> None:
    """Step 6 up to the binaries: joint codes learnt on train.SRC + train.TGT, applied to every split."""
    try:
        from subword_nmt.apply_bpe import BPE
        from subword_nmt.learn_bpe import learn_bpe
    except ImportError:
        raise DataError("--tokenization moses needs subword-nmt: pip install 'fairseq-r3f[eval]' "
                        "(or pip install subword-nmt)") from None
    os.makedirs(bpe_dir, exist_ok=True)
    codes = os.path.join(bpe_dir, "code")
    joint = [line for lang in (source, target) for line in read_lines(os.path.join(text_dir, f"train.{lang}"))]
    with open(codes, "w", encoding="utf-8") as out:
        learn_bpe(io.StringIO("".join(line + "\n" for line in joint)), out, merges)
    with open(codes, encoding="utf-8") as f:
        bpe = BPE(f)
    for split in ("train", "valid", "test"):
        for lang in (source, target):
            lines = read_lines(os.path.join(text_dir, f"{split}.{lang}"))
            with open(os.path.join(bpe_dir, f"{split}.{lang}"), "w", encoding="utf-8") as out:
                out.write("".join(bpe.process_line(line + "\n") for line in lines))
    report["bpe"] = {"tool": "subword-nmt", "merges": merges, "joint": True}
