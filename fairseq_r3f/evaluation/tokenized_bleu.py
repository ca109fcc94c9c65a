"""Tokenised BLEU, as published IWSLT'14 scores are computed: corpus BLEU-4 over whitespace tokens of
Moses-tokenised, lowercased, BPE-merged text (fairseq-generate --remove-bpe), after compound splitting.

This is what R-Drop reports for IWSLT'14 (its ``script/run_inference.sh``): fairseq's
``scripts/compound_split_bleu.sh`` takes the rank-1 hypotheses (``H-`` lines, ordered by sample id) and the
references (``T-`` lines) of a ``fairseq-generate`` output, rewrites every hyphen between two non-space
characters ``a-b`` as ``a ##AT##-##AT## b`` on both sides, and scores them with ``fairseq-score`` (clipped
n-gram precisions up to 4 over the whole corpus, geometric mean, brevity penalty min(1, exp(1 - ref/hyp)); no
smoothing, no further tokenisation). fairseq's translation README reports the BLEU that ``fairseq-generate
--remove-bpe`` itself prints, the same computation without the compound split: ``--no-compound-split``. The number is
not comparable with sacrebleu on detokenised text (``fairseq_r3f.evaluation.bleu``): tokenised, lowercased BLEU is
usually higher.

    python -m fairseq_r3f.evaluation.tokenized_bleu GENERATE_OUTPUT [--no-compound-split]
"""

import argparse
import math
import re
import sys
from collections import Counter
from typing import Dict, List, Sequence, Tuple

from fairseq_r3f.evaluation.generation import first_ranked

ORDER = 4
_COMPOUND = re.compile(r"(\S)-(\S)")


def compound_split(line: str) -> str:
    """``a-b`` -> ``a ##AT##-##AT## b``, left to right without overlaps (``a-b-c`` -> ``a ##AT##-##AT## b-c``),
    as compound_split_bleu.sh's Perl substitution does."""
    return _COMPOUND.sub(r"\1 ##AT##-##AT## \2", line)


def statistics(hypotheses: Sequence[str], references: Sequence[str], order: int = ORDER) -> Dict:
    """Corpus counts: matched and total n-grams per order, hypothesis and reference lengths in tokens."""
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references: BLEU pairs them line by "
                         f"line")
    matched, total = [0] * order, [0] * order
    hyp_length = ref_length = 0
    for hypothesis, reference in zip(hypotheses, references):
        hyp, ref = hypothesis.split(), reference.split()
        hyp_length += len(hyp)
        ref_length += len(ref)
        for n in range(1, order + 1):
            hyp_ngrams = Counter(tuple(hyp[i:i + n]) for i in range(len(hyp) - n + 1))
            ref_ngrams = Counter(tuple(ref[i:i + n]) for i in range(len(ref) - n + 1))
            matched[n - 1] += sum(min(count, ref_ngrams[gram]) for gram, count in hyp_ngrams.items())
            total[n - 1] += max(len(hyp) - n + 1, 0)
    return {"matched": matched, "total": total, "hyp_length": hyp_length, "ref_length": ref_length}


def corpus_bleu(hypotheses: Sequence[str], references: Sequence[str], order: int = ORDER) -> Dict:
    """BLEU x 100 with its parts, computed as fairseq-score does (and multi-bleu.perl)."""
    stats = statistics(hypotheses, references, order)
    precisions = [m / t if t else 0.0 for m, t in zip(stats["matched"], stats["total"])]
    if stats["hyp_length"] == 0:
        brevity = 0.0
    else:
        brevity = min(1.0, math.exp(1 - stats["ref_length"] / stats["hyp_length"]))
    log_sum = sum(math.log(p) if p > 0 else float("-inf") for p in precisions)
    bleu = brevity * math.exp(log_sum / order) * 100 if brevity > 0 else 0.0
    return {"bleu": bleu, "precisions": [100 * p for p in precisions], "brevity_penalty": brevity,
            "hyp_length": stats["hyp_length"], "ref_length": stats["ref_length"]}


def read_generate_output(lines: Sequence[str]) -> Tuple[List[str], List[str]]:
    """(hypotheses, references) of a fairseq-generate output, by sample id: the first ``H-`` line of each id
    (the best of an n-best list) and its ``T-`` line. Every reference needs a hypothesis and the reverse."""
    hypotheses = first_ranked(lines, "H-")
    references: Dict[int, str] = {}
    for line in lines:
        if line.startswith("T-"):
            head, _, text = line.rstrip("\n").partition("\t")
            references[int(head[2:])] = text.strip()
    if not references:
        raise ValueError("no T- lines: run fairseq-generate on a split with references (and without --quiet)")
    if hypotheses.keys() != references.keys():
        missing = sorted(references.keys() - hypotheses.keys())[:5]
        extra = sorted(hypotheses.keys() - references.keys())[:5]
        raise ValueError(f"hypotheses and references are for different sample ids (no hypothesis for {missing}, "
                         f"no reference for {extra}): the output is cut off or mixes two runs")
    ids = sorted(references)
    return [hypotheses[i] for i in ids], [references[i] for i in ids]


def score_generate_output(lines: Sequence[str], split_compounds: bool = True) -> Dict:
    hypotheses, references = read_generate_output(lines)
    if split_compounds:
        hypotheses = [compound_split(h) for h in hypotheses]
        references = [compound_split(r) for r in references]
    result = corpus_bleu(hypotheses, references)
    result.update(sentences=len(references), compound_split=split_compounds,
                  signature="tokenised BLEU-4 (fairseq-score)" + (", compound-split" if split_compounds else ""))
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("generate_output", help="what fairseq-generate --remove-bpe printed (H-, T- lines)")
    parser.add_argument("--no-compound-split", action="store_true", help="score without compound splitting")
    args = parser.parse_args(argv)
    try:
        with open(args.generate_output, encoding="utf-8") as f:
            result = score_generate_output(f.readlines(), not args.no_compound_split)
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"BLEU4 = {result['bleu']:.2f}, " + "/".join(f"{p:.1f}" for p in result["precisions"])
          + f" (BP={result['brevity_penalty']:.3f}, hyp_len={result['hyp_length']}, ref_len={result['ref_length']}, "
            f"{result['signature']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
