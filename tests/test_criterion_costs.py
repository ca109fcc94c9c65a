"""What one training step of sentence_prediction_r3f costs, counted, and what it logs in half precision."""

import logging

import pytest

from conftest import NO_DROPOUT, build_in_process, first_batch, needs_cpu_fp16
from fairseq_r3f.perturb import find_token_encoder


def encoder_forwards(model, criterion, batch):
    calls = []
    handle = find_token_encoder(model).register_forward_hook(lambda *_: calls.append(1))
    try:
        criterion(model, batch)
    finally:
        handle.remove()
    return len(calls)


@pytest.mark.parametrize("flags, training, expected", [
    (("--r3f-lambda", "0"), True, 1),      # exactly sentence_prediction: no noised pass
    (("--r3f-lambda", "1"), True, 2),      # clean + noised
    (("--r3f-lambda", "1"), False, 1),     # validation: no noised pass
    (("--noise-type", "none",), True, 2),  # the dropout-only ablation still runs the second pass
])
def test_encoder_passes_per_step(toy_task, flags, training, expected):
    task, model, criterion = build_in_process(toy_task, *flags)
    model.train(training)
    assert encoder_forwards(model, criterion, first_batch(task)) == expected


@needs_cpu_fp16
def test_half_precision_rounding_is_measured_and_warned_about(toy_task, caplog):
    task, model, criterion = build_in_process(toy_task, *NO_DROPOUT, "--eps", "1e-5")
    model.half().train()
    with caplog.at_level(logging.WARNING):
        logging_output = criterion(model, first_batch(task))[2]
    kept = float(logging_output["noise_changed"]) / float(logging_output["noise_total"])
    assert kept < 0.9
    assert f"only {100 * kept:.0f}% of token-embedding entries changed" in caplog.text
    # fp32 keeps all of it, and says nothing
    caplog.clear()
    task, model, criterion = build_in_process(toy_task, *NO_DROPOUT, "--eps", "1e-5")
    model.train()
    with caplog.at_level(logging.WARNING):
        logging_output = criterion(model, first_batch(task))[2]
    assert float(logging_output["noise_changed"]) >= 0.999 * float(logging_output["noise_total"])
    assert "token-embedding entries changed" not in caplog.text
