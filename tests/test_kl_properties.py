"""The logged term behaves like the symmetric KL of the noise it claims to add.

For small noise z, KL_S(f(x) || f(x + z)) ~ z^T F z with F the Fisher information of the outputs in the
embedding, so its expectation is eps^2 tr(F) for N(0, eps^2) and eps^2 tr(F) / 3 for U(-eps, eps):
quadratic in eps, and three times larger for normal noise at the same eps. Dropout is off, so any nonzero
term comes from the noise alone.
"""

import statistics

import pytest
import torch

from conftest import NO_DROPOUT, build_in_process, first_batch
from fairseq_r3f.criterions.sentence_prediction_r3f import (
    SentencePredictionR3FConfig,
    SentencePredictionR3FCriterion,
)


@pytest.fixture(scope="module")
def setup(toy_task):
    torch.manual_seed(0)
    task, model, _ = build_in_process(toy_task, *NO_DROPOUT)
    model.train()
    return task, model, first_batch(task, max_sentences=64)


def mean_symm_kl(setup, noise_type, eps, draws=40, arch_model=None):
    task, model, batch = setup
    model = arch_model or model
    criterion = SentencePredictionR3FCriterion(SentencePredictionR3FConfig(eps=eps, noise_type=noise_type), task)
    torch.manual_seed(1)
    with torch.no_grad():
        return statistics.mean(float(criterion(model, batch)[2]["symm_kl"]) for _ in range(draws))


def test_zero_without_noise_and_dropout(setup):
    assert mean_symm_kl(setup, "uniform", 0.0, draws=3) == 0.0
    assert mean_symm_kl(setup, "none", 1e-2, draws=3) == 0.0
    assert mean_symm_kl(setup, "uniform", 1e-4, draws=3) > 0.0


def test_grows_quadratically_in_eps(setup):
    small, large = mean_symm_kl(setup, "normal", 1e-4), mean_symm_kl(setup, "normal", 2e-4)
    assert large / small == pytest.approx(4.0, rel=0.05)


def test_normal_noise_gives_three_times_the_kl_of_uniform_noise(setup):
    ratio = mean_symm_kl(setup, "normal", 1e-4, draws=80) / mean_symm_kl(setup, "uniform", 1e-4, draws=80)
    assert ratio == pytest.approx(3.0, rel=0.05)


def test_spectral_norm_head_adds_no_term_of_its_own(toy_task):
    """The power iteration refines u on every training forward; the noised pass must not see a different
    head than the clean pass in any way that shows up as KL."""
    torch.manual_seed(0)
    task, model, _ = build_in_process(toy_task, *NO_DROPOUT, arch="roberta_sn_base")
    model.train()
    value = mean_symm_kl((task, model, first_batch(task, max_sentences=64)), "uniform", 0.0, draws=3)
    assert value < 1e-10  # measured: 5e-13, from the power iteration step between the passes
