"""label_smoothed_cross_entropy_r3f on tiny seq2seq models built in-process: the numbers it promises."""

import argparse
import types

import pytest
import torch

import fairseq_r3f  # noqa: F401  (registers the criterion)
from fairseq.criterions.label_smoothed_cross_entropy import LabelSmoothedCrossEntropyCriterion
from fairseq.data import Dictionary
from fairseq.models import ARCH_MODEL_REGISTRY, ARCH_CONFIG_REGISTRY

from fairseq_r3f.criterions.label_smoothed_cross_entropy_r3f import LabelSmoothedCrossEntropyR3FCriterion
from rxf.divergence import symmetric_kl

ARCHS = ["bart_base", "bart_large", "mbart_base", "transformer"]
TINY = dict(
    encoder_layers=1, decoder_layers=1, encoder_embed_dim=16, decoder_embed_dim=16, encoder_ffn_embed_dim=32,
    decoder_ffn_embed_dim=32, encoder_attention_heads=2, decoder_attention_heads=2, max_source_positions=32,
    max_target_positions=32, dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, relu_dropout=0.0,
)


def tiny_task():
    vocab = Dictionary()
    for i in range(40):
        vocab.add_symbol(f"w{i}")
    return types.SimpleNamespace(source_dictionary=vocab, target_dictionary=vocab)


def tiny_model(arch, task, seed=0):
    torch.manual_seed(seed)
    args = argparse.Namespace(**TINY)
    ARCH_CONFIG_REGISTRY[arch](args)
    if arch == "transformer":
        args.share_all_embeddings = True
    model = ARCH_MODEL_REGISTRY[arch].build_model(args, task)
    model.train()
    return model


def tiny_sample(task, seed=0):
    """Two sources and two targets of different lengths: padding on the left of sources (fairseq's
    translation default) and on the right of targets."""
    vocab = task.target_dictionary
    pad, eos = vocab.pad(), vocab.eos()
    g = torch.Generator().manual_seed(seed)
    words = lambda n: torch.randint(vocab.nspecial, len(vocab), (n,), generator=g)  # noqa: E731
    src = torch.full((2, 7), pad)
    src[0, :] = torch.cat([words(6), torch.tensor([eos])])
    src[1, 3:] = torch.cat([words(3), torch.tensor([eos])])
    target = torch.full((2, 6), pad)
    target[0, :] = torch.cat([words(5), torch.tensor([eos])])
    target[1, :3] = torch.cat([words(2), torch.tensor([eos])])
    prev = torch.full_like(target, pad)
    prev[:, 0] = eos
    prev[0, 1:] = target[0, :-1]
    prev[1, 1:3] = target[1, :2]
    return {
        "id": torch.arange(2),
        "nsentences": 2,
        "ntokens": int(target.ne(pad).sum()),
        "net_input": {"src_tokens": src, "src_lengths": torch.tensor([7, 4]), "prev_output_tokens": prev},
        "target": target,
    }


def criterion(task, r3f_lambda=0.01, eps=1e-2, noise_type="normal", normalization="sentence", **parent):
    parent = {"sentence_avg": False, "label_smoothing": 0.1, **parent}
    return LabelSmoothedCrossEntropyR3FCriterion(
        task, r3f_lambda=r3f_lambda, eps=eps, noise_type=noise_type, r3f_kl_normalization=normalization, **parent
    )


class CountForwards:
    def __init__(self, module):
        self.calls = 0
        self.handle = module.register_forward_hook(self)

    def __call__(self, *_):
        self.calls += 1


@pytest.mark.parametrize("arch", ARCHS)
def test_noise_reaches_the_encoder_and_kl_is_logged(arch):
    task = tiny_task()
    model = tiny_model(arch, task)
    crit = criterion(task)
    encoder_calls = CountForwards(model.encoder)
    _, _, log = crit(model, tiny_sample(task))
    assert encoder_calls.calls == 2
    # dropout is 0: the two forwards differ only by the noise, so a positive KL means it got through
    assert log["symm_kl"].item() > 1e-8
    assert log["noise_total"] > 0 and log["noise_changed"] == log["noise_total"]


@pytest.mark.parametrize("arch", ["bart_base", "transformer"])
def test_without_noise_the_kl_is_zero(arch):
    task = tiny_task()
    model = tiny_model(arch, task)
    _, _, log = criterion(task, noise_type="none")(model, tiny_sample(task))
    assert log["symm_kl"].item() == 0.0


@pytest.mark.parametrize("arch", ["bart_base", "mbart_base", "transformer"])
@pytest.mark.parametrize("label_smoothing,ignore_prefix_size,report_accuracy", [(0.1, 0, True), (0.0, 1, False)])
def test_lambda_zero_equals_parent_and_runs_one_forward(arch, label_smoothing, ignore_prefix_size, report_accuracy):
    task = tiny_task()
    options = dict(label_smoothing=label_smoothing, ignore_prefix_size=ignore_prefix_size,
                   report_accuracy=report_accuracy)
    sample = tiny_sample(task)
    model = tiny_model(arch, task)
    calls = CountForwards(model)
    loss, size, log = criterion(task, r3f_lambda=0.0, **options)(model, sample)
    assert calls.calls == 1
    model = tiny_model(arch, task)
    ref_loss, ref_size, ref_log = LabelSmoothedCrossEntropyCriterion(task, False, **options)(model, sample)
    assert torch.equal(loss, ref_loss) and size == ref_size
    assert set(log) == set(ref_log)
    for key in log:
        assert torch.equal(torch.as_tensor(log[key]), torch.as_tensor(ref_log[key])), key


def test_loss_is_parent_plus_scaled_kl_for_both_normalizations():
    task = tiny_task()
    sample = tiny_sample(task)
    parent_loss, size, _ = LabelSmoothedCrossEntropyCriterion(task, False, 0.1)(tiny_model("bart_base", task), sample)
    assert size == sample["ntokens"] == 9
    for normalization, denominator in (("sentence", 2), ("token", 9)):
        torch.manual_seed(3)
        loss, _, log = criterion(task, r3f_lambda=0.1, normalization=normalization)(
            tiny_model("bart_base", task), sample
        )
        expected = parent_loss + 0.1 * log["symm_kl"] * size / denominator
        assert torch.allclose(loss, expected, rtol=1e-6, atol=0), normalization


def test_sentence_avg_keeps_the_per_sentence_weight():
    """With --sentence-avg fairseq divides by B, so the 'sentence' term is lambda x KL_sum / B after it too."""
    task = tiny_task()
    sample = tiny_sample(task)
    loss, size, log = criterion(task, r3f_lambda=0.1, sentence_avg=True)(tiny_model("bart_base", task), sample)
    parent_loss, _, _ = LabelSmoothedCrossEntropyCriterion(task, True, 0.1)(tiny_model("bart_base", task), sample)
    assert size == 2
    assert torch.allclose(loss / size, parent_loss / size + 0.1 * log["symm_kl"] / 2, rtol=1e-6)


def test_padding_target_positions_contribute_nothing():
    task = tiny_task()
    model = tiny_model("bart_base", task)
    sample = tiny_sample(task)
    crit = criterion(task)
    with torch.no_grad():
        clean = model(**sample["net_input"])
        noised = (clean[0] + torch.randn_like(clean[0]), clean[1])
        kl = crit.symm_kl(model, clean, noised, sample)
        padded = sample["target"].eq(task.target_dictionary.pad())
        assert padded.any()
        changed = noised[0].clone()
        changed[padded] = torch.randn_like(changed[padded]) * 10
        assert crit.symm_kl(model, clean, (changed, clean[1]), sample) == kl
        # and it is exactly the KL over the real positions, not the reference's sum over all of them
        keep = ~padded
        assert torch.allclose(kl, symmetric_kl(clean[0][keep], noised[0][keep]))
        assert symmetric_kl(clean[0], changed) > kl


def test_ignored_prefix_positions_contribute_nothing():
    task = tiny_task()
    model = tiny_model("mbart_base", task)
    sample = tiny_sample(task)
    crit = criterion(task, ignore_prefix_size=1)
    with torch.no_grad():
        clean = model(**sample["net_input"])
        noised = clean[0] + torch.randn_like(clean[0])
        kl = crit.symm_kl(model, clean, (noised, None), sample)
        noised[:, 0] = torch.randn_like(noised[:, 0]) * 10
        assert crit.symm_kl(model, clean, (noised, None), sample) == kl
        assert criterion(task).symm_kl(model, clean, (noised, None), sample) > kl


def test_kl_is_computed_in_fp32_from_half_logits():
    task = tiny_task()
    model = tiny_model("bart_base", task)
    sample = tiny_sample(task)
    with torch.no_grad():
        clean = model(**sample["net_input"])
        noised = (clean[0] + 0.01 * torch.randn_like(clean[0]), clean[1])
        kl32 = criterion(task).symm_kl(model, clean, noised, sample)
        kl16 = criterion(task).symm_kl(model, (clean[0].half(), None), (noised[0].half(), None), sample)
    assert kl16.dtype == torch.float32
    assert torch.allclose(kl16, kl32, rtol=0.05)


def test_eval_mode_runs_the_parent_only():
    task = tiny_task()
    model = tiny_model("bart_base", task).eval()
    calls = CountForwards(model)
    _, _, log = criterion(task, r3f_lambda=0.1)(model, tiny_sample(task))
    assert calls.calls == 1 and "symm_kl" not in log


def test_bad_options_are_refused():
    task = tiny_task()
    with pytest.raises(ValueError, match="r3f-lambda"):
        criterion(task, r3f_lambda=-1)
    with pytest.raises(ValueError, match="r3f-kl-normalization"):
        criterion(task, normalization="batch")
