"""Tokenised BLEU (fairseq_r3f/evaluation/tokenized_bleu.py) against fairseq's own scorer, the one behind
fairseq-score and compound_split_bleu.sh, on fairseq-generate output files written here in its format."""

import random

import pytest
import sacrebleu

from fairseq_r3f.evaluation import tokenized_bleu

WORDS = "the a house tree is was big small &apos;s , . well-known de-facto state-of-the-art red".split()


def corpus(rng, n=40):
    refs = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 15))) for _ in range(n)]
    hyps = []
    for ref in refs:
        tokens = ref.split()
        tokens = [t if rng.random() < 0.7 else rng.choice(WORDS) for t in tokens]
        tokens = tokens[: max(1, len(tokens) - rng.randint(0, 2))]
        hyps.append(" ".join(tokens))
    return hyps, refs


def fairseq_score(hyps, refs):
    """What fairseq-score prints for these lines, through the same code (fairseq.scoring.bleu, its C counter)."""
    from fairseq.data import Dictionary
    from fairseq.scoring import bleu

    dictionary = Dictionary()
    scorer = bleu.Scorer(bleu.BleuConfig(pad=dictionary.pad(), eos=dictionary.eos(), unk=dictionary.unk()))
    for hyp, ref in zip(hyps, refs):
        scorer.add(dictionary.encode_line(ref + "\n"), dictionary.encode_line(hyp + "\n"))
    return scorer.score(4)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_equals_fairseqs_scorer_and_sacrebleu_without_tokenisation(seed):
    hyps, refs = corpus(random.Random(seed))
    ours = tokenized_bleu.corpus_bleu(hyps, refs)["bleu"]
    assert 5 < ours < 95
    assert ours == pytest.approx(fairseq_score(hyps, refs), abs=1e-4)
    assert ours == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs], tokenize="none", smooth_method="none",
                                                       force=True).score, abs=1e-4)


def test_known_values():
    assert tokenized_bleu.corpus_bleu(["a b c d"], ["a b c d"])["bleu"] == pytest.approx(100.0)
    # 4 of 4 unigrams, 2 of 3 bigrams, 1 of 2 trigrams, 0 of 1 4-gram: BLEU 0, as fairseq-score gives
    assert tokenized_bleu.corpus_bleu(["a b x d"], ["a b c d"])["bleu"] == 0.0
    result = tokenized_bleu.corpus_bleu(["a b c d e"], ["a b c d e f g h i j"])
    assert result["brevity_penalty"] == pytest.approx(2.718281828 ** (1 - 10 / 5))
    with pytest.raises(ValueError, match="2 hypotheses but 1 references"):
        tokenized_bleu.corpus_bleu(["a", "b"], ["a"])


def test_compound_split_is_the_scripts_substitution():
    assert tokenized_bleu.compound_split("a well-known state-of-the-art - x") == \
        "a well ##AT##-##AT## known state ##AT##-##AT## of ##AT##-##AT## the ##AT##-##AT## art - x"
    # matches do not overlap: in a-b-c the b is taken by the first one, as Perl's s{}{}g leaves it
    assert tokenized_bleu.compound_split("a-b-c") == "a ##AT##-##AT## b-c"


def generate_output(hyps, refs, nbest_noise=True):
    """A fairseq-generate log: S/T/H/D/P lines per sample, samples out of order, a second-ranked hypothesis."""
    lines = ["2026-01-01 | INFO | fairseq_cli.generate | loading model\n"]
    for i in reversed(range(len(refs))):
        lines += [f"S-{i}\tsource {i}\n", f"T-{i}\t{refs[i]}\n", f"H-{i}\t-0.25\t{hyps[i]}\n",
                  f"D-{i}\t-0.25\t{hyps[i]}\n", f"P-{i}\t-0.1 -0.4\n"]
        if nbest_noise:
            lines += [f"H-{i}\t-0.90\tnot the best\n"]
    lines.append("Generate test with beam=5: BLEU4 = 0.00\n")
    return lines


def test_scores_a_generate_output_by_sample_id_with_compound_splitting(tmp_path, capsys):
    hyps, refs = corpus(random.Random(3))
    path = tmp_path / "gen.out"
    path.write_text("".join(generate_output(hyps, refs)))
    result = tokenized_bleu.score_generate_output(path.read_text().splitlines(keepends=True))
    split = [tokenized_bleu.compound_split(x) for x in hyps], [tokenized_bleu.compound_split(x) for x in refs]
    assert result["sentences"] == len(refs)
    assert result["bleu"] == pytest.approx(fairseq_score(*split), abs=1e-4)
    plain = tokenized_bleu.score_generate_output(path.read_text().splitlines(), split_compounds=False)
    assert plain["bleu"] == pytest.approx(fairseq_score(hyps, refs), abs=1e-4)
    assert tokenized_bleu.main([str(path)]) == 0
    assert f"BLEU4 = {result['bleu']:.2f}" in capsys.readouterr().out


def test_a_cut_off_output_is_refused(tmp_path, capsys):
    hyps, refs = corpus(random.Random(4), n=5)
    lines = [line for line in generate_output(hyps, refs) if not line.startswith("H-3\t")]
    with pytest.raises(ValueError, match=r"no hypothesis for \[3\]"):
        tokenized_bleu.read_generate_output(lines)
    with pytest.raises(ValueError, match="no T- lines"):
        tokenized_bleu.read_generate_output([line for line in lines if not line.startswith("T-")])
    path = tmp_path / "cut.out"
    path.write_text("".join(lines))
    assert tokenized_bleu.main([str(path)]) == 2
    assert "different sample ids" in capsys.readouterr().err
