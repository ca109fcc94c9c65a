"""fairseq RoBERTa / XLM-R and BART weights as transformers models, key by key.

    python -m rxf.hf.convert roberta CHECKPOINT.pt OUT_DIR [--head-name NAME]   # RobertaForSequenceClassification
    python -m rxf.hf.convert bart CHECKPOINT.pt OUT_DIR                          # BartForConditionalGeneration

transformers' own conversion script for RoBERTa targets fairseq < 0.10 and no longer runs on later fairseqs, so
the map is written out here, and checked: every weight of the fairseq model is either placed or named as left
out on purpose (the masked-LM head, fairseq's bookkeeping buffers), and every weight of the transformers model
is filled; anything else stops the conversion with the keys named. A fine-tuned checkpoint's logits are then the
fairseq model's (tests/test_hf_equivalence.py compares logits, losses, the R3F term and gradients).

What the map relies on (and checks where it can):
- RoBERTa: post-LayerNorm layers (fairseq's ``encoder_normalize_before`` off, as in every released RoBERTa and
  XLM-R), no embedding scale, GELU, a tanh classification head. transformers' RoBERTa adds a token-type
  embedding fairseq has not: one type, zeroed (Trainer trains it like any weight; to fine-tune exactly fairseq's
  function, freeze it: ``model.roberta.embeddings.token_type_embeddings.requires_grad_(False)``). Its position
  ids are fairseq's (the padding index plus the running count of real tokens), so ``max_position_embeddings`` is
  fairseq's number of position rows.
- BART: transformers numbers positions from 2 whatever the padding, fairseq counts real tokens from 2: the two
  agree on right-padded batches (what transformers' tokenizers give), not on fairseq's left-padded sources.
  One ``max_position_embeddings`` for encoder and decoder, so fairseq's two maxima must be equal.
- R4F heads (``roberta_sn_*``: a ``u`` next to a head matrix) are folded into plain matrices, W / sigma with the
  stored ``u`` (:func:`rxf.spectral_norm.folded_weight`): the result is a stock model, with the logits the R4F
  model gives in evaluation. ``rxf.hf.apply_r4f`` normalises the head again to go on training with R4F.

The fairseq side is read from a state dict and its model settings (a checkpoint's ``cfg["model"]`` or
``args``, a fairseq model's ``args``: anything with the fields as attributes or keys); fairseq itself is not
imported.
"""

import argparse
import re
import sys
from typing import Any, Dict, Iterable, Mapping, Optional, Tuple

import torch
from transformers import BartConfig, BartForConditionalGeneration, RobertaConfig, RobertaForSequenceClassification

from rxf.spectral_norm import folded_weight

DEFAULT_HEAD = "sentence_classification_head"  # fairseq's --classification-head-name default
ROBERTA_ENCODER = "encoder.sentence_encoder."
# fairseq's index of <pad>, <s> and </s> in every RoBERTa, XLM-R and BART dictionary
PAD, BOS, EOS = 1, 0, 2

# per-layer names, fairseq -> transformers RoBERTa (under roberta.encoder.layer.N.)
ROBERTA_LAYER = {
    "self_attn.q_proj": "attention.self.query",
    "self_attn.k_proj": "attention.self.key",
    "self_attn.v_proj": "attention.self.value",
    "self_attn.out_proj": "attention.output.dense",
    "self_attn_layer_norm": "attention.output.LayerNorm",
    "fc1": "intermediate.dense",
    "fc2": "output.dense",
    "final_layer_norm": "output.LayerNorm",
}
# fairseq 0.12.2's BetterTransformer copies of a layer's weights (re-derived from the real ones at load) and
# fairseq's version counters: nothing of the model
_BOOKKEEPING = re.compile(r"(^|\.)(version|_float_tensor|(in_proj|out_proj|fc1|fc2)_(weight|bias))$")


class ConversionError(ValueError):
    """A fairseq model this map does not cover, or weights that do not fit it."""


def _setting(settings: Any, name: str, default: Any = None) -> Any:
    if settings is None:
        return default
    if isinstance(settings, Mapping):
        return settings.get(name, default)
    return getattr(settings, name, default)


def _model_settings(settings: Any) -> Any:
    """A checkpoint's ``cfg`` holds the model's settings under ``model``; legacy ones under ``args``."""
    for key in ("model", "args"):
        inner = _setting(settings, key)
        if inner is not None and _setting(inner, "arch") is not None:
            return inner
    return settings


def _state_and_settings(model_or_state: Any, settings: Any) -> Tuple[Dict[str, torch.Tensor], Any]:
    if isinstance(model_or_state, torch.nn.Module):
        state = model_or_state.state_dict()
        settings = settings if settings is not None else getattr(model_or_state, "args", None)
    else:
        state = dict(model_or_state)
    return {k: v.detach() for k, v in state.items()}, _model_settings(settings)


def _refuse_unused(state: Dict[str, torch.Tensor], used: Iterable[str], left_out: Iterable[str], what: str) -> None:
    rest = sorted(set(state) - set(used) - set(left_out))
    if rest:
        shown = ", ".join(rest[:8]) + (f" and {len(rest) - 8} more" if len(rest) > 8 else "")
        raise ConversionError(f"{what}: the map has no place for {len(rest)} fairseq weights ({shown}); this model is "
                              f"not of the layout the map covers")


def _require(settings: Any, name: str, expected: Any, what: str) -> None:
    value = _setting(settings, name, expected)
    if value != expected:
        raise ConversionError(f"{what}: fairseq's {name} is {value!r}; the transformers model computes the "
                              f"{expected!r} case only")


def _folded_head_weight(state: Dict[str, torch.Tensor], layer: str) -> Tuple[torch.Tensor, list]:
    """The matrix a head layer applies at evaluation: its weight, or W / sigma where R4F stored a ``u``."""
    weight = state[layer + ".weight"]
    if layer + ".u" not in state:
        return weight, []
    return folded_weight(weight, state[layer + ".u"]), [layer + ".u"]


def _load_strictly(model: torch.nn.Module, hf_state: Dict[str, torch.Tensor], what: str) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(hf_state))
    unexpected = sorted(set(hf_state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(hf_state) if expected[k].shape != hf_state[k].shape)
    if missing or unexpected or wrong:
        raise ConversionError(f"{what}: the converted weights do not fit the transformers model (missing: "
                              f"{missing or 'none'}; unexpected: {unexpected or 'none'}; of another shape: "
                              f"{wrong or 'none'})")
    model.load_state_dict(hf_state, strict=True)


# -- RoBERTa / XLM-R -> RobertaForSequenceClassification --------------------------------------------------------

def roberta_config(model_or_state: Any, settings: Any = None, head_name: str = DEFAULT_HEAD) -> RobertaConfig:
    """The RobertaConfig of a fairseq RoBERTa or XLM-R with the classification head ``head_name``: sizes from the
    weights, heads, activation and dropout from ``settings``."""
    state, settings = _state_and_settings(model_or_state, settings)
    what = "RoBERTa conversion"
    _require(settings, "encoder_normalize_before", False, what)
    _require(settings, "activation_fn", "gelu", what)
    _require(settings, "pooler_activation_fn", "tanh", what)
    heads = _setting(settings, "encoder_attention_heads")
    if heads is None:
        raise ConversionError(f"{what}: the number of attention heads is not in the weights; pass the model's settings "
                              f"(a checkpoint's cfg['model'] or args, or the fairseq model itself)")
    head = f"classification_heads.{head_name}."
    if head + "out_proj.bias" not in state:
        names = sorted({k.split(".")[1] for k in state if k.startswith("classification_heads.")})
        raise ConversionError(f"{what}: the fairseq model has no classification head {head_name!r} (it has: "
                              f"{', '.join(names) or 'none'}); pass head_name=")
    vocab, width = state[ROBERTA_ENCODER + "embed_tokens.weight"].shape
    layers = len({k.split(".")[3] for k in state if k.startswith(ROBERTA_ENCODER + "layers.")})
    return RobertaConfig(
        vocab_size=vocab, hidden_size=width, num_hidden_layers=layers, num_attention_heads=int(heads),
        intermediate_size=state[ROBERTA_ENCODER + "layers.0.fc1.weight"].shape[0], hidden_act="gelu",
        max_position_embeddings=state[ROBERTA_ENCODER + "embed_positions.weight"].shape[0], type_vocab_size=1,
        layer_norm_eps=1e-5, pad_token_id=PAD, bos_token_id=BOS, eos_token_id=EOS,
        num_labels=state[head + "out_proj.bias"].shape[0],
        hidden_dropout_prob=float(_setting(settings, "dropout", 0.1)),
        attention_probs_dropout_prob=float(_setting(settings, "attention_dropout", 0.1)),
        classifier_dropout=float(_setting(settings, "pooler_dropout", 0.0)),
    )


def roberta_state_dict(model_or_state: Any, head_name: str = DEFAULT_HEAD) -> Dict[str, torch.Tensor]:
    """The weights of a fairseq RoBERTa / XLM-R with head ``head_name`` under RobertaForSequenceClassification's
    keys (an R4F head folded). The masked-LM head and the other classification heads are left out."""
    state, _ = _state_and_settings(model_or_state, None)
    e, head = ROBERTA_ENCODER, f"classification_heads.{head_name}."
    out = {
        "roberta.embeddings.word_embeddings.weight": state[e + "embed_tokens.weight"],
        "roberta.embeddings.position_embeddings.weight": state[e + "embed_positions.weight"],
        "roberta.embeddings.LayerNorm.weight": state[e + "layernorm_embedding.weight"],
        "roberta.embeddings.LayerNorm.bias": state[e + "layernorm_embedding.bias"],
        "roberta.embeddings.token_type_embeddings.weight": state[e + "embed_tokens.weight"].new_zeros(
            1, state[e + "embed_tokens.weight"].shape[1]),
    }
    used = {e + name for name in ("embed_tokens.weight", "embed_positions.weight", "layernorm_embedding.weight",
                                  "layernorm_embedding.bias")}
    for key, value in state.items():
        match = re.match(re.escape(e) + r"layers\.(\d+)\.(.+)\.(weight|bias)$", key)
        if match and match.group(2) in ROBERTA_LAYER:
            layer, name, kind = match.groups()
            out[f"roberta.encoder.layer.{layer}.{ROBERTA_LAYER[name]}.{kind}"] = value
            used.add(key)
    for layer in ("dense", "out_proj"):
        weight, extra = _folded_head_weight(state, head + layer)
        out[f"classifier.{layer}.weight"] = weight
        out[f"classifier.{layer}.bias"] = state[head + layer + ".bias"]
        used.update([head + layer + ".weight", head + layer + ".bias", *extra])
    left_out = [k for k in state if k.startswith("encoder.lm_head.") or _BOOKKEEPING.search(k)
                or (k.startswith("classification_heads.") and not k.startswith(head))]
    _refuse_unused(state, used, left_out, "RoBERTa conversion")
    return out


def roberta_for_sequence_classification(model_or_state: Any, settings: Any = None, head_name: str = DEFAULT_HEAD
                                        ) -> RobertaForSequenceClassification:
    """A fairseq RoBERTa / XLM-R model (or its state dict with ``settings``) with its classification head
    ``head_name`` as a RobertaForSequenceClassification with the same weights, in evaluation mode."""
    config = roberta_config(model_or_state, settings, head_name)
    model = RobertaForSequenceClassification(config)
    _load_strictly(model, roberta_state_dict(model_or_state, head_name), "RoBERTa conversion")
    return model.eval()


# -- BART -> BartForConditionalGeneration ----------------------------------------------------------------------

def bart_config(model_or_state: Any, settings: Any = None) -> BartConfig:
    """The BartConfig of a fairseq BART (shared embeddings, post-LayerNorm, no embedding scale, GELU)."""
    state, settings = _state_and_settings(model_or_state, settings)
    what = "BART conversion"
    for name in ("encoder_normalize_before", "decoder_normalize_before"):
        _require(settings, name, False, what)
    _require(settings, "no_scale_embedding", True, what)
    _require(settings, "activation_fn", "gelu", what)
    for side in ("encoder", "decoder"):
        if _setting(settings, f"{side}_attention_heads") is None:
            raise ConversionError(f"{what}: the number of {side} attention heads is not in the weights; pass the "
                                  f"model's settings (a checkpoint's cfg['model'] or args, or the fairseq model)")
    if not torch.equal(state["encoder.embed_tokens.weight"], state["decoder.embed_tokens.weight"]):
        raise ConversionError(f"{what}: the encoder's and the decoder's embeddings differ; transformers' BART shares "
                              f"one matrix (fairseq's --share-all-embeddings)")
    rows = {side: state[f"{side}.embed_positions.weight"].shape[0] for side in ("encoder", "decoder")}
    if rows["encoder"] != rows["decoder"]:
        raise ConversionError(f"{what}: {rows['encoder']} encoder and {rows['decoder']} decoder position rows; "
                              f"transformers' BART has one max_position_embeddings for both")
    vocab, width = state["encoder.embed_tokens.weight"].shape

    def layers(side):
        return len({k.split(".")[2] for k in state if k.startswith(f"{side}.layers.")})

    return BartConfig(
        vocab_size=vocab, d_model=width, encoder_layers=layers("encoder"), decoder_layers=layers("decoder"),
        encoder_attention_heads=int(_setting(settings, "encoder_attention_heads")),
        decoder_attention_heads=int(_setting(settings, "decoder_attention_heads")),
        encoder_ffn_dim=state["encoder.layers.0.fc1.weight"].shape[0],
        decoder_ffn_dim=state["decoder.layers.0.fc1.weight"].shape[0],
        # fairseq's learned positions hold max + padding index + 1 rows, transformers' max + 2 (its offset)
        max_position_embeddings=rows["encoder"] - 2, activation_function="gelu", scale_embedding=False,
        pad_token_id=PAD, bos_token_id=BOS, eos_token_id=EOS, decoder_start_token_id=EOS, forced_eos_token_id=EOS,
        dropout=float(_setting(settings, "dropout", 0.1)),
        attention_dropout=float(_setting(settings, "attention_dropout", 0.0)),
        activation_dropout=float(_setting(settings, "activation_dropout", 0.0)),
        encoder_layerdrop=0.0, decoder_layerdrop=0.0, tie_word_embeddings=True,
    )


def bart_state_dict(model_or_state: Any) -> Dict[str, torch.Tensor]:
    """The weights of a fairseq BART under BartForConditionalGeneration's keys. Its layers carry fairseq's own
    names there; the shared embedding goes to ``shared``, both embed_tokens and ``lm_head``."""
    state, _ = _state_and_settings(model_or_state, None)
    embedding = state["encoder.embed_tokens.weight"]
    out = {name: embedding for name in ("model.shared.weight", "model.encoder.embed_tokens.weight",
                                        "model.decoder.embed_tokens.weight", "lm_head.weight")}
    out["final_logits_bias"] = embedding.new_zeros(1, embedding.shape[0])
    used = {"encoder.embed_tokens.weight", "decoder.embed_tokens.weight"}
    if "decoder.output_projection.weight" in state:
        if not torch.equal(state["decoder.output_projection.weight"], embedding):
            raise ConversionError("BART conversion: the output projection is not the embedding matrix; transformers' "
                                  "BART ties them (fairseq's --share-decoder-input-output-embed)")
        used.add("decoder.output_projection.weight")
    for key, value in state.items():
        if key in used or _BOOKKEEPING.search(key):
            continue
        if re.match(r"(encoder|decoder)\.(embed_positions\.weight|layernorm_embedding\.|layers\.\d+\.)", key):
            out["model." + key] = value
            used.add(key)
    left_out = [k for k in state if _BOOKKEEPING.search(k)]
    _refuse_unused(state, used, left_out, "BART conversion")
    return out


def bart_for_conditional_generation(model_or_state: Any, settings: Any = None) -> BartForConditionalGeneration:
    """A fairseq BART model (or its state dict with ``settings``) as a BartForConditionalGeneration with the same
    weights, in evaluation mode."""
    config = bart_config(model_or_state, settings)
    model = BartForConditionalGeneration(config)
    _load_strictly(model, bart_state_dict(model_or_state), "BART conversion")
    return model.eval()


# -- command line ----------------------------------------------------------------------------------------------

def load_fairseq_checkpoint(path: str) -> Tuple[Dict[str, torch.Tensor], Any]:
    """(model state dict, model settings) of a fairseq checkpoint file, loaded weights-only: besides tensors and
    containers a fairseq checkpoint holds its settings as an argparse.Namespace, allowed for this load only."""
    safe_globals = getattr(torch.serialization, "safe_globals", None)
    if safe_globals is None:  # torch < 2.5 has no allow-list context (and no weights-only default)
        state = torch.load(path, map_location="cpu")
    else:
        with safe_globals([argparse.Namespace]):
            state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or "model" not in state:
        raise ConversionError(f"{path} is not a fairseq checkpoint: it has no 'model' state")
    settings = state.get("cfg") or {"args": state.get("args")}
    return state["model"], settings


def main(argv: Optional[list] = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m rxf.hf.convert", description=__doc__.split("\n\n")[0])
    parser.add_argument("family", choices=("roberta", "bart"),
                        help="roberta: RoBERTa / XLM-R with a classification head -> RobertaForSequenceClassification; "
                        "bart: BART -> BartForConditionalGeneration")
    parser.add_argument("checkpoint", help="a fairseq checkpoint (checkpoint_best.pt, model.pt)")
    parser.add_argument("out_dir", help="where save_pretrained writes the transformers model")
    parser.add_argument("--head-name", default=DEFAULT_HEAD, help="roberta: the classification head to convert")
    args = parser.parse_args(argv)
    state, settings = load_fairseq_checkpoint(args.checkpoint)
    try:
        model = (roberta_for_sequence_classification(state, settings, args.head_name) if args.family == "roberta"
                 else bart_for_conditional_generation(state, settings))
    except ConversionError as error:
        raise SystemExit(f"{args.checkpoint}: {error}") from None
    model.save_pretrained(args.out_dir)
    print(f"{type(model).__name__} written to {args.out_dir}", file=sys.stderr)


if __name__ == "__main__":
    main()
