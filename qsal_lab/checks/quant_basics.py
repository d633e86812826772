"""Checks for chapter 2's exercise (quantization basics): the learner's quantize, dequantize and
min-max qparams, and a round trip on real values at every bit width."""
from __future__ import annotations

import math

import torch

from .common import CheckFailed, PER_TENSOR_HINT, as_float, as_tensor, call, close, mismatches, passed, quietly


def _tensor(value, name, like, what):
    return as_tensor(value, name, like, what, arg="an input",
                     why_same_shape="quantization works element by element, so the shapes must match.")


def _first_mismatch(got, want):
    """Flat index of the first element where got and want differ (common.mismatches), or None."""
    bad = mismatches(got, want)
    return None if len(bad) == 0 else int(bad[0])


def _same(got, want):
    return _first_mismatch(got, want) is None


def _case_text(scale, zero_point, qmin, qmax):
    return f"scale={scale:g}, zero_point={zero_point}, qmin={qmin}, qmax={qmax}"


# hand-made cases: (x, scale, zero_point, bits, signed); no x / scale sits near a .5 tie, so
# round-half-to-even and round-half-up agree, and codes fall below qmin and above qmax. The 8-bit unsigned
# case has codes above 127, which int8 cannot hold.
_QUANTIZE_CASES = [
    (torch.tensor([[-1.37, -0.62, -0.13, 0.0], [0.17, 0.58, 1.31, 2.95]]), 0.2, 5, 4, False),
    (torch.tensor([-9.0, -2.31, -0.04, 0.0, 0.66, 3.13, 6.04, 7.9]), 0.05, 0, 8, True),
    (torch.tensor([-0.31, -0.02, 0.0, 0.43, 0.91, 1.49, 2.37]), 0.01, 20, 8, False),
]


def _quantize_bugs(x, scale, zero_point, qmin, qmax):
    """(codes, hint) for the typical quantize() bugs, each recomputed exactly so a hint is only given when it fits."""
    r = torch.round(x / scale)
    cut = ("It looks like the fraction was cut off: .long(), .int() or .to(torch.int64) truncates toward zero "
           "instead of rounding. Round first with torch.round(), then convert.")
    return [
        (r + zero_point, "Some codes lie outside [qmin, qmax]: clamp the codes with .clamp(qmin, qmax)."),
        (torch.trunc(x / scale).add(zero_point).clamp(qmin, qmax), cut),
        ((x / scale + zero_point).clamp(qmin, qmax).trunc(), cut),
        ((x / scale + zero_point).trunc().clamp(qmin, qmax), cut),
        (torch.floor(x / scale).add(zero_point).clamp(qmin, qmax), "It looks like floor(): use torch.round()."),
        ((r - zero_point).clamp(qmin, qmax), "The zero point has the wrong sign: the code is round(x / scale) "
                                             "+ zero_point."),
        (torch.round(x * scale).add(zero_point).clamp(qmin, qmax), "Divide x by the scale, do not multiply."),
        (r.clamp(qmin, qmax) + zero_point, "Clamp after adding the zero point: clamp(round(x / scale) + "
                                           "zero_point, qmin, qmax)."),
        ((x / scale + zero_point).clamp(qmin, qmax), "The codes are not whole numbers: round x / scale with "
                                                     "torch.round()."),
    ]


def _quantize_hint(quantize_fn, got, x, scale, zero_point, qmin, qmax):
    """The hint of the first typical bug that explains the learner's codes on this case AND on every other case
    (floor and truncation, say, agree once the codes are clamped at 0: the signed case tells them apart)."""
    from ..quant import qrange

    others = []
    for x2, scale2, zp2, bits2, signed2 in _QUANTIZE_CASES:
        try:
            out = quantize_fn(x2.clone(), scale2, zp2, *qrange(bits2, signed2))
        except Exception:
            out = None
        others.append((out, _quantize_bugs(x2, scale2, zp2, *qrange(bits2, signed2))))
    for k, (variant, text) in enumerate(_quantize_bugs(x, scale, zero_point, qmin, qmax)):
        if not _same(got, variant):
            continue
        if all(isinstance(out, torch.Tensor) and out.shape == bugs[k][0].shape and _same(out, bugs[k][0])
               for out, bugs in others):
            return text
    if not _same(got, got.double().round()):
        return "The codes are not whole numbers: round x / scale with torch.round()."
    if ((got.double() < qmin) | (got.double() > qmax)).any():
        return "Some codes lie outside [qmin, qmax]: clamp them."
    return "Compute clamp(round(x / scale) + zero_point, qmin, qmax), in that order."


def check_quantize(quantize_fn):
    """quantize_fn(x, scale, zero_point, qmin, qmax) -> integer codes
    clamp(round(x / scale) + zero_point, qmin, qmax)."""
    from ..quant import qrange, quantize

    for x, scale, zp, bits, signed in _QUANTIZE_CASES:
        qmin, qmax = qrange(bits, signed)
        want = quantize(x, torch.tensor(scale), torch.tensor(zp), bits, signed)
        got = _tensor(call(quantize_fn, "quantize", x.clone(), scale, zp, qmin, qmax), "quantize", x,
                         "a tensor of integer codes")
        case = _case_text(scale, zp, qmin, qmax)
        i = _first_mismatch(got, want)
        if i is not None:
            xi, wi, gi = x.flatten()[i].item(), want.flatten()[i].item(), got.flatten()[i].item()
            where = (f"with {case}: for x={xi:g} (element {i}) expected code {wi:g}, got {gi:g}.")
            if got.dtype in (torch.uint8, torch.int8, torch.int16) and _same(got, want.to(got.dtype)):
                info = torch.iinfo(got.dtype)
                raise CheckFailed(f"quantize() is not right yet {where} Your codes are {got.dtype}, which holds only "
                                  f"{info.min}..{info.max}: codes outside that range wrapped around when "
                                  f"converted (your clamp is not the problem). Return torch.int64 codes, "
                                  f".to(torch.int64), so that every code in [qmin, qmax] fits.")
            raise CheckFailed(f"quantize() is not right yet {where} "
                              f"{_quantize_hint(quantize_fn, got, x, scale, zp, qmin, qmax)}")
        if got.is_floating_point() or got.is_complex() or got.dtype == torch.bool:
            raise CheckFailed(f"quantize() returns the right codes but as {got.dtype}; codes are integers, which "
                              f"is what saves the memory: convert with .to(torch.int64) at the end.")
    passed(f"check_quantize passed: your codes match qsal_lab.quant.quantize on {len(_QUANTIZE_CASES)} hand-made "
           f"tensors (4-bit unsigned with a zero point, 8-bit signed, 8-bit unsigned), clipping included.")


_DEQUANTIZE_CASES = [
    (torch.tensor([[0, 3, 5, 15], [7, 1, 12, 9]]), 0.2, 5),
    (torch.tensor([-128, -46, -1, 0, 13, 63, 121, 127]), 0.05, 0),
    (torch.tensor([0, 2, 7, 9, 11, 200, 255]), 0.0125, 9),
]


def check_dequantize(dequantize_fn):
    """dequantize_fn(q, scale, zero_point) -> real values (q - zero_point) * scale, as floats."""
    from ..quant import dequantize

    for q, scale, zp in _DEQUANTIZE_CASES:
        want = dequantize(q, torch.tensor(scale), torch.tensor(zp))
        got = _tensor(call(dequantize_fn, "dequantize", q.clone(), scale, zp), "dequantize", q,
                         "a float tensor of real values")
        i = _first_mismatch(got, want)
        if i is not None:
            qi, wi, gi = q.flatten()[i].item(), want.flatten()[i].item(), got.flatten()[i].item()
            where = f"with scale={scale:g}, zero_point={zp}: for code q={qi} (element {i}) expected {wi:g}, got {gi:g}."
            hints = [
                (q * scale - zp, "Subtract the zero point from the code before multiplying by the scale: "
                                 "(q - zero_point) * scale."),
                ((q + zp) * scale, "The zero point has the wrong sign: subtract it, (q - zero_point) * scale."),
                ((q - zp) / scale, "Multiply by the scale, do not divide."),
                (q * scale, "The zero point is missing: (q - zero_point) * scale."),
                (((q - zp) * scale).trunc(), "The result was converted to integers, which drops the fraction: "
                                             "keep it a float tensor."),
                (((q - zp) * scale).round(), "The result was rounded to whole numbers: keep the float values."),
            ]
            hint = next((text for variant, text in hints if _same(got, variant)), None)
            raise CheckFailed(f"dequantize() is not right yet {where} "
                              f"{hint or 'Compute (q - zero_point) * scale.'}")
        if not got.is_floating_point():
            raise CheckFailed(f"dequantize() returned a {got.dtype} tensor; real values are floats: "
                              f"make sure the result is a float tensor, e.g. (q - zero_point) * scale.")
    passed("check_dequantize passed: your values match qsal_lab.quant.dequantize on 3 hand-made code tensors.")


# (x, bits): mixed signs, all positive (the range must be widened to include 0), all negative
_QPARAMS_CASES = [
    (torch.tensor([0.4, -0.62, 2.41, 1.0, -0.3, 0.0]), 4),
    (torch.tensor([[0.5, 1.25], [3.0, 2.2]]), 3),
    (torch.tensor([-2.0, -0.25, -1.1, -0.7]), 8),
    (torch.tensor([0.2, -0.35, 1.0, 0.65]), 4),  # -min / scale = 3.89: rounding gives 4, truncating 3
]


def check_qparams_minmax(qparams_fn):
    """qparams_fn(x, bits) -> (scale, zero_point) for asymmetric unsigned codes [0, 2^bits - 1] over
    the range [min(x.min(), 0), max(x.max(), 0)], like calc_qparams(..., symmetric=False, signed=False)."""
    from ..quant import calc_qparams

    for x, bits in _QPARAMS_CASES:
        out = call(qparams_fn, "qparams_minmax", x.clone(), bits)
        if out is None:
            raise CheckFailed("qparams_minmax() returned None: fill in its TODO so that it returns "
                              "(scale, zero_point).")
        if not isinstance(out, (tuple, list)) or len(out) != 2:
            raise CheckFailed(f"qparams_minmax() returned {type(out).__name__}; return a pair "
                              f"(scale, zero_point), e.g. `return scale, zero_point`.")
        scale = as_float(out[0], "qparams_minmax", "scale", PER_TENSOR_HINT)
        zp = as_float(out[1], "qparams_minmax", "zero_point", PER_TENSOR_HINT)
        lo, hi = x.min().item(), x.max().item()
        want_scale, want_zp = (v.item() for v in calc_qparams(lo, hi, bits, symmetric=False, signed=False))
        n = 2**bits - 1
        case = f"for a tensor with min {lo:g} and max {hi:g} at {bits} bits (codes 0..{n})"
        if not close(scale, want_scale, like=out):
            if close(scale, (hi - lo) / n, like=out) and (lo > 0 or hi < 0):
                hint = ("The range must contain 0, so that 0.0 (zero padding, ReLU outputs) is exactly "
                        "representable: use min(x.min(), 0) and max(x.max(), 0).")
            elif close(scale, want_scale * n / 2**bits, like=out):
                hint = (f"{bits} bits give 2^{bits} = {2**bits} codes but only {n} steps between the lowest and "
                        f"the highest: divide the range by 2**bits - 1.")
            elif close(scale, want_scale * n, like=out):
                hint = "Divide the range (max - min) by the number of steps, 2**bits - 1."
            else:
                hint = "scale = (max - min) / (2**bits - 1), with the range widened to include 0."
            raise CheckFailed(f"qparams_minmax() returned scale {scale:g} {case}; expected {want_scale:g}. {hint}")
        if not close(zp, round(zp), like=out):
            raise CheckFailed(f"qparams_minmax() returned zero_point {zp:g} {case}; the zero point is an integer "
                              f"code (expected {want_zp}): round it with round() or torch.round().")
        if round(zp) != want_zp:
            exact = -min(lo, 0.0) / want_scale
            if round(zp) == -want_zp:
                hint = ("The sign is flipped: the zero point is the code that 0.0 maps to, "
                        "zero_point = -round(min / scale) (min <= 0, so it is >= 0).")
            elif round(zp) == math.floor(exact):
                hint = (f"-min / scale = {exact:.4g}: the zero_point was truncated/floored (int() cuts the fraction "
                        f"off). Use round(): zero_point = int(round(-min / scale)).")
            elif not 0 <= zp <= n:
                hint = f"The zero point must itself be a valid code in [0, {n}]."
            else:
                hint = "zero_point = -round(min / scale), the code that 0.0 maps to."
            raise CheckFailed(f"qparams_minmax() returned zero_point {zp:g} {case}; expected {want_zp}. {hint}")
    passed(f"check_qparams_minmax passed: scale and zero point match qsal_lab.quant.calc_qparams on "
            f"{len(_QPARAMS_CASES)} tensors (mixed signs, all positive, all negative, a zero point to round up).")


def check_quantization_roundtrip(quantize_fn, dequantize_fn, qparams_fn, x, bit_widths=(2, 3, 4, 5, 6, 7, 8)):
    """Quantize and dequantize real data x with the learner's three functions at each bit width and
    compare with qsal_lab.quant.fake_quantize; prints the error table and returns {bits: MSE}.

    Columns: the scale s, the code of 0 before rounding (-min / s) and after (zero_point), the MSE, the
    uniform-rounding prediction s^2 / 12, how many times smaller the MSE is than one bit fewer, and the SQNR."""
    from ..quant import calc_qparams, fake_quantize

    with quietly():  # a function that fails its own check never gets a pass here
        check_quantize(quantize_fn), check_dequantize(dequantize_fn), check_qparams_minmax(qparams_fn)
    x = torch.as_tensor(x, dtype=torch.float32)
    lo, hi = x.min().item(), x.max().item()
    mse = {}
    print(f"{'bits':>4} {'scale':>9} {'-min/scale':>10} {'zero_point':>10} {'MSE':>10} {'s^2/12':>10} "
          f"{'shrink':>7} {'SQNR (dB)':>9}")
    previous = None
    for bits in bit_widths:
        out = call(qparams_fn, "qparams_minmax", x.clone(), bits)
        if out is None:
            raise CheckFailed("qparams_minmax() returned None: fill in its TODO (and pass check_qparams_minmax) first.")
        if not isinstance(out, (tuple, list)) or len(out) != 2:
            raise CheckFailed("qparams_minmax() must return a pair (scale, zero_point): pass check_qparams_minmax "
                              "first.")
        scale, zp = out
        q = call(quantize_fn, "quantize", x.clone(), scale, zp, 0, 2**bits - 1)
        q = _tensor(q, "quantize", x, "a tensor of integer codes")
        x_hat = _tensor(call(dequantize_fn, "dequantize", q, scale, zp), "dequantize", x,
                           "a float tensor of real values")
        ref_scale, ref_zp = calc_qparams(lo, hi, bits, symmetric=False, signed=False)
        want = fake_quantize(x, ref_scale, ref_zp, bits, signed=False)
        diff = (x_hat.double() - want.double()).abs()
        # an exact .5 tie may round either way (torch.round rounds half to even): one step off is fine there
        tie = ((x / ref_scale - torch.floor(x / ref_scale)) - 0.5).abs() < 1e-4
        bad = torch.zeros(x.numel(), dtype=torch.bool)
        bad[torch.from_numpy(mismatches(x_hat, want))] = True
        bad = bad.view(x.shape) & ~(tie & (diff < ref_scale.item() * 1.001))
        if bad.any():
            i = int(bad.flatten().nonzero()[0])
            raise CheckFailed(f"at {bits} bits your quantize -> dequantize round trip gives "
                              f"{x_hat.flatten()[i].item():g} for x={x.flatten()[i].item():g} (element {i}); "
                              f"qsal_lab.quant.fake_quantize gives "
                              f"{want.flatten()[i].item():g}. Pass the three checks above first.")
        err = (x_hat.double() - x.double()).pow(2).mean().item()
        sqnr = 10 * torch.log10(x.double().pow(2).mean() / max(err, 1e-30)).item()
        mse[bits] = err
        s = as_float(scale, "qparams_minmax")
        shrink = f"{previous / err:>6.1f}x" if previous is not None and err > 0 else f"{'':>7}"
        print(f"{bits:>4} {s:>9.5f} {-min(lo, 0.0) / s:>10.3f} {int(as_float(zp, 'qparams_minmax')):>10d} "
              f"{err:>10.2e} {s * s / 12:>10.2e} {shrink} {sqnr:>9.1f}")
        previous = err
    passed(f"check_quantization_roundtrip passed: your functions reproduce qsal_lab.quant on {x.numel():,} real "
            f"values at {len(mse)} bit widths.")
    return mse
