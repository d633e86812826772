"""Uniform (affine) quantization: the arithmetic every other file in qsal_lab.quant builds on.

A real number x is stored as an integer code q in [qmin, qmax]:

    q     = clamp(round(x / scale) + zero_point, qmin, qmax)     quantize
    x_hat = (q - zero_point) * scale                              dequantize

`fake_quantize` does both in float so that training sees the rounding error. Its gradient is
the straight-through estimator (STE): round() counts as the identity, so the gradient is 1
where the unclamped code round(x / scale) + zero_point lies in [qmin, qmax] and 0 where x is
clipped. `scale` and `zero_point` are constants here (they get no gradient).

"Per-tensor" means one scale for the whole tensor (axis=None); "per-channel" means one scale
per slice along `axis` (axis=0 = output channels of a conv or linear weight).
"""
from __future__ import annotations

import numbers

import torch

FLOAT_BITS = 32  # "32 bits" is how configs say "leave this in float"
_MIN_SCALE = torch.finfo(torch.float32).eps  # an all-zero range still gets a usable scale


def validate_bits(bits, name: str = "bits") -> int:
    """Return `bits` as an int if it is 2..8 or 32 (= float, no quantization); else raise ValueError."""
    ok = isinstance(bits, numbers.Integral) and not isinstance(bits, bool) and (2 <= bits <= 8 or bits == FLOAT_BITS)
    if not ok:
        raise ValueError(f"invalid bit width {bits!r} for {name}: use an integer from 2 to 8, or 32 for float")
    return int(bits)


def qrange(bits: int, signed: bool, narrow: bool = False) -> tuple[int, int]:
    """Integer code range (qmin, qmax) of a k-bit code.

    signed:   [-2^(k-1), 2^(k-1) - 1]; narrow drops the lowest code -> [-(2^(k-1) - 1), 2^(k-1) - 1],
              which makes the range symmetric around 0 (2^k - 1 levels; at k=2 that is {-1, 0, 1}).
    unsigned: [0, 2^k - 1]; narrow -> [1, 2^k - 1].
    """
    bits = validate_bits(bits)
    if bits == FLOAT_BITS:
        raise ValueError("32 bits means float: there is no integer code range; use 2..8 bits")
    if signed:
        qmax = 2 ** (bits - 1) - 1
        return (-qmax if narrow else -qmax - 1), qmax
    return (1 if narrow else 0), 2**bits - 1


def calc_qparams(min_val, max_val, bits: int, symmetric: bool, signed: bool = True, narrow: bool = False):
    """(scale, zero_point) that map the real range [min_val, max_val] onto k-bit codes.

    min_val/max_val: numbers (per-tensor) or 1-D tensors (per-channel). The range is first widened
    to contain 0, so that 0 (zero padding, ReLU output) is represented exactly.
    symmetric: range [-m, m] with m = max(|min|, |max|); zero_point 0 for signed codes and the middle
    code (e.g. 128) for unsigned ones. Asymmetric: the range is [min, max] and zero_point is the code of 0.
    Returns float32 scale and int64 zero_point tensors of the same shape as min_val.
    """
    qmin, qmax = qrange(bits, signed, narrow)
    lo = torch.as_tensor(min_val, dtype=torch.float32)
    hi = torch.as_tensor(max_val, dtype=torch.float32)
    if lo.shape != hi.shape:
        raise ValueError(f"min_val has shape {tuple(lo.shape)} but max_val has shape {tuple(hi.shape)}; they must match")
    if not (torch.isfinite(lo).all() and torch.isfinite(hi).all()):
        raise ValueError("min_val/max_val contain NaN or infinity; check the tensor you calibrate on")
    if (lo > hi).any():
        raise ValueError("min_val is larger than max_val for some entries; pass (min, max) in that order")
    lo, hi = lo.clamp(max=0.0), hi.clamp(min=0.0)
    if symmetric:
        scale = torch.maximum(-lo, hi) / ((qmax - qmin) / 2)
        zero_point = torch.full_like(scale, 0 if signed else (qmin + qmax + 1) // 2)
    else:
        scale = ((hi - lo) / (qmax - qmin)).clamp(min=_MIN_SCALE)
        zero_point = (qmin - torch.round(lo / scale)).clamp(qmin, qmax)
    return scale.clamp(min=_MIN_SCALE), zero_point.to(torch.int64)


def _along_axis(t, x: torch.Tensor, axis, what: str) -> torch.Tensor:
    """Reshape a scale/zero_point so it broadcasts against x (one value, or one per slice along axis)."""
    t = torch.as_tensor(t, device=x.device)
    if axis is None:
        if t.numel() != 1:
            raise ValueError(
                f"{what} has {t.numel()} values but axis=None means one {what} for the whole tensor; "
                f"pass axis=<channel dimension> for per-channel quantization"
            )
        return t.reshape(())
    if not -x.dim() <= axis < x.dim():
        raise ValueError(f"axis={axis} is out of range for a tensor with {x.dim()} dimensions")
    axis %= x.dim()
    if t.dim() != 1 or t.numel() != x.shape[axis]:
        raise ValueError(
            f"per-channel {what} has shape {tuple(t.shape)} but x has shape {tuple(x.shape)}, "
            f"i.e. {x.shape[axis]} channels along axis {axis}; {what} needs shape ({x.shape[axis]},)"
        )
    shape = [1] * x.dim()
    shape[axis] = -1
    return t.reshape(shape)


def quantize(x, scale, zero_point, bits: int, signed: bool, axis=None, narrow: bool = False) -> torch.Tensor:
    """Integer codes (int64) of x: clamp(round(x / scale) + zero_point, qmin, qmax). Rounds half to even."""
    qmin, qmax = qrange(bits, signed, narrow)
    scale, zero_point = _along_axis(scale, x, axis, "scale"), _along_axis(zero_point, x, axis, "zero_point")
    return (torch.round(x / scale) + zero_point).clamp_(qmin, qmax).to(torch.int64)


def dequantize(q, scale, zero_point, axis=None) -> torch.Tensor:
    """Real values (float32) of integer codes: (q - zero_point) * scale."""
    q = torch.as_tensor(q)
    scale, zero_point = _along_axis(scale, q, axis, "scale"), _along_axis(zero_point, q, axis, "zero_point")
    return (q - zero_point) * scale


class _FakeQuantize(torch.autograd.Function):
    """quantize + dequantize in one pass; STE gradient masked to the unclipped codes."""

    @staticmethod
    def forward(ctx, x, scale, zero_point, qmin, qmax):
        q = torch.round(x / scale).add_(zero_point)
        inside = (q >= qmin) & (q <= qmax)
        ctx.save_for_backward(inside)
        return q.clamp_(qmin, qmax).sub_(zero_point).mul_(scale)

    @staticmethod
    def backward(ctx, grad):
        (inside,) = ctx.saved_tensors
        return grad * inside, None, None, None, None


def fake_quantize(x, scale, zero_point, bits: int, signed: bool, axis=None, narrow: bool = False) -> torch.Tensor:
    """dequantize(quantize(x)) in float, with the STE gradient (1 inside the clipping range, 0 outside).

    Idempotent: fake_quantize(fake_quantize(x)) == fake_quantize(x) for the same scale/zero_point.
    """
    qmin, qmax = qrange(bits, signed, narrow)
    scale, zero_point = _along_axis(scale, x, axis, "scale"), _along_axis(zero_point, x, axis, "zero_point")
    return _FakeQuantize.apply(x, scale.to(x.dtype), zero_point, qmin, qmax)


class _RoundSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return torch.round(x)

    @staticmethod
    def backward(ctx, grad):
        return grad


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """round(x) in the forward pass, identity in the backward pass (straight-through estimator).

    A custom Function rather than `x + (x.round() - x).detach()`: that trick is off by float
    rounding, and packed export needs the forward value to be exactly the integer.
    """
    return _RoundSTE.apply(x)
