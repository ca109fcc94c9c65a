"""runs.effective_configuration: what makes two runs one configuration, on the cfg fairseq's own parser builds
from an argument list (in this process, no training)."""

import pytest
from omegaconf import OmegaConf

from conftest import NO_DROPOUT, train_args
from r3f_runs.configuration import configuration_differences, configuration_from_args, effective_configuration
from r3f_runs.folder import RunError

DATA, SAVE = "/data/RTE-bin", "/runs/RTE/r3f/default/seed1"


def configuration(*extra, data=DATA, save_dir=SAVE):
    return effective_configuration(configuration_from_args(train_args(data, save_dir, *extra)))


@pytest.fixture(scope="module")
def base():
    return configuration()


def test_a_setting_given_after_the_method_is_part_of_the_configuration(base):
    dropout = configuration("--dropout", "0.0")
    assert configuration_differences(base, dropout) == ["model.dropout"]
    assert (base["model.dropout"], dropout["model.dropout"]) == (0.1, 0)
    # nan is a value of its own, equal to itself (a table can name it), not a missing one
    nan = configuration("--dropout", "nan")
    assert nan["model.dropout"] == "nan" and configuration_differences(nan, configuration("--dropout", "nan")) == []
    assert configuration_differences(base, configuration("--r3f-lambda", "0.5", "--max-update", "2")) == [
        "criterion.r3f_lambda", "optimization.max_update"]
    assert configuration_differences(base, configuration("--arch", "roberta_sn_base")) == ["model._name"]
    assert configuration_differences(base, configuration("--fp16")) == ["common.fp16"]
    assert configuration_differences(base, configuration(*NO_DROPOUT)) == [
        "model.attention_dropout", "model.dropout"]  # activation and pooler dropout are 0 already


def test_paths_logging_workers_and_the_seed_are_not(base):
    other = configuration("--seed", "5", "--log-interval", "7", "--log-format", "simple", "--num-workers", "2",
                          data="/elsewhere/RTE-bin", save_dir="/elsewhere/seed5")
    assert configuration_differences(base, other) == []
    assert not any(isinstance(value, str) and value.startswith(("/data", "/runs", "/elsewhere"))
                   for value in base.values())
    assert not any(key.endswith((".seed", ".data", ".save_dir", ".log_interval", ".num_workers")) for key in base)


def test_the_batch_enters_as_the_effective_batch(base):
    assert base["dataset.effective_batch_size"] == 16
    assert "dataset.batch_size" not in base and "optimization.update_freq" not in base
    split = configuration("--batch-size", "8", "--update-freq", "2")
    assert configuration_differences(base, split) == []
    assert configuration_differences(base, configuration("--batch-size", "8")) == ["dataset.effective_batch_size"]
    world = configuration_from_args(train_args(DATA, SAVE, "--batch-size", "4"))
    world.distributed_training.distributed_world_size = 2
    world.optimization.update_freq = [2]
    assert configuration_differences(base, effective_configuration(world)) == []


def test_values_are_plain_json_and_equal_across_spellings(base):
    import json

    assert json.loads(json.dumps(base)) == base
    assert base["optimization.lr"] == [0.001] and base["optimizer.adam_betas"] == [0.9, 0.999]
    assert configuration_differences(base, configuration("--lr", "0.0010", "--adam-betas", "[0.9,0.999]")) == []


def test_a_hydra_style_model_section_equals_the_command_lines(base):
    """A hydra config gives a legacy architecture only the keys it sets; fairseq completes them when it builds the
    model, and so does effective_configuration."""
    cfg = configuration_from_args(train_args(DATA, SAVE))
    cfg.model = OmegaConf.create({"_name": "roberta_base", "dropout": 0.1, "encoder_layers": 2,
                                  "encoder_embed_dim": 32, "encoder_ffn_embed_dim": 64,
                                  "encoder_attention_heads": 2, "max_positions": 64})
    assert configuration_differences(base, effective_configuration(cfg)) == []


def test_starting_from_a_pretrained_model(base):
    assert base["checkpoint.pretrained"] is False
    finetune = configuration("--finetune-from-model", "/models/roberta.large/model.pt")
    assert finetune["checkpoint.pretrained"] is True
    restore = configuration("--restore-file", "/models/roberta.large/model.pt", "--reset-optimizer",
                            "--reset-dataloader", "--reset-meters", "--reset-lr-scheduler")
    assert configuration_differences(finetune, restore) == []
    assert configuration_differences(base, finetune) == [
        "checkpoint.pretrained", "checkpoint.reset_dataloader", "checkpoint.reset_lr_scheduler",
        "checkpoint.reset_meters", "checkpoint.reset_optimizer"]


def test_arguments_fairseq_refuses_are_one_error():
    with pytest.raises(RunError, match="fairseq-train refuses the arguments: .*--no-such-flag"):
        configuration_from_args(train_args(DATA, SAVE, "--no-such-flag"))
