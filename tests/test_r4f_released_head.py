"""R4F as released, in process: roberta_sn_outproj_* starts and iterates as fairseq's own
--spectral-norm-classification-head (torch's spectral_norm on out_proj, stored as weight_orig / weight_u / weight_v)
does, and a checkpoint of that flag loads into it with the same logits (torch's v kept); the plain R4F head keeps
its converged start; one normalised on every matrix is refused there."""

import pytest
import torch
import torch.nn.functional as F

from conftest import NO_DROPOUT, build_in_process, first_batch
from fairseq_r3f.export import fold_spectral_norms
from rxf.spectral_norm import SpectralNormLinear, TorchSpectralNormLinear, converged_u, folded_linear

HEAD = "sentence_classification_head"


def logits(model, sample):
    return model(**sample["net_input"], features_only=True, classification_head_name=HEAD)[0]


def models_built_under_one_seed(toy_task, seed=3):
    """fairseq's own --spectral-norm-classification-head model and roberta_sn_outproj_base, each built right after
    torch.manual_seed(seed), dropout off."""
    torch.manual_seed(seed)
    task, fairseq_sn, _ = build_in_process(toy_task, *NO_DROPOUT, "--spectral-norm-classification-head",
                                           criterion="sentence_prediction")
    torch.manual_seed(seed)
    _, released, _ = build_in_process(toy_task, *NO_DROPOUT, arch="roberta_sn_outproj_base",
                                      criterion="sentence_prediction")
    return task, fairseq_sn, released


def test_the_released_head_starts_and_iterates_as_torchs_spectral_norm(toy_task):
    task, fairseq_sn, released = models_built_under_one_seed(toy_task)
    sample = first_batch(task)
    torch_layer, ours = fairseq_sn.classification_heads[HEAD].out_proj, released.classification_heads[HEAD].out_proj
    assert isinstance(ours, TorchSpectralNormLinear)
    # the same random start, drawn where torch draws it (nothing else of the model moved)
    assert torch.equal(ours.weight, torch_layer.weight_orig)
    assert torch.equal(ours.u, torch_layer.weight_u) and torch.equal(ours.v, torch_layer.weight_v)
    assert abs(torch.dot(ours.u, converged_u(ours.weight))) < 0.999  # random, not the plain R4F's converged start
    fairseq_sn.train()
    released.train()
    with torch.no_grad():
        for _ in range(3):  # one power iteration per training forward, in torch's order
            torch.testing.assert_close(logits(released, sample), logits(fairseq_sn, sample), rtol=0, atol=1e-6)
            torch.testing.assert_close(ours.u, torch_layer.weight_u, rtol=0, atol=1e-7)
            torch.testing.assert_close(ours.v, torch_layer.weight_v, rtol=0, atol=1e-7)


def test_the_plain_r4f_head_keeps_its_converged_start(toy_task):
    torch.manual_seed(3)
    _, full, _ = build_in_process(toy_task, arch="roberta_sn_base", criterion="sentence_prediction")
    for layer in (full.classification_heads[HEAD].dense, full.classification_heads[HEAD].out_proj):
        assert type(layer) is SpectralNormLinear and not hasattr(layer, "v")
        torch.testing.assert_close(layer.u, converged_u(layer.weight), rtol=0, atol=0)


def test_a_checkpoint_of_fairseqs_flag_loads_with_the_same_logits(toy_task):
    task, fairseq_sn, _ = build_in_process(toy_task, *NO_DROPOUT, "--spectral-norm-classification-head",
                                           criterion="sentence_prediction")
    sample = first_batch(task)
    fairseq_sn.train()
    with torch.no_grad():
        for _ in range(2):  # u and v two steps from their random start, far from converged
            logits(fairseq_sn, sample)
    fairseq_sn.eval()
    state = fairseq_sn.state_dict()
    assert any(key.endswith("out_proj.weight_orig") for key in state)
    _, released, _ = build_in_process(toy_task, *NO_DROPOUT, arch="roberta_sn_outproj_base",
                                      criterion="sentence_prediction")
    released.load_state_dict(state, strict=True)  # fairseq's own models cannot (KeyError: out_proj.weight)
    released.eval()
    out_proj = released.classification_heads[HEAD].out_proj
    assert isinstance(out_proj, TorchSpectralNormLinear)
    assert torch.equal(out_proj.v, fairseq_sn.classification_heads[HEAD].out_proj.weight_v)  # torch's v, kept
    with torch.no_grad():
        torch.testing.assert_close(logits(released, sample), logits(fairseq_sn, sample), rtol=0, atol=1e-6)
        # and what it saves folds into a plain head with the same logits (fairseq_r3f.export)
        folded = {k: v.clone() for k, v in released.state_dict().items()}
        assert fold_spectral_norms(folded) == [f"classification_heads.{HEAD}.out_proj"]
        _, plain, _ = build_in_process(toy_task, *NO_DROPOUT, criterion="sentence_prediction")
        plain.load_state_dict(folded, strict=True)
        torch.testing.assert_close(logits(plain.eval(), sample), logits(released, sample), rtol=0, atol=1e-6)
        assert torch.equal(folded_linear(out_proj).weight, folded[f"classification_heads.{HEAD}.out_proj.weight"])


def test_a_released_head_saved_without_v_evaluates_as_before(toy_task):
    """A roberta_sn_outproj checkpoint of a version whose layer had no v (it evaluated with normalize(W^T u))."""
    task, _, released = models_built_under_one_seed(toy_task)
    sample = first_batch(task)
    state = released.state_dict()
    key = f"classification_heads.{HEAD}.out_proj"
    del state[f"{key}.v"]
    weight, u = state[f"{key}.weight"], state[f"{key}.u"]
    v_before = F.normalize(weight.t() @ u, dim=0)
    expected = weight / torch.dot(u, weight @ v_before)
    _, loaded, _ = build_in_process(toy_task, *NO_DROPOUT, arch="roberta_sn_outproj_base",
                                    criterion="sentence_prediction")
    loaded.upgrade_state_dict_named(state, "")
    loaded.load_state_dict(state, strict=True)
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval().classification_heads[HEAD].out_proj.normalized_weight(), expected,
                                   rtol=0, atol=1e-7)
        assert logits(loaded, sample).shape[0] == sample["nsentences"]


def test_a_fully_normalised_head_is_refused_by_the_out_proj_only_architecture(toy_task):
    _, full, _ = build_in_process(toy_task, arch="roberta_sn_base", criterion="sentence_prediction")
    _, released, _ = build_in_process(toy_task, arch="roberta_sn_outproj_base", criterion="sentence_prediction")
    with pytest.raises(ValueError, match="normalises dense, which this architecture"):
        released.load_state_dict(full.state_dict(), strict=True)
