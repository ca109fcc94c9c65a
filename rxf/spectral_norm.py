"""R4F's spectrally normalised linear layer, its power iteration and its fold.

:class:`SpectralNormLinear` applies W / sigma(W), with sigma the largest singular value of W estimated by power
iteration on a stored vector ``u`` (Miyato et al., 2018): one step per training forward, none in evaluation. It
keeps the raw matrix under the usual key ``weight`` and ``u`` in a buffer (torch's own spectral norm renames the
matrix, which neither fairseq's nor transformers' checkpoint loading expects). The layer is built from a loaded
``nn.Linear`` (:meth:`SpectralNormLinear.from_linear`), so that ``u`` is converged for the loaded matrix, not for
an initialisation that loading then overwrites.

:class:`TorchSpectralNormLinear` is the same layer computing what ``torch.nn.utils.spectral_norm`` computes
(fairseq's --spectral-norm-classification-head, R4F as released): random ``u`` and ``v`` at construction, one power
iteration per training forward in torch's order, sigma = u^T W v with the stored ``v``; it keeps ``weight``, ``u``
and ``v``.

The fold (:func:`folded_weight`, :func:`folded_linear`) is the matrix the layer applies at evaluation, W / sigma
with the stored ``u`` (and ``v``; no iteration), in a plain ``nn.Linear``: a model without this layer then computes
exactly what the normalised one did.
"""

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

# Power iterations for a fresh vector u (a new layer, or a checkpoint without u); training then does one
# per forward, as in Miyato et al. (2018), which keeps u converged while the matrix moves slowly.
CONVERGENCE_ITERATIONS = 50


@torch.no_grad()
def converged_u(weight: torch.Tensor) -> torch.Tensor:
    """The left singular vector of ``weight``'s largest singular value, by CONVERGENCE_ITERATIONS power iterations
    from a fixed start (fp32, on the weight's device)."""
    w = weight.detach().float()
    generator = torch.Generator(device="cpu").manual_seed(0)  # keeps the model's RNG stream untouched
    u = F.normalize(torch.randn(w.size(0), generator=generator).to(w.device), dim=0)
    for _ in range(CONVERGENCE_ITERATIONS):
        u = F.normalize(w @ F.normalize(w.t() @ u, dim=0), dim=0)
    return u


class SpectralNormLinear(nn.Linear):
    """A linear layer whose effective matrix is W / sigma(W), sigma from power iteration on ``u``."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        super().__init__(in_features, out_features, bias)
        self.register_buffer("u", converged_u(self.weight))

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> "SpectralNormLinear":
        """A normalised layer sharing ``linear``'s weight and bias, with ``u`` converged for that weight."""
        if hasattr(linear, "weight_orig") or hasattr(linear, "parametrizations"):
            raise ValueError(
                f"this {type(linear).__name__} is already spectrally normalised by torch's spectral norm: normalise "
                f"a layer once (remove torch's spectral norm, or leave this layer as it is)"
            )
        if type(linear) is not nn.Linear:
            raise TypeError(f"expected an nn.Linear to normalise, got {type(linear).__name__}")
        layer = cls(linear.in_features, linear.out_features, bias=linear.bias is not None)
        layer.weight = linear.weight
        layer.bias = linear.bias
        layer.u = converged_u(linear.weight).to(linear.weight)
        return layer

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


class TorchSpectralNormLinear(SpectralNormLinear):
    """:class:`SpectralNormLinear` as ``torch.nn.utils.spectral_norm`` (one power iteration, eps 1e-12) computes
    it, for R4F as its authors released it (fairseq's --spectral-norm-classification-head wraps out_proj in it):

    - start: ``u`` and ``v`` drawn N(0, 1) from torch's global generator and normalised, in that order, when the
      layer is made (:meth:`from_linear` draws nothing else, so a model built under a seed gets the vectors
      fairseq's flag gets under it), not converged;
    - training forward: v = normalize(W^T u), then u = normalize(W v), both stored, in the weight's dtype;
    - every forward: sigma = u^T W v with the stored ``v`` (at evaluation not recomputed from ``u``: a checkpoint
      of torch's layer gives torch's logits).
    """

    EPS = 1e-12  # torch's spectral_norm default

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> "TorchSpectralNormLinear":
        if hasattr(linear, "weight_orig") or hasattr(linear, "parametrizations"):
            raise ValueError(
                f"this {type(linear).__name__} is already spectrally normalised by torch's spectral norm: normalise "
                f"a layer once (remove torch's spectral norm, or leave this layer as it is)"
            )
        if type(linear) is not nn.Linear:
            raise TypeError(f"expected an nn.Linear to normalise, got {type(linear).__name__}")
        layer = cls.__new__(cls)  # no nn.Linear initialisation: it would draw from the generator before u and v
        nn.Module.__init__(layer)
        layer.in_features, layer.out_features = linear.in_features, linear.out_features
        layer.weight, layer.bias = linear.weight, linear.bias
        with torch.no_grad():
            weight = linear.weight
            u = F.normalize(weight.new_empty(weight.size(0)).normal_(0, 1), dim=0, eps=cls.EPS)
            v = F.normalize(weight.new_empty(weight.size(1)).normal_(0, 1), dim=0, eps=cls.EPS)
        layer.register_buffer("u", u)
        layer.register_buffer("v", v)
        return layer

    def sigma(self) -> torch.Tensor:
        """u^T W v, differentiable in W; in training mode after one power-iteration step, as torch takes it."""
        w = self.weight
        if self.training:
            with torch.no_grad():
                self.v.copy_(F.normalize(torch.mv(w.t(), self.u), dim=0, eps=self.EPS))
                self.u.copy_(F.normalize(torch.mv(w, self.v), dim=0, eps=self.EPS))
        # copies, as torch takes them: the next forward's in-place update must not reach this graph
        return torch.dot(self.u.clone(), torch.mv(w, self.v.clone()))


def folded_weight(weight: torch.Tensor, u: torch.Tensor, v: Optional[torch.Tensor] = None) -> torch.Tensor:
    """W / sigma exactly as a :class:`SpectralNormLinear` with this ``weight`` and ``u`` applies it at evaluation;
    with ``v`` (a :class:`TorchSpectralNormLinear`'s, or torch's ``weight_v``), as that layer does."""
    if v is not None:
        with torch.no_grad():
            return (weight / torch.dot(u, torch.mv(weight, v))).clone()
    layer = SpectralNormLinear(weight.size(1), weight.size(0), bias=False)
    layer.weight.data, layer.u = weight, u
    with torch.no_grad():
        return layer.eval().normalized_weight().clone()


def folded_linear(layer: SpectralNormLinear) -> nn.Linear:
    """A plain ``nn.Linear`` computing what ``layer`` computes at evaluation (its matrix W / sigma, its bias), on
    the layer's device and in its dtype."""
    plain = nn.Linear(layer.in_features, layer.out_features, bias=layer.bias is not None,
                      device=layer.weight.device, dtype=layer.weight.dtype)
    with torch.no_grad():
        plain.weight.copy_(folded_weight(layer.weight.detach(), layer.u, getattr(layer, "v", None)))
        if layer.bias is not None:
            plain.bias.copy_(layer.bias)
    plain.train(layer.training)
    return plain
