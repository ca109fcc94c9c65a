"""R4F as released, in process: a head normalised by fairseq's own --spectral-norm-classification-head (torch's
spectral_norm on out_proj, stored as weight_orig / weight_u / weight_v) loads into roberta_sn_outproj_* and
gives the same logits; one normalised on every matrix is refused there."""

import pytest
import torch

from conftest import build_in_process, first_batch
from rxf.spectral_norm import SpectralNormLinear

HEAD = "sentence_classification_head"


def logits(model, sample):
    return model(**sample["net_input"], features_only=True, classification_head_name=HEAD)[0]


def test_a_checkpoint_of_fairseqs_flag_loads_with_the_same_logits(toy_task):
    task, fairseq_sn, _ = build_in_process(toy_task, "--spectral-norm-classification-head",
                                           criterion="sentence_prediction")
    sample = first_batch(task)
    out_proj = fairseq_sn.classification_heads[HEAD].out_proj
    with torch.no_grad():  # a clear gap between the two singular values: power iteration converges in a few steps
        out_proj.weight_orig[0] *= 4  # (a random 2-row matrix can have almost equal ones, converging very slowly)
    fairseq_sn.train()
    for _ in range(20):  # let torch's power iteration converge, as training does
        logits(fairseq_sn, sample)
    u = out_proj.weight_u.clone()
    logits(fairseq_sn, sample)
    torch.testing.assert_close(out_proj.weight_u, u, rtol=0, atol=1e-6)  # converged: the loaded u is a fixed point
    fairseq_sn.eval()
    state = fairseq_sn.state_dict()
    assert any(key.endswith("out_proj.weight_orig") for key in state)
    _, released, _ = build_in_process(toy_task, arch="roberta_sn_outproj_base", criterion="sentence_prediction")
    released.load_state_dict(state, strict=True)  # fairseq's own models cannot (KeyError: out_proj.weight)
    released.eval()
    assert isinstance(released.classification_heads[HEAD].out_proj, SpectralNormLinear)
    with torch.no_grad():
        torch.testing.assert_close(logits(released, sample), logits(fairseq_sn, sample), rtol=1e-4, atol=1e-5)


def test_a_fully_normalised_head_is_refused_by_the_out_proj_only_architecture(toy_task):
    _, full, _ = build_in_process(toy_task, arch="roberta_sn_base", criterion="sentence_prediction")
    _, released, _ = build_in_process(toy_task, arch="roberta_sn_outproj_base", criterion="sentence_prediction")
    with pytest.raises(ValueError, match="normalises dense, which this architecture"):
        released.load_state_dict(full.state_dict(), strict=True)
