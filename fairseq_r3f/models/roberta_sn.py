"""RoBERTa and XLM-R with R4F's spectrally normalised classification heads.

    --arch roberta_sn_base | roberta_sn_large   (XLM-R base/large checkpoints use these too)
    --arch roberta_sn_outproj_base | roberta_sn_outproj_large   R4F as released: only out_proj normalised,
                                                                as fairseq's --spectral-norm-classification-head

The encoder is RoBERTa's, unchanged: a published ``model.pt`` loads with --restore-file and the head is
created fresh.
"""

from fairseq.models import register_model, register_model_architecture
from fairseq.models.roberta import RobertaModel
from fairseq.models.roberta.model import base_architecture, roberta_large_architecture

from fairseq_r3f.models.sn_head import OutProjNormalisedHeads, SpectrallyNormalisedHeads


@register_model("roberta_sn")
class RobertaSNModel(SpectrallyNormalisedHeads, RobertaModel):
    pass


@register_model_architecture("roberta_sn", "roberta_sn_base")
def roberta_sn_base_architecture(args):
    base_architecture(args)


@register_model_architecture("roberta_sn", "roberta_sn_large")
def roberta_sn_large_architecture(args):
    roberta_large_architecture(args)


@register_model("roberta_sn_outproj")
class RobertaSNOutProjModel(OutProjNormalisedHeads, RobertaModel):
    pass


@register_model_architecture("roberta_sn_outproj", "roberta_sn_outproj_base")
def roberta_sn_outproj_base_architecture(args):
    base_architecture(args)


@register_model_architecture("roberta_sn_outproj", "roberta_sn_outproj_large")
def roberta_sn_outproj_large_architecture(args):
    roberta_large_architecture(args)
