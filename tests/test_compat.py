"""The GLUE metric options are there on every fairseq the plugin runs on (fairseq 0.12.2 lacks them: the plugin
adds them) and log what scikit-learn and scipy compute on the same predictions, over the whole validation."""

import pytest
import torch
from conftest import NO_DROPOUT, build_in_process

from fairseq_r3f.compat import supported_metric_flags

FLAGS = ["--report-mcc", "--report-acc-and-f1", "--report-pearson-and-spearman"]


def test_the_metric_flags_are_supported_and_unknown_ones_dropped():
    assert supported_metric_flags(FLAGS + ["--report-nothing"]) == FLAGS


def validation_metrics(data_bin, criterion, *flags):
    """The metrics fairseq's validation would log, and the (predictions, targets) of every validation example."""
    from fairseq.logging import metrics

    task, model, crit = build_in_process(data_bin, *NO_DROPOUT, *flags, criterion=criterion)
    task.load_dataset("valid")
    dataset = task.dataset("valid")
    model.eval()
    batches = [dataset.collater([dataset[i] for i in range(start, min(start + 16, len(dataset)))])
               for start in range(0, len(dataset), 16)]  # batches of 16, the last one shorter: all examples count

    def logits_of(batch):
        return model(**batch["net_input"], features_only=True,
                     classification_head_name="sentence_classification_head")[0]

    if not crit.regression_target:  # an untrained head predicts one class: centre it so both are predicted
        with torch.no_grad():
            gaps = torch.cat([logits_of(b)[:, 1] - logits_of(b)[:, 0] for b in batches])
            model.classification_heads["sentence_classification_head"].out_proj.bias[1] -= gaps.median()
    logs, preds, targets = [], [], []
    with torch.no_grad():
        for batch in batches:
            logs.append(crit(model, batch)[2])
            logits = logits_of(batch)
            target = model.get_targets(batch, [logits]).view(-1)
            if crit.regression_target:
                preds += logits.view(-1).tolist()
                targets += target.float().tolist()
            else:
                offset = task.label_dictionary.nspecial
                preds += [int(s) for s in task.label_dictionary.string(logits.argmax(-1) + offset).split()]
                targets += [int(s) for s in task.label_dictionary.string(target + offset).split()]
    with metrics.aggregate(new_root=True) as agg:
        type(crit).reduce_metrics(logs)
        values = agg.get_smoothed_values()
    return values, preds, targets


@pytest.mark.parametrize("criterion", ["sentence_prediction", "sentence_prediction_r3f"])
def test_mcc_and_f1_are_sklearns_over_the_whole_validation(toy_task, criterion):
    from sklearn.metrics import f1_score, matthews_corrcoef

    values, preds, targets = validation_metrics(toy_task, criterion, "--report-mcc", "--report-acc-and-f1")
    assert len(preds) == 64 and len(set(preds)) == 2  # every example, both classes predicted
    mcc, f1 = matthews_corrcoef(targets, preds), f1_score(targets, preds)
    accuracy = sum(p == t for p, t in zip(preds, targets)) / len(targets)
    assert mcc != 0
    assert values["mcc"] == round(mcc * 100, 1)
    assert values["f1"] == round(f1 * 100, 1)
    assert values["acc_and_f1"] == round((accuracy + f1) / 2 * 100, 1)


def test_pearson_and_spearman_are_scipys(toy_regression_task):
    from scipy.stats import pearsonr, spearmanr

    values, preds, targets = validation_metrics(toy_regression_task, "sentence_prediction_r3f",
                                                "--report-pearson-and-spearman", "--regression-target",
                                                "--num-classes", "1")
    assert len(preds) == 63
    pearson, spearman = pearsonr(preds, targets)[0], spearmanr(preds, targets)[0]
    assert values["pearson"] == round(pearson * 100, 1)
    assert values["spearman"] == round(spearman * 100, 1)
    assert values["pearson_and_spearman"] == round((pearson + spearman) / 2 * 100, 1)


def test_without_the_flags_no_metric_is_added(toy_task):
    values, _, _ = validation_metrics(toy_task, "sentence_prediction")
    assert "accuracy" in values and not {"mcc", "f1", "pearson"} & set(values)


def test_an_argparse_era_architecture_gets_its_defaults_from_a_hydra_config():
    """fairseq-hydra-train runs BART's architecture function on the model's open DictConfig (fairseq's
    models.build_model); the model must be bart_large's whatever omegaconf reads a missing key as."""
    from fairseq.models import ARCH_CONFIG_REGISTRY
    from fairseq.models.transformer import TransformerConfig
    from omegaconf import OmegaConf, open_dict

    cfg = OmegaConf.create({"_name": "bart_large", "dropout": 0.1, "share_all_embeddings": True})
    with open_dict(cfg):
        ARCH_CONFIG_REGISTRY["bart_large"](cfg)
    built = TransformerConfig.from_namespace(cfg)
    assert (built.encoder.embed_dim, built.decoder.embed_dim, built.decoder.output_dim) == (1024, 1024, 1024)
    assert (built.encoder.layers, built.decoder.layers, built.encoder.ffn_embed_dim) == (12, 12, 4096)
    assert cfg.activation_fn == "gelu" and cfg.dropout == 0.1  # the architecture's default; the config's value
    assert getattr(cfg, "base_layers", 0) == 0  # as fairseq's trainer reads it


def test_a_loaded_model_predicts_padded_batches_as_the_model_it_was_saved_from(toy_task):
    """What fairseq-generate/-validate do: load weights into a fresh model and predict in eval mode. fairseq 0.12.2
    then took a fused BetterTransformer path that fails on padded batches with torch >= 1.13 (the plugin keeps its
    layers on the ordinary forward); on every fairseq the predictions equal those of the saved model."""
    from conftest import first_batch

    task, model, _ = build_in_process(toy_task, *NO_DROPOUT)
    _, loaded, _ = build_in_process(toy_task, *NO_DROPOUT)
    loaded.load_state_dict(model.state_dict())
    batch = first_batch(task)
    assert batch["net_input"]["src_tokens"].eq(task.source_dictionary.pad()).any()  # a padded batch
    model.eval(), loaded.eval()
    with torch.no_grad():
        expected = model(**batch["net_input"], features_only=True,
                         classification_head_name="sentence_classification_head")[0]
        got = loaded(**batch["net_input"], features_only=True,
                     classification_head_name="sentence_classification_head")[0]
    assert torch.allclose(got, expected, atol=1e-6), (got - expected).abs().max()
