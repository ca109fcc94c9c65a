r"""From translation checkpoints to detokenised BLEU with sacrebleu, and a table over methods and seeds.

    python -m fairseq_r3f.evaluation.bleu --config iwslt14_de_en --data-bin OUT/bin \
        --references OUT/raw/test.en --checkpoint RUN/checkpoint_best.pt [--output-dir EVAL] [-- generate flags]
    python -m fairseq_r3f.evaluation.bleu --config iwslt14_de_en --data-bin OUT/bin \
        --references OUT/raw/test.en --runs SAVE_ROOT
    python -m fairseq_r3f.evaluation.bleu --hypotheses FILE --references FILE

Generation runs ``fairseq-generate`` on the test set (this plugin's ``--user-dir``, the CONFIG's task, languages
and decoding settings from fairseq_r3f/hparams/translation.tsv, ``--remove-bpe sentencepiece``); its whole
output goes to EVAL/generate-test.txt, a progress bar to the terminal. Each hypothesis is matched to its
reference by the sample id of its ``H-<id>`` line (fairseq prints them in batch order, not test-set order) and
written in test-set order to EVAL/test.hyp; an id with no hypothesis is an error. mBART's target-language tag
([ro_RO]) is removed. BLEU is sacrebleu's corpus BLEU of that detokenised text against the raw references
(OUT/raw/test.TGT of preprocess/translation.py), printed with sacrebleu's signature, saved in EVAL/bleu.json.

``--runs SAVE_ROOT`` scores the checkpoint_best.pt of every finished run recipes/translation.sh wrote under
SAVE_ROOT for --config (into RUN/bleu-test/) and writes SAVE_ROOT/bleu-test.md and .json: BLEU per method and
configuration, mean and standard deviation over seeds, every seed's score. What enters is what the GLUE tables
take (python -m fairseq_r3f.evaluation.results): finished runs only; runs whose effective configurations differ
(a flag after the config, another TINY_UPDATES) on separate lines named by the settings that differ; a run found
twice scored once, with a warning; unfinished, truncated and planned-but-missing runs, and a finished run whose
checkpoint_best.pt was deleted, named under the table, with n/N seeds on its line. Runs of other recipes (GLUE,
summarization) or of another --config are skipped with a note and never written into.

A run's RUN/bleu-test/bleu.json is reused only when it was computed under the same key: the checkpoint's
fingerprint (size, modification time, inode and the sha256 of its first and last MB), the sha256 of
--references, the tokenizer, the decoding settings and generate flags after ``--``, the subset, the batch size,
the device, the BLEU (below), and the plugin's and fairseq's versions. Any change generates and scores again.

``--bleu tokenized`` scores instead as the published IWSLT'14 numbers are scored, for data made by
``preprocess/translation.py --tokenization moses``: fairseq-generate removes the subword-nmt BPE
(``--remove-bpe``) and decodes at fairseq-generate's own length limits (max_len_a 0, max_len_b 200: the
table's comparable_max_len_*), as the test commands of fairseq's translation README and of R-Drop do (the
validation limits 1.2 x source + 10 are their --eval-bleu-args, for the validation BLEU that picks
checkpoint_best.pt); fairseq_r3f.evaluation.tokenized_bleu scores the rank-1 hypotheses against the ``T-``
references of the same output (Moses-tokenised, lowercased) after compound splitting, as R-Drop's
``compound_split_bleu.sh`` + ``fairseq-score`` do (fairseq's README reads the BLEU fairseq-generate prints,
without the split). --references (OUT/raw/test.TGT) then gives the number of test
sentences and enters the key. The table says which BLEU it holds, under the table and in its json ("bleu"); the
two are not comparable (tokenised, lowercased BLEU is usually higher). It also says how the runs chose their
checkpoint_best.pt (recipes/translation.sh's comparable path: the best validation BLEU, as both published
training commands; otherwise fairseq's default, the lowest validation loss) and the decoding settings.
"""

import argparse
import json
import os
import statistics
import sys
from typing import Dict, List, Optional, Sequence, Tuple

from fairseq_r3f.evaluation import generation, tokenized_bleu
from fairseq_r3f.preprocess.files import DataError, read_lines
from fairseq_r3f.evaluation.selection import ResultsError, cells, not_in_tables, planned_seeds
from fairseq_r3f.tools import USER_DIR, fairseq_command

from r3f_runs.folder import RunError
from r3f_runs.status import labelled_runs, read_plans
from r3f_runs.tables import read_table

METHOD_ORDER = ("std", "r3f", "drop")
BLEU_CHOICES = ("sacrebleu", "tokenized")
# the line under a table, and its json's "bleu_description"
BLEU_DESCRIPTIONS = {
    "sacrebleu": "sacrebleu on detokenised, cased text",
    "tokenized": "tokenised BLEU-4 (fairseq-score after compound splitting, as fairseq's compound_split_bleu.sh) on "
                 "Moses-tokenised, lowercased text, as R-Drop reports IWSLT'14 (fairseq's translation README reports "
                 "the same BLEU without the compound split); not comparable with sacrebleu",
}


class EvaluationError(Exception):
    pass


def settings_for(config: str) -> Dict[str, str]:
    table = read_table("translation.tsv")
    configs = list(table["arch"])[1:-1]  # the columns between the row name and where a value comes from
    if config not in configs:
        raise EvaluationError(f"unknown --config {config!r}: choose one of {', '.join(configs)}")
    return {name: row[config] for name, row in table.items()}


def comparable_decoding(settings: Dict[str, str]) -> Dict[str, str]:
    """The decoding of IWSLT'14's comparable path (--bleu tokenized): the config's, with the test-time length
    limits of the published generate commands (fairseq-generate's defaults) in place of the validation ones."""
    if settings.get("comparable_max_len_a", "-") == "-":
        raise EvaluationError("this config has no comparable (Moses/BPE, tokenised BLEU) path: use --bleu sacrebleu")
    return {**settings, "max_len_a": settings["comparable_max_len_a"], "max_len_b": settings["comparable_max_len_b"]}


def decoding_description(settings: Dict[str, str]) -> str:
    return (f"beam {settings['beam']}, lenpen {settings['lenpen']}, max length {settings['max_len_a']} x source + "
            f"{settings['max_len_b']}")


def selection_description(runs: Sequence[Dict]) -> str:
    """How the runs chose their checkpoint_best.pt, from their effective configurations."""
    found = set()
    for run in runs:
        configuration = run.get("configuration") or {}
        metric = configuration.get("checkpoint.best_checkpoint_metric", "loss")
        maximize = bool(configuration.get("checkpoint.maximize_best_checkpoint_metric", False))
        found.add(f"the {'highest' if maximize else 'lowest'} validation {metric}")
    return "checkpoint_best.pt: " + " / ".join(sorted(found)) if found else ""


def score(hypotheses: Sequence[str], references: Sequence[str], tokenize: str = "13a") -> Dict:
    """sacrebleu's corpus BLEU (one reference per sentence) with its signature."""
    from sacrebleu.metrics import BLEU

    if len(hypotheses) != len(references):
        raise EvaluationError(f"{len(hypotheses)} hypotheses but {len(references)} references: they must align")
    if not references:
        raise EvaluationError("nothing to score: no references")
    metric = BLEU(tokenize=tokenize)
    result = metric.corpus_score(list(hypotheses), [list(references)])
    return {"bleu": result.score, "signature": str(metric.get_signature()), "precisions": result.precisions,
            "bp": result.bp, "sys_len": result.sys_len, "ref_len": result.ref_len, "sentences": len(references)}


def hypotheses_by_id(lines: Sequence[str], target_lang: Optional[str] = None) -> Dict[int, str]:
    """{sample id: rank-1 text} from fairseq-generate's ``H-<id>\tscore\ttext`` lines, whitespace-normalised;
    ``target_lang`` drops mBART's [lang] tag from the text."""
    return generation.first_ranked(lines, "H-", hypothesis_cleaner(target_lang))


def hypothesis_cleaner(target_lang: Optional[str]):
    tag = f"[{target_lang}]" if target_lang else None

    def clean(text: str) -> str:
        # --remove-bpe sentencepiece leaves a run of spaces where pieces were lone word boundaries
        return " ".join(word for word in text.split() if word != tag)

    return clean


def generate(checkpoint: str, data_bin: str, settings: Dict[str, str], output_dir: str, expected: int,
             subset: str = "test", batch_size: int = 128, extra: Sequence[str] = (),
             remove_bpe: Sequence[str] = ("--remove-bpe", "sentencepiece")) -> List[str]:
    """Runs fairseq-generate; returns the hypotheses in test-set order (writes them to OUTPUT/SUBSET.hyp)."""
    import torch

    command = fairseq_command("fairseq-generate") + [
        data_bin, "--path", checkpoint, "--user-dir", USER_DIR, "--task", settings["task"],
        "--source-lang", settings["source_lang"], "--target-lang", settings["target_lang"],
        *(["--langs", settings["langs"]] if settings["langs"] != "-" else []),
        "--gen-subset", subset, "--beam", settings["beam"], "--lenpen", settings["lenpen"],
        "--max-len-a", settings["max_len_a"], "--max-len-b", settings["max_len_b"],
        *remove_bpe, "--batch-size", str(batch_size), "--required-batch-size-multiple", "1",
        *(["--fp16"] if torch.cuda.is_available() else ["--cpu"]), *extra,
    ]
    os.makedirs(output_dir, exist_ok=True)
    log_path = os.path.join(output_dir, f"generate-{subset}.txt")
    tag = settings["target_lang"] if settings["task"].startswith("translation_from_pretrained_") else None
    ordered = generation.generate(command, log_path, expected, "H-", hypothesis_cleaner(tag))
    with open(os.path.join(output_dir, f"{subset}.hyp"), "w", encoding="utf-8") as f:
        f.write("".join(h + "\n" for h in ordered))
    return ordered


def evaluation_key(args, settings: Dict[str, str], checkpoint: str, extra: Sequence[str]) -> Dict:
    """Everything a BLEU score depends on (see generation.evaluation_key): a cached bleu.json is reused only
    under the same key."""
    import torch

    tokenized = getattr(args, "bleu", "sacrebleu") == "tokenized"
    return generation.evaluation_key(
        checkpoint, args.references, subset=args.subset, batch_size=args.batch_size, settings=settings,
        tokenize="compound-split, fairseq-score" if tokenized else settings["sacrebleu_tokenize"],
        bleu=getattr(args, "bleu", "sacrebleu"), generate_flags=list(extra),
        device="cuda-fp16" if torch.cuda.is_available() else "cpu")


def evaluate(args, settings: Dict[str, str], references: List[str], checkpoint: str, output_dir: str,
             extra: Sequence[str]) -> Dict:
    key = evaluation_key(args, settings, checkpoint, extra)
    tokenized = getattr(args, "bleu", "sacrebleu") == "tokenized"
    hypotheses = generate(checkpoint, args.data_bin, settings, output_dir, len(references), args.subset,
                          args.batch_size, extra, ["--remove-bpe"] if tokenized else ["--remove-bpe", "sentencepiece"])
    if tokenized:

        with open(os.path.join(output_dir, f"generate-{args.subset}.txt"), encoding="utf-8") as f:
            scored = tokenized_bleu.score_generate_output(f.readlines())
    else:
        scored = score(hypotheses, references, settings["sacrebleu_tokenize"])
    result = {"checkpoint": checkpoint, **scored, "bleu_kind": "tokenized" if tokenized else "sacrebleu",
              "empty_hypotheses": sum(not h for h in hypotheses), "key": key}
    with open(os.path.join(output_dir, "bleu.json"), "w") as f:
        json.dump(result, f, indent=1)
    return result


def data_tokenization(data_bin: str) -> str:
    """moses for a bin/ folder of preprocess/translation.py --tokenization moses (its BPE codes, no sentencepiece
    model), else sentencepiece."""
    if os.path.isfile(os.path.join(data_bin, "code")) and not os.path.isfile(
            os.path.join(data_bin, "sentencepiece.model")):
        return "moses"
    return "sentencepiece"


def check_tokenization(bleu: str, data_bin: str, parser) -> None:
    """Tokenised BLEU needs the Moses/BPE data (its T- lines are tokenised, lowercased text); sacrebleu needs
    detokenised output, which the Moses data cannot give."""
    tokenization = data_tokenization(data_bin)
    if bleu == "tokenized" and tokenization != "moses":
        parser.error(f"--bleu tokenized scores the data of preprocess/translation.py --tokenization moses; "
                     f"{data_bin} is sentencepiece data (score it with the default --bleu sacrebleu)")
    if bleu == "sacrebleu" and tokenization == "moses":
        parser.error(f"{data_bin} holds Moses-tokenised, lowercased BPE data (--tokenization moses): its output is "
                     f"not detokenised text for sacrebleu; pass --bleu tokenized")


def translation_configs() -> List[str]:
    return list(read_table("translation.tsv")["arch"])[1:-1]


def accepts(config: Optional[str]):
    """Which run.json labels are translation runs of ``config`` (recipes/translation.sh): the others (GLUE,
    summarization, another language pair) are foreign to the table and never written into."""
    configs = translation_configs()

    def accepted(label: Dict) -> bool:
        return (label.get("recipe", "translation") == "translation" and label.get("dataset") in configs
                and (config is None or label.get("dataset") == config))

    return accepted


def find_runs(root: str, config: Optional[str]) -> Tuple[List[Dict], List[str]]:
    """Every run under ``root`` with run.json: (the translation runs of ``config``, each label with "folder",
    "status", "reason", "configuration"; the folders of other runs)."""
    try:
        labelled, foreign = labelled_runs(root, accepts(config))
    except RunError as error:
        raise EvaluationError(str(error)) from None
    found = []
    for run in labelled:
        folder, status, reason = run["folder"], run["status"], run["reason"]
        if status == "finished" and not os.path.isfile(os.path.join(folder, "checkpoint_best.pt")):
            status, reason = "no checkpoint", "finished, but checkpoint_best.pt is gone (deleted?): nothing to score"
        found.append({**run, "task": run.get("dataset"), "status": status, "reason": reason,
                      "configuration": (run["identity"] or {}).get("configuration")})
    return found, foreign


def results_table(rows: List[Dict]) -> List[Dict]:
    """One line per (method, config): mean and standard deviation of BLEU over seeds (and, when rows say, how
    many seeds were planned)."""
    groups: Dict = {}
    for row in rows:
        groups.setdefault((row["method"], row["config"]), []).append(row)
    order = lambda key: (METHOD_ORDER.index(key[0]) if key[0] in METHOD_ORDER else len(METHOD_ORDER), key)  # noqa: E731
    lines = []
    for method, config in sorted(groups, key=order):
        runs = sorted(groups[(method, config)], key=lambda r: r["seed"])
        scores = [r["bleu"] for r in runs]
        planned = max((r.get("planned_seeds") or len(runs) for r in runs), default=len(runs))
        lines.append({"method": method, "config": config, "seeds": [r["seed"] for r in runs], "bleu": scores,
                      "planned_seeds": max(planned, len(runs)), "mean": statistics.mean(scores),
                      "std": statistics.stdev(scores) if len(scores) > 1 else None})
    return lines


def markdown(lines: List[Dict], signature: str, left_out: Sequence[Dict] = (), warnings: Sequence[str] = (),
             bleu_kind: str = "sacrebleu", how: Sequence[str] = ()) -> str:
    """The table; ``how``: lines under it that say how the numbers were made (checkpoint choice, decoding)."""
    out = ["| method | configuration | seeds | BLEU mean | std | per seed |", "|---|---|---|---|---|---|"]
    for line in lines:
        std = "-" if line["std"] is None else f"{line['std']:.2f}"
        seeds = ", ".join(f"{s}: {b:.2f}" for s, b in zip(line["seeds"], line["bleu"]))
        count = len(line["seeds"])
        planned = line.get("planned_seeds", count)
        out.append(f"| {line['method']} | {line['config']} | {count if planned == count else f'{count}/{planned}'} | "
                   f"{line['mean']:.2f} | {std} | {seeds} |")
    text = "\n".join(out) + f"\n\nBLEU: {BLEU_DESCRIPTIONS[bleu_kind]}; {signature}\n"
    text += "".join(f"{line}\n" for line in how if line)
    if left_out:
        text += f"\nNot in the table ({len(left_out)}):\n" + "".join(
            f"{item['folder']}: {item['status']} ({item['reason']})\n" for item in left_out)
    if warnings:
        text += "\nWarnings:\n" + "".join(w + "\n" for w in warnings)
    return text


def score_runs(args, settings, references, extra) -> int:
    """BLEU of every finished translation run of --config under --runs: runs of other recipes are skipped (a
    note), unfinished or truncated ones and planned runs without a folder are named under the table, runs whose
    configurations differ are on separate lines (named by the settings that differ), a run found twice is
    scored once. A run's bleu.json is reused only under the same evaluation key."""
    every, foreign = find_runs(args.runs, args.config)
    if foreign:
        print(f"note: {len(foreign)} run(s) of other recipes or configurations are not in this table (nothing "
              f"written into them): {foreign[:3]}", file=sys.stderr)
    if not every:
        raise EvaluationError(f"no run folders (run.json) of {args.config} under {args.runs}")
    try:
        planned = read_plans(args.runs)
        scorable = [run for run in every if run["status"] == "finished" and run["configuration"] is not None]
        grouped, warnings = cells(scorable)
    except (ResultsError, RunError) as error:
        raise EvaluationError(str(error)) from None
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    left_out = not_in_tables(every, planned) + [
        {"folder": run["folder"], "status": "left out", "reason": "what ran is unknown (no identity.json and no "
         "checkpoint_last.pt)"} for run in every if run["status"] == "finished" and run["configuration"] is None]
    for item in left_out:
        print(f"not in the table: {item['folder']}: {item['status']} ({item['reason']})", file=sys.stderr)
    rows = []
    for (_task, method, suffix), members in grouped.items():
        by_config: Dict[str, List[Dict]] = {}
        for run in members:
            by_config.setdefault(run.get("config"), []).append(run)
        for config, group in by_config.items():
            entry = {"folders": [run["folder"] for run in group], "seeds": [run["seed"] for run in group]}
            expected = planned_seeds(entry, group, every, planned)
            for run in group:
                rows.append(score_run(args, settings, references, extra, run, method,
                                      config + (f", {suffix}" if suffix else ""), expected))
    if not rows:
        raise EvaluationError(f"none of the {len(every)} runs of {args.config} under {args.runs} is finished with a "
                              f"checkpoint_best.pt; not in the table:\n" + "\n".join(
                                  f"  {item['folder']}: {item['status']} ({item['reason']})" for item in left_out))
    signatures = sorted({row["signature"] for row in rows})
    lines = results_table(rows)
    scored = [run for run in every if run["folder"] in {row["run"] for row in rows}]
    how = [selection_description(scored), f"decoding: {decoding_description(settings)}"]
    text = markdown(lines, " / ".join(signatures), left_out, warnings, args.bleu, how)
    base = os.path.join(args.runs, f"bleu-{args.subset}")
    with open(base + ".json", "w") as f:
        json.dump({"config": args.config, "subset": args.subset, "bleu": args.bleu,
                   "bleu_description": BLEU_DESCRIPTIONS[args.bleu], "checkpoint_selection": how[0],
                   "decoding": how[1], "signature": signatures, "table": lines,
                   "runs": rows, "not_in_table": [{k: v for k, v in item.items() if k != "run"} for item in left_out],
                   "warnings": warnings}, f, indent=1)
    with open(base + ".md", "w") as f:
        f.write(text)
    print(text, end="")
    return 0


def score_run(args, settings, references, extra, run: Dict, method: str, config: str, planned_seeds: int) -> Dict:
    output_dir = os.path.join(run["folder"], f"bleu-{args.subset}")
    checkpoint = os.path.join(run["folder"], "checkpoint_best.pt")
    result = generation.cached_result(os.path.join(output_dir, "bleu.json"),
                                      evaluation_key(args, settings, checkpoint, extra))
    if result is None:
        result = evaluate(args, settings, references, checkpoint, output_dir, extra)
        print(f"{run['folder']}: BLEU {result['bleu']:.2f}", file=sys.stderr)
    else:
        print(f"{run['folder']}: BLEU {result['bleu']:.2f} (bleu.json of the same checkpoint, references and "
              f"settings)", file=sys.stderr)
    return {"run": run["folder"], "method": method, "config": config, "seed": run.get("seed"),
            "bleu": result["bleu"], "signature": result["signature"], "planned_seeds": planned_seeds}


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--references", required=True, help="raw references, one per line (OUT/raw/test.TGT)")
    parser.add_argument("--hypotheses", help="score this file (one detokenised hypothesis per line) instead")
    parser.add_argument("--config", help="iwslt14_de_en or mbart_en_ro: task, languages and decoding settings")
    parser.add_argument("--data-bin", help="the bin/ folder written by preprocess/translation.py")
    parser.add_argument("--checkpoint", help="generate with this checkpoint")
    parser.add_argument("--runs", help="score every run under this SAVE_ROOT of recipes/translation.sh")
    parser.add_argument("--source-lang", help="override the config's source language (other language pairs)")
    parser.add_argument("--target-lang", help="override the config's target language")
    parser.add_argument("--subset", default="test")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--tokenize", help="sacrebleu tokenizer (default: the config's, else 13a)")
    parser.add_argument("--bleu", choices=BLEU_CHOICES, default="sacrebleu",
                        help="sacrebleu on detokenised text (default), or tokenized: tokenised BLEU after compound "
                             "splitting, for data of preprocess/translation.py --tokenization moses")
    parser.add_argument("--output-dir", default=".", help="with --checkpoint: hypotheses, generation log, bleu.json")
    args = parser.parse_args(argv)

    if args.batch_size < 1:
        parser.error(f"--batch-size {args.batch_size}: must be a positive integer")
    try:
        if not os.path.isfile(args.references):
            parser.error(f"--references {args.references}: no such file (OUT/raw/test.TGT of "
                         f"preprocess/translation.py)")
        references = read_lines(args.references)
        if args.bleu == "tokenized" and args.tokenize:
            parser.error("--tokenize is sacrebleu's: --bleu tokenized scores whitespace tokens (drop --tokenize)")
        if args.hypotheses:
            if args.bleu == "tokenized":
                parser.error("--bleu tokenized scores a fairseq-generate output: use python -m "
                             "fairseq_r3f.evaluation.tokenized_bleu GENERATE_OUTPUT, or --checkpoint / --runs")
            if args.checkpoint or args.runs:
                parser.error("--hypotheses scores a file: leave out --checkpoint and --runs")
            if not os.path.isfile(args.hypotheses):
                parser.error(f"--hypotheses {args.hypotheses}: no such file")
            tokenize = args.tokenize or (settings_for(args.config)["sacrebleu_tokenize"] if args.config else "13a")
            result = score(read_lines(args.hypotheses), references, tokenize)
            print(f"BLEU = {result['bleu']:.2f}  {result['signature']}")
            print(json.dumps(result))
            return 0
        if bool(args.checkpoint) == bool(args.runs):
            parser.error("pass --checkpoint CKPT or --runs SAVE_ROOT (or --hypotheses FILE)")
        missing = [flag for flag, value in (("--config", args.config), ("--data-bin", args.data_bin)) if not value]
        if missing:
            parser.error(f"to generate, pass {' and '.join(missing)}")
        for flag, path in (("--data-bin", args.data_bin), ("--checkpoint", args.checkpoint), ("--runs", args.runs)):
            if path and not os.path.exists(path):
                parser.error(f"{flag} {path}: not found")
        settings = settings_for(args.config)
        settings.update({key: value for key, value in (("source_lang", args.source_lang),
                                                          ("target_lang", args.target_lang)) if value})
        if args.tokenize:
            settings["sacrebleu_tokenize"] = args.tokenize
        check_tokenization(args.bleu, args.data_bin, parser)
        if args.bleu == "tokenized":
            settings = comparable_decoding(settings)
        if args.runs:
            return score_runs(args, settings, references, extra)
        result = evaluate(args, settings, references, args.checkpoint, args.output_dir, extra)
    except (EvaluationError, DataError, generation.GenerationError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"BLEU = {result['bleu']:.2f}  {result['signature']}  ({result['sentences']} sentences)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
