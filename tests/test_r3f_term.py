"""The R3F term itself, in process and fast: the loss is the task loss plus exactly lambda x the symmetric KL,
its gradient reaches the noised forward, the fused KL changes no update, the batched forward is the same
function as two forwards, and R4F's head (and its export) is normalised. Each test here fails when the
property it names is broken on purpose (lambda ignored, noised logits detached, a head left unnormalised,
an export that keeps sigma out of the weights, a wrong term in the fused backward)."""

import copy

import pytest
import torch
import torch.nn.functional as F

import fairseq_r3f.criterions.r3f as r3f
import rxf.r3f
from conftest import NO_DROPOUT, build_in_process, first_batch
from fairseq.criterions.label_smoothed_cross_entropy import LabelSmoothedCrossEntropyCriterion
from fairseq_r3f.export import fold_spectral_norms
from fairseq_r3f.perturb import perturbed_token_embeddings
from test_seq2seq_r3f import criterion as seq2seq_criterion
from test_seq2seq_r3f import tiny_model, tiny_sample, tiny_task
from rxf.divergence import symmetric_kl_autograd
from rxf.spectral_norm import SpectralNormLinear, folded_weight

EPS = 1e-2
SEQ2SEQ_EPS = 1.0
# A freshly initialised tiny BART's outputs are close to uniform and barely depend on the source: its matrices
# x 8 make the KL (0.2 here) large against the loss's rounding, and its gradient a good part of the update.
SEQ2SEQ_WEIGHT_SCALE = 8.0


def embedding_noise(noise_type, eps):
    """Noise that depends on the embedding only, so a reference forward can reproduce it exactly."""
    return lambda token_embedding: eps * torch.sin(1e3 * token_embedding.detach().float())


@pytest.fixture
def fixed_noise(monkeypatch):
    monkeypatch.setattr(r3f, "random_noise", embedding_noise)


def live_noise(record):
    """Noise as a leaf that requires grad: ``record`` gets each one, to look at its gradient."""

    def make(noise_type, eps):
        def perturbation(token_embedding):
            delta = embedding_noise(noise_type, eps)(token_embedding).detach().requires_grad_()
            record.append(delta)
            return delta

        return perturbation

    return make


def parameters(model):
    return [p for p in model.parameters() if p.requires_grad]


def gradients(loss, model):
    return torch.autograd.grad(loss, parameters(model), allow_unused=True)


def assert_same_gradients(grads, reference, rtol):
    pairs = [(g, r) for g, r in zip(grads, reference) if r is not None]
    assert len(pairs) == len([r for r in reference if r is not None]) > 0
    assert all(g is not None for g, _ in pairs)
    diff = sum(float((g.double() - r.double()).pow(2).sum()) for g, r in pairs) ** 0.5
    norm = sum(float(r.double().pow(2).sum()) for _, r in pairs) ** 0.5
    assert diff <= rtol * norm, (diff, norm)


# -- the two criterions, and the reference computed here by hand with both branches live ----------------------

def classification(toy_task, r3f_lambda, *flags):
    task, model, crit = build_in_process(toy_task, *NO_DROPOUT, "--r3f-lambda", str(r3f_lambda), "--eps", str(EPS),
                                         *flags)
    return model.train(), crit, first_batch(task)


def classification_reference(model, crit, batch, r3f_lambda):
    net = dict(batch["net_input"], features_only=True, classification_head_name=crit.classification_head_name)
    clean = model(**net)[0]
    with perturbed_token_embeddings(model, embedding_noise("uniform", EPS)):
        noised = model(**net)[0]
    targets = model.get_targets(batch, [clean]).view(-1)
    task_loss = F.nll_loss(F.log_softmax(clean, dim=-1, dtype=torch.float32), targets, reduction="sum")
    return task_loss, symmetric_kl_autograd(clean, noised)


def seq2seq(r3f_lambda, **options):
    task = tiny_task()
    model = tiny_model("bart_base", task)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.mul_(SEQ2SEQ_WEIGHT_SCALE)
    return model, seq2seq_criterion(task, r3f_lambda=r3f_lambda, eps=SEQ2SEQ_EPS, noise_type="uniform", **options), \
        tiny_sample(task), task


def seq2seq_reference(model, batch, task):
    task_loss, sample_size, _ = LabelSmoothedCrossEntropyCriterion(task, False, 0.1)(model, batch)
    clean = model(**batch["net_input"])[0]
    with perturbed_token_embeddings(model, embedding_noise("uniform", SEQ2SEQ_EPS)):
        noised = model(**batch["net_input"])[0]
    kl = symmetric_kl_autograd(clean, noised, mask=batch["target"].ne(task.target_dictionary.pad()))
    # the 'sentence' normalisation: lambda weighs the KL summed over a sentence, x sample_size / B
    return task_loss, kl * sample_size / batch["target"].size(0)


@pytest.mark.parametrize("r3f_lambda", [0.5, 3.0])
def test_classification_loss_is_task_loss_plus_lambda_times_the_kl(toy_task, fixed_noise, r3f_lambda):
    model, crit, batch = classification(toy_task, r3f_lambda)
    loss, _, log = crit(model, batch)
    task_loss, kl = classification_reference(model, crit, batch, r3f_lambda)
    assert kl.item() > 0
    # a KL of 2e-5 is a sum of differences of float32 log-probabilities of order 1: the fused kernel and autograd
    # round them differently on different CPUs (measured 1e-7 apart, relative, on one machine and 1e-5 on another)
    assert log["symm_kl"].item() == pytest.approx(kl.item(), rel=1e-4)
    # loss - task_loss cancels two float32 sums many times larger: the difference is only as exact as their last bits
    # (the task losses agree bit for bit on some torch builds, not on others)
    rounding = 2 * torch.finfo(torch.float32).eps * task_loss.abs().item()
    assert (loss - task_loss).item() == pytest.approx(r3f_lambda * kl.item(), rel=1e-4, abs=rounding)


@pytest.mark.parametrize("r3f_lambda", [0.5, 3.0])
def test_seq2seq_loss_is_task_loss_plus_lambda_times_the_kl(fixed_noise, r3f_lambda):
    model, crit, batch, task = seq2seq(r3f_lambda)
    loss, _, log = crit(model, batch)
    task_loss, term = seq2seq_reference(model, batch, task)
    assert term.item() > 0
    assert (loss - task_loss).item() == pytest.approx(r3f_lambda * term.item(), rel=1e-4)


def test_the_gradient_reaches_the_noised_branch_in_classification(toy_task, monkeypatch):
    deltas = []
    monkeypatch.setattr(r3f, "random_noise", live_noise(deltas))
    model, crit, batch = classification(toy_task, 3.0)
    loss = crit(model, batch)[0]
    (delta_grad,) = torch.autograd.grad(loss, deltas, retain_graph=True)
    assert delta_grad.abs().sum() > 0
    grads = gradients(loss, model)
    task_loss, kl = classification_reference(model, crit, batch, 3.0)
    assert_same_gradients(grads, gradients(task_loss + 3.0 * kl, model), rtol=1e-4)


def test_the_gradient_reaches_the_noised_branch_in_seq2seq(monkeypatch):
    deltas = []
    monkeypatch.setattr(r3f, "random_noise", live_noise(deltas))
    model, crit, batch, task = seq2seq(3.0)
    loss = crit(model, batch)[0]
    (delta_grad,) = torch.autograd.grad(loss, deltas, retain_graph=True)
    assert delta_grad.abs().sum() > 0
    grads = gradients(loss, model)
    monkeypatch.setattr(r3f, "random_noise", embedding_noise)
    task_loss, term = seq2seq_reference(model, batch, task)
    assert_same_gradients(grads, gradients(task_loss + 3.0 * term, model), rtol=1e-4)


# -- the fused KL changes no update -------------------------------------------------------------------------------

def sgd_update(model, loss):
    loss.backward()
    with torch.no_grad():
        for p in parameters(model):
            if p.grad is not None:
                p -= p.grad
    return [p.detach().clone() for p in parameters(model)]


def test_a_seq2seq_r3f_update_is_the_same_with_the_fused_kl():
    model, crit, batch, task = seq2seq(0.1)
    plain_model, plain_crit = copy.deepcopy(model), copy.deepcopy(crit)
    plain_crit.divergence = symmetric_kl_autograd
    torch.manual_seed(7)
    loss, _, log = crit(model, batch)
    torch.manual_seed(7)
    plain_loss, _, plain_log = plain_crit(plain_model, batch)
    assert log["symm_kl"].item() > 0
    assert log["symm_kl"].item() == pytest.approx(plain_log["symm_kl"].item(), rel=1e-5)
    assert loss.item() == pytest.approx(plain_loss.item(), rel=1e-6)
    before = [p.detach().clone() for p in parameters(model)]
    after, plain_after = sgd_update(model, loss), sgd_update(plain_model, plain_loss)
    step = sum(float((a - b).pow(2).sum()) for a, b in zip(after, before)) ** 0.5
    diff = sum(float((a - b).pow(2).sum()) for a, b in zip(after, plain_after)) ** 0.5
    assert step > 0 and diff <= 1e-5 * step


def test_a_classification_r3f_update_is_the_same_with_the_fused_kl(toy_task, monkeypatch):
    model, crit, batch = classification(toy_task, 1.0, "--dropout", "0.1")  # dropout on: same seed, same masks
    plain_model = copy.deepcopy(model)
    torch.manual_seed(7)
    loss, _, log = crit(model, batch)
    monkeypatch.setattr(rxf.r3f, "symmetric_kl", symmetric_kl_autograd)  # the term both criterions call
    torch.manual_seed(7)
    plain_loss, _, plain_log = crit(plain_model, batch)
    assert log["symm_kl"].item() > 0
    assert log["symm_kl"].item() == pytest.approx(plain_log["symm_kl"].item(), rel=1e-5)
    before = [p.detach().clone() for p in parameters(model)]
    after, plain_after = sgd_update(model, loss), sgd_update(plain_model, plain_loss)
    step = sum(float((a - b).pow(2).sum()) for a, b in zip(after, before)) ** 0.5
    diff = sum(float((a - b).pow(2).sum()) for a, b in zip(after, plain_after)) ** 0.5
    assert step > 0 and diff <= 1e-5 * step


# -- --r3f-batched-forward: one forward of 2B, the same function as two forwards ---------------------------------

def encoder_forward_batches(model, run):
    sizes = []
    handle = model.encoder.register_forward_hook(lambda _m, inputs, _o: sizes.append(inputs[0].size(0)))
    try:
        result = run()
    finally:
        handle.remove()
    return sizes, result


def test_batched_forward_is_the_two_forward_criterion_in_classification(toy_task):
    model, crit, batch = classification(toy_task, 1.0)
    batched_model, batched_crit, _ = classification(toy_task, 1.0, "--r3f-batched-forward")
    batched_model.load_state_dict(model.state_dict())
    torch.manual_seed(5)  # without dropout, the noise is the next draw in both
    loss, size, log = crit(model, batch)
    torch.manual_seed(5)
    calls, (batched_loss, batched_size, batched_log) = encoder_forward_batches(
        batched_model, lambda: batched_crit(batched_model, batch))
    n = batch["target"].size(0)
    assert calls == [2 * n]
    assert size == batched_size and set(log) == set(batched_log)
    assert batched_loss.item() == pytest.approx(loss.item(), rel=1e-5)
    assert batched_log["symm_kl"].item() == pytest.approx(log["symm_kl"].item(), rel=1e-4)
    for key in ("ncorrect", "noise_changed", "noise_total", "nsentences", "sample_size"):
        assert int(batched_log[key]) == int(log[key]), key
    assert_same_gradients(gradients(batched_loss, batched_model), gradients(loss, model), rtol=1e-4)


@pytest.mark.parametrize("options", [{}, {"ignore_prefix_size": 1, "report_accuracy": True},
                                     {"normalization": "token"}])
def test_batched_forward_is_the_two_forward_criterion_in_seq2seq(options):
    model, crit, batch, task = seq2seq(0.5, **options)
    batched_model = copy.deepcopy(model)
    batched_crit = seq2seq_criterion(task, r3f_lambda=0.5, eps=SEQ2SEQ_EPS, noise_type="uniform",
                                     r3f_batched_forward=True, **options)
    torch.manual_seed(5)
    loss, size, log = crit(model, batch)
    torch.manual_seed(5)
    calls, (batched_loss, batched_size, batched_log) = encoder_forward_batches(
        batched_model, lambda: batched_crit(batched_model, batch))
    assert calls == [2 * batch["target"].size(0)]
    assert size == batched_size and set(log) == set(batched_log)
    assert batched_log["symm_kl"].item() > 0
    assert batched_loss.item() == pytest.approx(loss.item(), rel=1e-5)
    assert batched_log["symm_kl"].item() == pytest.approx(log["symm_kl"].item(), rel=1e-4)
    for key in ("nll_loss",):
        assert batched_log[key].item() == pytest.approx(log[key].item(), rel=1e-5)
    for key in ("noise_changed", "noise_total", "n_correct", "total"):
        if key in log:
            assert int(batched_log[key]) == int(log[key]), key
    assert_same_gradients(gradients(batched_loss, batched_model), gradients(loss, model), rtol=1e-4)


# -- R4F's spectrally normalised head, and its export --------------------------------------------------------------

def sn_layers(model):
    return {name: module for name, module in model.named_modules() if isinstance(module, SpectralNormLinear)}


def test_the_sn_head_is_normalised_whatever_the_scale_of_its_matrices(toy_task):
    task, model, _ = build_in_process(toy_task, *NO_DROPOUT, arch="roberta_sn_base")
    model.eval()
    batch = first_batch(task)
    net = dict(batch["net_input"], features_only=True, classification_head_name="sentence_classification_head")
    layers = sn_layers(model)
    assert sorted(name.rsplit(".", 1)[-1] for name in layers) == ["dense", "out_proj"]
    with torch.no_grad():
        logits = model(**net)[0]
        for layer in layers.values():
            layer.weight.mul_(10)
        scaled = model(**net)[0]
    assert torch.allclose(scaled, logits, rtol=1e-5, atol=1e-6)
    for name, layer in layers.items():
        with torch.no_grad():
            sigma = torch.linalg.matrix_norm(layer.normalized_weight().double(), ord=2).item()
        assert sigma == pytest.approx(1.0, abs=1e-3), name


def test_the_export_folds_the_same_normalised_matrix(toy_task):
    _, model, _ = build_in_process(toy_task, arch="roberta_sn_base")
    model.eval()
    with torch.no_grad():
        for layer in sn_layers(model).values():
            layer.weight.mul_(10)  # a matrix far from norm 1, as after training
    state = {k: v.clone() for k, v in model.state_dict().items()}
    folded = fold_spectral_norms(state)
    layers = sn_layers(model)
    assert sorted(folded) == sorted(layers)
    for name, layer in layers.items():
        with torch.no_grad():
            expected = layer.normalized_weight()
        assert name + ".u" not in state
        assert torch.allclose(state[name + ".weight"], expected, rtol=1e-6, atol=0)
        assert torch.allclose(folded_weight(layer.weight.detach(), layer.u), expected, rtol=1e-6, atol=0)
        sigma = torch.linalg.matrix_norm(state[name + ".weight"].double(), ord=2).item()
        assert sigma == pytest.approx(1.0, abs=1e-3), name
