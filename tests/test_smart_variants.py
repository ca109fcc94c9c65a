"""SMART, both variants (--smart-variant paper | released), in process on the tiny RoBERTa: each ascent step is
re-derived here from its formula through an independent forward of fairseq's encoder, and an ascent step
must increase the divergence it ascends."""

import pytest
import torch
import torch.nn.functional as F

from conftest import build_in_process, first_batch
from fairseq_r3f.criterions.sentence_prediction_smart import stable_kl, stop_gradient_symmetric_kl
from fairseq_r3f.perturb import per_token_normalised
from rxf.divergence import symmetric_kl

HEAD = "sentence_classification_head"


def setup(data_bin, *flags):
    task, model, criterion = build_in_process(data_bin, "--criterion", "sentence_prediction_smart", *flags,
                                              criterion="sentence_prediction_smart")
    sample = first_batch(task, max_sentences=16)
    return model.eval(), criterion, sample


def tokens_and_keep(model, sample):
    tokens = sample["net_input"]["src_tokens"]
    return tokens, tokens.ne(model.encoder.sentence_encoder.padding_idx)


def logits_at_token_embeddings(model, tokens, delta):
    """The classification logits with delta added to the raw token embeddings, through the encoder's own
    ``token_embeddings`` argument (a path the criterion does not use)."""
    encoder = model.encoder.sentence_encoder
    out = encoder(tokens, token_embeddings=encoder.embed_tokens(tokens) + delta)
    return model.classification_heads[HEAD](out["encoder_out"][0].transpose(0, 1))


def logits_at_embedding_output(model, tokens, noise):
    """The classification logits with noise added to the embedding layer's output (after positions and the
    embedding layer norm), the encoder's layers run here one by one."""
    encoder = model.encoder.sentence_encoder
    pad = tokens.eq(encoder.padding_idx)
    x, _ = encoder.forward_embedding(tokens)
    x = ((x + noise) * (~pad).unsqueeze(-1).float()).transpose(0, 1)
    for layer in encoder.layers:
        x = layer(x, encoder_padding_mask=pad if pad.any() else None)
    if encoder.layer_norm is not None:
        x = encoder.layer_norm(x)
    return model.classification_heads[HEAD](x.transpose(0, 1))


def mt_dnn_stable_kl(logits, target, epsilon=1e-6):
    """mt_dnn/loss.py's stable_kl with reduce=False, written out: 2 sum p (r(p) - r(y)), r detached."""
    p, y = logits.float().softmax(-1), target.float().softmax(-1)
    rp = -(1.0 / (p + epsilon) - 1 + epsilon).detach().log()
    ry = -(1.0 / (y + epsilon) - 1 + epsilon).detach().log()
    return (p * (rp - ry) * 2).sum()


@pytest.mark.parametrize("radius", [1e3, 2e-3])  # 1e3: the step is never projected; 2e-3: it is clamped
def test_paper_step_is_the_normalised_gradient_step_then_the_projection(toy_task, radius):
    model, criterion, sample = setup(toy_task, "--smart-eps", str(radius), "--smart-init", "1e-3",
                                     "--smart-step-size", "4e-3")
    tokens, keep = tokens_and_keep(model, sample)
    mask = keep.unsqueeze(-1).float()
    with torch.no_grad():
        clean = logits_at_token_embeddings(model, tokens, 0)
    torch.manual_seed(0)
    delta = criterion.adversarial_perturbation(model, sample, clean)

    torch.manual_seed(0)
    start = (torch.randn(delta.shape) * 1e-3 * mask).clamp(-radius, radius)
    start.requires_grad_(True)
    (grad,) = torch.autograd.grad(symmetric_kl(clean, logits_at_token_embeddings(model, tokens, start)), start)
    grad = grad * mask
    sentence_max = grad.flatten(1).abs().amax(dim=1).view(-1, 1, 1)  # L-infinity over each sentence
    expected = (start.detach() + 4e-3 * grad / sentence_max).clamp(-radius, radius) * mask
    torch.testing.assert_close(delta, expected, rtol=1e-4, atol=1e-9)
    assert (delta - start.detach()).abs().max() > 1e-3  # the step moved delta by a visible amount
    if radius < 1:
        assert delta.abs().max().item() == pytest.approx(radius)  # and the ball was reached


@pytest.mark.parametrize("step", [1e-5, 30.0])  # mt-dnn's default, and one where the gradient dominates
def test_released_step_is_noise_plus_step_times_gradient_normalised_per_token(toy_task, step):
    model, criterion, sample = setup(toy_task, "--smart-variant", "released", "--smart-step-size", str(step))
    assert (criterion.init_scale, criterion.radius, criterion.norm) == (1e-5, 1e-6, "linf")  # mt-dnn's train.py
    tokens, keep = tokens_and_keep(model, sample)
    mask = keep.unsqueeze(-1).float()
    with torch.no_grad():
        clean = logits_at_embedding_output(model, tokens, 0)
    torch.manual_seed(0)
    noise = criterion.released_perturbation(model, sample, clean)

    torch.manual_seed(0)
    start = (torch.randn(noise.shape) * 1e-5 * mask).requires_grad_(True)
    ascent = mt_dnn_stable_kl(logits_at_embedding_output(model, tokens, start), clean)
    (grad,) = torch.autograd.grad(ascent, start)
    stepped = start.detach() + step * grad
    expected = stepped / (stepped.abs().amax(dim=-1, keepdim=True) + 1e-6) * mask
    torch.testing.assert_close(noise, expected, rtol=1e-4, atol=1e-7)
    # about unit L-infinity norm per real token (just under: the stabiliser 1e-6 is not negligible against a
    # start of 1e-5), the size of the layer-normed embeddings themselves
    token_norms = noise[keep].abs().amax(dim=-1)
    assert token_norms.max() < 1 and token_norms.min() > 0.9
    if step > 1:  # the gradient, not the start, set the direction
        assert (expected - start.detach() / (start.detach().abs().amax(-1, keepdim=True) + 1e-6) * mask
                ).abs().max() > 0.1


def test_released_logits_are_the_embedding_output_path(toy_task):
    model, criterion, sample = setup(toy_task, "--smart-variant", "released")
    tokens, _ = tokens_and_keep(model, sample)
    noise = torch.randn(*tokens.shape, model.encoder.sentence_encoder.embed_tokens.embedding_dim) * 0.3
    with torch.no_grad():
        torch.testing.assert_close(criterion.released_logits(model, sample, noise),
                                   logits_at_embedding_output(model, tokens, noise), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(criterion.perturbed_logits(model, sample, noise),
                                   logits_at_token_embeddings(model, tokens, noise), rtol=1e-5, atol=1e-6)


def test_an_ascent_step_increases_the_divergence(toy_task):
    """A small paper-variant step with no projection must move delta uphill: the symmetric KL after one step
    exceeds the symmetric KL at the start. Stepping against the gradient would lower it."""
    model, criterion, sample = setup(toy_task, "--smart-eps", "1e3", "--smart-init", "2e-2",
                                     "--smart-step-size", "2e-3")
    tokens, _ = tokens_and_keep(model, sample)
    with torch.no_grad():
        clean = criterion.logits(model, sample)
    torch.manual_seed(0)
    stepped = criterion.adversarial_perturbation(model, sample, clean)
    criterion.steps = 0  # the same draw without a step: the start
    torch.manual_seed(0)
    start = criterion.adversarial_perturbation(model, sample, clean)
    with torch.no_grad():
        before = symmetric_kl(clean, criterion.perturbed_logits(model, sample, start)).item()
        after = symmetric_kl(clean, criterion.perturbed_logits(model, sample, stepped)).item()
    assert before > 0
    assert after > 1.05 * before, (before, after)


def test_a_released_step_increases_what_it_ascends(toy_task):
    """mt-dnn's step normalises every token to unit L-infinity norm, so the stepped noise is compared with the
    start normalised the same way: the step (the gradient's part) must raise the stable KL it ascends."""
    model, criterion, sample = setup(toy_task, "--smart-variant", "released", "--smart-init", "1e-3",
                                     "--smart-step-size", "1")
    _, keep = tokens_and_keep(model, sample)
    with torch.no_grad():
        clean = criterion.logits(model, sample)
    torch.manual_seed(0)
    stepped = criterion.released_perturbation(model, sample, clean)
    torch.manual_seed(0)
    start = torch.randn(stepped.shape) * 1e-3 * keep.unsqueeze(-1).float()
    unit_start = per_token_normalised(start, "linf", 1e-6) * keep.unsqueeze(-1).float()
    with torch.no_grad():
        before = stable_kl(criterion.released_logits(model, sample, unit_start), clean).item()
        after = stable_kl(criterion.released_logits(model, sample, stepped), clean).item()
    assert (stepped - unit_start).abs().max() > 0.02  # the gradient moved it
    assert after > 1.2 * before > 0, (before, after)


def test_the_released_regulariser_differentiates_each_kl_through_its_log_side():
    """mt-dnn's SymKlCriterion(clean, perturbed): the value is the symmetric KL; the gradient with respect to
    the clean logits is p - q and with respect to the perturbed logits q - p (summed over the batch)."""
    torch.manual_seed(0)
    clean = torch.randn(5, 3, requires_grad=True)
    perturbed = torch.randn(5, 3, requires_grad=True)
    term = stop_gradient_symmetric_kl(clean, perturbed)
    assert term.item() == pytest.approx(symmetric_kl(clean, perturbed).item(), rel=1e-5)
    term.backward()
    p, q = clean.detach().softmax(-1), perturbed.detach().softmax(-1)
    torch.testing.assert_close(clean.grad, p - q)
    torch.testing.assert_close(perturbed.grad, q - p)
    # and stable_kl is mt-dnn's, summed: about 2 KL(q || p) near p = q, its gradient through q only
    a = torch.randn(5, 3)
    assert stable_kl(a, a).item() == pytest.approx(0.0, abs=1e-5)
    b = (a + 0.01 * torch.randn(5, 3)).requires_grad_(True)
    assert stable_kl(b, a).item() == pytest.approx(mt_dnn_stable_kl(b, a).item(), rel=1e-6)


def test_released_training_step_reuses_one_embedding_output(toy_task, monkeypatch):
    """In a training forward the ascent and the final forward start from one embedding output (mt-dnn embeds
    once), so under dropout the embedding layer runs twice per update: the clean forward and that one."""
    model, criterion, sample = setup(toy_task, "--smart-variant", "released", "--dropout", "0.1")
    encoder = model.encoder.sentence_encoder
    calls = []
    original = type(encoder).forward_embedding

    def counting(self, *args, **kwargs):
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(type(encoder), "forward_embedding", counting)
    model.train()
    loss, _, log = criterion(model, sample)
    assert len(calls) == 2
    assert log["symm_kl"] > 0
    loss.backward()
    assert encoder.embed_tokens.weight.grad is not None


def test_the_variants_defaults_and_the_off_switches(toy_task):
    _, paper, _ = setup(toy_task)
    assert (paper.variant, paper.step_size, paper.radius, paper.init_scale) == ("paper", 1e-3, 1e-5, 1e-5)
    _, released, _ = setup(toy_task, "--smart-variant", "released")
    assert (released.variant, released.step_size, released.radius, released.init_scale) == \
        ("released", 1e-5, 1e-6, 1e-5)
    assert not setup(toy_task, "--smart-variant", "released", "--smart-steps", "0")[1].enabled
    assert not setup(toy_task, "--smart-eps", "0")[1].enabled
    with pytest.raises(ValueError, match="--smart-step-size must be a finite number"):
        setup(toy_task, "--smart-variant", "released", "--smart-step-size", "-1")


def test_released_regression_uses_the_squared_error(toy_regression_task):
    task, model, criterion = build_in_process(toy_regression_task, "--regression-target", "--num-classes", "1",
                                              "--smart-variant", "released", criterion="sentence_prediction_smart")
    sample = first_batch(task)
    model.train()
    torch.manual_seed(0)
    _, _, log = criterion(model, sample)
    assert log["symm_kl"] > 0
    model.eval()
    with torch.no_grad():
        clean = criterion.logits(model, sample)
        width = model.encoder.sentence_encoder.embed_tokens.embedding_dim
        noise = torch.zeros(*sample["net_input"]["src_tokens"].shape, width)
        noise[:, 1] = 0.5
        perturbed = criterion.released_logits(model, sample, noise)
        assert criterion.released_divergence(clean, perturbed).item() == pytest.approx(
            F.mse_loss(clean.view(-1), perturbed.view(-1), reduction="sum").item(), rel=1e-5)
