"""The divergences between a model's outputs on clean and on perturbed inputs. Always computed in fp32 (or
in the inputs' precision when that is higher).

:func:`symmetric_kl` is the one R3F uses everywhere (through :func:`rxf.r3f.r3f_term`: the fairseq criterions
and the HuggingFace adapter alike). For generation it runs over the whole vocabulary at
every target position, so it is fused: forward and backward work through the rows in chunks, straight from
the two logit tensors, and keep nothing of size [rows x V] for the backward but those two tensors (which
stay in their own dtype: fp16/bf16 logits are never copied to fp32 as a whole). Plain autograd on the same
formula (:func:`symmetric_kl_autograd`, kept as the reference) keeps about six fp32 [rows x V] tensors.
"""

from typing import Optional

import torch
import torch.nn.functional as F

# Elements of one chunk (rows x V) worked on at once: a handful of temporaries of this size exist at a time,
# whatever the number of rows. On a GPU 16 MiB each (fp32), large enough that the per-chunk kernel launches do
# not count. On the CPU 1 MiB each: the chunk's several passes then run in the cache instead of main memory
# (448 x 50k fp32 logits, one thread: 0.26 s for forward and backward instead of 0.36 s with 16 MiB chunks).
CHUNK_ELEMENTS = 1 << 22
CPU_CHUNK_ELEMENTS = 1 << 18


def _compute_dtype(logits: torch.Tensor) -> torch.dtype:
    return torch.promote_types(logits.dtype, torch.float32)


def _rows(logits_p: torch.Tensor, logits_q: torch.Tensor, mask: Optional[torch.Tensor]):
    """Both logit tensors as [rows x V] (views where possible) and the mask as [rows] (or None)."""
    if logits_p.shape != logits_q.shape:
        raise ValueError(f"symmetric_kl needs two logit tensors of one shape, got {tuple(logits_p.shape)} and "
                         f"{tuple(logits_q.shape)}")
    if mask is not None and mask.shape != logits_p.shape[:-1]:
        raise ValueError(f"the mask must have the logits' leading shape {tuple(logits_p.shape[:-1])} (True = row "
                         f"counted), got {tuple(mask.shape)}")
    vocab = logits_p.size(-1)
    rows_mask = None if mask is None else mask.reshape(-1).to(torch.bool)
    return logits_p.reshape(-1, vocab), logits_q.reshape(-1, vocab), rows_mask


def _chunks(rows: int, vocab: int, chunk_rows: Optional[int], device=None):
    elements = CPU_CHUNK_ELEMENTS if device is not None and torch.device(device).type == "cpu" else CHUNK_ELEMENTS
    step = chunk_rows or max(1, elements // max(vocab, 1))
    return [(start, min(start + step, rows)) for start in range(0, rows, step)]


def _write_gradient(out: torch.Tensor, p, q, d, sign: float, scale, keep) -> None:
    """out <- scale * (g - p * sum(g)) per row, with g = p - q + sign * p * D; rows not in ``keep`` get 0.

    g - p * sum(g) is the backward of log-softmax. It removes any error proportional to p in a row of g, so the
    rounding of each row's normaliser (in p, q and D alike) cancels; written out term by term, it stays. Worked
    in ``out`` itself when it has the compute dtype: one temporary less per chunk."""
    g = out if out.dtype == p.dtype else torch.empty_like(p)
    torch.sub(p, q, out=g)
    g.addcmul_(p, d, value=sign)
    g.addcmul_(p, g.sum(dim=-1, keepdim=True), value=-1.0)
    g.mul_(scale)
    if keep is not None:
        # not a product with the mask: a padding row's logits may be anything, inf included
        torch.where(keep, g, torch.zeros((), dtype=g.dtype, device=g.device), out=g)
    if g is not out:
        out.copy_(g)


class _FusedSymmetricKL(torch.autograd.Function):
    """sum over kept rows of sum_v (p_v - q_v)(log p_v - log q_v), p = softmax(a), q = softmax(b).

    With D = log p - log q, per row: dS/da = p * (D - sum(p * D)) + p - q and dS/db = q * (sum(q * D) - D)
    + q - p (the mirror image: swapping a and b negates D). Forward keeps the two logit tensors and each row's
    log-normalisers (log Z, one number per row); backward recomputes p, q and D from them chunk by chunk and
    evaluates the gradients as g - p * sum(g) with g = p * D + p - q (equal, since sum(p - q) = 0), which is
    how log-softmax's own backward rounds. Every step works on one chunk of rows in place where it can: per
    chunk a handful of [rows x V] temporaries, and few passes over the memory (it is bandwidth-bound).
    """

    @staticmethod
    def forward(ctx, a, b, mask, chunk_rows):
        dtype = _compute_dtype(a)
        total = torch.zeros((), dtype=dtype, device=a.device)
        log_z = torch.empty(2, a.size(0), 1, dtype=dtype, device=a.device)
        for start, end in _chunks(a.size(0), a.size(1), chunk_rows, a.device):
            x, y = a[start:end].to(dtype), b[start:end].to(dtype)  # no copy when a, b have the compute dtype
            log_z_x = torch.logsumexp(x, dim=-1, keepdim=True, out=log_z[0, start:end])
            log_z_y = torch.logsumexp(y, dim=-1, keepdim=True, out=log_z[1, start:end])
            log_p, log_q = x - log_z_x, y - log_z_y
            del x, y
            d = log_p - log_q
            # exp is monotonic, so (p - q) and (log p - log q) never differ in sign: every term is >= 0
            per_row = log_p.exp_().sub_(log_q.exp_()).mul_(d).sum(dim=-1)
            if mask is not None:
                per_row = per_row.masked_fill(~mask[start:end], 0.0)
            total += per_row.sum()
        ctx.save_for_backward(a, b, mask, log_z)
        ctx.chunk_rows = chunk_rows
        return total

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_total):
        a, b, mask, log_z = ctx.saved_tensors
        need_a, need_b = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_a = torch.empty(a.shape, dtype=a.dtype, device=a.device) if need_a else None
        grad_b = torch.empty(b.shape, dtype=b.dtype, device=b.device) if need_b else None
        dtype = _compute_dtype(a)
        grad_total = grad_total.to(dtype)
        for start, end in _chunks(a.size(0), a.size(1), ctx.chunk_rows, a.device):
            x, y = a[start:end], b[start:end]
            log_z_x, log_z_y = log_z[0, start:end], log_z[1, start:end]
            # D as (x - y) - (log Z_x - log Z_y), not as a difference of two log-probabilities, each rounded
            # at the magnitude of log V: with the projection this keeps the gradient's error at 3e-7 (fp32, 50k)
            d = torch.sub(x, y) if x.dtype == dtype else x.to(dtype).sub_(y)
            d.sub_(log_z_x - log_z_y)
            p = torch.sub(x, log_z_x).exp_()  # x - log Z in the compute dtype (log Z has it): no copy of x first
            q = torch.sub(y, log_z_y).exp_()
            keep = None if mask is None else mask[start:end].unsqueeze(-1)
            if need_a:
                _write_gradient(grad_a[start:end], p, q, d, 1.0, grad_total, keep)
            if need_b:  # the mirror image: swapping a and b negates D
                _write_gradient(grad_b[start:end], q, p, d, -1.0, grad_total, keep)
        return grad_a, grad_b, None, None


def symmetric_kl(logits_p: torch.Tensor, logits_q: torch.Tensor, mask: Optional[torch.Tensor] = None,
                 chunk_rows: Optional[int] = None):
    """KL(p || q) + KL(q || p) between the categorical distributions given by two logit tensors (... x V),
    summed over all rows; ``mask`` (the leading dims, True = keep) leaves rows out, e.g. padding targets.

    Written as sum_v (p_v - q_v)(log p_v - log q_v): every term is >= 0, so the result is never negative
    (a difference of two ``kl_div`` calls can come out at -1e-9). Gradients flow into both arguments; masked
    rows get a zero gradient. Accumulated in fp32 whatever the logits' dtype (float64 stays float64).
    ``chunk_rows`` overrides how many rows are worked on at once (default: CHUNK_ELEMENTS // V, on the CPU
    CPU_CHUNK_ELEMENTS // V).
    """
    a, b, rows_mask = _rows(logits_p, logits_q, mask)
    if a.size(0) == 0:
        return (a.sum() + b.sum()).to(_compute_dtype(a))
    return _FusedSymmetricKL.apply(a, b, rows_mask, chunk_rows)


def symmetric_kl_autograd(logits_p: torch.Tensor, logits_q: torch.Tensor, mask: Optional[torch.Tensor] = None):
    """:func:`symmetric_kl` in plain autograd, as the criterions computed it before it was fused: the
    reference the fused version is tested and benchmarked against. It keeps two log-softmaxes, two
    probability tensors and their differences, all fp32 [rows x V], for the backward."""
    _rows(logits_p, logits_q, mask)
    dtype = _compute_dtype(logits_p)
    log_p = F.log_softmax(logits_p, dim=-1, dtype=dtype)
    log_q = F.log_softmax(logits_q, dim=-1, dtype=dtype)
    per_row = ((log_p.exp() - log_q.exp()) * (log_p - log_q)).sum(dim=-1)
    if mask is not None:
        per_row = per_row.masked_fill(~mask, 0.0)
    return per_row.sum()


def squared_difference(outputs_p: torch.Tensor, outputs_q: torch.Tensor):
    """The regression counterpart of :func:`symmetric_kl`, summed over all entries.

    A regression output y is read as the mean of N(y, 1); between two such Gaussians the symmetric KL is
    (y_p - y_q)^2 (each direction contributes half), so this term is the same quantity on the same scale.
    """
    return (outputs_p.float() - outputs_q.float()).pow(2).sum()
