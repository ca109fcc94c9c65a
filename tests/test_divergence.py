import pytest
import torch
import torch.nn.functional as F

from rxf import divergence
from rxf.divergence import squared_difference, symmetric_kl, symmetric_kl_autograd


def reference_symmetric_kl(logits_p, logits_q):
    p = torch.distributions.Categorical(logits=logits_p.double())
    q = torch.distributions.Categorical(logits=logits_q.double())
    return (torch.distributions.kl_divergence(p, q) + torch.distributions.kl_divergence(q, p)).sum()


def test_symmetric_kl_equals_both_directions_summed():
    torch.manual_seed(0)
    p, q = torch.randn(5, 7), torch.randn(5, 7)
    assert symmetric_kl(p, q).item() == pytest.approx(reference_symmetric_kl(p, q).item(), rel=1e-5)
    assert symmetric_kl(p, q).item() == pytest.approx(symmetric_kl(q, p).item(), rel=1e-6)


def test_symmetric_kl_is_zero_for_equal_inputs_and_never_negative():
    torch.manual_seed(0)
    p = torch.randn(64, 3)
    assert symmetric_kl(p, p).item() == 0.0
    nearly = p + 1e-7 * torch.randn_like(p)
    assert symmetric_kl(p, nearly).item() >= 0.0


def test_symmetric_kl_is_computed_in_fp32_from_half_logits():
    torch.manual_seed(0)
    p, q = torch.randn(4, 5), torch.randn(4, 5)
    value = symmetric_kl(p.half(), q.half())
    assert value.dtype == torch.float32
    assert value.item() == pytest.approx(reference_symmetric_kl(p.half().float(), q.half().float()).item(), rel=1e-4)


def test_masked_rows_contribute_nothing():
    torch.manual_seed(0)
    p, q = torch.randn(2, 6, 11), torch.randn(2, 6, 11)
    mask = torch.ones(2, 6, dtype=torch.bool)
    mask[1, 3:] = False  # padding targets
    changed_q = q.clone()
    changed_q[1, 3:] = 100 * torch.randn(3, 11)
    assert symmetric_kl(p, q, mask).item() == pytest.approx(symmetric_kl(p, changed_q, mask).item(), rel=1e-6)
    kept = reference_symmetric_kl(p[0], q[0]) + reference_symmetric_kl(p[1, :3], q[1, :3])
    assert symmetric_kl(p, q, mask).item() == pytest.approx(kept.item(), rel=1e-5)


def test_gradients_reach_both_arguments():
    p = torch.randn(3, 4, requires_grad=True)
    q = torch.randn(3, 4, requires_grad=True)
    symmetric_kl(p, q).backward()
    assert p.grad.abs().sum() > 0 and q.grad.abs().sum() > 0


def test_squared_difference_is_the_symmetric_kl_of_unit_variance_gaussians():
    a, b = torch.tensor([0.5, -1.0, 2.0]), torch.tensor([0.0, 1.0, 2.5])
    normal = torch.distributions.Normal
    kl = sum(
        torch.distributions.kl_divergence(normal(x, 1.0), normal(y, 1.0))
        + torch.distributions.kl_divergence(normal(y, 1.0), normal(x, 1.0))
        for x, y in zip(a, b)
    )
    assert squared_difference(a, b).item() == pytest.approx(kl.item(), rel=1e-6)
    assert squared_difference(a, b).item() == pytest.approx(F.mse_loss(a, b, reduction="sum").item())


# -- the fused implementation against plain autograd on the same formula ------------------------------------------

@pytest.mark.parametrize("chunk_rows", [None, 2])
@pytest.mark.parametrize("masked", [False, True])
def test_fused_gradients_pass_gradcheck_in_float64(chunk_rows, masked):
    torch.manual_seed(0)
    a = torch.randn(2, 3, 5, dtype=torch.float64, requires_grad=True)
    b = torch.randn(2, 3, 5, dtype=torch.float64, requires_grad=True)
    mask = (torch.rand(2, 3) > 0.3) if masked else None
    assert torch.autograd.gradcheck(lambda x, y: symmetric_kl(x, y, mask, chunk_rows=chunk_rows), (a, b))
    # and equal to plain autograd's, value and gradients, in float64
    fused = symmetric_kl(a, b, mask, chunk_rows=chunk_rows)
    plain = symmetric_kl_autograd(a, b, mask)
    assert fused.dtype == torch.float64
    assert fused.item() == pytest.approx(plain.item(), rel=1e-12)
    for g_fused, g_plain in zip(torch.autograd.grad(fused, (a, b)), torch.autograd.grad(plain, (a, b))):
        assert torch.allclose(g_fused, g_plain, rtol=1e-10, atol=1e-13)


def relative(x, reference):
    return float((x.double() - reference.double()).norm() / reference.double().norm())


def test_fused_equals_plain_autograd_on_a_real_size_case_in_fp32():
    # target tokens over BART's 50k vocabulary, some padding, three chunks
    torch.manual_seed(0)
    rows, vocab = 64, 50265
    a = (3 * torch.randn(rows, vocab)).requires_grad_()
    b = (a.detach() + 0.1 * torch.randn(rows, vocab)).requires_grad_()
    mask = torch.rand(rows) > 0.1
    fused = symmetric_kl(a, b, mask, chunk_rows=24)
    assert fused.dtype == torch.float32
    fused_grads = torch.autograd.grad(fused, (a, b))
    plain = symmetric_kl_autograd(a, b, mask)
    plain_grads = torch.autograd.grad(plain, (a, b))
    # against the exact values (float64): plain autograd's own fp32 rounding is 1e-6 to 3e-6 here (2.5e-6 for
    # the value on torch 1.13), so the fused values are held to 1e-6 of the truth, and to plain autograd's
    # values up to plain autograd's own error
    a64, b64 = a.detach().double().requires_grad_(), b.detach().double().requires_grad_()
    exact = symmetric_kl_autograd(a64, b64, mask)
    exact_grads = torch.autograd.grad(exact, (a64, b64))
    assert abs(fused.item() - exact.item()) <= 1e-6 * exact.item()
    assert abs(fused.item() - plain.item()) <= 1e-6 * exact.item() + abs(plain.item() - exact.item())
    for g_fused, g_plain, g_exact in zip(fused_grads, plain_grads, exact_grads):
        assert relative(g_fused, g_exact) <= 1e-6
        assert relative(g_fused, g_exact) <= relative(g_plain, g_exact)
        assert relative(g_fused, g_plain) <= 1e-5
        assert not g_fused[~mask].any()


def test_fused_keeps_half_logits_half_and_accumulates_in_fp32():
    torch.manual_seed(0)
    a = torch.randn(6, 9, 31).to(torch.bfloat16).requires_grad_()
    b = torch.randn(6, 9, 31).to(torch.bfloat16).requires_grad_()
    value = symmetric_kl(a, b, chunk_rows=5)
    assert value.dtype == torch.float32
    a32, b32 = a.detach().float().requires_grad_(), b.detach().float().requires_grad_()
    reference = symmetric_kl_autograd(a32, b32)
    assert value.item() == pytest.approx(reference.item(), rel=1e-6)
    grads = torch.autograd.grad(value, (a, b))
    assert [g.dtype for g in grads] == [torch.bfloat16, torch.bfloat16]
    for g, g_ref in zip(grads, torch.autograd.grad(reference, (a32, b32))):
        assert relative(g, g_ref) < 1e-2  # bf16 keeps 8 bits of mantissa


def test_fused_keeps_only_the_two_logit_tensors_for_backward():
    # what autograd holds between forward and backward: saved tensors of every node of the graph
    a = torch.randn(64, 1000, requires_grad=True)
    b = torch.randn(64, 1000, requires_grad=True)
    mask = torch.ones(64, dtype=torch.bool)

    def saved_elements(value):
        seen, stack, total = set(), [value.grad_fn], 0
        while stack:
            node = stack.pop()
            if node is None or node in seen:
                continue
            seen.add(node)
            for name in dir(node):
                if name.startswith("_saved_") or name == "saved_tensors":
                    try:
                        saved = getattr(node, name)
                    except RuntimeError:
                        continue
                    for t in saved if isinstance(saved, tuple) else (saved,):
                        if torch.is_tensor(t) and t.data_ptr() not in (a.data_ptr(), b.data_ptr()):
                            total += t.numel()
            stack.extend(next_node for next_node, _ in node.next_functions)
        return total

    assert saved_elements(symmetric_kl(a, b, mask)) <= 3 * 64  # the mask and two log-normalisers per row
    assert saved_elements(symmetric_kl_autograd(a, b, mask)) >= 6 * a.numel()


@pytest.mark.parametrize("fn", [symmetric_kl, symmetric_kl_autograd])
def test_both_implementations_refuse_mismatched_shapes(fn):
    with pytest.raises(ValueError, match="two logit tensors of one shape"):
        fn(torch.randn(2, 3, 5), torch.randn(2, 3, 6))
    with pytest.raises(ValueError, match="the mask must have the logits' leading shape"):
        fn(torch.randn(2, 3, 5), torch.randn(2, 3, 5), torch.ones(3, 2, dtype=torch.bool))


def test_fused_masked_rows_contribute_nothing_even_when_not_finite():
    torch.manual_seed(0)
    a, b = torch.randn(4, 3, 8), torch.randn(4, 3, 8)
    mask = torch.ones(4, 3, dtype=torch.bool)
    mask[2:, 1:] = False
    wild_b = b.clone()
    wild_b[2:, 1:] = float("inf")
    a.requires_grad_()
    wild_b.requires_grad_()
    value = symmetric_kl(a, wild_b, mask, chunk_rows=2)
    assert value.item() == pytest.approx(symmetric_kl(a, b, mask).item(), rel=1e-6)
    grad_a, grad_b = torch.autograd.grad(value, (a, wild_b))
    assert torch.isfinite(grad_a).all() and torch.isfinite(grad_b).all()
    assert not grad_a[~mask].any() and not grad_b[~mask].any()


def test_fused_is_never_negative_and_zero_for_equal_inputs_at_scale():
    torch.manual_seed(0)
    a = 20 * torch.randn(300, 2000)
    assert symmetric_kl(a, a).item() == 0.0
    for scale in (1e-7, 1e-4, 1.0):
        assert symmetric_kl(a, a + scale * torch.randn_like(a), chunk_rows=7).item() >= 0.0


def test_chunks_follow_the_vocabulary_size_and_the_device(monkeypatch):
    monkeypatch.setattr(divergence, "CHUNK_ELEMENTS", 100)
    monkeypatch.setattr(divergence, "CPU_CHUNK_ELEMENTS", 50)
    assert divergence._chunks(25, 10, None, "cuda") == [(0, 10), (10, 20), (20, 25)]
    assert divergence._chunks(12, 10, None, "cpu") == [(0, 5), (5, 10), (10, 12)]
    assert divergence._chunks(3, 1000, None, "cpu") == [(0, 1), (1, 2), (2, 3)]
    assert divergence._chunks(5, 10, 4, "cpu") == [(0, 4), (4, 5)]
