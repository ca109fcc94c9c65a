"""RoBERTa and XLM-R with R4F's spectrally normalised classification heads.

    --arch roberta_sn_base | roberta_sn_large   (XLM-R base/large checkpoints use these too)

The encoder is RoBERTa's, unchanged: a published ``model.pt`` loads with --restore-file and the head is
created fresh.
"""

from fairseq.models import register_model, register_model_architecture
from fairseq.models.roberta import RobertaModel
from fairseq.models.roberta.model import base_architecture, roberta_large_architecture

from fairseq_r3f.models.sn_head import add_missing_power_iteration_vectors, spectrally_normalise_head


@register_model("roberta_sn")
class RobertaSNModel(RobertaModel):
    def register_classification_head(self, name, num_classes=None, inner_dim=None, **kwargs):
        super().register_classification_head(name, num_classes, inner_dim, **kwargs)
        spectrally_normalise_head(self.classification_heads[name])

    def upgrade_state_dict_named(self, state_dict, name):
        add_missing_power_iteration_vectors(state_dict, name + "." if name else "")
        super().upgrade_state_dict_named(state_dict, name)


@register_model_architecture("roberta_sn", "roberta_sn_base")
def roberta_sn_base_architecture(args):
    base_architecture(args)


@register_model_architecture("roberta_sn", "roberta_sn_large")
def roberta_sn_large_architecture(args):
    roberta_large_architecture(args)
