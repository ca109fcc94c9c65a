"""rxf.hf's noise and term on tiny transformers models built from configs (no download): for every supported family
the hook sits on the module the encoder calls, adds the noise to the raw token embeddings (before BART's
embed_scale, positions and LayerNorm: the noised forward equals a forward of the raw embeddings plus the noise),
fires once per noised forward and never on the decoder; a batch the hook cannot see is refused; a causal LM's term
compares the shifted rows; the doubled batch computes what two forwards compute; noise_kept sees bf16's rounding;
a PEFT LoRA model is hooked through its base model."""

import os
import subprocess
import sys

import pytest
import torch

from conftest import REPO

transformers = pytest.importorskip("transformers")

from rxf.divergence import symmetric_kl_autograd  # noqa: E402
from rxf.hf import r3f_loss  # noqa: E402
from rxf.hf.embeddings import token_embedding_module  # noqa: E402

VOCAB, PAD = 40, 1
# initializer_range 0.3 as init_std below: outputs that depend on the input enough for a KL above rounding
SMALL = dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, initializer_range=0.3)
NO_DROPOUT = dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
# init_std 0.3: a tiny BART at its default 0.02 barely depends on its source, and its KL is lost in rounding
SEQ2SEQ = dict(vocab_size=VOCAB, d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
               decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, max_position_embeddings=40,
               dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, pad_token_id=PAD, init_std=0.3)


def tiny(family: str, **overrides):
    """A freshly initialised tiny model of ``family`` in training mode (dropout off unless overridden)."""
    torch.manual_seed(0)
    t = transformers
    if family == "roberta":
        config = t.RobertaConfig(vocab_size=VOCAB, max_position_embeddings=40, pad_token_id=PAD, num_labels=3,
                                 **{**SMALL, **NO_DROPOUT, **overrides})
        model = t.RobertaForSequenceClassification(config)
    elif family == "bert":
        model = t.BertForSequenceClassification(t.BertConfig(vocab_size=VOCAB, max_position_embeddings=40,
                                                             num_labels=3, **{**SMALL, **NO_DROPOUT, **overrides}))
    elif family == "bert-token":
        model = t.BertForTokenClassification(t.BertConfig(vocab_size=VOCAB, max_position_embeddings=40, num_labels=3,
                                                          **{**SMALL, **NO_DROPOUT, **overrides}))
    elif family == "deberta-v2":
        model = t.DebertaV2ForSequenceClassification(t.DebertaV2Config(
            vocab_size=VOCAB, max_position_embeddings=40, num_labels=3, **{**SMALL, **NO_DROPOUT, **overrides}))
    elif family == "bart":
        model = t.BartForConditionalGeneration(t.BartConfig(scale_embedding=True, **{**SEQ2SEQ, **overrides}))
    elif family == "bart-classification":
        model = t.BartForSequenceClassification(t.BartConfig(num_labels=3, **{**SEQ2SEQ, **overrides}))
    elif family == "mbart":
        model = t.MBartForConditionalGeneration(t.MBartConfig(scale_embedding=True, **{**SEQ2SEQ, **overrides}))
    elif family == "t5":
        model = t.T5ForConditionalGeneration(t.T5Config(
            vocab_size=VOCAB, d_model=16, d_kv=8, d_ff=32, num_layers=1, num_decoder_layers=1, num_heads=2,
            dropout_rate=0.0, decoder_start_token_id=0, pad_token_id=0, **overrides))
    elif family == "gpt2":
        model = t.GPT2LMHeadModel(t.GPT2Config(vocab_size=VOCAB, n_embd=16, n_layer=1, n_head=2, n_positions=40,
                                               bos_token_id=0, eos_token_id=0, resid_pdrop=0.0, embd_pdrop=0.0,
                                               attn_pdrop=0.0, **overrides))
    elif family == "llama":
        model = t.LlamaForCausalLM(t.LlamaConfig(vocab_size=VOCAB, hidden_size=16, intermediate_size=32,
                                                 num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
                                                 max_position_embeddings=40, bos_token_id=0, eos_token_id=0,
                                                 pad_token_id=PAD, **overrides))
    else:
        raise ValueError(family)
    return model.train()


CLASSIFIERS = ("roberta", "bert", "deberta-v2", "bart-classification")
SEQ2SEQ_FAMILIES = ("bart", "mbart", "t5")
CAUSAL = ("gpt2", "llama")
FAMILIES = CLASSIFIERS + ("bert-token",) + SEQ2SEQ_FAMILIES + CAUSAL


def batch(family: str, rows: int = 3, length: int = 7, seed: int = 1):
    """Input ids (no padding), an attention mask and labels as transformers' collators give them (-100 where a
    target is padding)."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, VOCAB, (rows, length), generator=generator)
    if family == "bart-classification":
        ids[:, -1] = 2  # BART's classification head reads the last eos
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    if family in CLASSIFIERS:
        inputs["labels"] = torch.randint(0, 3, (rows,), generator=generator)
    elif family == "bert-token":
        labels = torch.randint(0, 3, (rows, length), generator=generator)
        labels[0, 5:] = -100
        inputs["labels"] = labels
    elif family in SEQ2SEQ_FAMILIES:
        labels = torch.randint(3, VOCAB, (rows, 5), generator=generator)
        labels[0, 3:] = -100
        inputs["labels"] = labels
    else:
        labels = ids.clone()
        labels[0, 4:] = -100
        inputs["labels"] = labels
    return inputs


def fixed_noise(scale: float):
    """Noise that depends only on each entry's own value: the same for an example in any batch."""
    return lambda embeddings: scale * torch.sin(1e3 * embeddings.detach().float())


def loss(model, inputs, **kwargs):
    settings = dict(r3f_lambda=1.0, eps=1e-5, noise_type="uniform")
    return r3f_loss(model, inputs, **{**settings, **kwargs})


@pytest.mark.parametrize("family", FAMILIES)
def test_the_hook_fires_on_the_module_the_encoder_calls_and_the_noise_changes_the_outputs(family):
    model = tiny(family)
    module = token_embedding_module(model)
    calls = []
    handle = module.register_forward_hook(lambda *_: calls.append(1))
    try:
        quiet = loss(model, batch(family), eps=0.0)
        noised = loss(model, batch(family), eps=0.5)
    finally:
        handle.remove()
    assert len(calls) == 4  # one clean and one noised forward each: the module is called once per forward
    assert quiet.symm_kl.item() == 0.0  # dropout off, no noise: the two forwards agree exactly
    assert noised.symm_kl.item() > 1e-4
    # the same task loss (the clean forward does not change), plus lambda x KL per item
    assert (noised.loss - quiet.loss).item() == pytest.approx(noised.symm_kl.item() / noised.items.item(), rel=1e-3)
    assert noised.noise_kept.item() == 1.0
    assert not module._forward_hooks  # nothing stays attached


@pytest.mark.parametrize("family", ["bart", "t5"])
def test_get_input_embeddings_is_a_module_the_encoder_never_calls(family):
    """Why the hook is not NEFTune's: on BART and T5 get_input_embeddings() is the shared module, which no forward
    calls, so noise hooked there is never added."""
    model = tiny(family)
    shared = model.get_input_embeddings()
    assert shared is not token_embedding_module(model)
    calls = []
    handle = shared.register_forward_hook(lambda *_: calls.append(1))
    try:
        model(**batch(family))
    finally:
        handle.remove()
    assert calls == []


# BartForSequenceClassification takes no inputs_embeds; BART's encoder is checked through the seq2seq model
@pytest.mark.parametrize("family", [f for f in FAMILIES if f != "bart-classification"])
def test_the_noise_is_added_to_the_raw_token_embeddings_before_scaling_positions_and_layer_norm(family):
    model = tiny(family)
    inputs = batch(family)
    noise = fixed_noise(1.0)
    captured = {}

    def sampler(embeddings):
        captured["raw"], captured["noise"] = embeddings.detach(), noise(embeddings)
        return captured["noise"]

    result = loss(model, inputs, noise_sampler=sampler)
    module = token_embedding_module(model)
    raw = torch.nn.functional.embedding(inputs["input_ids"], module.weight)
    assert torch.equal(captured["raw"], raw)  # unscaled, whatever the module's own scale
    scale = getattr(module, "embed_scale", 1.0)
    if family in ("bart", "mbart"):
        assert scale == 4.0  # sqrt(d_model): the scaling is in effect
    embeds = (raw + captured["noise"]) * scale
    reference = {k: v for k, v in inputs.items() if k not in ("input_ids", "labels")}
    if family in SEQ2SEQ_FAMILIES:
        reference["decoder_input_ids"] = model.prepare_decoder_input_ids_from_labels(labels=inputs["labels"])
    noised_logits = model(inputs_embeds=embeds, **reference).logits
    clean_logits = result.outputs.logits
    if family in CAUSAL:
        keep = inputs["labels"][:, 1:] != -100
        expected = symmetric_kl_autograd(clean_logits[:, :-1][keep], noised_logits[:, :-1][keep])
    elif family in SEQ2SEQ_FAMILIES + ("bert-token",):
        keep = inputs["labels"] != -100
        expected = symmetric_kl_autograd(clean_logits[keep], noised_logits[keep])
    else:
        expected = symmetric_kl_autograd(clean_logits, noised_logits)
    assert expected.item() > 1e-4
    assert result.symm_kl.item() == pytest.approx(expected.item(), rel=1e-4)


@pytest.mark.parametrize("family", SEQ2SEQ_FAMILIES)
def test_the_decoder_gets_the_same_clean_inputs_in_both_forwards(family):
    model = tiny(family)
    decoder_module = model.get_decoder().embed_tokens
    seen = []
    handle = decoder_module.register_forward_hook(lambda _m, args, out: seen.append((args[0], out.detach())))
    try:
        loss(model, batch(family), eps=0.5)
    finally:
        handle.remove()
    (clean_ids, clean_out), (noised_ids, noised_out) = seen
    assert torch.equal(clean_ids, noised_ids) and torch.equal(clean_out, noised_out)


def test_a_batch_the_hook_cannot_see_is_refused():
    model = tiny("roberta")
    inputs = batch("roberta")
    embeds = model.get_input_embeddings()(inputs.pop("input_ids"))
    with pytest.raises(RuntimeError, match="did not fire"):
        loss(model, {**inputs, "inputs_embeds": embeds})


def test_a_batch_without_labels_and_multi_label_outputs_are_refused():
    model = tiny("roberta")
    inputs = batch("roberta")
    with pytest.raises(ValueError, match="no 'labels'"):
        loss(model, {k: v for k, v in inputs.items() if k != "labels"})
    with pytest.raises(ValueError, match="categorical output distributions"):
        loss(model, {**inputs, "labels": torch.nn.functional.one_hot(inputs["labels"], 3).float()})


@pytest.mark.parametrize("family", ["roberta", "bart", "gpt2"])
def test_the_doubled_batch_computes_what_two_forwards_compute(family):
    model = tiny(family)
    inputs = batch(family)
    two = loss(model, inputs, noise_sampler=fixed_noise(0.3))
    one = loss(model, inputs, noise_sampler=fixed_noise(0.3), batched_forward=True)
    assert two.symm_kl.item() > 0
    assert one.symm_kl.item() == pytest.approx(two.symm_kl.item(), rel=1e-5)
    assert one.loss.item() == pytest.approx(two.loss.item(), rel=1e-6)
    grads = []
    for result in (two, one):
        model.zero_grad()
        result.loss.backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    assert (grads[0] - grads[1]).abs().max().item() <= 1e-5 * grads[0].abs().max().item()


def test_the_term_is_lambda_times_the_summed_kl_over_the_items():
    model = tiny("gpt2")
    inputs = batch("gpt2")
    items = (inputs["labels"][:, 1:] != -100).sum()
    with_term = loss(model, inputs, noise_sampler=fixed_noise(0.3), r3f_lambda=2.0)
    plain = model(**inputs).loss
    assert with_term.items.item() == items.item()
    assert (with_term.loss - plain).item() == pytest.approx(2.0 * with_term.symm_kl.item() / items.item(), rel=1e-5)
    across = loss(model, inputs, noise_sampler=fixed_noise(0.3), r3f_lambda=2.0, num_items_in_batch=4 * items)
    assert across.loss.item() == pytest.approx(with_term.loss.item() / 4, rel=1e-6)  # the whole accumulated batch's N


def test_noise_kept_says_how_much_of_the_noise_bf16_rounds_away():
    model = tiny("roberta")
    fp32 = loss(model, batch("roberta"), eps=1e-5)
    bf16 = loss(model.to(torch.bfloat16), batch("roberta"), eps=1e-5)
    assert fp32.noise_kept.item() > 0.99  # fp32 loses only noise below half an ulp of the entry
    assert bf16.noise_kept.item() < 0.5


def test_padding_tokens_are_not_counted_in_noise_kept():
    model = tiny("roberta")
    inputs = batch("roberta")
    inputs["attention_mask"][0, 4:] = 0
    result = loss(model.to(torch.bfloat16), inputs, eps=1e-5)
    assert int(result.stats.total) == (inputs["attention_mask"].sum() * 16).item()


def test_a_peft_lora_model_is_hooked_through_its_base_model():
    peft = pytest.importorskip("peft")
    base = tiny("roberta")
    model = peft.get_peft_model(base, peft.LoraConfig(task_type="SEQ_CLS", r=2, target_modules=["query", "value"]))
    assert token_embedding_module(model) is base.roberta.embeddings.word_embeddings
    result = loss(model, batch("roberta"), noise_sampler=fixed_noise(0.3))
    assert result.symm_kl.item() > 0
    result.loss.backward()
    lora = [p for name, p in model.named_parameters() if "lora_" in name]
    assert lora and all(p.grad is not None for p in lora)
    assert any(p.grad.abs().sum() > 0 for p in lora)


def test_importing_the_adapter_does_not_import_fairseq():
    code = ("import sys, rxf.hf, rxf.hf.embeddings, rxf.hf.loss, rxf.hf.r4f, rxf.hf.trainer\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('fairseq', 'fairseq_r3f')))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": REPO}, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "[]"


def test_noise_kept_under_autocast_counts_what_survives_its_cast():
    model = tiny("roberta")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = loss(model, batch("roberta"), eps=1e-5)
        assert token_embedding_module(model)(batch("roberta")["input_ids"]).dtype == torch.float32
    assert mixed.noise_kept.item() < 0.5
