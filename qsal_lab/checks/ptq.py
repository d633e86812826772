"""Checks for chapter 3's exercise (post-training quantization).

The learner writes asymmetric_qparams(lo, hi, bits), a min-max observer class and a percentile
observer class (update(x) per batch, compute(bits) -> (scale, zero_point)); references are
qsal_lab.quant.calc_qparams, MinMaxObserver and PercentileObserver."""
from __future__ import annotations

import math

import torch

from .common import CheckFailed, PER_TENSOR_HINT, as_float, call, close, passed, quietly


def _pair(out, name):
    """(scale, zero_point) as floats from what the learner's function returned."""
    if out is None:
        raise CheckFailed(f"{name}() returned None: fill in its TODO so that it returns (scale, zero_point).")
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        raise CheckFailed(f"{name}() returned {type(out).__name__}; return a pair (scale, zero_point).")
    return tuple(as_float(v, name, part, PER_TENSOR_HINT) for part, v in zip(("scale", "zero_point"), out))


def _reference(lo, hi, bits):
    """(scale, zero_point, exact code of 0 before rounding) from the library's calc_qparams."""
    from ..quant import calc_qparams

    scale, zero_point = calc_qparams(float(lo), float(hi), bits, symmetric=False, signed=False)
    lo0, hi0 = min(float(lo), 0.0), max(float(hi), 0.0)
    return scale.item(), int(zero_point.item()), -lo0 / ((hi0 - lo0) / (2**bits - 1))


def _qparams_hint(lo, hi, bits, scale, zero_point):
    """Why (scale, zero_point) is wrong for the range [lo, hi], when a typical mistake explains it."""
    qmax = 2**bits - 1
    if zero_point != round(zero_point):
        return " The zero-point must be an integer code: round -lo / scale to the nearest integer."
    lo0, hi0 = min(lo, 0.0), max(hi, 0.0)
    if zero_point < 0 and close(scale, (hi0 - lo0) / qmax) and zero_point == -round(-lo0 / scale):
        return " The zero-point has the wrong sign: it is the code of 0, round(-lo / scale), which is >= 0."
    exact = -lo0 / ((hi0 - lo0) / qmax)  # the code of 0 before rounding, with the right scale
    if close(scale, (hi0 - lo0) / qmax) and abs(zero_point - round(exact)) == 1:
        if zero_point == math.floor(exact):
            return (f" -lo / scale = {exact:.4g} and your zero_point is {zero_point:g}: the zero_point was "
                    f"truncated/floored (int() cuts the fraction off). Use round(): zero_point = round(-lo / scale).")
        if zero_point == math.ceil(exact):
            return (f" -lo / scale = {exact:.4g} and your zero_point is {zero_point:g}: it was rounded up (ceil). "
                    f"Use round(): zero_point = round(-lo / scale).")
        return (f" The zero_point is off by one: -lo / scale = {exact:.4g}, so zero_point = round(-lo / scale) = "
                f"{round(exact)}, with lo = min(lo, 0).")
    if not 0 <= zero_point <= qmax:
        return (f" The zero-point of {bits}-bit unsigned codes must lie in [0, {qmax}]; yours is {zero_point:g}. Widen the "
                f"range to include 0 first (lo = min(lo, 0), hi = max(hi, 0)), then zero_point = round(-lo / scale).")
    if close(scale, (hi - lo) / qmax) and (lo > 0 or hi < 0):
        return (" The range must include 0 (so that 0, e.g. a ReLU output or zero padding, is exact): "
                "use lo = min(lo, 0) and hi = max(hi, 0) before computing the scale.")
    if close(scale, (hi0 - lo0) / 2**bits):
        return f" {bits} bits give 2^{bits} codes but only 2^{bits} - 1 = {qmax} steps between them: divide by {qmax}."
    return ""


def _compare(name, lo, hi, bits, got, context, zp_slack=0, slack=0.0):
    """Compare the learner's (scale, zero_point) with calc_qparams on [lo, hi]; raise a precise CheckFailed."""
    scale, zero_point = got
    want_scale, want_zp, exact_zp = _reference(lo, hi, bits)
    # the case itself (not the learner's answer): a code of 0 near .5 may round either way in float32
    near_half = abs(abs(exact_zp - int(exact_zp)) - 0.5) < 1e-3
    zp_ok = zero_point == round(zero_point) and (abs(zero_point - want_zp) <= max(zp_slack, int(near_half)))
    if close(scale, want_scale, slack=slack) and zp_ok and 0 <= zero_point <= 2**bits - 1:
        return
    raise CheckFailed(f"{name} for {context} at {bits} bits: expected scale={want_scale:.6g}, zero_point={want_zp} "
                      f"but got scale={scale:.6g}, zero_point={zero_point:g}."
                      + _qparams_hint(float(lo), float(hi), bits, scale, zero_point))


def check_asymmetric_qparams(qparams_fn):
    """qparams_fn(lo, hi, bits) -> (scale, zero_point): unsigned asymmetric k-bit codes [0, 2^k - 1]
    for the range [min(lo, 0), max(hi, 0)], zero_point = round(-lo / scale) (an integer)."""
    cases = [(-1.0, 2.0, 8, "a range around 0"), (0.5, 3.0, 8, "an all-positive range"),
             (-2.0, -0.5, 8, "an all-negative range"), (-0.3, 1.7, 4, "a range around 0"),
             (0.0, 6.0, 3, "a range starting at 0"), (-0.2, 1.0, 2, "a range around 0"),
             (-0.35, 1.0, 4, "a range around 0")]  # -lo / scale = 3.89: truncating gives 3, rounding 4
    for lo, hi, bits, what in cases:
        got = _pair(call(qparams_fn, "asymmetric_qparams", lo, hi, bits), "asymmetric_qparams")
        _compare("asymmetric_qparams()", lo, hi, bits, got, f"{what} [{lo:g}, {hi:g}]")
    passed(f"check_asymmetric_qparams passed: scale and zero-point match calc_qparams on {len(cases)} ranges "
            f"(2 to 8 bits, ranges that do not contain 0 included).")


def _check_state(observer, name):
    """A min-max observer keeps one number per tensor; a per-channel min/max is the usual slip."""
    for attr in ("min_val", "max_val"):
        value = getattr(observer, attr, None)
        if isinstance(value, tuple):  # x.min(dim=...) returns (values, indices)
            raise CheckFailed(f"after update(), {name}.{attr} is a {type(value).__name__} (values, indices), what "
                              f"x.min(dim=...) returns: keep one number per tensor, the min/max over ALL elements, "
                              f"x.min().item() and x.max().item().")
        if isinstance(value, torch.Tensor) and value.numel() > 1:
            raise CheckFailed(f"after update(), {name}.{attr} is a tensor of shape {tuple(value.shape)}, one value "
                              f"per channel (x.amin(dim=...) or x.min(dim=...)). The observer keeps one number per "
                              f"tensor: the min/max over ALL elements, x.min() and x.max().")
    lo, hi = getattr(observer, "min_val", None), getattr(observer, "max_val", None)
    try:
        swapped = lo is not None and hi is not None and float(lo) > float(hi)
    except (TypeError, ValueError):
        swapped = False
    if swapped:
        raise CheckFailed(f"after update(), {name}.min_val = {float(lo):.4g} is larger than {name}.max_val = "
                          f"{float(hi):.4g}: the minimum and the maximum are swapped somewhere in update(x).")


# what torch.quantile / np.quantile say when given a percent
QUANTILE_ERRORS = [("in the range [0, 1]", "torch.quantile and np.quantile take q as a fraction, p / 100 (it is "
                                           "np.percentile that takes percent)")]
# percentile definitions (interpolation between neighbours, nearest rank) differ by up to a step of the sorted
# values: at the cases' 10 000 evenly spread values, a scale may differ by this share (not precision, definitions)
PERCENTILE_SLACK = 2e-3


def _percentile_mistakes(batches, p):
    """(what the learner did, (lo, hi) it gives) for the usual percentile-observer mistakes."""
    flat = torch.cat([b.flatten() for b in batches])

    def per_batch(q_low, q_high):
        return ([torch.quantile(b.flatten(), q_low).item() for b in batches],
                [torch.quantile(b.flatten(), q_high).item() for b in batches])
    lows, highs = per_batch(1 - p / 100, p / 100)
    tiny_lows, tiny_highs = per_batch((100 - p) / 10000, p / 10000)
    out = [("the min/max instead of the percentiles", (flat.min().item(), flat.max().item())),
           ("the percentiles of all batches together instead of averaging each batch's",
            (torch.quantile(flat, 1 - p / 100).item(), torch.quantile(flat, p / 100).item())),
           ("np.percentile with a fraction: np.percentile takes q in percent (99.9), np.quantile and torch.quantile "
            "a fraction (0.999)", (sum(tiny_lows) / len(batches), sum(tiny_highs) / len(batches)))]
    if len(batches) > 1:
        out += [("the last batch's percentiles only; average the lows and the highs over all batches",
                 (lows[-1], highs[-1])),
                ("the sum of the batches' percentiles; divide by the number of batches to average them",
                 (sum(lows), sum(highs)))]
    return out


def _feed(observer_cls, name, batches, *args):
    observer = call(observer_cls, name, *args)
    for x in batches:
        call(observer.update, f"{name}.update", x.clone(), hints=QUANTILE_ERRORS)
        _check_state(observer, name)
    return observer


def _ordinal(value):
    """1 -> '1st', 0.5 -> '0.5th', 99 -> '99th', 13 -> '13th'."""
    text = f"{value:g}"
    if value != int(value) or 10 <= int(value) % 100 <= 20:
        return text + "th"
    return text + {1: "st", 2: "nd", 3: "rd"}.get(int(value) % 10, "th")


def _batches_text(batches):
    if all(b.numel() <= 4 for b in batches):
        return "batches " + ", ".join(str([round(v, 4) for v in b.flatten().tolist()]) for b in batches)
    return f"{len(batches)} batch(es) of shape {tuple(batches[0].shape)}"


def check_minmax_observer(observer_cls):
    """observer_cls(): update(x) tracks the running min and max over all batches; compute(bits) ->
    (scale, zero_point) of the unsigned asymmetric grid on [min(min, 0), max(max, 0)]. Compared with
    qsal_lab.quant.MinMaxObserver."""
    from ..quant import MinMaxObserver

    g = torch.Generator().manual_seed(0)
    cases = [
        ([torch.tensor([-1.0, 0.5, 2.0])], 8),
        ([torch.tensor([0.2, 1.0]), torch.tensor([-0.5, 0.3]), torch.tensor([0.1, 4.0])], 8),  # running min/max
        ([torch.rand(2, 3, 4, 4, generator=g) * 3 + 0.5, torch.rand(2, 3, 4, 4, generator=g) + 1.0], 8),  # all positive
        ([torch.tensor([-3.0, -1.0])], 8),  # all negative
        ([torch.randn(4, 3, 5, 5, generator=g) * 2, torch.randn(4, 3, 5, 5, generator=g) * 0.5 + 1], 4),
        ([torch.tensor([-0.5, 0.3]), torch.tensor([0.2, 1.0]), torch.tensor([0.1, 0.4])], 2),
    ]
    for batches, bits in cases:
        reference = MinMaxObserver()
        for x in batches:
            reference.update(x)
        lo, hi = reference.min_val.item(), reference.max_val.item()
        observer = _feed(observer_cls, "observer", batches)
        got = _pair(call(observer.compute, "compute", bits), "compute")
        try:
            _compare("compute()", lo, hi, bits, got, f"{_batches_text(batches)} (min {lo:.4g}, max {hi:.4g})")
        except CheckFailed as e:
            if len(batches) > 1:  # remembering one batch only is the classic bug
                for which, b in (("last", batches[-1]), ("first", batches[0])):
                    try:
                        _compare("", b.min().item(), b.max().item(), bits, got, "")
                    except CheckFailed:
                        continue
                    raise CheckFailed(f"{e} Your observer only remembers the {which} batch: in update(x), keep the "
                                      f"smaller of the stored min and x.min() (and the larger of the maxima).") from None
                scale, zero_point = got  # the range the learner's grid covers
                got_lo, got_hi = -zero_point * scale, (2**bits - 1 - zero_point) * scale
                if got_lo > min(lo, 0.0) + scale or got_hi < max(hi, 0.0) - scale:
                    raise CheckFailed(f"{e} Your grid covers [{got_lo:.4g}, {got_hi:.4g}], less than the smallest and "
                                      f"largest values seen: it looks like your observer averages (or smooths) the "
                                      f"batches' minima and maxima. A min-max observer keeps the running extremes: in "
                                      f"update(x), keep the smaller of the stored min and x.min() (and the larger of "
                                      f"the maxima).") from None
            raise
    # compute() must not disturb the state: update -> compute -> update -> compute
    batches = cases[1][0]
    observer = _feed(observer_cls, "observer", batches[:2])
    call(observer.compute, "compute", 8)
    call(observer.update, "observer.update", batches[2].clone())
    got = _pair(call(observer.compute, "compute", 8), "compute")
    try:
        _compare("compute()", -0.5, 4.0, 8, got, "compute() called after 2 of 3 batches and again after the third")
    except CheckFailed as e:
        raise CheckFailed(f"{e} compute() must not change what the observer has seen: it reads min_val and max_val "
                          f"and leaves them as they are for the batches that follow.") from None
    passed(f"check_minmax_observer passed: your observer matches qsal_lab's MinMaxObserver on {len(cases) + 1} "
            f"hand-made calibration runs (running min/max, all-positive and all-negative data, 2 to 8 bits).")


def check_percentile_observer(observer_cls):
    """observer_cls(percentile): update(x) records the (100 - p)-th and p-th percentiles of each batch;
    compute(bits) averages them over batches and returns (scale, zero_point) like the min-max
    observer. Compared with qsal_lab.quant.PercentileObserver (up to percentile interpolation)."""
    from ..quant import PercentileObserver

    g = torch.Generator().manual_seed(0)

    def shuffled(lo, hi, n=10001):
        return torch.linspace(lo, hi, n)[torch.randperm(n, generator=g)]

    spike = shuffled(-1.0, 1.0)
    spike[:3] = torch.tensor([40.0, -25.0, 30.0])  # outliers that min/max would follow
    cases = [
        ([spike], 99.0, 8, "a batch with 3 large outliers"),
        ([shuffled(-1.0, 3.0), shuffled(-2.0, 5.0)], 99.0, 8, "two batches"),
        ([shuffled(0.5, 2.5)], 99.9, 8, "an all-positive batch"),
        ([shuffled(-1.0, 3.0, 10000).reshape(4, 1, 50, 50), shuffled(-0.5, 1.5, 10000).reshape(4, 1, 50, 50)],
         99.5, 4, "two 4-D batches"),
    ]
    for batches, p, bits, what in cases:
        reference = PercentileObserver(p)
        for x in batches:
            reference.update(x)
        lo, hi = reference.clip_range(bits, False, False)
        observer = _feed(observer_cls, "observer", batches, p)
        got = _pair(call(observer.compute, "compute", bits), "compute")
        try:
            _compare("compute()", lo, hi, bits, got, f"{what} with percentile={p} (clip range [{lo:.4g}, {hi:.4g}])",
                         zp_slack=1, slack=PERCENTILE_SLACK)
        except CheckFailed as e:
            hint = ""
            for wrong, (wlo, whi) in _percentile_mistakes(batches, p):
                try:
                    _compare("", wlo, whi, bits, got, "", zp_slack=1, slack=PERCENTILE_SLACK)
                    hint = f" It looks like you used {wrong}."
                    break
                except CheckFailed:
                    pass
            if not hint and len(batches) == 1:
                hint = (f" Per batch, lo is the {_ordinal(round(100 - p, 6))} and hi the {_ordinal(p)} percentile "
                        f"of all its values, e.g. torch.quantile(x.flatten(), {p / 100:g}).")
            raise CheckFailed(f"{e}{hint}") from None
    passed(f"check_percentile_observer passed: your observer matches qsal_lab's PercentileObserver on "
            f"{len(cases)} calibration runs (outliers clipped, per-batch percentiles averaged).")


def check_observer_calibration(observer_cls, model, calib_loader, test_loader=None, bits: int = 8,
                               num_batches: int = 8):
    """Calibrate a PTQ model (PTQConfig(w_bits=bits, a_bits=bits)) with the learner's observer in every
    activation quantizer and compare each quantizer's (scale, zero_point) with the library's min-max
    calibration on the same batches; then report both models' test accuracy. Returns the dict."""
    from ..quant.ptq import ActQuantizer, MinMaxObserver, PTQConfig, calibrate, prepare_ptq, ptq_model
    from ..train import evaluate

    with quietly():  # the hand-made cases first: a mistake is named there, and never passes here
        check_minmax_observer(observer_cls)

    class LearnerObserver:
        """The learner's observer behind the interface ActQuantizer expects."""

        def __init__(self):
            self.observer = call(observer_cls, "observer")
            self.range = MinMaxObserver()  # the range seen, for the table printed at the end
            self.seen = 0

        def update(self, x):
            call(self.observer.update, "observer.update", x)
            _check_state(self.observer, "observer")
            self.range.update(x)
            self.seen += 1

        def compute(self, bits, signed=False, symmetric=False):
            scale, zero_point = _pair(call(self.observer.compute, "compute", bits), "compute")
            return torch.tensor(scale, dtype=torch.float32), torch.tensor(int(round(zero_point)))

    config = PTQConfig(w_bits=bits, a_bits=bits, observer="minmax")
    reference = ptq_model(model, config, calib_loader, num_batches=num_batches, progress=False)
    mine = prepare_ptq(model, config)
    quantizers = [(n, m) for n, m in mine.named_modules() if isinstance(m, ActQuantizer)]
    for _, m in quantizers:
        m.observer = LearnerObserver()
    calibrate(mine, calib_loader, num_batches=num_batches, progress=False)
    ref_modules = dict(reference.named_modules())
    rows = []
    for name, m in quantizers:
        ref = ref_modules[name]
        scale, zero_point = (v.item() for v in m.observer.compute(m.bits))
        rows.append((name, m.bits, m.observer.range.min_val.item(), m.observer.range.max_val.item(), scale,
                     zero_point))
        want_scale, want_zp = ref.scale.item(), ref.zero_point.item()
        if not (close(scale, want_scale) and abs(zero_point - want_zp) <= 1):
            raise CheckFailed(f"calibrated with your observer, the activation quantizer {name} ({m.bits} bits) gets "
                              f"scale={scale:.6g}, zero_point={zero_point:g}; qsal_lab's MinMaxObserver gives "
                              f"scale={want_scale:.6g}, zero_point={want_zp} on the same {num_batches} batches. "
                              f"Pass check_minmax_observer first: it pinpoints the difference on small inputs.")
        m.freeze()
    width = max(len("activation quantizer"), *(len(row[0]) for row in rows))
    print(f"{'activation quantizer':<{width}} {'bits':>4} {'min':>9} {'max':>9} {'scale':>10} {'zero_point':>10}")
    for name, qbits, lo, hi, scale, zero_point in rows:
        print(f"{name:<{width}} {qbits:>4} {lo:>9.4f} {hi:>9.4f} {scale:>10.5f} {zero_point:>10.0f}")
    result = {"quantizers": len(quantizers)}
    if test_loader is not None:
        result["accuracy"] = evaluate(mine, test_loader)["accuracy"]
        result["reference_accuracy"] = evaluate(reference, test_loader)["accuracy"]
        print(f"W{bits}A{bits} PTQ test accuracy: {result['accuracy']:.2%} with your observer, "
              f"{result['reference_accuracy']:.2%} with qsal_lab's MinMaxObserver")
    passed(f"check_observer_calibration passed: your observer calibrated all {len(quantizers)} activation "
            f"quantizers exactly like qsal_lab's MinMaxObserver.")
    return result
