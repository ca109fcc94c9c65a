r"""From a summarization checkpoint to a ROUGE table.

    python -m fairseq_r3f.evaluation.rouge --dataset cnn_dm --checkpoint SAVE/checkpoint_best.pt \
        --data-bin OUT/bin --references OUT/raw/test.target --encoder-json encoder.json --vocab-bpe vocab.bpe \
        --output-dir EVAL [-- extra fairseq-generate flags]

generates the test set with ``fairseq-generate`` (with this plugin's ``--user-dir``, the dataset's decoding
settings from fairseq_r3f/hparams/summarization.tsv and GPT-2 BPE decoding), writes one detokenised hypothesis
per line to EVAL/test.hypo, and scores it against the raw references with Google's ``rouge-score``
(F-measure x 100 averaged over documents, Porter stemming on). ``--hypotheses FILE`` scores an existing file
instead of generating. ROUGE-Lsum, for CNN/DM, puts one sentence per line on both sides first (NLTK's Punkt
when its data is installed, else a punctuation rule; the table says which).

Numbers from rouge-score are close to, but not identical with, the Perl ROUGE-1.5.5 (files2rouge) that
BART's published CNN/DM numbers used.
"""

import argparse
import csv
import json
import multiprocessing
import os
import re
import subprocess
import sys
from typing import Dict, List, Optional, Sequence

from fairseq_r3f.tools import USER_DIR, hparams_path

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")


def read_hparams(path: Optional[str] = None) -> Dict[str, Dict[str, str]]:
    """{dataset: {name: value}} from the tab-separated table."""
    with open(path or hparams_path("summarization.tsv"), encoding="utf-8") as f:
        rows = [row for row in csv.reader(f, delimiter="\t") if row and not row[0].startswith("#")]
    header = rows[0]
    datasets = header[1:-1]  # the last column says where a value comes from
    return {d: {row[0]: row[1 + i] for row in rows[1:]} for i, d in enumerate(datasets)}


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def sentence_splitter():
    """(name, split function): NLTK's Punkt if its data is installed, else a split after . ! or ?."""
    try:
        import nltk

        nltk.sent_tokenize("Punkt is here. Good.")
        return "nltk-punkt", nltk.sent_tokenize
    except (ImportError, LookupError):
        return "regex [.!?]", lambda text: [s for s in _SENTENCE_END.split(text.strip()) if s]


_SCORERS = ()
_SPLIT = None


def _cached_stem_tokenizer():
    """rouge-score's own tokenizer with stemming, memoising the Porter stemmer: stemming is two thirds of
    the scoring time, and a test set repeats its words. The tokens are exactly the same."""
    import functools

    from rouge_score import tokenizers

    tokenizer = tokenizers.DefaultTokenizer(use_stemmer=True)
    stemmer = tokenizer._stemmer
    stem = functools.lru_cache(maxsize=1 << 18)(stemmer.stem)
    tokenizer._stemmer = type("CachedStemmer", (), {"stem": staticmethod(stem)})()
    return tokenizer


def _init_worker(rouge_types, split_name):
    global _SCORERS, _SPLIT
    from rouge_score import rouge_scorer

    tokenizer = _cached_stem_tokenizer()
    # rougeLsum in a scorer of its own: a scorer that also has other types tokenises the whole text again
    _SCORERS = tuple(rouge_scorer.RougeScorer(list(types), tokenizer=tokenizer) for types in
                     ([t for t in rouge_types if t != "rougeLsum"], [t for t in rouge_types if t == "rougeLsum"])
                     if types)
    _SPLIT = None
    if split_name is not None:
        name, split = sentence_splitter()
        _SPLIT = split if name == split_name else None


def _score_pair(pair):
    hypothesis, reference = pair
    scores = {}
    for scorer in _SCORERS:
        if scorer.rouge_types == ["rougeLsum"]:
            # rouge-score reads rougeLsum sentences from newlines
            hypothesis, reference = ("\n".join(_SPLIT(text)) if _SPLIT else text for text in (hypothesis, reference))
        scores.update((name, score.fmeasure) for name, score in scorer.score(reference, hypothesis).items())
    return scores


def score(hypotheses: Sequence[str], references: Sequence[str], lsum: bool = False,
          workers: Optional[int] = None, progress: bool = True) -> Dict[str, float]:
    """Mean F-measure x 100 of ROUGE-1/2/L (and ROUGE-Lsum on sentence-split text with ``lsum``) over the
    pairs, stemming on. Empty hypotheses or references score 0 for their pair."""
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references: they must align")
    if not references:
        raise ValueError("nothing to score: no references")
    rouge_types = ROUGE_TYPES + (("rougeLsum",) if lsum else ())
    split_name = sentence_splitter()[0] if lsum else None
    workers = max(1, min(workers or os.cpu_count() or 1, len(references) // 200 or 1))
    pairs = list(zip(hypotheses, references))
    from tqdm import tqdm

    bar = dict(total=len(pairs), desc="rouge", unit="doc", file=sys.stderr, disable=not progress, mininterval=2)
    if workers == 1:
        _init_worker(rouge_types, split_name)
        per_pair = list(tqdm(map(_score_pair, pairs), **bar))
    else:
        # fork where there is one: a spawned worker would import fairseq and torch again, seconds each
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        with multiprocessing.get_context(method).Pool(workers, _init_worker, (rouge_types, split_name)) as pool:
            per_pair = list(tqdm(pool.imap(_score_pair, pairs, chunksize=64), **bar))
    totals = {name: 100.0 * sum(s[name] for s in per_pair) / len(per_pair) for name in rouge_types}
    return totals


def read_lines(path: str) -> List[str]:
    with open(path, encoding="utf-8", newline="\n") as f:
        text = f.read()
    if text.endswith("\n"):
        text = text[:-1]
    return text.split("\n")


def generate(args, settings: Dict[str, str], extra: List[str]) -> str:
    """Runs fairseq-generate; returns the path of the hypotheses, one per line in test-set order."""
    from fairseq_r3f.tools import fairseq_command

    import torch

    command = fairseq_command("fairseq-generate") + [
        args.data_bin, "--path", args.checkpoint, "--user-dir", USER_DIR, "--task", "translation",
        "--source-lang", "source", "--target-lang", "target", "--gen-subset", args.subset, "--truncate-source",
        "--beam", settings["beam"], "--lenpen", settings["lenpen"], "--min-len", settings["min_len"],
        "--max-len-a", "0", "--max-len-b", settings["max_len_b"],
        "--no-repeat-ngram-size", settings["no_repeat_ngram_size"],
        "--bpe", "gpt2", "--gpt2-encoder-json", args.encoder_json, "--gpt2-vocab-bpe", args.vocab_bpe,
        "--batch-size", str(args.batch_size), "--required-batch-size-multiple", "1",
        *(["--fp16"] if torch.cuda.is_available() else ["--cpu"]), *extra,
    ]
    log_path = os.path.join(args.output_dir, f"generate-{args.subset}.txt")
    print("running: " + " ".join(command), file=sys.stderr)
    with open(log_path, "w") as log:
        proc = subprocess.run(command, stdout=log, stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"fairseq-generate failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    hypotheses = {}
    for line in read_lines(log_path):
        if line.startswith("D-"):
            fields = line.split("\t")
            hypotheses[int(fields[0][2:])] = fields[2].strip() if len(fields) > 2 else ""
    missing = sorted(set(range(args.expected)) - set(hypotheses))
    if missing:
        raise RuntimeError(f"fairseq-generate produced no hypothesis for {len(missing)} of {args.expected} "
                           f"examples (first ids: {missing[:5]}); see {log_path}")
    hypo_path = os.path.join(args.output_dir, f"{args.subset}.hypo")
    with open(hypo_path, "w", encoding="utf-8") as f:
        f.write("".join(hypotheses[i] + "\n" for i in range(args.expected)))
    return hypo_path


def table(results: Dict[str, float], dataset: str, n: int, splitter: Optional[str]) -> str:
    names = {"rouge1": "ROUGE-1", "rouge2": "ROUGE-2", "rougeL": "ROUGE-L", "rougeLsum": "ROUGE-Lsum"}
    header = "| dataset | documents | " + " | ".join(names[k] for k in results) + " |"
    rule = "|---|---|" + "---|" * len(results)
    row = f"| {dataset} | {n} | " + " | ".join(f"{v:.2f}" for v in results.values()) + " |"
    note = f"\n(ROUGE-Lsum sentences split by {splitter})" if splitter else ""
    return "\n".join([header, rule, row]) + note


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True, help="cnn_dm, gigaword or reddit_tifu: decoding settings "
                        "and ROUGE-Lsum from the hparams table")
    parser.add_argument("--references", required=True, help="raw references, one per line (OUT/raw/test.target)")
    parser.add_argument("--hypotheses", help="score this file instead of generating")
    parser.add_argument("--checkpoint", help="checkpoint to generate with")
    parser.add_argument("--data-bin", help="the bin/ folder written by preprocess/summarization.py")
    parser.add_argument("--encoder-json", help="GPT-2 BPE encoder.json (to detokenise)")
    parser.add_argument("--vocab-bpe", help="GPT-2 BPE vocab.bpe (to detokenise)")
    parser.add_argument("--subset", default="test")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--output-dir", default=".", help="for the hypotheses, generation log and rouge.json")
    parser.add_argument("--workers", type=int, default=None, help="scoring processes (default: all cores)")
    parser.add_argument("--hparams", help="summarization table (default: the shipped fairseq_r3f/hparams/summarization.tsv)")
    args = parser.parse_args(argv)

    hparams = read_hparams(args.hparams)
    if args.dataset not in hparams:
        parser.error(f"unknown --dataset {args.dataset!r}: choose one of {', '.join(hparams)}")
    settings = hparams[args.dataset]
    if not os.path.isfile(args.references):
        parser.error(f"--references {args.references} does not exist: pass OUT/raw/test.target written by "
                     f"preprocess/summarization.py")
    references = read_lines(args.references)
    os.makedirs(args.output_dir, exist_ok=True)
    if args.hypotheses is None:
        needed = {"--checkpoint": args.checkpoint, "--data-bin": args.data_bin,
                  "--encoder-json": args.encoder_json, "--vocab-bpe": args.vocab_bpe}
        missing = [flag for flag, value in needed.items() if not value]
        if missing:
            parser.error(f"to generate, pass {', '.join(missing)} (or --hypotheses FILE to score a file)")
        absent = [f"{flag} {value}" for flag, value in needed.items() if not os.path.exists(value)]
        if absent:
            parser.error(f"not found: {'; '.join(absent)}")
        args.expected = len(references)
        try:
            args.hypotheses = generate(args, settings, extra)
        except RuntimeError as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
    elif not os.path.isfile(args.hypotheses):
        parser.error(f"--hypotheses {args.hypotheses} does not exist")
    hypotheses = read_lines(args.hypotheses)
    if len(hypotheses) != len(references):
        print(f"error: {args.hypotheses} has {len(hypotheses)} lines but {args.references} has {len(references)}: "
              f"they must align line by line", file=sys.stderr)
        return 1

    lsum = settings.get("rouge_lsum") == "yes"
    results = score(hypotheses, references, lsum=lsum, workers=args.workers)
    splitter = sentence_splitter()[0] if lsum else None
    empty = {"empty_hypotheses": sum(not h.strip() for h in hypotheses),
             "empty_references": sum(not r.strip() for r in references)}
    with open(os.path.join(args.output_dir, "rouge.json"), "w") as f:
        json.dump({"dataset": args.dataset, "documents": len(references), "sentence_splitter": splitter,
                   **empty, **results}, f, indent=1)
    print(table(results, args.dataset, len(references), splitter))
    if any(empty.values()):
        print(f"note: {empty} (scored as 0)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
