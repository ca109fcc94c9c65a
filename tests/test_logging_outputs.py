"""fairseq sums logging outputs across workers (and gradient-accumulation steps) before reduce_metrics:
the logging outputs of two half-batches, summed, must equal those of the whole batch."""

import pytest
import torch

import fairseq_r3f.criterions.r3f as r3f
from conftest import NO_DROPOUT, build_in_process


def deterministic_noise(noise_type, eps):
    # a fixed function of each embedding entry, so both halves see exactly the noise the whole batch sees
    return lambda embedding: eps * torch.sin(1e3 * embedding.float())


@pytest.mark.parametrize("arch", ["roberta_base", "roberta_sn_base"])
def test_half_batches_sum_to_the_whole_batch(toy_task, monkeypatch, arch):
    monkeypatch.setattr(r3f, "random_noise", deterministic_noise)
    task, model, criterion = build_in_process(toy_task, *NO_DROPOUT, "--eps", "1e-2", arch=arch)
    assert criterion.__class__.logging_outputs_can_be_summed()
    model.train()
    task.load_dataset("valid")
    dataset = task.dataset("valid")
    items = [dataset[i] for i in range(16)]
    whole = criterion(model, dataset.collater(items))[2]
    halves = [criterion(model, dataset.collater(part))[2] for part in (items[:8], items[8:])]
    assert float(whole["symm_kl"]) > 0 and int(whole["noise_total"]) > 0
    for key in ("loss", "symm_kl", "ncorrect", "nsentences", "sample_size", "ntokens", "noise_changed", "noise_total"):
        summed = sum(float(half[key]) for half in halves)
        assert summed == pytest.approx(float(whole[key]), rel=1e-4), key
