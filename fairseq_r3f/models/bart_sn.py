"""BART with R4F's spectrally normalised classification heads: --arch bart_sn_base | bart_sn_large."""

from fairseq.models import register_model, register_model_architecture
from fairseq.models.bart import BARTModel
from fairseq.models.bart.model import bart_base_architecture, bart_large_architecture

from fairseq_r3f.models.sn_head import add_missing_power_iteration_vectors, spectrally_normalise_head


@register_model("bart_sn")
class BARTSNModel(BARTModel):
    def register_classification_head(self, name, num_classes=None, inner_dim=None, **kwargs):
        super().register_classification_head(name, num_classes, inner_dim, **kwargs)
        spectrally_normalise_head(self.classification_heads[name])

    def upgrade_state_dict_named(self, state_dict, name):
        add_missing_power_iteration_vectors(state_dict, name + "." if name else "")
        super().upgrade_state_dict_named(state_dict, name)


@register_model_architecture("bart_sn", "bart_sn_base")
def bart_sn_base_architecture(args):
    bart_base_architecture(args)


@register_model_architecture("bart_sn", "bart_sn_large")
def bart_sn_large_architecture(args):
    bart_large_architecture(args)
