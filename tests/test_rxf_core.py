"""The framework-free core rxf: it imports neither fairseq nor transformers, its R3F term is the summed divergence
over exactly the kept rows, its noise count sees the cast to the model's dtype, and its fold computes what the
normalised layer computes at evaluation."""

import os
import subprocess
import sys

import pytest
import torch
from torch import nn

from conftest import REPO
from rxf.divergence import squared_difference, symmetric_kl_autograd
from rxf.noise import PerturbationStats, add_noise, sample_noise
from rxf.r3f import r3f_term
from rxf.spectral_norm import SpectralNormLinear, folded_linear


def test_importing_the_core_imports_neither_fairseq_nor_transformers():
    code = ("import sys, rxf, rxf.divergence, rxf.noise, rxf.r3f, rxf.spectral_norm\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('fairseq', 'transformers', 'fairseq_r3f')))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": REPO}, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "[]"


def test_r3f_term_sums_the_symmetric_kl_over_the_kept_rows_only():
    torch.manual_seed(0)
    clean, noised = torch.randn(3, 5, 11), torch.randn(3, 5, 11)
    mask = torch.rand(3, 5) > 0.4
    expected = symmetric_kl_autograd(clean[mask], noised[mask])
    assert r3f_term(clean, noised, mask).item() == pytest.approx(expected.item(), rel=1e-6)
    # what a dropped row holds changes nothing, inf included
    clean_padded = clean.masked_fill(~mask.unsqueeze(-1), float("inf"))
    assert r3f_term(clean_padded, noised, mask).item() == pytest.approx(expected.item(), rel=1e-6)
    assert r3f_term(clean, noised).item() == pytest.approx(symmetric_kl_autograd(clean, noised).item(), rel=1e-6)


def test_r3f_term_for_regression_is_the_summed_squared_difference_of_the_kept_rows():
    clean, noised = torch.tensor([[1.0], [2.0], [3.0]]), torch.tensor([[1.5], [2.0], [5.0]])
    assert r3f_term(clean, noised, regression=True).item() == pytest.approx(0.25 + 4.0)
    assert r3f_term(clean, noised, torch.tensor([True, True, False]), regression=True).item() == pytest.approx(0.25)
    assert squared_difference(clean, noised).item() == pytest.approx(4.25)


def test_r3f_term_refuses_outputs_of_two_shapes():
    with pytest.raises(ValueError, match="one shape"):
        r3f_term(torch.zeros(2, 3), torch.zeros(2, 4))


def test_noise_kept_counts_what_survives_the_cast_on_real_tokens_only():
    torch.manual_seed(0)
    embeddings = (torch.randn(2, 4, 64) * 0.05).half()
    real = torch.tensor([[True, True, True, False], [True, False, False, False]])
    fp16, fp32 = PerturbationStats(), PerturbationStats()
    noised = add_noise(embeddings, sample_noise(embeddings, "uniform", 1e-5))
    assert noised.dtype == torch.float16
    fp16.count(embeddings, noised, real)
    fp32.count(embeddings.float(), add_noise(embeddings.float(), sample_noise(embeddings, "uniform", 1e-5)), real)
    assert int(fp16.total) == int(fp32.total) == 4 * 64
    assert int(fp32.changed) == 4 * 64
    assert 0 < int(fp16.changed) < 0.5 * 4 * 64  # most of 1e-5 rounds away on entries of 0.05 in fp16
    assert fp32.kept_fraction() == 1.0


def test_sample_noise_refuses_an_unknown_noise_type_even_at_eps_zero():
    with pytest.raises(ValueError, match="uniform, normal, none"):
        sample_noise(torch.zeros(2), "gauss", 0.0)


def test_the_folded_linear_computes_what_the_normalised_layer_computes_at_evaluation():
    torch.manual_seed(0)
    linear = nn.Linear(6, 4)
    layer = SpectralNormLinear.from_linear(linear)
    assert torch.linalg.matrix_norm(layer.normalized_weight().detach().double(), ord=2).item() == pytest.approx(1.0,
                                                                                                           rel=1e-5)
    layer.train()
    x = torch.randn(5, 6)
    layer(x)  # a training step moves u
    layer.eval()
    plain = folded_linear(layer)
    assert type(plain) is nn.Linear and not plain.training
    assert torch.equal(plain(x), layer(x))


def test_a_layer_under_torch_spectral_norm_is_refused():
    linear = nn.utils.parametrizations.spectral_norm(nn.Linear(3, 2))
    with pytest.raises(ValueError, match="already spectrally normalised"):
        SpectralNormLinear.from_linear(linear)
