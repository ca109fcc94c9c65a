"""R3FTrainer through transformers' own training loop, on tiny models built from configs: lambda 0 is the plain
Trainer to the last bit; the same effective batch gives the same gradient at gradient accumulation 1, 2 and 4
(RoBERTa's head accepts num_items_in_batch and ignores it: transformers#47688; a causal LM's micro-batches hold
different numbers of target tokens); evaluation computes no term; symm_kl and noise_kept reach the logs, averaged
over the steps since the last log."""

import pytest
import torch

transformers = pytest.importorskip("transformers")

from rxf.hf import R3FSeq2SeqTrainer, R3FSeq2SeqTrainingArguments, R3FTrainer, R3FTrainingArguments, r3f_loss  # noqa: E402
from test_hf_noise import PAD, fixed_noise, tiny  # noqa: E402


def examples(family: str, count: int = 8, seed: int = 0):
    """Sentences of different lengths (so batches pad), with labels as collators give them."""
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for i in range(count):
        ids = torch.randint(3, 40, (3 + (i * 5) % 7,), generator=generator)
        if family == "gpt2":
            labels = ids.clone()
            labels[: i % 3] = -100  # a prompt that is not a target: micro-batches differ in target tokens
        elif family == "bart":
            labels = torch.randint(3, 40, (2 + i % 4,), generator=generator)  # targets of different lengths
        else:
            labels = torch.tensor(i % 3)
        rows.append({"input_ids": ids, "labels": labels})
    return rows


def collate(rows):
    length = max(len(r["input_ids"]) for r in rows)
    ids = torch.full((len(rows), length), PAD)
    mask = torch.zeros((len(rows), length), dtype=torch.long)
    sequence_labels = rows[0]["labels"].dim() == 1
    if sequence_labels:
        labels = torch.full((len(rows), max(len(r["labels"]) for r in rows)), -100)
    else:
        labels = torch.stack([r["labels"] for r in rows])
    for i, row in enumerate(rows):
        n = len(row["input_ids"])
        ids[i, :n], mask[i, :n] = row["input_ids"], 1
        if sequence_labels:
            labels[i, : len(row["labels"])] = row["labels"]
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def arguments(tmp_path, arguments_class=R3FTrainingArguments, **overrides):
    settings = dict(output_dir=str(tmp_path), per_device_train_batch_size=8, max_steps=1, learning_rate=1e-3,
                    report_to=[], use_cpu=True, logging_steps=1, save_strategy="no", seed=0, max_grad_norm=0.0,
                    lr_scheduler_type="constant", disable_tqdm=True, dataloader_num_workers=0)
    return arguments_class(**{**settings, **overrides})


class Gradients(transformers.TrainerCallback):
    """The gradient of every parameter at the first optimizer step."""

    def __init__(self, model):
        self.model, self.grads = model, None

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        if self.grads is None:
            self.grads = {n: p.grad.detach().clone() for n, p in self.model.named_parameters() if p.grad is not None}


def first_gradient(tmp_path, family, noise=fixed_noise(0.5), **overrides):
    model = tiny(family)
    callback = Gradients(model)
    seq2seq = family == "bart"
    trainer_class = R3FSeq2SeqTrainer if seq2seq else R3FTrainer
    args = arguments(tmp_path, R3FSeq2SeqTrainingArguments if seq2seq else R3FTrainingArguments, **overrides)
    trainer = trainer_class(model=model, args=args, train_dataset=examples(family), data_collator=collate,
                            callbacks=[callback])
    trainer.r3f_noise_sampler = noise
    trainer.train()
    return callback.grads, trainer


# bart: R3FSeq2SeqTrainer with Trainer's label smoother in place of the model's loss
@pytest.mark.parametrize("family, settings", [("roberta", {}), ("gpt2", {}), ("bart", {"label_smoothing_factor": 0.1})])
def test_the_same_effective_batch_gives_the_same_gradient_at_accumulation_1_2_and_4(tmp_path, family, settings):
    reference, trainer = first_gradient(tmp_path / "1", family, r3f_lambda=1.0, **settings)
    # the term contributes to the gradient (else the comparison would not test it): the whole batch's gradient
    # without it, through the same loss
    model = tiny(family)
    full = collate(examples(family))
    loss_func = trainer._r3f_task_loss_func(model)
    r3f_loss(model, full, r3f_lambda=1.0, eps=0.0, noise_type="none", loss_func=loss_func).loss.backward()
    embedding = next(name for name in reference if "embed" in name or "wte" in name)
    without_term = dict(model.named_parameters())[embedding].grad
    assert (reference[embedding] - without_term).abs().max() > 1e-4 * reference[embedding].abs().max()
    for steps in (2, 4):
        grads, _ = first_gradient(tmp_path / str(steps), family, r3f_lambda=1.0, per_device_train_batch_size=8 // steps,
                                  gradient_accumulation_steps=steps, **settings)
        assert grads.keys() == reference.keys()
        for name, grad in reference.items():
            assert torch.allclose(grads[name], grad, rtol=1e-4, atol=1e-7), (steps, name)


def test_lambda_zero_is_the_plain_trainer_to_the_last_bit(tmp_path):
    runs = []
    for trainer_class, arguments_class in ((R3FTrainer, R3FTrainingArguments),
                                           (transformers.Trainer, transformers.TrainingArguments)):
        model = tiny("roberta", hidden_dropout_prob=0.1)  # dropout on: the same random stream too
        args = arguments(tmp_path / trainer_class.__name__, arguments_class, max_steps=3,
                         per_device_train_batch_size=4)
        trainer = trainer_class(model=model, args=args, train_dataset=examples("roberta"), data_collator=collate)
        trainer.train()
        runs.append(([log["loss"] for log in trainer.state.log_history if "loss" in log], model.state_dict()))
    (losses, state), (plain_losses, plain_state) = runs
    assert len(losses) == 3 and losses == plain_losses
    assert all(torch.equal(state[key], plain_state[key]) for key in plain_state)


def test_evaluation_computes_no_term(tmp_path):
    def no_noise_in_evaluation(embeddings):
        raise AssertionError("the noised forward ran in evaluation")

    model = tiny("roberta")
    args = arguments(tmp_path, r3f_lambda=1.0, per_device_eval_batch_size=4)
    trainer = R3FTrainer(model=model, args=args, eval_dataset=examples("roberta"), data_collator=collate)
    trainer.r3f_noise_sampler = no_noise_in_evaluation
    metrics = trainer.evaluate()
    plain = transformers.Trainer(model=model, args=arguments(tmp_path / "plain", transformers.TrainingArguments,
                                                             per_device_eval_batch_size=4),
                                 eval_dataset=examples("roberta"), data_collator=collate).evaluate()
    assert metrics["eval_loss"] == plain["eval_loss"]
    assert not any("symm_kl" in log for log in trainer.state.log_history)


def test_symm_kl_and_noise_kept_are_logged_as_averages_since_the_last_log(tmp_path):
    recorded = []

    class Recording(R3FTrainer):
        def _r3f_record(self, result):
            recorded.append((result.symm_kl.item(), result.items.item()))
            super()._r3f_record(result)

    model = tiny("roberta")
    args = arguments(tmp_path, r3f_lambda=1.0, max_steps=4, logging_steps=2, per_device_train_batch_size=2)
    trainer = Recording(model=model, args=args, train_dataset=examples("roberta"), data_collator=collate)
    trainer.train()
    logs = [log for log in trainer.state.log_history if "loss" in log]
    assert len(logs) == 2 and len(recorded) == 4
    for log, steps in zip(logs, (recorded[:2], recorded[2:])):
        assert log["symm_kl"] == pytest.approx(sum(k for k, _ in steps) / sum(n for _, n in steps), rel=1e-6)
        assert log["symm_kl"] > 0
        assert log["noise_kept"] > 99.0  # fp32: the noise survives


def test_trainer_arguments_refuse_bad_r3f_settings(tmp_path):
    with pytest.raises(ValueError, match="r3f_lambda must be a finite number >= 0"):
        arguments(tmp_path, r3f_lambda=-1.0)
    with pytest.raises(ValueError, match="unknown noise type 'gauss'"):
        arguments(tmp_path, r3f_noise_type="gauss")
    with pytest.raises(ValueError, match="neftune_noise_alpha"):
        arguments(tmp_path, r3f_lambda=1.0, neftune_noise_alpha=5.0)
    with pytest.raises(TypeError, match="use R3FTrainingArguments"):
        R3FTrainer(model=tiny("roberta"), args=arguments(tmp_path, transformers.TrainingArguments))


def test_seq2seq_evaluation_with_generation_computes_no_term(tmp_path):
    def no_noise_in_evaluation(embeddings):
        raise AssertionError("the noised forward ran in evaluation")

    args = arguments(tmp_path, R3FSeq2SeqTrainingArguments, r3f_lambda=1.0, predict_with_generate=True,
                     generation_max_length=6, per_device_eval_batch_size=4)
    trainer = R3FSeq2SeqTrainer(model=tiny("bart"), args=args, eval_dataset=examples("bart"), data_collator=collate)
    trainer.r3f_noise_sampler = no_noise_in_evaluation
    assert trainer.evaluate()["eval_loss"] > 0


def test_the_fields_are_command_line_options_of_hf_argument_parser(tmp_path):
    parser = transformers.HfArgumentParser(R3FSeq2SeqTrainingArguments)
    (args,) = parser.parse_args_into_dataclasses(["--output_dir", str(tmp_path), "--use_cpu", "true", "--r3f_lambda",
                                                  "0.5", "--r3f-noise-type", "normal", "--r3f_batched_forward", "true"])
    assert (args.r3f_lambda, args.r3f_eps, args.r3f_noise_type, args.r3f_batched_forward) == (0.5, 1e-5, "normal", True)
    with pytest.raises(SystemExit):
        parser.parse_args_into_dataclasses(["--output_dir", str(tmp_path), "--r3f_noise_type", "gauss"])


def test_bf16_mixed_precision_logs_how_little_of_the_noise_survives(tmp_path, caplog):
    model = tiny("roberta")
    args = arguments(tmp_path, r3f_lambda=1.0, bf16=True, per_device_train_batch_size=4)
    trainer = R3FTrainer(model=model, args=args, train_dataset=examples("roberta"), data_collator=collate)
    with caplog.at_level("WARNING", logger="rxf.hf.trainer"):
        trainer.train()
    (log,) = [log for log in trainer.state.log_history if "loss" in log]
    assert log["noise_kept"] < 50.0
    assert "raise r3f_eps" in caplog.text
