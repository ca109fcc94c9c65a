"""IWSLT'14 prepared as fairseq's prepare-iwslt14.sh prepares it (fairseq_r3f/preprocess/iwslt14_tokenized.py),
on a miniature of the release written here in its formats (tagged training talks, <seg> xml test sets)."""

import pytest

from fairseq_r3f.preprocess import iwslt14_tokenized as moses
from fairseq_r3f.preprocess.files import DataError
from fairseq_r3f.preprocess.translation import IWSLT14_TEST_SETS

GERMAN = ["Das ist ein Haus.", "Es ist groß, oder?", "Wir gehen nach Hause.", "Ich mag Bäume sehr."]
ENGLISH = ["That's a house.", "It's big, isn't it?", "We go home.", "I like trees a lot."]


def release(folder, talks=3, extra_de=(), extra_en=()):
    """Three talks of 24 sentence pairs with the release's metadata lines, and the five xml test sets."""
    folder.mkdir()
    de, en = [], []
    for talk in range(talks):
        for lines in (de, en):
            lines += [f"<url>http://www.ted.com/talks/{talk}</url>", f"<keywords>k{talk}</keywords>",
                      f"<speaker>Speaker {talk}</speaker>", f"<talkid>{talk}</talkid>"]
        de.append(f"<title>Der Baum {talk}</title>")
        en.append(f"<title>The Tree {talk}</title>")
        for i in range(24):
            de.append(GERMAN[i % 4] + f" Nummer {talk}-{i}.")
            en.append(ENGLISH[i % 4] + f" Number {talk}-{i}.")
    de += list(extra_de)
    en += list(extra_en)
    (folder / "train.tags.de-en.de").write_text("".join(line + "\n" for line in de))
    (folder / "train.tags.de-en.en").write_text("".join(line + "\n" for line in en))
    for name in IWSLT14_TEST_SETS:
        for lang, text in (("de", "Das Haus &amp; der Baum."), ("en", "The house &amp; the tree\u2019s leaf.")):
            (folder / f"IWSLT14.{name}.de-en.{lang}.xml").write_text(
                '<?xml version="1.0" encoding="UTF-8"?>\n<mteval>\n<doc docid="1">\n<talkid>1</talkid>\n'
                f'<seg id="1"> {text} </seg>\n<seg id="2">{name}</seg>\n</doc>\n</mteval>\n')
    return de, en


def test_the_scripts_steps_in_order(tmp_path):
    long_de, long_en = " ".join(["wort"] * 176), " ".join(["word"] * 176)
    release(tmp_path / "de-en", extra_de=["Eins zwei drei vier", long_de, "   "],
            extra_en=["One", long_en, "   "])
    report = {}
    pairs = moses.read_and_tokenise(str(tmp_path / "de-en"), "de", "en", IWSLT14_TEST_SETS, report)
    # cleaned away: the ratio 4:1 pair, the 176-token pair, the empty one; <speaker> lines stay, as in the script
    assert report["train_cleaned_away"] == {"fewer_than_1_token": 1, "more_than_175_tokens": 1,
                                            "length_ratio_above_1.5": 1}
    tokenize = moses.moses_tokenizer("en")
    cleaned = []  # the expected cleaned, lowercased English training side, in order
    for talk in range(3):
        cleaned += [f"&lt; speaker &gt; speaker {talk} &lt; / speaker &gt;",  # kept as text, escaped
                    f"the tree {talk}"]  # title text kept, tags gone
        cleaned += [tokenize(f"{ENGLISH[i % 4]} Number {talk}-{i}.").lower() for i in range(24)]
    english = [t for _, t in pairs["train"]], [t for _, t in pairs["valid"]]
    assert english == ([t for i, t in enumerate(cleaned, 1) if i % 23], cleaned[22::23])
    assert "that &apos;s a house . number 0-0 ." in english[0]  # Moses: 's split off and escaped
    assert "it &apos;s big , isn &apos;t it ? number 0-1 ." in english[0]
    assert pairs["train"][3][0] == "es ist groß , oder ? nummer 0-1 ."  # after the speaker and title lines
    # test: the <seg> text as it stands (entities not unescaped: the tokenizer splits and escapes "&amp;"), ’ as '
    assert pairs["test"][0] == ("das haus &amp; amp ; der baum .", "the house &amp; amp ; the tree &apos;s leaf .")
    assert [t for _, t in pairs["test"][1::2]] == [tokenize(name).lower() for name in IWSLT14_TEST_SETS]
    assert pairs["test"][1] == ("ted.dev2010", "ted.dev2010")  # the five sets in the script's order
    assert report["test_sets"] == {name: 2 for name in IWSLT14_TEST_SETS}


def test_joint_bpe_is_learnt_on_both_sides_and_undone_by_removing_the_separators(tmp_path):
    release(tmp_path / "de-en")
    pairs = moses.read_and_tokenise(str(tmp_path / "de-en"), "de", "en", IWSLT14_TEST_SETS, {})
    text, bpe = tmp_path / "raw", tmp_path / "bpe"
    text.mkdir()
    for split, examples in pairs.items():
        for lang, side in (("de", 0), ("en", 1)):
            (text / f"{split}.{lang}").write_text("".join(p[side] + "\n" for p in examples))
    report = {}
    moses.learn_and_apply_bpe(str(text), str(bpe), "de", "en", 30, report)
    assert report["bpe"] == {"tool": "subword-nmt", "merges": 30, "joint": True}
    assert len((bpe / "code").read_text().splitlines()) == 31  # a version line and 30 merges
    for split in ("train", "valid", "test"):
        for lang in ("de", "en"):
            encoded = (bpe / f"{split}.{lang}").read_text().splitlines()
            assert [line.replace("@@ ", "") for line in encoded] == (text / f"{split}.{lang}").read_text().splitlines()
    assert "@@" in (bpe / "train.de").read_text() and "@@" in (bpe / "train.en").read_text()


def test_misaligned_talks_are_refused(tmp_path):
    release(tmp_path / "de-en", extra_en=["One more line"])
    with pytest.raises(DataError, match="misaligned"):
        moses.read_and_tokenise(str(tmp_path / "de-en"), "de", "en", IWSLT14_TEST_SETS, {})
