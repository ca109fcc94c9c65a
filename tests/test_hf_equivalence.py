"""The fairseq plugin and the HuggingFace adapter compute the same thing.

A tiny fairseq RoBERTa (the plugin's tiny model, built through fairseq's own parser) and a tiny fairseq BART are
converted key by key into transformers models (rxf.hf.convert). Without dropout and with one fixed noise tensor
given to both -- fairseq: the plugin's real criterion with its noise sampler patched; transformers: r3f_loss's
noise_sampler -- the two frameworks give the same loss per item (fairseq's loss / sample_size, the number its
trainer divides by), the same symm_kl and the same gradients of the token embeddings, the head and an attention
matrix, to 1e-6; R4F's folded heads give the same logits. The seq2seq case has padding in sources and targets
(fairseq: label_smoothed_cross_entropy_r3f without smoothing, lambda per target token; transformers:
BartForConditionalGeneration with labels padded by -100).
"""

import os

import pytest
import torch

import fairseq_r3f.criterions.r3f as fairseq_r3f_criterion
from conftest import NO_DROPOUT
from fairseq_r3f.perturb import fixed
from fairseq_r3f.tools import USER_DIR
from r3f_runs.tables import tiny_model_flags
from test_seq2seq_r3f import criterion as seq2seq_criterion
from test_seq2seq_r3f import tiny_model as tiny_seq2seq_model
from test_seq2seq_r3f import tiny_task as tiny_seq2seq_task

pytest.importorskip("transformers")  # the HF side (.venv has it; .venv-official, on Python 3.10, has not)
from rxf.hf import apply_r4f, fold_r4f, r3f_loss  # noqa: E402
from rxf.hf.convert import (  # noqa: E402
    ConversionError,
    bart_for_conditional_generation,
    roberta_for_sequence_classification,
)

HEAD = "sentence_classification_head"
PAD, BOS, EOS = 1, 0, 2
TOLERANCE = 1e-6  # relative, on the loss, symm_kl and each compared gradient
EPS = 1e-2  # large enough for a symm_kl well above the rounding of the loss it is added to
LAMBDA = 3.0


def relative_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


# -- the two models -------------------------------------------------------------------------------------------

def write_dictionaries(folder, words: int) -> None:
    """What fairseq's sentence_prediction task loads besides data: the input and the label dictionaries."""
    for name, symbols in (("input0", [f"w{i}" for i in range(words)]), ("label", ["0", "1"])):
        os.makedirs(os.path.join(folder, name), exist_ok=True)
        with open(os.path.join(folder, name, "dict.txt"), "w") as f:
            f.writelines(f"{symbol} 1\n" for symbol in symbols)


def fairseq_roberta(folder, arch="roberta_base", *flags):
    """The plugin's tiny RoBERTa (tests' TINY_ROBERTA sizes), its task and criterion, as fairseq-train builds them."""
    from fairseq import options, tasks

    write_dictionaries(folder, 40)
    argv = [str(folder), "--user-dir", USER_DIR, "--task", "sentence_prediction", "--num-classes", "2",
            "--init-token", "0", "--separator-token", "2", "--max-positions", "64", "--arch", arch,
            *tiny_model_flags("roberta"), *NO_DROPOUT, "--criterion", "sentence_prediction_r3f",
            "--r3f-lambda", str(LAMBDA), "--eps", str(EPS), "--noise-type", "uniform", "--seed", "1", *flags]
    args = options.parse_args_and_arch(options.get_training_parser(), argv)
    task = tasks.setup_task(args)
    torch.manual_seed(1)
    model = task.build_model(args)
    return task, model, task.build_criterion(args)


def classification_batch(vocab: int):
    """Four sentences of 9, 6, 4 and 9 tokens, right-padded as fairseq's sentence_prediction collates them."""
    generator = torch.Generator().manual_seed(3)
    tokens = torch.full((4, 9), PAD)
    for row, length in enumerate((9, 6, 4, 9)):
        tokens[row, :length] = torch.randint(4, vocab, (length,), generator=generator)
        tokens[row, 0], tokens[row, length - 1] = BOS, EOS
    labels = torch.tensor([0, 1, 1, 0])
    fairseq_sample = {"id": torch.arange(4), "nsentences": 4, "ntokens": int(tokens.ne(PAD).sum()),
                      "net_input": {"src_tokens": tokens, "src_lengths": tokens.ne(PAD).sum(1)}, "target": labels}
    hf_inputs = {"input_ids": tokens, "attention_mask": tokens.ne(PAD).long(), "labels": labels}
    return fairseq_sample, hf_inputs


def fixed_noise(shape, seed=5):
    return EPS * (2 * torch.rand(shape, generator=torch.Generator().manual_seed(seed)) - 1)


@pytest.fixture
def noise_given_to_fairseq(monkeypatch):
    """The plugin's R3F criterions draw their noise from random_noise(noise_type, eps): here it hands them the
    tensor ``noise[0]`` instead (set by the test before the criterion runs)."""
    noise = [None]
    monkeypatch.setattr(fairseq_r3f_criterion, "random_noise", lambda noise_type, eps: fixed(noise[0]))
    return noise


def hf_noise_sampler(noise):
    calls = []

    def sampler(token_embeddings):
        assert token_embeddings.shape == noise.shape, (token_embeddings.shape, noise.shape)
        calls.append(token_embeddings.shape)
        return noise

    return sampler, calls


# -- RoBERTa ----------------------------------------------------------------------------------------------------

ROBERTA_GRADIENTS = {  # fairseq name -> transformers name
    "encoder.sentence_encoder.embed_tokens.weight": "roberta.embeddings.word_embeddings.weight",
    f"classification_heads.{HEAD}.out_proj.weight": "classifier.out_proj.weight",
    f"classification_heads.{HEAD}.dense.weight": "classifier.dense.weight",
    "encoder.sentence_encoder.layers.0.self_attn.q_proj.weight": "roberta.encoder.layer.0.attention.self.query.weight",
}


def test_converted_roberta_gives_fairseqs_logits(tmp_path):
    task, model, _ = fairseq_roberta(tmp_path)
    sample, inputs = classification_batch(len(task.source_dictionary))
    hf = roberta_for_sequence_classification(model, head_name=HEAD)
    model.eval()
    with torch.no_grad():
        fairseq_logits = model(**sample["net_input"], features_only=True, classification_head_name=HEAD)[0]
        hf_logits = hf(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits
    assert relative_difference(hf_logits, fairseq_logits) < TOLERANCE
    assert hf.config.max_position_embeddings == 66 and hf.config.type_vocab_size == 1


def test_the_map_refuses_what_it_does_not_cover(tmp_path):
    _, model, _ = fairseq_roberta(tmp_path)
    with pytest.raises(ConversionError, match="no classification head 'other'.*it has: sentence_classification_head"):
        roberta_for_sequence_classification(model, head_name="other")
    state = dict(model.state_dict(), **{"encoder.sentence_encoder.layers.0.extra_gate.weight": torch.zeros(2)})
    with pytest.raises(ConversionError, match="no place for 1 fairseq weights.*layers.0.extra_gate.weight"):
        roberta_for_sequence_classification(state, model.args, head_name=HEAD)
    with pytest.raises(ConversionError, match="number of attention heads is not in the weights"):
        roberta_for_sequence_classification(model.state_dict(), None, head_name=HEAD)


@pytest.mark.parametrize("batched_forward", [False, True])
def test_r3f_loss_symm_kl_and_gradients_equal_the_plugins(tmp_path, noise_given_to_fairseq, batched_forward):
    flags = ["--r3f-batched-forward"] if batched_forward else []
    task, model, criterion = fairseq_roberta(tmp_path, "roberta_base", *flags)
    sample, inputs = classification_batch(len(task.source_dictionary))
    hf = roberta_for_sequence_classification(model, head_name=HEAD).train()
    model.train()
    noise = fixed_noise((*inputs["input_ids"].shape, model.args.encoder_embed_dim))

    # batched: both frameworks run one forward of 2B and draw noise for its second (noised) copy only
    noise_given_to_fairseq[0] = noise
    loss, sample_size, log = criterion(model, sample)
    (loss / sample_size).backward()
    sampler, calls = hf_noise_sampler(noise)
    hf_result = r3f_loss(hf, dict(inputs), r3f_lambda=LAMBDA, eps=EPS, noise_type="uniform", noise_sampler=sampler,
                         batched_forward=batched_forward)
    hf_result.loss.backward()

    assert calls, "the noise sampler was never called: the noise did not reach the transformers model"
    assert float(log["symm_kl"]) > 1e-4  # a term well above rounding, so that agreeing on it means something
    assert relative_difference(hf_result.symm_kl, log["symm_kl"]) < TOLERANCE
    assert relative_difference(hf_result.loss, loss / sample_size) < TOLERANCE
    fairseq_params, hf_params = dict(model.named_parameters()), dict(hf.named_parameters())
    for fairseq_name, hf_name in ROBERTA_GRADIENTS.items():
        difference = relative_difference(hf_params[hf_name].grad, fairseq_params[fairseq_name].grad)
        assert difference < TOLERANCE, (hf_name, difference)


def test_without_the_term_the_gradients_differ(tmp_path, noise_given_to_fairseq):
    """The comparison above can fail: the HF loss without its R3F term is measurably away from the plugin's."""
    task, model, criterion = fairseq_roberta(tmp_path)
    sample, inputs = classification_batch(len(task.source_dictionary))
    hf = roberta_for_sequence_classification(model, head_name=HEAD).train()
    noise_given_to_fairseq[0] = fixed_noise((*inputs["input_ids"].shape, model.args.encoder_embed_dim))
    loss, sample_size, _ = criterion(model.train(), sample)
    plain = hf(**inputs).loss
    assert relative_difference(plain, loss / sample_size) > 100 * TOLERANCE


def test_r4f_folded_logits_equal_the_plugins(tmp_path, noise_given_to_fairseq):
    """The plugin's R4F model (roberta_sn_base) after one R3F update, and the same start in transformers
    (a plain converted head, apply_r4f, the same update): their folded heads give the same logits, and a stock
    RobertaForSequenceClassification loads the fold."""
    task, model, criterion = fairseq_roberta(tmp_path, "roberta_sn_base")
    sample, inputs = classification_batch(len(task.source_dictionary))
    start = {k: v.clone() for k, v in model.state_dict().items() if not k.endswith(".u")}
    plain_start = roberta_for_sequence_classification(start, model.args, head_name=HEAD)
    hf = apply_r4f(plain_start)
    with torch.no_grad():
        start_logits = hf.eval()(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits
    hf.train()
    # fairseq has no token-type embedding: frozen at its zeros, the update is fairseq's
    hf.roberta.embeddings.token_type_embeddings.requires_grad_(False)
    model.train()
    noise = fixed_noise((*inputs["input_ids"].shape, model.args.encoder_embed_dim))
    noise_given_to_fairseq[0] = noise

    def update(parameters, loss):
        loss.backward()
        with torch.no_grad():
            for p in parameters:
                if p.requires_grad and p.grad is not None:
                    p -= 0.5 * p.grad
                    p.grad = None

    loss, sample_size, _ = criterion(model, sample)
    update(model.parameters(), loss / sample_size)
    update(hf.parameters(), r3f_loss(hf, dict(inputs), r3f_lambda=LAMBDA, eps=EPS, noise_type="uniform",
                                     noise_sampler=hf_noise_sampler(noise)[0]).loss)

    model.eval()
    with torch.no_grad():
        fairseq_logits = model(**sample["net_input"], features_only=True, classification_head_name=HEAD)[0]
    folded = fold_r4f(hf.eval())
    assert not any(name.endswith(".u") for name in folded.state_dict())
    with torch.no_grad():
        hf_logits = folded(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits
    assert relative_difference(hf_logits, fairseq_logits) < TOLERANCE
    # the plugin's own R4F checkpoint, converted (its head folded on the way), gives them too
    converted = roberta_for_sequence_classification(model, head_name=HEAD)
    with torch.no_grad():
        converted_logits = converted(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits
    assert relative_difference(converted_logits, fairseq_logits) < TOLERANCE
    # the update moved the logits: agreeing above is agreeing on the update
    assert relative_difference(start_logits, fairseq_logits) > 1e-3


# -- BART, with padding ----------------------------------------------------------------------------------------

def seq2seq_batch():
    """Two sources (7 and 4 tokens) and two targets (6 and 3 tokens), both right-padded (transformers numbers
    positions from the left whatever the padding; on fairseq's default left-padded sources the two models
    differ)."""
    generator = torch.Generator().manual_seed(4)
    words = lambda n: torch.randint(4, 40, (n,), generator=generator)  # noqa: E731
    src, target = torch.full((2, 7), PAD), torch.full((2, 6), PAD)
    for row, (source_length, target_length) in enumerate(((7, 6), (4, 3))):
        src[row, :source_length] = torch.cat([words(source_length - 1), torch.tensor([EOS])])
        target[row, :target_length] = torch.cat([words(target_length - 1), torch.tensor([EOS])])
    prev = torch.full_like(target, PAD)  # fairseq's decoder input: </s> then the target shifted right
    prev[:, 0] = EOS
    for row, length in enumerate((6, 3)):
        prev[row, 1:length] = target[row, : length - 1]
    fairseq_sample = {"id": torch.arange(2), "nsentences": 2, "ntokens": int(target.ne(PAD).sum()),
                      "net_input": {"src_tokens": src, "src_lengths": src.ne(PAD).sum(1), "prev_output_tokens": prev},
                      "target": target}
    hf_inputs = {"input_ids": src, "attention_mask": src.ne(PAD).long(),
                 "labels": target.masked_fill(target.eq(PAD), -100)}
    return fairseq_sample, hf_inputs


BART_GRADIENTS = {
    "encoder.embed_tokens.weight": "model.shared.weight",
    "encoder.layers.0.self_attn.q_proj.weight": "model.encoder.layers.0.self_attn.q_proj.weight",
    "decoder.layers.0.encoder_attn.v_proj.weight": "model.decoder.layers.0.encoder_attn.v_proj.weight",
}


def test_bart_seq2seq_with_padding_equals_the_plugins(noise_given_to_fairseq):
    task = tiny_seq2seq_task()
    model = tiny_seq2seq_model("bart_base", task)
    with torch.no_grad():  # outputs that depend on the source: a term well above the loss's rounding
        for p in model.parameters():
            if p.dim() > 1:
                p.mul_(8.0)
    sample, inputs = seq2seq_batch()
    hf = bart_for_conditional_generation(model).train()
    model.train()
    with torch.no_grad():
        fairseq_logits = model(**sample["net_input"])[0]
        hf_logits = hf(**inputs).logits
    real = sample["target"].ne(PAD)
    assert relative_difference(hf_logits[real], fairseq_logits[real]) < TOLERANCE

    eps = 1.0
    noise = eps * (2 * torch.rand((*inputs["input_ids"].shape, model.args.encoder_embed_dim),
                                  generator=torch.Generator().manual_seed(6)) - 1)
    noise_given_to_fairseq[0] = noise
    # lambda per target token, as the Trainer weighs its cross-entropy
    criterion = seq2seq_criterion(task, r3f_lambda=LAMBDA, eps=eps, noise_type="uniform", normalization="token",
                                  label_smoothing=0.0)
    loss, sample_size, log = criterion(model, sample)
    assert sample_size == sample["ntokens"] == 9
    (loss / sample_size).backward()
    sampler, calls = hf_noise_sampler(noise)
    hf_result = r3f_loss(hf, dict(inputs), r3f_lambda=LAMBDA, eps=eps, noise_type="uniform", noise_sampler=sampler)
    hf_result.loss.backward()

    assert len(calls) == 1  # the encoder's embeddings only: the decoder shares the matrix and stays clean
    assert float(log["symm_kl"]) > 1e-3
    assert relative_difference(hf_result.symm_kl, log["symm_kl"]) < TOLERANCE
    assert relative_difference(hf_result.loss, loss / sample_size) < TOLERANCE
    fairseq_params, hf_params = dict(model.named_parameters()), dict(hf.named_parameters())
    for fairseq_name, hf_name in BART_GRADIENTS.items():
        difference = relative_difference(hf_params[hf_name].grad, fairseq_params[fairseq_name].grad)
        assert difference < TOLERANCE, (hf_name, difference)
