"""BART with R4F's spectrally normalised classification heads: --arch bart_sn_base | bart_sn_large; as
released (fairseq's --spectral-norm-classification-head: out_proj only): bart_sn_outproj_base | _large."""

from fairseq.models import register_model, register_model_architecture
from fairseq.models.bart import BARTModel
from fairseq.models.bart.model import bart_base_architecture, bart_large_architecture

from fairseq_r3f.models.sn_head import OutProjNormalisedHeads, SpectrallyNormalisedHeads


@register_model("bart_sn")
class BARTSNModel(SpectrallyNormalisedHeads, BARTModel):
    pass


@register_model_architecture("bart_sn", "bart_sn_base")
def bart_sn_base_architecture(args):
    bart_base_architecture(args)


@register_model_architecture("bart_sn", "bart_sn_large")
def bart_sn_large_architecture(args):
    bart_large_architecture(args)


@register_model("bart_sn_outproj")
class BARTSNOutProjModel(OutProjNormalisedHeads, BARTModel):
    pass


@register_model_architecture("bart_sn_outproj", "bart_sn_outproj_base")
def bart_sn_outproj_base_architecture(args):
    bart_base_architecture(args)


@register_model_architecture("bart_sn_outproj", "bart_sn_outproj_large")
def bart_sn_outproj_large_architecture(args):
    bart_large_architecture(args)
