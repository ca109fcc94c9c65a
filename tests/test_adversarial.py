"""SMART and FreeLB baselines: they reduce to standard fine-tuning when switched off, and their perturbation
is adversarial (it does more harm than random noise of the same norm)."""

import math

import pytest
import torch
from fairseq import options, tasks
from fairseq.criterions.sentence_prediction import SentencePredictionCriterion
from fairseq.dataclass.utils import convert_namespace_to_omegaconf

from conftest import NO_DROPOUT, run_fairseq, train_args
from fairseq_r3f.perturb import EmbeddingBall
from rxf.divergence import symmetric_kl

FREELB = ["--task", "sentence_prediction_freelb"]


def losses(records):
    return [(r["loss"], r.get("accuracy"), r["gnorm"]) for r in records["train_inner"]]


@pytest.fixture(scope="module")
def standard_run(toy_task, tmp_path_factory):
    _, records = run_fairseq("train", train_args(toy_task, str(tmp_path_factory.mktemp("std")), "--no-save",
                                                 criterion="sentence_prediction"))
    return losses(records)


@pytest.mark.parametrize(
    "criterion, extra",
    [
        ("sentence_prediction_smart", ["--smart-steps", "0"]),
        ("sentence_prediction_smart", ["--smart-eps", "0"]),
        ("sentence_prediction_freelb", [*FREELB, "--freelb-steps", "0"]),
        ("sentence_prediction_freelb", [*FREELB, "--freelb-max-norm", "0"]),
    ],
)
def test_switched_off_is_standard_fine_tuning(toy_task, tmp_path, standard_run, criterion, extra):
    # dropout stays on: equal losses need equal random streams, i.e. no extra forward at all
    _, records = run_fairseq("train", train_args(toy_task, str(tmp_path), "--no-save", *extra, criterion=criterion))
    assert len(standard_run) == 10
    assert losses(records) == standard_run


def test_switched_on_changes_training(toy_task, tmp_path, standard_run):
    _, smart = run_fairseq("train", train_args(toy_task, str(tmp_path / "s"), "--no-save",
                                               criterion="sentence_prediction_smart"))
    assert all(r["symm_kl"] > 0 for r in smart["train_inner"])
    assert losses(smart) != standard_run
    _, freelb = run_fairseq("train", train_args(toy_task, str(tmp_path / "f"), "--no-save", *FREELB,
                                                criterion="sentence_prediction_freelb"))
    assert losses(freelb) != standard_run
    # the last pass, at the adversarial point, costs more than the mean over the path from the random start
    assert all(r["adv_loss"] > r["loss"] for r in freelb["train_inner"])


def test_smart_as_released_trains_through_fairseq_train(toy_task, tmp_path, standard_run):
    # the authors' variant: noise on the embedding output, per-token normalisation; dropout stays on
    _, smart = run_fairseq("train", train_args(toy_task, str(tmp_path), "--no-save", "--smart-variant", "released",
                                               criterion="sentence_prediction_smart"))
    assert len(smart["train_inner"]) == 10 and all(r["symm_kl"] > 0 for r in smart["train_inner"])
    assert losses(smart) != standard_run


def test_smart_reaches_bart_encoder(toy_task, tmp_path):
    # without dropout a positive KL can only come from the perturbation reaching BART's encoder
    _, smart = run_fairseq("train", train_args(toy_task, str(tmp_path), "--no-save", "--max-update", "3",
                                               *NO_DROPOUT, arch="bart_base", criterion="sentence_prediction_smart"))
    assert len(smart["train_inner"]) == 3 and all(r["symm_kl"] > 0 for r in smart["train_inner"])


def test_freelb_needs_its_task(toy_task, tmp_path):
    proc, _ = run_fairseq("train", train_args(toy_task, str(tmp_path), "--no-save",
                                              criterion="sentence_prediction_freelb"), check=False)
    assert proc.returncode != 0
    assert "--task sentence_prediction_freelb" in proc.stderr


def build(toy_task, tmp_path, criterion, *extra):
    """Task, model (eval mode: no dropout), criterion and one batch of 32, in process, from the CLI flags."""
    parser = options.get_training_parser()
    args = options.parse_args_and_arch(parser, train_args(toy_task, str(tmp_path), *extra, criterion=criterion))
    cfg = convert_namespace_to_omegaconf(args)
    torch.manual_seed(1)
    task = tasks.setup_task(cfg.task)
    model = task.build_model(cfg.model)
    task.load_dataset("valid")
    data = task.dataset("valid")
    sample = data.collater([data[i] for i in range(32)])
    return task, model.eval(), task.build_criterion(cfg.criterion), sample


def logits(model, sample):
    return model(**sample["net_input"], features_only=True, classification_head_name="sentence_classification_head")[0]


def random_deltas(ball, shape, n):
    """Uniform noise projected onto the sphere of the ball: norm exactly its radius, sentence by sentence."""
    return [ball.project(torch.empty(shape).uniform_(-1, 1)) for _ in range(n)]


# small against the tiny model's token embeddings (norm ~0.5 each), where the KL is still about quadratic in
# delta; at large radii a full normalised step can overshoot the maximum
RADIUS = 0.05


@pytest.mark.parametrize("steps", [1, 2])
def test_smart_perturbation_beats_random_noise_of_same_norm(toy_task, tmp_path, steps):
    _, model, criterion, sample = build(
        toy_task, tmp_path, "sentence_prediction_smart", "--smart-norm", "l2", "--smart-eps", str(RADIUS),
        "--smart-step-size", "100", "--smart-steps", str(steps))
    with torch.no_grad():
        clean = logits(model, sample)
    torch.manual_seed(0)
    delta = criterion.adversarial_perturbation(model, sample, clean)
    keep = sample["net_input"]["src_tokens"].ne(1)
    ball = EmbeddingBall("l2", RADIUS, keep)
    # a full step lands on the sphere: the comparison is at exactly the same norm, sentence by sentence
    assert ball.sentence_norms(delta).flatten() == pytest.approx(torch.full((32,), RADIUS), rel=1e-4)
    assert (delta[~keep] == 0).all()
    with torch.no_grad():
        adversarial = criterion.perturbed_logits(model, sample, delta)
        adversarial_kl = symmetric_kl(clean, adversarial).item()
        random_kls = [symmetric_kl(clean, criterion.perturbed_logits(model, sample, d)).item()
                      for d in random_deltas(ball, delta.shape, 5)]
    assert max(random_kls) > 0
    assert adversarial_kl > 10 * max(random_kls), (adversarial_kl, random_kls)


class RecordingOptimizer:
    """Stands in for fairseq's optimizer in FreeLB's step: back-propagates and keeps each pass's loss."""

    def __init__(self):
        self.losses = []

    def backward(self, loss):
        self.losses.append(loss.item())
        loss.backward()


def test_freelb_perturbation_beats_random_noise_of_same_norm(toy_task, tmp_path):
    # a random start of 100 x RADIUS is projected onto the sphere of radius RADIUS, and a step of 100 lands
    # every later delta back on it: pass 0 is random noise, pass K the adversarial point, both at norm RADIUS
    task, model, criterion, sample = build(
        toy_task, tmp_path, "sentence_prediction_freelb", *FREELB, "--freelb-steps", "2",
        "--freelb-init-mag", str(100 * RADIUS), "--freelb-max-norm", str(RADIUS), "--freelb-step-size", "100")
    torch.manual_seed(0)
    optimizer = RecordingOptimizer()
    loss, sample_size, log = criterion.adversarial_train_step(model, sample, optimizer)
    pass_losses = [3 * value for value in optimizer.losses]
    assert len(pass_losses) == 3
    assert min(pass_losses[1:]) > pass_losses[0]
    assert loss.item() == pytest.approx(sum(pass_losses) / 3, rel=1e-5)
    assert log["adv_loss"].item() == pytest.approx(pass_losses[2], rel=1e-5)


def test_freelb_averages_gradients_over_passes(toy_task, tmp_path):
    """With a zero step and a zero start all K + 1 passes see the clean input, so the accumulated gradient
    must equal the standard one: each pass contributes 1 / (K + 1)."""
    task, model, criterion, sample = build(
        toy_task, tmp_path, "sentence_prediction_freelb", *FREELB, "--freelb-steps", "2",
        "--freelb-step-size", "0", "--freelb-init-mag", "0")
    optimizer = RecordingOptimizer()
    loss, _, _ = criterion.adversarial_train_step(model, sample, optimizer)
    freelb_grads = [None if p.grad is None else p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    std_loss, _, _ = SentencePredictionCriterion.forward(criterion, model, sample)
    std_loss.backward()
    assert loss.item() == pytest.approx(std_loss.item(), rel=1e-6)
    assert optimizer.losses == pytest.approx([std_loss.item() / 3] * 3, rel=1e-6)
    assert sum(g is not None for g in freelb_grads) > 10
    for freelb_grad, p in zip(freelb_grads, model.parameters()):
        assert (freelb_grad is None) == (p.grad is None)
        if freelb_grad is not None:
            torch.testing.assert_close(freelb_grad, p.grad, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("fresh", [False, True])
def test_freelb_passes_share_the_first_passs_dropout_masks(toy_task, tmp_path, fresh):
    """With a zero start and a zero step every pass sees the clean input, so under dropout 0.1 the K + 1
    losses are equal exactly when the masks are shared, and differ when each pass draws its own."""
    _, model, criterion, sample = build(
        toy_task, tmp_path, "sentence_prediction_freelb", *FREELB, "--freelb-steps", "3",
        "--freelb-step-size", "0", "--freelb-init-mag", "0", "--dropout", "0.1", "--attention-dropout", "0.1",
        *(["--freelb-fresh-dropout"] if fresh else []))
    model.train()
    optimizer = RecordingOptimizer()
    criterion.adversarial_train_step(model, sample, optimizer)
    assert len(optimizer.losses) == 4
    if fresh:
        assert len(set(optimizer.losses)) == 4, optimizer.losses
    else:
        assert len(set(optimizer.losses)) == 1, optimizer.losses
        model.zero_grad()
        eval_loss = 4 * optimizer.losses[0]
        assert eval_loss != pytest.approx(SentencePredictionCriterion.forward(criterion, model.eval(), sample)[0]
                                          .item(), rel=1e-6)  # dropout was on: the shared masks are real masks


def test_freelb_with_shared_masks_and_no_perturbation_is_standard_fine_tuning(toy_task, tmp_path, standard_run):
    """Through fairseq-train, dropout on: with shared masks, a zero start and a zero step the K + 1 passes are
    one pass repeated (adv_loss, the last pass, equals the mean over the passes), the update averages K + 1
    equal gradients, and the random stream moves as far as one pass's: standard fine-tuning, up to rounding.
    With fresh masks the passes differ."""
    zero = [*FREELB, "--freelb-steps", "2", "--freelb-init-mag", "0", "--freelb-step-size", "0"]
    _, shared = run_fairseq("train", train_args(toy_task, str(tmp_path / "shared"), "--no-save", *zero,
                                                criterion="sentence_prediction_freelb"))
    records = shared["train_inner"]
    assert len(records) == 10 and all(float(r["adv_loss"]) == float(r["loss"]) for r in records)
    assert [float(r["loss"]) for r in records] == pytest.approx([float(loss) for loss, _, _ in standard_run],
                                                                abs=2e-3)
    _, fresh = run_fairseq("train", train_args(toy_task, str(tmp_path / "fresh"), "--no-save", *zero,
                                               "--freelb-fresh-dropout", criterion="sentence_prediction_freelb"))
    assert any(float(r["adv_loss"]) != float(r["loss"]) for r in fresh["train_inner"])


def test_freelb_random_start_is_the_published_one():
    """U(-1, 1) x mag / sqrt(L x d) on the L real tokens of each sentence: norm about mag / sqrt(3), never
    above mag, whatever the sentence's length; padding untouched."""
    torch.manual_seed(0)
    lengths = torch.randint(1, 40, (4000,))
    keep = torch.arange(40).unsqueeze(0) < lengths.unsqueeze(1)
    ball = EmbeddingBall("l2", math.inf, keep)
    delta = ball.uniform_start((4000, 40, 16), "cpu", 0.6)
    norms = ball.sentence_norms(delta).flatten()
    assert norms.mean().item() == pytest.approx(0.6 / math.sqrt(3), rel=0.01)
    assert norms.max().item() <= 0.6
    short, long = norms[lengths <= 5], norms[lengths >= 30]
    assert short.mean().item() == pytest.approx(long.mean().item(), rel=0.03)  # scaled by each one's length
    assert (delta[~keep] == 0).all()


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_embedding_ball_projects_and_masks(norm):
    keep = torch.tensor([[True, True, True, False], [True, False, False, False]])
    ball = EmbeddingBall(norm, 0.3, keep)
    delta = ball.project(torch.randn(2, 4, 5) * 10)
    norms = ball.sentence_norms(delta).flatten()
    assert norms == pytest.approx(torch.tensor([0.3, 0.3]), rel=1e-5)
    assert (delta[~keep] == 0).all()
    small = torch.full((2, 4, 5), 1e-3) * keep.unsqueeze(-1)
    assert torch.equal(ball.project(small), small)  # inside the ball: unchanged
    stepped = ball.ascent_step(torch.zeros(2, 4, 5), torch.full((2, 4, 5), float("nan")), 1.0)
    assert torch.equal(stepped, torch.zeros(2, 4, 5))  # a non-finite gradient leaves delta where it was
    unbounded = EmbeddingBall(norm, math.inf, keep)
    assert unbounded.sentence_norms(unbounded.project(delta * 100)).flatten() == pytest.approx(norms * 100, rel=1e-5)
