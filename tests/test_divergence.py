import pytest
import torch
import torch.nn.functional as F

from fairseq_r3f.divergence import squared_difference, symmetric_kl


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
