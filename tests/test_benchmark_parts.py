"""The benchmark's measuring parts, in process: the backward-run numbering that works on every torch, the
divergence's memory accounting, and the profiler output kept out of the table."""

import os
import sys

import pytest
import torch

from fairseq_r3f import benchmark


def test_backward_runs_are_told_apart_with_public_api_only():
    runs = benchmark.BackwardRuns()
    seen = []
    x = torch.randn(3, requires_grad=True)
    with runs.active():
        clean, noised = x * 2, x * 3
        clean.register_hook(lambda g: seen.append(("clean", runs.current)))
        noised.register_hook(lambda g: seen.append(("noised", runs.current)))
        (clean.sum() + noised.sum()).backward()  # one run through two graphs
        y = x * 4
        y.register_hook(lambda g: seen.append(("ascent", runs.current)))
        torch.autograd.grad(y.sum(), x)  # a second run
    assert sorted(seen) == [("ascent", 2), ("clean", 1), ("noised", 1)]
    # restored afterwards: nothing numbered outside the block
    assert torch.autograd.backward.__module__ == "torch.autograd" and runs.current == 2
    (x * 5).sum().backward()
    assert runs.current == 2


def test_the_fused_kl_keeps_only_its_two_inputs_and_autograd_six_fp32_tensors(tmp_path):
    memory = benchmark.divergence_memory(32, 1000, torch.float32, torch.device("cpu"), str(tmp_path / "log"))
    assert memory["fused"]["kept_logit_tensors"] == pytest.approx(2.0, abs=0.01)
    assert memory["autograd"]["kept_logit_tensors"] == pytest.approx(6.0, abs=0.01)
    assert memory["logit_tensor_mb"] == pytest.approx(32 * 1000 * 4 / 2**20)
    # forward and backward together: the fused one never needs more than plain autograd
    assert memory["fused"]["peak_logit_tensors"] <= memory["autograd"]["peak_logit_tensors"]


def test_profiler_lines_go_to_the_log_and_other_lines_are_shown(tmp_path, capfd):
    log = str(tmp_path / "profiler.log")
    with benchmark.profiler_output_to(log):
        os.write(2, b"USDT:2026-01-01 00:00:00 1:1 SyncActivityProfilerHandler.cpp:52] profiler_start\n")
        os.write(1, b"something else went wrong\n")
    out, err = capfd.readouterr()
    assert "USDT" not in out + err and "something else went wrong" in err
    with open(log) as f:
        assert "profiler_start" in f.read()
    sys.stderr.write("")


def test_the_floor_term_is_zero_and_its_backward_reaches_both_graphs():
    clean_leaf, noised_leaf = torch.randn(4, 3, requires_grad=True), torch.randn(4, 3, requires_grad=True)
    term = benchmark.floor_term(clean_leaf * 2, noised_leaf * 3)
    assert term.item() == 0.0
    term.backward()
    for leaf in (clean_leaf, noised_leaf):  # the backward ran through both: a gradient, of zeros
        assert leaf.grad is not None and torch.equal(leaf.grad, torch.zeros(4, 3))
    floor = benchmark.FloorTerm()
    assert floor(clean_leaf, noised_leaf, None, regression=False).item() == 0.0 and floor.calls == 1
