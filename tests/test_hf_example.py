"""examples/hf/run_glue_r3f.py end to end, as a user runs it: a tiny RoBERTa and its tokenizer saved to a folder
(what --model_name_or_path takes besides a hub name), generated csv files, the R3F/R4F flags through
HfArgumentParser and R3FTrainingArguments; the run logs symm_kl and noise_kept, and its R4F model is saved folded,
so a stock from_pretrained loads it with nothing left over and gives the logits the trained model gave."""

import csv
import json
import os
import random
import subprocess
import sys

import pytest

from conftest import REPO

pytest.importorskip("transformers")
import torch  # noqa: E402
from transformers import AutoModelForSequenceClassification, RobertaConfig, RobertaForSequenceClassification  # noqa: E402

SCRIPT = os.path.join(REPO, "examples", "hf", "run_glue_r3f.py")
WORDS = [f"w{i}" for i in range(20)]
SPECIALS = ["<s>", "<pad>", "</s>", "<unk>"]


def save_tiny_model(folder):
    """A RoBERTa with a word-level tokenizer over WORDS, as save_pretrained writes them."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(SPECIALS + WORDS + ["<mask>"])}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", 0), ("</s>", 2)])
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                            unk_token="<unk>", mask_token="<mask>").save_pretrained(folder)
    torch.manual_seed(0)
    config = RobertaConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                           intermediate_size=64, max_position_embeddings=66, type_vocab_size=1, pad_token_id=1,
                           bos_token_id=0, eos_token_id=2)
    RobertaForSequenceClassification(config).save_pretrained(folder)


def write_pairs(path, n, seed):
    """Sentence pairs labelled "same" when both halves start with the same word, else "different"."""
    rng = random.Random(seed)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["sentence1", "sentence2", "label"])
        for _ in range(n):
            first = [rng.choice(WORDS) for _ in range(rng.randint(3, 8))]
            second = [rng.choice(WORDS) for _ in range(rng.randint(3, 8))]
            if rng.random() < 0.5:
                second[0] = first[0]
            writer.writerow([" ".join(first), " ".join(second), "same" if first[0] == second[0] else "different"])


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("run_glue")
    save_tiny_model(str(root / "model"))
    write_pairs(root / "train.csv", 64, seed=0)
    write_pairs(root / "dev.csv", 32, seed=1)
    return root


def run_example(files, output_dir, *flags):
    command = [sys.executable, SCRIPT, "--model_name_or_path", str(files / "model"),
               "--train_file", str(files / "train.csv"), "--validation_file", str(files / "dev.csv"),
               "--do_train", "--do_eval", "--output_dir", str(output_dir), "--max_steps", "6",
               "--per_device_train_batch_size", "16", "--learning_rate", "1e-3", "--logging_steps", "2",
               "--save_strategy", "no", "--report_to", "none", "--use_cpu", "--seed", "1", *flags]
    proc = subprocess.run(command, capture_output=True, text=True, cwd=str(files),
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    with open(output_dir / "all_results.json") as f:
        results = json.load(f)
    with open(output_dir / "trainer_state.json") as f:
        history = json.load(f)["log_history"]
    return proc, results, history


def test_r4f_run_logs_the_term_and_saves_a_folded_model(files, tmp_path):
    out = tmp_path / "r4f"
    _, results, history = run_example(files, out, "--r3f_lambda", "1.0", "--r3f_eps", "1e-2",
                                      "--r3f_noise_type", "normal", "--r4f")
    assert results["method"] == "R4F" and 0 <= results["eval_accuracy"] <= 1
    logged = [record for record in history if "loss" in record]
    assert len(logged) == 3 and all(record["symm_kl"] > 0 and record["noise_kept"] == 100.0 for record in logged)

    # a stock model loads the fold: nothing missing, nothing left over, and the evaluation it reported
    model, info = AutoModelForSequenceClassification.from_pretrained(str(out), output_loading_info=True)
    assert type(model.classifier.dense) is torch.nn.Linear
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert model.config.id2label == {0: "different", 1: "same"}
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(out))
    with open(files / "dev.csv") as f:
        rows = list(csv.DictReader(f))
    batch = tokenizer([r["sentence1"] for r in rows], [r["sentence2"] for r in rows], padding=True,
                      return_tensors="pt")
    with torch.no_grad():
        predicted = model.eval()(**batch).logits.argmax(-1)
    labels = torch.tensor([model.config.label2id[r["label"]] for r in rows])
    assert float((predicted == labels).float().mean()) == pytest.approx(results["eval_accuracy"], abs=1e-6)


def test_lambda_zero_is_standard_fine_tuning(files, tmp_path):
    proc, results, history = run_example(files, tmp_path / "std")
    assert results["method"] == "STD" and "method: STD (r3f_lambda 0.0" in proc.stdout
    assert all("symm_kl" not in record for record in history)


def test_a_bad_r3f_option_is_refused_by_name(files, tmp_path):
    command = [sys.executable, SCRIPT, "--model_name_or_path", str(files / "model"), "--train_file",
               str(files / "train.csv"), "--output_dir", str(tmp_path), "--r3f_noise_type", "gaussian"]
    proc = subprocess.run(command, capture_output=True, text=True, cwd=str(files))
    assert proc.returncode != 0 and "r3f_noise_type" in proc.stderr and "uniform" in proc.stderr
