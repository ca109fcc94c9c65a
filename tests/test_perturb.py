"""The perturbation point: noise is added to the raw token embeddings of the encoder, on the right device and
in fp32, for RoBERTa and BART, and nothing is left patched afterwards."""

import pytest
import torch

from conftest import NO_DROPOUT, build_in_process, first_batch, needs_cpu_fp16
from fairseq_r3f.perturb import find_token_encoder, perturbed_token_embeddings, random_noise
from rxf.noise import PerturbationStats, sample_noise


def classify(model, batch):
    return model(**batch["net_input"], features_only=True, classification_head_name="sentence_classification_head")[0]


@pytest.mark.parametrize("arch", ["roberta_base", "bart_base", "roberta_sn_base", "bart_sn_base"])
def test_noise_changes_the_encoder_output_and_only_inside_the_block(toy_task, arch):
    task, model, _ = build_in_process(toy_task, *NO_DROPOUT, arch=arch)
    model.eval()
    batch = first_batch(task)
    clean = classify(model, batch)
    assert torch.equal(clean, classify(model, batch))  # deterministic without dropout
    with perturbed_token_embeddings(model, random_noise("normal", 0.1)):
        noised = classify(model, batch)
    assert not torch.allclose(clean, noised)
    assert torch.equal(clean, classify(model, batch))  # the encoder is restored
    assert "forward_embedding" not in vars(find_token_encoder(model))


def test_perturbation_is_added_before_scaling_positions_and_layer_norm(toy_task):
    task, model, _ = build_in_process(toy_task, *NO_DROPOUT)
    model.eval()
    batch = first_batch(task)
    encoder = find_token_encoder(model)
    tokens = batch["net_input"]["src_tokens"]
    delta = 0.05 * torch.randn(*tokens.shape, encoder.embed_tokens.embedding_dim)
    with perturbed_token_embeddings(model, lambda embedding: delta):
        noised = classify(model, batch)
    # the same result through the encoder's own token_embedding argument: the raw embedding plus delta
    expected_features = encoder(tokens, token_embeddings=encoder.embed_tokens(tokens) + delta)
    expected = model.classification_heads["sentence_classification_head"](
        expected_features["encoder_out"][0].transpose(0, 1)
    )
    assert torch.allclose(noised, expected, atol=1e-6)


def test_bart_decoder_embeddings_are_left_alone(toy_task):
    """BART shares one embedding matrix between encoder and decoder; only the encoder is perturbed."""
    task, model, _ = build_in_process(toy_task, *NO_DROPOUT, arch="bart_base")
    assert model.decoder.embed_tokens is model.encoder.embed_tokens
    seen = []
    def record(embedding):
        seen.append(embedding.shape)
        return torch.zeros_like(embedding)

    with perturbed_token_embeddings(model, record):
        classify(model, first_batch(task))
    assert len(seen) == 1  # the encoder's embedding only; the decoder looked up its own unperturbed


def test_noise_distributions():
    torch.manual_seed(0)
    like = torch.empty(200, 100, 16, dtype=torch.float16)
    uniform = sample_noise(like, "uniform", 1e-3)
    normal = sample_noise(like, "normal", 1e-3)
    assert uniform.dtype == normal.dtype == torch.float32
    assert uniform.abs().max() <= 1e-3 and uniform.std().item() == pytest.approx(1e-3 / 3 ** 0.5, rel=0.01)
    assert normal.mean().abs() < 1e-5 and normal.std().item() == pytest.approx(1e-3, rel=0.01)
    assert not sample_noise(like, "uniform", 0.0).any() and not sample_noise(like, "none", 1.0).any()
    with pytest.raises(ValueError, match="unknown noise type 'gauss'"):
        sample_noise(like, "gauss", 1e-3)


@needs_cpu_fp16
def test_stats_count_how_much_noise_survives_half_precision(toy_task):
    """1e-5 noise on fp16 embeddings of magnitude ~0.1 mostly rounds away; the stats must say so."""
    task, model, _ = build_in_process(toy_task, *NO_DROPOUT)
    batch = first_batch(task)
    tokens = batch["net_input"]["src_tokens"]
    real_entries = int(tokens.ne(1).sum()) * model.encoder.sentence_encoder.embed_tokens.embedding_dim
    for dtype, low, high in ((torch.float32, 0.99, 1.0), (torch.float16, 0.0, 0.6)):
        stats = PerturbationStats()
        with perturbed_token_embeddings(model.to(dtype), random_noise("uniform", 1e-5), stats):
            model.encoder.sentence_encoder.forward_embedding(tokens)
        assert int(stats.total) == real_entries
        assert low <= int(stats.changed) / int(stats.total) <= high, dtype


def test_models_without_one_transformer_encoder_are_refused():
    with pytest.raises(ValueError, match="exactly one TransformerEncoder.*has 0"):
        find_token_encoder(torch.nn.Linear(2, 2))
