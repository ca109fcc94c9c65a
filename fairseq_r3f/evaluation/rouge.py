r"""From a summarization checkpoint to a ROUGE table.

    python -m fairseq_r3f.evaluation.rouge --dataset cnn_dm --checkpoint SAVE/checkpoint_best.pt \
        --data-bin OUT/bin --references OUT/raw/test.target --encoder-json encoder.json --vocab-bpe vocab.bpe \
        --output-dir EVAL [-- extra fairseq-generate flags]

generates the test set with ``fairseq-generate`` (with this plugin's ``--user-dir``, the dataset's decoding
settings from fairseq_r3f/hparams/summarization.tsv, the checkpoint's own maximum source and target positions
with --truncate-source as in training, and GPT-2 BPE decoding), writes one detokenised hypothesis per test
document to EVAL/test.hypo (line i = sample id i, the document on line i of the references), and scores it
against the raw references with Google's ``rouge-score`` (F-measure x 100 averaged over documents, Porter
stemming on). The references must hold exactly one document per test example. With ``-- --nbest N`` the
generation log keeps N hypotheses per document and the first-ranked one is scored. ``--hypotheses FILE``
scores an existing file (line i against reference line i) instead of generating. ROUGE-Lsum (``--rouge-lsum``,
by default from the table: CNN/DM and Reddit TIFU) puts one sentence per line on both sides first (NLTK's
Punkt when its data is installed, else a punctuation rule; the table says which).

A generated score is saved in EVAL/rouge.json with the key of everything it depends on (the checkpoint's
fingerprint: size, modification time, inode and the sha256 of its first and last MB; the sha256 of the
references, of the binarised test source and of the BPE files; the decoding settings and the flags after
``--``; the batch size, the device, ROUGE-Lsum and its splitter; the plugin's, fairseq's and rouge-score's
versions): the same command again prints that score without generating; any change generates and scores again.

fairseq-generate's whole output (its configuration dump and log lines included) goes to
EVAL/generate-test.txt; the terminal shows progress bars for generation and scoring, and the table.

``--runs SAVE_ROOT`` (with --data-bin, --references and the BPE files) scores the checkpoint_best.pt of every
finished run of recipes/summarization.sh for --dataset under SAVE_ROOT, each into RUN/rouge-SUBSET/, and writes
SAVE_ROOT/rouge-SUBSET.md and .json: the mean over seeds per configuration, under the rules of the GLUE tables
(only finished runs; configurations that differ on separate lines named by the settings that differ; a run
found twice scored once; the runs not in the table named under it, with n/N seeds; runs of other recipes or
datasets skipped with a note and never written into).

Numbers from rouge-score are close to, but not identical with, the Perl ROUGE-1.5.5 (files2rouge) that
BART's published CNN/DM numbers used.
"""

import argparse
import json
import multiprocessing
import os
import pickle
import re
import sys
from typing import Dict, List, Optional, Sequence, Tuple

from fairseq_r3f.checkpoints import load_checkpoint
from fairseq_r3f.evaluation import generation
from fairseq_r3f.preprocess.files import DataError, read_lines
from fairseq_r3f.evaluation.selection import ResultsError, cells, not_in_tables, planned_seeds
from fairseq_r3f.tools import USER_DIR, fairseq_command

from r3f_runs.folder import RunError
from r3f_runs.status import labelled_runs, read_plans
from r3f_runs.tables import hparams_path, read_table_file

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")


def read_hparams(path: Optional[str] = None) -> Dict[str, Dict[str, str]]:
    """{dataset: {name: value}} from the tab-separated table (read as every hyper-parameter table is)."""
    header, rows = read_table_file(path or hparams_path("summarization.tsv"))
    datasets = header[1:-1]  # the last column says where a value comes from
    return {d: {name: row[d] for name, row in rows.items()} for d in datasets}


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


def subset_size(data_bin: str, subset: str) -> int:
    """The number of examples in the binarised ``subset`` (source side) written by preprocess/summarization.py."""
    from fairseq.data import data_utils

    prefix = os.path.join(data_bin, f"{subset}.source-target.source")
    dataset = data_utils.load_indexed_dataset(prefix, None)
    if dataset is None:
        raise DataError(f"--data-bin {data_bin} has no {subset} subset ({prefix}.bin/.idx): pass the bin/ folder "
                        f"written by preprocess/summarization.py")
    return len(dataset)


def checkpoint_positions(checkpoint: str) -> Tuple[int, int]:
    """The model's maximum source and target positions, from the configuration saved in the checkpoint."""
    try:
        state = load_checkpoint(checkpoint)  # memory-mapped where torch can; a legacy (not zip) file is read whole
    except pickle.UnpicklingError as error:
        raise DataError(f"--checkpoint {checkpoint}: torch refuses to load it ({str(error).splitlines()[0]})") from None
    cfg = state.get("cfg")
    sections = [cfg.get("model"), cfg.get("task")] if isinstance(cfg, dict) else [vars(state.get("args") or {})]
    for section in sections:
        section = section if isinstance(section, dict) else vars(section) if section is not None else {}
        values = section.get("max_source_positions"), section.get("max_target_positions")
        if all(isinstance(v, int) for v in values):
            return values
    raise DataError(f"--checkpoint {checkpoint} records no max_source_positions/max_target_positions: is it a "
                    f"fairseq summarization (translation task) checkpoint?")


def nbest(extra: List[str]) -> int:
    """The --nbest passed to fairseq-generate after '--' (fairseq's default 1)."""
    value = "1"
    for k, flag in enumerate(extra):
        if flag == "--nbest" and k + 1 < len(extra):
            value = extra[k + 1]
        elif flag.startswith("--nbest="):
            value = flag.split("=", 1)[1]
    return int(value) if value.isdigit() else 1


def generate(args, settings: Dict[str, str], extra: List[str], n_documents: int) -> str:
    """Runs fairseq-generate, its output into the log file and a progress bar on the terminal; returns the
    path of the hypotheses: line i is the first-ranked hypothesis of sample id i."""
    import torch

    max_source, max_target = checkpoint_positions(args.checkpoint)
    command = fairseq_command("fairseq-generate") + [
        args.data_bin, "--path", args.checkpoint, "--user-dir", USER_DIR, "--task", "translation",
        "--source-lang", "source", "--target-lang", "target", "--gen-subset", args.subset, "--truncate-source",
        "--max-source-positions", str(max_source), "--max-target-positions", str(max_target),
        "--beam", settings["beam"], "--lenpen", settings["lenpen"], "--min-len", settings["min_len"],
        "--max-len-a", "0", "--max-len-b", settings["max_len_b"],
        "--no-repeat-ngram-size", settings["no_repeat_ngram_size"],
        "--bpe", "gpt2", "--gpt2-encoder-json", args.encoder_json, "--gpt2-vocab-bpe", args.vocab_bpe,
        "--batch-size", str(args.batch_size), "--required-batch-size-multiple", "1",
        *(["--fp16"] if torch.cuda.is_available() else ["--cpu"]), *extra,
    ]
    log_path = os.path.join(args.output_dir, f"generate-{args.subset}.txt")
    # D- lines: the hypothesis detokenised by the GPT-2 BPE
    hypotheses = generation.generate(command, log_path, n_documents, "D-", unit="doc")
    hypo_path = os.path.join(args.output_dir, f"{args.subset}.hypo")
    with open(hypo_path, "w", encoding="utf-8") as f:
        f.write("".join(h + "\n" for h in hypotheses))
    return hypo_path


def evaluation_key(args, settings: Dict[str, str], extra: Sequence[str], lsum: bool) -> Dict:
    """Everything a generated ROUGE score depends on (see generation.evaluation_key): the checkpoint, the
    references, the binarised test source, the GPT-2 BPE files, the decoding settings and generate flags, the
    batch size, the device, ROUGE-Lsum and its sentence splitter, and the versions; rouge.json is reused only
    under the same key."""
    import importlib.metadata

    import torch

    source = os.path.join(args.data_bin, f"{args.subset}.source-target.source")
    return generation.evaluation_key(
        args.checkpoint, args.references, dataset=args.dataset, settings=settings, subset=args.subset,
        generate_flags=list(extra), batch_size=args.batch_size,
        device="cuda-fp16" if torch.cuda.is_available() else "cpu",
        data={ext: generation.file_sha256(f"{source}.{ext}") for ext in ("bin", "idx")},
        bpe=[generation.file_sha256(args.encoder_json), generation.file_sha256(args.vocab_bpe)],
        rouge_lsum=lsum, sentence_splitter=sentence_splitter()[0] if lsum else None,
        rouge_score=importlib.metadata.version("rouge-score"))


def table(results: Dict[str, float], dataset: str, n: int, splitter: Optional[str]) -> str:
    names = {"rouge1": "ROUGE-1", "rouge2": "ROUGE-2", "rougeL": "ROUGE-L", "rougeLsum": "ROUGE-Lsum"}
    header = "| dataset | documents | " + " | ".join(names[k] for k in results) + " |"
    rule = "|---|---|" + "---|" * len(results)
    row = f"| {dataset} | {n} | " + " | ".join(f"{v:.2f}" for v in results.values()) + " |"
    note = f"\n(ROUGE-Lsum sentences split by {splitter})" if splitter else ""
    return "\n".join([header, rule, row]) + note


def _without(argv: List[str], flag: str) -> List[str]:
    """argv without ``flag`` and its value (either spelling)."""
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == flag:
            skip = True
        elif not arg.startswith(flag + "="):
            kept.append(arg)
    return kept


def is_summarization(dataset: str):
    def accepts(label: Dict) -> bool:
        # recipes/summarization.sh's runs, and fairseq-hydra-train's of the summarization configs (cnn_dm_r3f)
        return label.get("recipe", "summarization") in ("summarization", "hydra") and label.get("dataset") == dataset
    return accepts


def score_runs(args, argv: List[str], extra: List[str]) -> int:
    """The ROUGE table over the finished summarization runs of --dataset under --runs, under the rules of the
    GLUE tables (fairseq_r3f.evaluation.results): cells by effective configuration, a run found twice scored
    once, the runs not in the table (unfinished, truncated, failed, planned but missing, checkpoint_best.pt
    deleted) named under it, n/N seeds per line, runs of other recipes skipped with a note and never written
    into. Each run is scored as ``--checkpoint RUN/checkpoint_best.pt --output-dir RUN/rouge-SUBSET``, whose
    rouge.json is reused under the same key."""
    import contextlib
    import statistics

    try:
        labelled, foreign = labelled_runs(args.runs, is_summarization(args.dataset))
    except RunError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    every = []
    for run in labelled:
        folder, status, reason = run["folder"], run["status"], run["reason"]
        if status == "finished" and not os.path.isfile(os.path.join(folder, "checkpoint_best.pt")):
            status, reason = "no checkpoint", "finished, but checkpoint_best.pt is gone (deleted?): nothing to score"
        every.append({**run, "task": args.dataset, "method": run.get("method", "r3f"), "status": status,
                      "reason": reason, "configuration": (run["identity"] or {}).get("configuration")})
    if foreign:
        print(f"note: {len(foreign)} run(s) of other recipes or datasets are not in this table (nothing written "
              f"into them): {foreign[:3]}", file=sys.stderr)
    try:
        planned = read_plans(args.runs)
        grouped, warnings = cells([r for r in every if r["status"] == "finished" and r["configuration"]])
    except (ResultsError, RunError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    left_out = not_in_tables(every, planned)
    base_argv = _without(_without(argv, "--runs"), "--output-dir")
    lines = []
    for (_task, method, suffix), members in sorted(grouped.items()):
        by_config: Dict[str, List[Dict]] = {}
        for run in members:
            by_config.setdefault(run.get("config"), []).append(run)
        for config, group in sorted(by_config.items()):
            expected = planned_seeds({"folders": [r["folder"] for r in group], "seeds": [r["seed"] for r in group]},
                                     group, every, planned)
            scores = []
            for run in sorted(group, key=lambda r: r["seed"]):
                output_dir = os.path.join(run["folder"], f"rouge-{args.subset}")
                with contextlib.redirect_stdout(sys.stderr):  # the per-run table; the table over runs is printed
                    status = main([*base_argv, "--checkpoint", os.path.join(run["folder"], "checkpoint_best.pt"),
                                   "--output-dir", output_dir, *(["--", *extra] if extra else [])])
                if status != 0:
                    return status
                with open(os.path.join(output_dir, "rouge.json")) as f:
                    scores.append({"seed": run["seed"], "folder": run["folder"], **json.load(f)})
            names = [n for n in ("rouge1", "rouge2", "rougeL", "rougeLsum") if n in scores[0]]
            lines.append({"method": method, "config": config + (f", {suffix}" if suffix else ""),
                          "seeds": [s["seed"] for s in scores], "planned_seeds": expected,
                          "mean": {n: statistics.mean(s[n] for s in scores) for n in names},
                          "runs": [{k: s[k] for k in ("seed", "folder", *names)} for s in scores]})
    if not lines:
        print(f"error: no finished run of {args.dataset} with a checkpoint_best.pt under {args.runs}" + "".join(
            f"\n  {item['folder']}: {item['status']} ({item['reason']})" for item in left_out), file=sys.stderr)
        return 1
    names = list(lines[0]["mean"])
    titles = {"rouge1": "ROUGE-1", "rouge2": "ROUGE-2", "rougeL": "ROUGE-L", "rougeLsum": "ROUGE-Lsum"}
    text = ["| method | configuration | seeds | " + " | ".join(titles[n] for n in names) + " |",
            "|---|---|---|" + "---|" * len(names)]
    for line in lines:
        count = len(line["seeds"])
        seeds = f"{count}/{line['planned_seeds']}" if line["planned_seeds"] > count else str(count)
        text.append(f"| {line['method']} | {line['config']} | {seeds} | "
                    + " | ".join(f"{line['mean'][n]:.2f}" for n in names) + " |")
    if left_out:
        text += ["", f"Not in the table ({len(left_out)}):"] + [
            f"{item['folder']}: {item['status']} ({item['reason']})" for item in left_out]
    if warnings:
        text += ["", "Warnings:"] + warnings
    table_text = "\n".join(text) + "\n"
    base = os.path.join(args.runs, f"rouge-{args.subset}")
    with open(base + ".md", "w") as f:
        f.write(table_text)
    with open(base + ".json", "w") as f:
        json.dump({"dataset": args.dataset, "subset": args.subset, "table": lines, "warnings": warnings,
                   "not_in_table": [{k: v for k, v in item.items() if k != "run"} for item in left_out]}, f, indent=1)
    print(table_text, end="")
    return 0


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
    parser.add_argument("--hparams",
                        help="summarization table (default: the shipped fairseq_r3f/hparams/summarization.tsv)")
    parser.add_argument("--rouge-lsum", choices=("yes", "no"),
                        help="also score ROUGE-Lsum on sentence-split text (default: the table's rouge_lsum for "
                        "--dataset: yes for cnn_dm and reddit_tifu)")
    parser.add_argument("--runs", help="score the checkpoint_best.pt of every finished run of recipes/"
                        "summarization.sh for --dataset under this SAVE_ROOT (into RUN/rouge-SUBSET/) and write "
                        "SAVE_ROOT/rouge-SUBSET.md and .json")
    args = parser.parse_args(argv)
    if args.runs:
        if args.checkpoint or args.hypotheses:
            parser.error("--runs scores the runs' checkpoints: leave out --checkpoint and --hypotheses")
        if not os.path.isdir(args.runs):
            parser.error(f"--runs {args.runs}: no such folder")
        return score_runs(args, argv, extra)

    try:
        hparams = read_hparams(args.hparams)
    except (OSError, ValueError) as error:  # a missing or malformed --hparams table
        parser.error(str(error))
    if args.dataset not in hparams:
        parser.error(f"unknown --dataset {args.dataset!r}: choose one of {', '.join(hparams)}")
    settings = hparams[args.dataset]
    if not os.path.isfile(args.references):
        parser.error(f"--references {args.references} does not exist: pass OUT/raw/test.target written by "
                     f"preprocess/summarization.py")
    if args.hypotheses is None:
        needed = {"--checkpoint": args.checkpoint, "--data-bin": args.data_bin,
                  "--encoder-json": args.encoder_json, "--vocab-bpe": args.vocab_bpe}
        missing = [flag for flag, value in needed.items() if not value]
        if missing:
            parser.error(f"to generate, pass {', '.join(missing)} (or --hypotheses FILE to score a file)")
        absent = [f"{flag} {value}" for flag, value in needed.items() if not os.path.exists(value)]
        if absent:
            parser.error(f"not found: {'; '.join(absent)}")
    elif not os.path.isfile(args.hypotheses):
        parser.error(f"--hypotheses {args.hypotheses} does not exist")
    generated = args.hypotheses is None
    lsum = (args.rouge_lsum or settings.get("rouge_lsum")) == "yes"
    try:
        references = read_lines(args.references)
        if not references:
            raise DataError(f"--references {args.references} is empty: nothing to score against")
        os.makedirs(args.output_dir, exist_ok=True)
        key = evaluation_key(args, settings, extra, lsum) if generated else None
        cached = generation.cached_result(os.path.join(args.output_dir, "rouge.json"), key) if generated else None
        if cached is not None:
            results = {name: cached[name] for name in ROUGE_TYPES + ("rougeLsum",) if name in cached}
            print(table(results, args.dataset, cached["documents"], cached["sentence_splitter"]))
            print(f"note: {args.output_dir}/rouge.json was computed from the same checkpoint, references, data and "
                  f"settings: not generated again")
            return 0
        if generated:
            n_documents = subset_size(args.data_bin, args.subset)
            if len(references) != n_documents:
                raise DataError(f"--references {args.references} has {len(references)} documents but the "
                                f"{args.subset} set in --data-bin {args.data_bin} has {n_documents}: pass the "
                                f"references written with that data (OUT/raw/{args.subset}.target)")
            args.hypotheses = generate(args, settings, extra, n_documents)
        hypotheses = read_lines(args.hypotheses)
    except (DataError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if len(hypotheses) != len(references):
        print(f"error: {args.hypotheses} has {len(hypotheses)} lines but {args.references} has {len(references)}: "
              f"they must align line by line", file=sys.stderr)
        return 1

    results = score(hypotheses, references, lsum=lsum, workers=args.workers)
    splitter = sentence_splitter()[0] if lsum else None
    empty = {"empty_hypotheses": sum(not h.strip() for h in hypotheses),
             "empty_references": sum(not r.strip() for r in references)}
    ranks = nbest(extra) if generated else 1
    with open(os.path.join(args.output_dir, "rouge.json"), "w") as f:
        json.dump({"dataset": args.dataset, "documents": len(references), "sentence_splitter": splitter,
                   "nbest_generated": ranks, "scored_rank": 1, **empty, **results, "key": key}, f, indent=1)
    print(table(results, args.dataset, len(references), splitter))
    if ranks > 1:
        print(f"note: generated the {ranks} best hypotheses per document (all in the generation log); scored the "
              f"first-ranked")
    if any(empty.values()):
        print(f"note: {empty} (scored as 0)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
