"""Weight quantizers used in quantization-aware training: DoReFa and symmetric uniform.

DoReFa (Zhou et al. 2016), the weight quantizer the PACT paper pairs with PACT:
    w_t = tanh(w)
    w_n = w_t / (2 max|w_t|) + 1/2                  in [0, 1]
    w_q = 2 round_k(w_n) - 1,  round_k(r) = round((2^k - 1) r) / (2^k - 1)
w_q takes 2^k evenly spaced values in [-1, 1] (0 is not one of them for k >= 2), whatever the
scale of w: a BatchNorm after the layer absorbs the scale, a layer without one (a classifier's
Linear) must relearn it, so a float-trained model loses most of its accuracy the moment DoReFa
is switched on and needs QAT fine-tuning to win it back. Computed here as
w_q = code * 2/(2^k - 1) - 1 with code = round((2^k - 1) w_n) in [0, 2^k - 1], the same formula
the packed export uses, so a restored weight equals the trained one bit for bit.

Symmetric uniform (narrow range), per output channel or per tensor:
    scale = max|w| / (2^(k-1) - 1),  code = round(w / scale) in [-(2^(k-1) - 1), 2^(k-1) - 1],
    w_q = code * scale                              (2^k - 1 levels, 0 included; keeps w's scale)
This is also what onnxruntime uses for int8 weights (S8, symmetric, per channel).

Both use the straight-through estimator for round(); each has a `*_codes` function returning
the integer codes (plus scale) for packing and a `*_from_codes` function inverting it.
"""
from __future__ import annotations

import torch

from .primitives import FLOAT_BITS, dequantize, quantize, validate_bits

WEIGHT_QUANTIZERS = ("dorefa", "symmetric")


def _dorefa_unit(w: torch.Tensor, bits: int):
    """(2^k - 1) * w_n, the DoReFa-normalized weight on the code scale [0, 2^k - 1];
    also tanh(w), m = max|tanh(w)| and the flat index where that max sits."""
    n = 2**bits - 1
    w_t = torch.tanh(w)
    m, i = w_t.abs().view(-1).max(dim=0)
    m = m.clamp(min=1e-12)
    return w_t * (n / (2 * m)) + n / 2, w_t, m, i


def dorefa_from_codes(codes: torch.Tensor, bits: int, dtype=torch.float32) -> torch.Tensor:
    """Codes in [0, 2^k - 1] -> weights in [-1, 1]."""
    return codes.to(dtype) * (2.0 / (2**bits - 1)) - 1.0


class _DoReFa(torch.autograd.Function):
    """Forward: DoReFa codes -> w_q. Backward: the autograd gradient of w_q = tanh(w) / max|tanh(w)|
    (what 2 round_k(w_n) - 1 becomes when round() is the identity), written out by hand because
    that is 2-3x faster than letting autograd chain a dozen elementwise ops:
        grad_w = (1 - w_t^2) * (grad / m  -  [w is the argmax] sign(w_t) sum(grad * w_t) / m^2)
    """

    @staticmethod
    def forward(ctx, w, bits):
        unit, w_t, m, i = _dorefa_unit(w, bits)
        ctx.save_for_backward(w_t, m, i)
        return dorefa_from_codes(unit.round_(), bits, w.dtype)

    @staticmethod
    def backward(ctx, grad):
        w_t, m, i = ctx.saved_tensors
        grad_t = grad / m
        flat, flat_t, i = grad_t.view(-1), w_t.view(-1), int(i)  # the max depends on w through element i
        flat[i] -= torch.dot(grad.reshape(-1), flat_t) * (1.0 if flat_t[i] > 0 else -1.0) / (m * m)
        return grad_t.mul_(torch.addcmul(torch.ones_like(m), w_t, w_t, value=-1)), None


def dorefa_weight(w: torch.Tensor, bits: int) -> torch.Tensor:
    """DoReFa-quantized weight (STE through the rounding; gradients flow through tanh and the max)."""
    bits = validate_bits(bits, "w_bits")
    if bits == FLOAT_BITS:
        return w
    return _DoReFa.apply(w, bits)


def dorefa_codes(w: torch.Tensor, bits: int) -> tuple[torch.Tensor, float]:
    """(codes, scale): int64 codes in [0, 2^k - 1] and scale 2/(2^k - 1); w_q = codes * scale - 1."""
    bits = validate_bits(bits, "w_bits")
    if bits == FLOAT_BITS:
        raise ValueError("32-bit weights are float: there are no codes to export")
    with torch.no_grad():
        return _dorefa_unit(w, bits)[0].round_().to(torch.int64), 2.0 / (2**bits - 1)


def symmetric_scale(w: torch.Tensor, bits: int, per_channel: bool = True) -> torch.Tensor:
    """max|w| / (2^(k-1) - 1), per output channel (dim 0) -> shape (C,), or per tensor -> shape ()."""
    w = w.detach()
    if per_channel:
        lo, hi = torch.aminmax(w.flatten(1), dim=1)
    else:
        lo, hi = torch.aminmax(w)
    return torch.maximum(-lo, hi).clamp(min=1e-12) / (2 ** (bits - 1) - 1)


class _RoundToScale(torch.autograd.Function):
    """round(w / scale) * scale, gradient passed straight through. No clamp is needed (nor any
    clipping mask): the scale comes from max|w|, so every code already lies in range."""

    @staticmethod
    def forward(ctx, w, scale):
        return torch.round(w / scale).mul_(scale)

    @staticmethod
    def backward(ctx, grad):
        return grad, None


def symmetric_weight(w: torch.Tensor, bits: int, per_channel: bool = True) -> torch.Tensor:
    """Symmetric narrow-range fake-quantized weight (STE; the scale is treated as a constant)."""
    bits = validate_bits(bits, "w_bits")
    if bits == FLOAT_BITS:
        return w
    scale = symmetric_scale(w, bits, per_channel)
    return _RoundToScale.apply(w, scale.reshape(-1, *[1] * (w.dim() - 1)) if per_channel else scale)


def symmetric_codes(w: torch.Tensor, bits: int, per_channel: bool = True, scale=None):
    """(codes, scale): int64 codes in [-(2^(k-1) - 1), 2^(k-1) - 1] and the float32 scale(s); w_q = codes * scale."""
    bits = validate_bits(bits, "w_bits")
    if bits == FLOAT_BITS:
        raise ValueError("32-bit weights are float: there are no codes to export")
    with torch.no_grad():
        scale = symmetric_scale(w, bits, per_channel) if scale is None else scale
        zero = torch.zeros_like(scale, dtype=torch.int64)
        return quantize(w, scale, zero, bits, signed=True, axis=0 if scale.dim() else None, narrow=True), scale


def symmetric_from_codes(codes: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Codes and per-channel (C,) or per-tensor () scale -> float32 weights."""
    zero = torch.zeros_like(scale, dtype=torch.int64)
    return dequantize(codes, scale, zero, axis=0 if scale.dim() else None)
