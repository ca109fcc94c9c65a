"""RoBERTa and XLM-R with R4F's spectrally normalised classification heads.

    --arch roberta_sn_base | roberta_sn_large   (XLM-R base/large checkpoints use these too)

The encoder is RoBERTa's, unchanged: a published ``model.pt`` loads with --restore-file and the head is
created fresh.
"""

from fairseq.models import register_model, register_model_architecture
from fairseq.models.roberta import RobertaModel
from fairseq.models.roberta.model import base_architecture, roberta_large_architecture

from fairseq_r3f.models.sn_head import SpectrallyNormalisedHeads


@register_model("roberta_sn")
class RobertaSNModel(SpectrallyNormalisedHeads, RobertaModel):
    pass


@register_model_architecture("roberta_sn", "roberta_sn_base")
def roberta_sn_base_architecture(args):
    base_architecture(args)


@register_model_architecture("roberta_sn", "roberta_sn_large")
def roberta_sn_large_architecture(args):
    roberta_large_architecture(args)
