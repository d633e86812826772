"""PACT: a ReLU with a learnable clipping level alpha, quantized to k bits (Choi et al. 2018).

    y   = clip(x, 0, alpha)
    y_q = round(y * (2^k - 1) / alpha) * alpha / (2^k - 1)        (2^k levels from 0 to alpha)

Gradients (the paper's straight-through estimator):
    d y_q / d x     = 1 if 0 <= x < alpha, else 0
    d y_q / d alpha = 1 if x >= alpha,     else 0
So alpha grows when clipping the large activations hurts the loss; an L2 penalty on alpha
(`pact_alpha_l2`, times a small lambda) pulls it back down so the k-bit grid stays fine.

The alpha-gradient is PACT's simplification: it treats the whole quantizer as the identity inside
the range. Applying the STE to round() alone (and differentiating the scale alpha / (2^k - 1))
gives in-range elements the gradient (y_q - x) / alpha as well; LSQ (Esser et al. 2020) keeps
that term for its learned step size. `pact_backward_reference` is the backward written with two
plain masks; `_PACTFunction` computes the same with fused kernels (`_pact_backward_fused`).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .primitives import FLOAT_BITS, validate_bits


_BELOW_ZERO = -torch.finfo(torch.float32).smallest_normal * 2**-23  # the float32 just below 0


def pact_backward_reference(grad, x, alpha):
    """PACT's backward with plain masks: (grad_x, grad_alpha) for the upstream gradient `grad`."""
    inside = (x >= 0) & (x < alpha)          # the STE: round() counts as the identity, clip's slope is 1
    clipped = x >= alpha                     # y_q = alpha there, so d y_q / d alpha = 1
    return grad * inside, (grad * clipped).sum()


def _pact_backward_fused(grad, x, a: float, need_x: bool, need_alpha: bool):
    """pact_backward_reference in one fused ATen kernel per gradient (about 3x faster than building
    float masks): hardtanh_backward keeps grad where lo < x < hi and threshold_backward where x > t;
    the float32 neighbours of 0 and a make the bounds inclusive on the left."""
    grad_x = grad_alpha = None
    if need_x:
        grad_x = torch.ops.aten.hardtanh_backward(grad, x, _BELOW_ZERO, a)
    if need_alpha:
        just_below_a = float(np.nextafter(np.float32(a), np.float32(-np.inf)))
        grad_alpha = torch.ops.aten.threshold_backward(grad, x, just_below_a).sum()
    return grad_x, grad_alpha


class _PACTFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, alpha, levels):
        ctx.save_for_backward(x, alpha)
        a = alpha.item()
        y = x.clamp(0.0, a)
        if levels:  # levels = 2^k - 1; 0 means float (clip only)
            y.mul_(levels / a).round_().mul_(a / levels)
        return y

    @staticmethod
    def backward(ctx, grad):
        x, alpha = ctx.saved_tensors
        grad_x, grad_alpha = _pact_backward_fused(grad, x, alpha.item(), *ctx.needs_input_grad[:2])
        return grad_x, None if grad_alpha is None else grad_alpha.reshape(alpha.shape), None


def pact_quantize(x: torch.Tensor, alpha, bits: int = 4) -> torch.Tensor:
    """The PACT forward as a plain function; `alpha` is a float or a 0-d tensor (learnable if it requires grad)."""
    bits = validate_bits(bits)
    if not isinstance(alpha, torch.Tensor):
        alpha = torch.tensor(float(alpha), dtype=x.dtype, device=x.device)
    if alpha.numel() != 1:
        raise ValueError(f"PACT alpha must be a single number, got a tensor of shape {tuple(alpha.shape)}")
    if not alpha.detach().item() > 0:
        raise ValueError(
            f"PACT alpha must be > 0, got {alpha.detach().item():.4g}; if it was learned, lower the alpha L2 "
            f"strength or the learning rate"
        )
    levels = 0 if bits == FLOAT_BITS else 2**bits - 1
    return _PACTFunction.apply(x, alpha, levels)


class PACT(nn.Module):
    """Drop-in replacement for nn.ReLU: clip to [0, alpha] with learnable alpha, then k-bit quantize.

    bits=32 clips without rounding (a learnable ReLU6-like activation).
    """

    def __init__(self, bits: int = 4, alpha: float = 10.0):
        super().__init__()
        self.bits = validate_bits(bits, "PACT bits")
        if not float(alpha) > 0:
            raise ValueError(f"PACT alpha must be > 0, got {alpha!r}")
        self.alpha = nn.Parameter(torch.tensor(float(alpha)))

    def forward(self, x):
        return pact_quantize(x, self.alpha, self.bits)

    def extra_repr(self):
        return f"bits={self.bits}, alpha={self.alpha.item():.4g}"


def pact_alpha_l2(model: nn.Module) -> torch.Tensor:
    """Sum of alpha^2 over all PACT modules (0 for a model without PACT). Add lambda * this to the loss."""
    alphas = [m.alpha for m in model.modules() if isinstance(m, PACT)]
    if not alphas:
        return torch.zeros(())
    return torch.stack([a.reshape(()) for a in alphas]).pow(2).sum()


def pact_alphas(model: nn.Module) -> dict[str, float]:
    """Current alpha of every PACT module, by module name (for logging alpha learning curves)."""
    return {name: m.alpha.item() for name, m in model.named_modules() if isinstance(m, PACT)}
