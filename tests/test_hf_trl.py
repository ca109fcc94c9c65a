"""R3FMixin with TRL's SFTTrainer, as rxf.hf.trainer's docstring shows it: the mixin first, the config with R3F's
fields; R3F's term and logs come on top of SFT's causal-LM loss, and at lambda 0 the run is SFTTrainer's own."""

from dataclasses import dataclass

import pytest
import torch

trl = pytest.importorskip("trl")
datasets = pytest.importorskip("datasets")
tokenizers = pytest.importorskip("tokenizers")

from transformers import PreTrainedTokenizerFast  # noqa: E402

from rxf.hf import R3FMixin, R3FTrainingArguments  # noqa: E402
from test_hf_noise import VOCAB, tiny  # noqa: E402


@dataclass
class R3FSFTConfig(trl.SFTConfig, R3FTrainingArguments):
    pass


class R3FSFTTrainer(R3FMixin, trl.SFTTrainer):
    pass


def word_tokenizer():
    """A word-level tokenizer over the tiny vocabulary (w0 = eos, w1 = padding), built here: no download."""
    model = tokenizers.models.WordLevel({f"w{i}": i for i in range(VOCAB)}, unk_token="w2")
    tokenizer = tokenizers.Tokenizer(model)
    tokenizer.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="w1", eos_token="w0", unk_token="w2")


def train(tmp_path, trainer_class, config_class, **settings):
    generator = torch.Generator().manual_seed(0)
    rows = [{"input_ids": torch.randint(3, VOCAB, (4 + i % 3,), generator=generator).tolist()} for i in range(8)]
    args = config_class(output_dir=str(tmp_path), report_to=[], use_cpu=True, bf16=False, max_steps=2,
                        logging_steps=1, per_device_train_batch_size=4, save_strategy="no", disable_tqdm=True,
                        seed=0, **settings)
    trainer = trainer_class(model=tiny("gpt2"), args=args, train_dataset=datasets.Dataset.from_list(rows),
                            processing_class=word_tokenizer())
    trainer.train()
    return [log for log in trainer.state.log_history if "loss" in log]


def test_sft_with_r3f_logs_the_term_and_lambda_zero_is_sft_itself(tmp_path):
    logs = train(tmp_path / "r3f", R3FSFTTrainer, R3FSFTConfig, r3f_lambda=1.0, r3f_eps=0.1)
    assert len(logs) == 2
    assert all(log["symm_kl"] > 0 and log["noise_kept"] == 100.0 for log in logs)
    off = train(tmp_path / "off", R3FSFTTrainer, R3FSFTConfig)
    plain = train(tmp_path / "plain", trl.SFTTrainer, trl.SFTConfig)
    assert [log["loss"] for log in off] == [log["loss"] for log in plain]
    assert not any("symm_kl" in log for log in off)
