"""R4F's 1-Lipschitz classification head: every weight matrix of the head spectrally normalised.

A RoBERTa/BART head is dense -> tanh -> out_proj (dropout around them, the identity at evaluation).
tanh is 1-Lipschitz, so dividing both matrices by their largest singular value makes the whole head
1-Lipschitz, as the paper's Eq. 5 asks. fairseq's --spectral-norm-classification-head only wraps out_proj.

:class:`SpectralNormLinear` keeps the raw matrix under the usual key ``weight`` and the power-iteration
vector in a buffer ``u``. torch's spectral_norm renames the matrix to ``weight_orig``; RoBERTa's and BART's
``upgrade_state_dict_named`` then find no ``out_proj.weight`` and every reload (resume, fairseq-validate,
the hub) fails with a KeyError. With ``weight`` kept, checkpoints load everywhere, and a checkpoint of a
plain head loads into a normalised one (``u`` is then computed from the loaded matrix, see
:func:`add_missing_power_iteration_vectors`).
"""

import torch
import torch.nn.functional as F
from torch import nn

# Power iterations for a fresh vector u (a new head, or a checkpoint without u); training then does one
# per forward, as in Miyato et al. (2018), which keeps u converged while the matrix moves slowly.
CONVERGENCE_ITERATIONS = 50


class SpectralNormLinear(nn.Linear):
    """A linear layer whose effective matrix is W / sigma(W), sigma from power iteration on ``u``."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        super().__init__(in_features, out_features, bias)
        self.register_buffer("u", self._converged_u(self.weight))

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> "SpectralNormLinear":
        if hasattr(linear, "weight_orig"):  # torch's spectral_norm, from fairseq's own flag
            raise ValueError(
                "--spectral-norm-classification-head cannot be combined with the *_sn_* architectures, which "
                "normalise every matrix of the head themselves: drop the flag"
            )
        if type(linear) is not nn.Linear:
            raise TypeError(f"expected an nn.Linear in the classification head, got {type(linear).__name__}")
        layer = cls(linear.in_features, linear.out_features, bias=linear.bias is not None)
        layer.weight = linear.weight
        layer.bias = linear.bias
        layer.u = cls._converged_u(linear.weight).to(linear.weight)
        return layer

    @staticmethod
    @torch.no_grad()
    def _converged_u(weight: torch.Tensor) -> torch.Tensor:
        w = weight.detach().float()
        generator = torch.Generator(device="cpu").manual_seed(0)  # keeps the model's RNG stream untouched
        u = F.normalize(torch.randn(w.size(0), generator=generator).to(w.device), dim=0)
        for _ in range(CONVERGENCE_ITERATIONS):
            u = F.normalize(w @ F.normalize(w.t() @ u, dim=0), dim=0)
        return u

    def sigma(self) -> torch.Tensor:
        """Largest singular value of ``weight``, differentiable in ``weight`` (u and v are constants).
        In training mode one power-iteration step first refines ``u``."""
        w = self.weight.float()
        with torch.no_grad():
            u = self.u.float()
            if self.training:
                u = F.normalize(w @ F.normalize(w.t() @ u, dim=0), dim=0)
                self.u.copy_(u)
            v = F.normalize(w.t() @ u, dim=0)
        return torch.dot(u, w @ v)

    def normalized_weight(self) -> torch.Tensor:
        return self.weight / self.sigma().to(self.weight.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.normalized_weight(), self.bias)



def add_missing_power_iteration_vectors(state_dict, prefix: str) -> None:
    """Gives every head matrix of a checkpoint without ``u`` (a plain, non-R4F head) the converged vector
    of its own matrix. Must run before RoBERTa's/BART's upgrade, which would otherwise fill in the ``u`` of
    the freshly initialised head, a vector for another matrix."""
    heads = prefix + "classification_heads."
    for key in list(state_dict):
        if key.startswith(heads) and key.endswith((".dense.weight", ".out_proj.weight")):
            u_key = key[: -len("weight")] + "u"
            if u_key not in state_dict:
                state_dict[u_key] = SpectralNormLinear._converged_u(state_dict[key]).to(state_dict[key])


def spectrally_normalise_head(head: nn.Module) -> nn.Module:
    """Replaces the head's ``dense`` and ``out_proj`` (RoBERTa and BART heads) by normalised layers."""
    head.dense = SpectralNormLinear.from_linear(head.dense)
    head.out_proj = SpectralNormLinear.from_linear(head.out_proj)
    return head


class SpectrallyNormalisedHeads:
    """Mixin for a fairseq model with ``classification_heads`` (RoBERTa, BART): every head it registers is
    spectrally normalised, and checkpoints of plain heads load into it."""

    def register_classification_head(self, name, num_classes=None, inner_dim=None, **kwargs):
        super().register_classification_head(name, num_classes, inner_dim, **kwargs)
        spectrally_normalise_head(self.classification_heads[name])

    def upgrade_state_dict_named(self, state_dict, name):
        add_missing_power_iteration_vectors(state_dict, name + "." if name else "")
        super().upgrade_state_dict_named(state_dict, name)
