"""Checks for the exercise notebooks: each one runs a learner's function on cases with known
answers and either prints what passed or raises `CheckFailed` saying exactly what is wrong."""
from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn


class CheckFailed(AssertionError):
    """A learner's answer is not right yet; the message says what to fix."""


def _passed(msg: str):
    print(f"✅ {msg}")


def _call(fn, name, *args, hints=()):
    """Call the learner's function, turning 'not written yet' into a clear message. `hints` is a list of
    (part of an error message, what to do): the advice for errors that a typical mistake raises."""
    try:
        return fn(*args)
    except NotImplementedError:
        raise CheckFailed(f"{name}() is not implemented yet: fill in its TODO.") from None
    except CheckFailed:
        raise
    except Exception as e:
        hint = next((". " + advice for fragment, advice in hints if fragment in str(e)), "")
        raise CheckFailed(f"{name}() raised {type(e).__name__}: {e}{hint}") from None


# a per-channel min/max (x.amin(dim=...)) gives a tensor where one number per tensor is expected
_PER_TENSOR_HINT = "one number per tensor: take the min/max over ALL elements, x.min(), not x.min(dim=...)"


def _as_float(value, name, part=None, hint="e.g. with .item()"):
    """One number from what the learner's function returned; `part` names which part of it (e.g. "scale")."""
    of = f" as its {part}" if part else ""
    if value is None:
        raise CheckFailed(f"{name}() returned None{of}: fill in its TODO so that it returns a number.")
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise CheckFailed(f"{name}() returned {'a ' + part if part else 'a'} tensor of shape {tuple(value.shape)}; "
                              f"return one number ({hint}).")
        value = value.item()
    try:
        return float(value)
    except (TypeError, ValueError):
        raise CheckFailed(f"{name}() returned a {type(value).__name__}{of}; return a number.") from None


# ----------------------------------------------------------------------------- chapter 1: MNIST baseline

# errors that the usual accuracy() mistakes raise, and what to do about them
_ACCURACY_ERROR_HINTS = [
    ("could not infer output dtype", "A comparison gives a bool tensor, which has no mean: convert it with "
                                     ".float() before .mean(), e.g. (pred == labels).float().mean()."),
    ("must match the size of tensor", "Take the argmax over the classes, logits.argmax(dim=1): one prediction "
                                      "per row (dim=0 gives one per class)."),
]


def _accuracy_value(accuracy_fn, logits, labels):
    return _as_float(_call(accuracy_fn, "accuracy", logits, labels, hints=_ACCURACY_ERROR_HINTS), "accuracy")


def check_accuracy(accuracy_fn):
    """accuracy_fn(logits [N, C], labels [N]) -> fraction of rows whose largest logit is the label."""
    logits = torch.tensor([[2.0, 1.0, 0.1], [0.1, 3.0, 0.2], [0.3, 0.2, 5.0], [4.0, 0.0, 1.0]])
    cases = [
        (torch.tensor([0, 1, 2, 0]), 1.0, "every row right"),
        (torch.tensor([0, 1, 0, 2]), 0.5, "2 of 4 rows right"),
        (torch.tensor([1, 0, 0, 1]), 0.0, "no row right"),
    ]
    for labels, want, what in cases:
        got = _accuracy_value(accuracy_fn, logits, labels)
        if abs(got - want) > 1e-6:
            if abs(got - want * len(labels)) < 1e-6:
                hint = " It looks like a count: divide by the number of rows."
            elif abs(got - want * 100) < 1e-4:
                hint = " It looks like a percentage: return a fraction between 0 and 1 (do not multiply by 100)."
            else:
                hint = " Compare logits.argmax(dim=1) with labels and take the mean of the matches."
            raise CheckFailed(f"accuracy() returned {got:g} for a batch with {what}; expected {want:g}.{hint}")
    # 1-element and large batches: a common bug is averaging over the wrong dimension
    big = torch.randn(257, 10, generator=torch.Generator().manual_seed(0))
    labels = big.argmax(1).clone()
    labels[:57] = (labels[:57] + 1) % 10
    got = _accuracy_value(accuracy_fn, big, labels)
    if abs(got - 200 / 257) > 1e-6:
        raise CheckFailed(f"accuracy() returned {got:.4f} on 257 rows of which 200 are right; expected "
                          f"{200 / 257:.4f}. Did you take argmax over dim=1 (the classes)?")
    _passed("check_accuracy passed: your accuracy() agrees on 4 hand-made batches.")


def check_train_step(train_step_fn):
    """train_step_fn(model, x, y, optimizer) -> loss (float): zero grads, forward, cross-entropy,
    backward, optimizer step."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    x, y = torch.randn(8, 1, 4, 4), torch.randint(0, 3, (8,))
    reference = copy.deepcopy(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    ref_opt = torch.optim.SGD(reference.parameters(), lr=0.1)
    before = [p.detach().clone() for p in model.parameters()]
    want_loss = F.cross_entropy(reference(x), y).item()

    got_loss = _as_float(_call(train_step_fn, "train_step", model, x, y, opt), "train_step")
    if all(torch.equal(b, p) for b, p in zip(before, model.parameters())):
        if all(p.grad is None or not p.grad.any() for p in model.parameters()):
            # zero_grad() between backward() and step(), or no backward() at all
            raise CheckFailed("train_step() did not change the model's parameters: the gradients were empty "
                              "when optimizer.step() ran. The order is optimizer.zero_grad() -> loss.backward() "
                              "-> optimizer.step(): zero_grad() clears the gradients, so it comes before "
                              "backward(), never between backward() and step().")
        raise CheckFailed("train_step() did not change the model's parameters: call loss.backward() and then "
                          "optimizer.step().")
    if abs(got_loss - want_loss) > 1e-5:
        raise CheckFailed(f"train_step() returned loss {got_loss:.5f}; the cross-entropy of the model's output "
                          f"before the update is {want_loss:.5f}. Use F.cross_entropy(model(x), y) and return "
                          f"loss.item().")
    # a second step exposes gradients that were never cleared
    _call(train_step_fn, "train_step", model, x, y, opt)
    for _ in range(2):
        ref_opt.zero_grad()
        F.cross_entropy(reference(x), y).backward()
        ref_opt.step()
    if not all(torch.allclose(p, r, atol=1e-6) for p, r in zip(model.parameters(), reference.parameters())):
        raise CheckFailed("after two calls, train_step() moved the parameters differently from a correct step. "
                          "Did you call optimizer.zero_grad() before loss.backward()? Without it, gradients "
                          "from the previous step are added to the new ones.")
    _passed("check_train_step passed: your step matches a reference SGD step, loss and all.")


def check_training_run(train_step_fn, accuracy_fn, train_ds, test_ds, epochs: int = 1, min_accuracy: float = 0.8):
    """Train a fresh SmallCNN with the learner's own train_step and measure it with their own
    accuracy; passes when the model learns (test accuracy >= min_accuracy)."""
    from tqdm.auto import tqdm

    from .data import make_loader
    from .models import build_model

    # the learner's accuracy() on 3 rows first: an unfinished one is reported before a whole epoch runs
    tiny_logits, tiny_labels = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 1.0]]), torch.tensor([0, 1, 1])
    tiny = _accuracy_value(accuracy_fn, tiny_logits, tiny_labels)
    if abs(tiny - 2 / 3) > 1e-6:
        raise CheckFailed(f"accuracy() returned {tiny:g} for 3 rows of which 2 are right; expected {2 / 3:.4g}. "
                          f"Pass check_accuracy first.")
    torch.manual_seed(0)
    model = build_model("smallcnn", in_channels=train_ds.info.in_channels, num_classes=train_ds.info.num_classes)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    for epoch in range(epochs):
        model.train()
        for x, y in tqdm(make_loader(train_ds, 128, train=True, epoch=epoch), desc=f"epoch {epoch + 1}"):
            loss = _call(train_step_fn, "train_step", model, x, y, optimizer)
            if loss is None:
                raise CheckFailed("train_step() returned None: finish its TODO (and pass check_train_step) first.")
    model.eval()
    with torch.no_grad():
        logits = torch.cat([model(x) for x, _ in make_loader(test_ds, 512)])
    labels = test_ds.labels
    acc = _accuracy_value(accuracy_fn, logits, labels)
    true_acc = (logits.argmax(1) == labels).float().mean().item()
    if abs(acc - true_acc) > 1e-6:
        raise CheckFailed(f"accuracy() says {acc:.4f} but the model's real test accuracy is {true_acc:.4f}.")
    if acc < min_accuracy:
        raise CheckFailed(f"after {epochs} epoch(s) with your train_step the test accuracy is {acc:.2%}, "
                          f"below {min_accuracy:.0%}: the model is not learning. Check the loss and the "
                          f"order zero_grad -> backward -> step.")
    _passed(f"check_training_run passed: your loop trained SmallCNN to {acc:.2%} test accuracy.")
    return acc


# ----------------------------------------------------------------------------- chapter 3: post-training quantization
# The learner writes asymmetric_qparams(lo, hi, bits), a min-max observer class and a percentile
# observer class (update(x) per batch, compute(bits) -> (scale, zero_point)); references are
# qsal_lab.quant.calc_qparams, MinMaxObserver and PercentileObserver.

def _ptq_pair(out, name):
    """(scale, zero_point) as floats from what the learner's function returned."""
    if out is None:
        raise CheckFailed(f"{name}() returned None: fill in its TODO so that it returns (scale, zero_point).")
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        raise CheckFailed(f"{name}() returned {type(out).__name__}; return a pair (scale, zero_point).")
    return tuple(_as_float(v, name, part, _PER_TENSOR_HINT) for part, v in zip(("scale", "zero_point"), out))


def _ptq_reference(lo, hi, bits):
    """(scale, zero_point, exact code of 0 before rounding) from the library's calc_qparams."""
    from .quant import calc_qparams

    scale, zero_point = calc_qparams(float(lo), float(hi), bits, symmetric=False, signed=False)
    lo0, hi0 = min(float(lo), 0.0), max(float(hi), 0.0)
    return scale.item(), int(zero_point.item()), -lo0 / ((hi0 - lo0) / (2**bits - 1))


def _ptq_qparams_hint(lo, hi, bits, scale, zero_point):
    """Why (scale, zero_point) is wrong for the range [lo, hi], when a typical mistake explains it."""
    qmax = 2**bits - 1
    if zero_point != round(zero_point):
        return " The zero-point must be an integer code: round -lo / scale to the nearest integer."
    lo0, hi0 = min(lo, 0.0), max(hi, 0.0)
    if zero_point < 0 and abs(scale - (hi0 - lo0) / qmax) <= 1e-5 * abs(scale) and zero_point == -round(-lo0 / scale):
        return " The zero-point has the wrong sign: it is the code of 0, round(-lo / scale), which is >= 0."
    exact = -lo0 / ((hi0 - lo0) / qmax)  # the code of 0 before rounding, with the right scale
    if abs(scale - (hi0 - lo0) / qmax) <= 1e-5 * abs(scale) and abs(zero_point - round(exact)) == 1:
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
    if abs(scale - (hi - lo) / qmax) <= 1e-6 * abs(scale) and (lo > 0 or hi < 0):
        return (" The range must include 0 (so that 0, e.g. a ReLU output or zero padding, is exact): "
                "use lo = min(lo, 0) and hi = max(hi, 0) before computing the scale.")
    if abs(scale - (hi0 - lo0) / 2**bits) <= 1e-6 * abs(scale):
        return f" {bits} bits give 2^{bits} codes but only 2^{bits} - 1 = {qmax} steps between them: divide by {qmax}."
    return ""


def _ptq_compare(name, lo, hi, bits, got, context, zp_slack=0, scale_rtol=1e-5):
    """Compare the learner's (scale, zero_point) with calc_qparams on [lo, hi]; raise a precise CheckFailed."""
    scale, zero_point = got
    want_scale, want_zp, exact_zp = _ptq_reference(lo, hi, bits)
    near_half = abs(abs(exact_zp - int(exact_zp)) - 0.5) < 1e-3  # float rounding may go either way
    zp_ok = zero_point == round(zero_point) and (abs(zero_point - want_zp) <= max(zp_slack, int(near_half)))
    if abs(scale - want_scale) <= scale_rtol * want_scale and zp_ok and 0 <= zero_point <= 2**bits - 1:
        return
    raise CheckFailed(f"{name} for {context} at {bits} bits: expected scale={want_scale:.6g}, zero_point={want_zp} "
                      f"but got scale={scale:.6g}, zero_point={zero_point:g}."
                      + _ptq_qparams_hint(float(lo), float(hi), bits, scale, zero_point))


def check_asymmetric_qparams(qparams_fn):
    """qparams_fn(lo, hi, bits) -> (scale, zero_point): unsigned asymmetric k-bit codes [0, 2^k - 1]
    for the range [min(lo, 0), max(hi, 0)], zero_point = round(-lo / scale) (an integer)."""
    cases = [(-1.0, 2.0, 8, "a range around 0"), (0.5, 3.0, 8, "an all-positive range"),
             (-2.0, -0.5, 8, "an all-negative range"), (-0.3, 1.7, 4, "a range around 0"),
             (0.0, 6.0, 3, "a range starting at 0"), (-0.2, 1.0, 2, "a range around 0"),
             (-0.35, 1.0, 4, "a range around 0")]  # -lo / scale = 3.89: truncating gives 3, rounding 4
    for lo, hi, bits, what in cases:
        got = _ptq_pair(_call(qparams_fn, "asymmetric_qparams", lo, hi, bits), "asymmetric_qparams")
        _ptq_compare("asymmetric_qparams()", lo, hi, bits, got, f"{what} [{lo:g}, {hi:g}]")
    _passed(f"check_asymmetric_qparams passed: scale and zero-point match calc_qparams on {len(cases)} ranges "
            f"(2 to 8 bits, ranges that do not contain 0 included).")


def _ptq_check_state(observer, name):
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


def _ptq_feed(observer_cls, name, batches, *args):
    observer = _call(observer_cls, name, *args)
    for x in batches:
        _call(observer.update, f"{name}.update", x.clone())
        _ptq_check_state(observer, name)
    return observer


def _ordinal(value):
    """1 -> '1st', 0.5 -> '0.5th', 99 -> '99th', 13 -> '13th'."""
    text = f"{value:g}"
    if value != int(value) or 10 <= int(value) % 100 <= 20:
        return text + "th"
    return text + {1: "st", 2: "nd", 3: "rd"}.get(int(value) % 10, "th")


def _ptq_batches_text(batches):
    if all(b.numel() <= 4 for b in batches):
        return "batches " + ", ".join(str([round(v, 4) for v in b.flatten().tolist()]) for b in batches)
    return f"{len(batches)} batch(es) of shape {tuple(batches[0].shape)}"


def check_minmax_observer(observer_cls):
    """observer_cls(): update(x) tracks the running min and max over all batches; compute(bits) ->
    (scale, zero_point) of the unsigned asymmetric grid on [min(min, 0), max(max, 0)]. Compared with
    qsal_lab.quant.MinMaxObserver."""
    from .quant import MinMaxObserver

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
        observer = _ptq_feed(observer_cls, "observer", batches)
        got = _ptq_pair(_call(observer.compute, "compute", bits), "compute")
        try:
            _ptq_compare("compute()", lo, hi, bits, got, f"{_ptq_batches_text(batches)} (min {lo:.4g}, max {hi:.4g})")
        except CheckFailed as e:
            if len(batches) > 1:  # remembering one batch only is the classic bug
                for which, b in (("last", batches[-1]), ("first", batches[0])):
                    try:
                        _ptq_compare("", b.min().item(), b.max().item(), bits, got, "")
                    except CheckFailed:
                        continue
                    raise CheckFailed(f"{e} Your observer only remembers the {which} batch: in update(x), keep the "
                                      f"smaller of the stored min and x.min() (and the larger of the maxima).") from None
            raise
    # compute() must not disturb the state: update -> compute -> update -> compute
    batches = cases[1][0]
    observer = _ptq_feed(observer_cls, "observer", batches[:2])
    _call(observer.compute, "compute", 8)
    _call(observer.update, "observer.update", batches[2].clone())
    got = _ptq_pair(_call(observer.compute, "compute", 8), "compute")
    _ptq_compare("compute()", -0.5, 4.0, 8, got, "compute() called after 2 of 3 batches and again after the third")
    _passed(f"check_minmax_observer passed: your observer matches qsal_lab's MinMaxObserver on {len(cases) + 1} "
            f"hand-made calibration runs (running min/max, all-positive and all-negative data, 2 to 8 bits).")


def check_percentile_observer(observer_cls):
    """observer_cls(percentile): update(x) records the (100 - p)-th and p-th percentiles of each batch;
    compute(bits) averages them over batches and returns (scale, zero_point) like the min-max
    observer. Compared with qsal_lab.quant.PercentileObserver (up to percentile interpolation)."""
    from .quant import PercentileObserver

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
        observer = _ptq_feed(observer_cls, "observer", batches, p)
        got = _ptq_pair(_call(observer.compute, "compute", bits), "compute")
        try:
            _ptq_compare("compute()", lo, hi, bits, got, f"{what} with percentile={p} (clip range [{lo:.4g}, {hi:.4g}])",
                         zp_slack=1, scale_rtol=2e-3)
        except CheckFailed as e:
            flat = torch.cat([b.flatten() for b in batches])
            hint = ""
            for wrong, (wlo, whi) in (("the min/max instead of the percentiles", (flat.min().item(), flat.max().item())),
                                      ("the percentiles of all batches together instead of averaging each batch's",
                                       (torch.quantile(flat, 1 - p / 100).item(), torch.quantile(flat, p / 100).item()))):
                try:
                    _ptq_compare("", wlo, whi, bits, got, "", zp_slack=1, scale_rtol=2e-3)
                    hint = f" It looks like you used {wrong}."
                    break
                except CheckFailed:
                    pass
            if not hint and len(batches) == 1:
                hint = (f" Per batch, lo is the {_ordinal(round(100 - p, 6))} and hi the {_ordinal(p)} percentile "
                        f"of all its values, e.g. torch.quantile(x.flatten(), {p / 100:g}).")
            raise CheckFailed(f"{e}{hint}") from None
    _passed(f"check_percentile_observer passed: your observer matches qsal_lab's PercentileObserver on "
            f"{len(cases)} calibration runs (outliers clipped, per-batch percentiles averaged).")


def check_observer_calibration(observer_cls, model, calib_loader, test_loader=None, bits: int = 8,
                               num_batches: int = 8):
    """Calibrate a PTQ model (PTQConfig(w_bits=bits, a_bits=bits)) with the learner's observer in every
    activation quantizer and compare each quantizer's (scale, zero_point) with the library's min-max
    calibration on the same batches; then report both models' test accuracy. Returns the dict."""
    from .quant.ptq import ActQuantizer, MinMaxObserver, PTQConfig, calibrate, prepare_ptq, ptq_model
    from .train import evaluate

    class LearnerObserver:
        """The learner's observer behind the interface ActQuantizer expects."""

        def __init__(self):
            self.observer = _call(observer_cls, "observer")
            self.range = MinMaxObserver()  # the range seen, for the table printed at the end
            self.seen = 0

        def update(self, x):
            _call(self.observer.update, "observer.update", x)
            _ptq_check_state(self.observer, "observer")
            self.range.update(x)
            self.seen += 1

        def compute(self, bits, signed=False, symmetric=False):
            scale, zero_point = _ptq_pair(_call(self.observer.compute, "compute", bits), "compute")
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
        if not (abs(scale - want_scale) <= 1e-4 * want_scale and abs(zero_point - want_zp) <= 1):
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
    _passed(f"check_observer_calibration passed: your observer calibrated all {len(quantizers)} activation "
            f"quantizers exactly like qsal_lab's MinMaxObserver.")
    return result


# ----------------------------------------------------------------------------- chapter 2: quantization basics

def _qb_tensor(value, name, like, what="a tensor"):
    """The learner's return value as a tensor shaped like `like`, or CheckFailed saying why not."""
    if value is None:
        raise CheckFailed(f"{name}() returned None: fill in its TODO so that it returns {what}.")
    if not isinstance(value, torch.Tensor):
        raise CheckFailed(f"{name}() returned {type(value).__name__}; return {what} (a torch.Tensor), "
                          f"computed with torch operations on the input tensor.")
    if value.shape != like.shape:
        raise CheckFailed(f"{name}() returned a tensor of shape {tuple(value.shape)} for an input of shape "
                          f"{tuple(like.shape)}; quantization works element by element, so the shapes must match.")
    return value


def _qb_first_mismatch(got, want, atol):
    """Flat index of the first element where got and want differ by more than atol, or None."""
    bad = ((got.double() - want.double()).abs() > atol).flatten().nonzero()
    return None if len(bad) == 0 else int(bad[0])


def _qb_same(got, want, atol):
    return _qb_first_mismatch(got, want, atol) is None


def _qb_case_text(scale, zero_point, qmin, qmax):
    return f"scale={scale:g}, zero_point={zero_point}, qmin={qmin}, qmax={qmax}"


# hand-made cases: (x, scale, zero_point, bits, signed); no x / scale sits near a .5 tie, so
# round-half-to-even and round-half-up agree, and codes fall below qmin and above qmax.
_QB_QUANTIZE_CASES = [
    (torch.tensor([[-1.37, -0.62, -0.13, 0.0], [0.17, 0.58, 1.31, 2.95]]), 0.2, 5, 4, False),
    (torch.tensor([-9.0, -2.31, -0.04, 0.0, 0.66, 3.13, 6.04, 7.9]), 0.05, 0, 8, True),
]


def _qb_quantize_bugs(x, scale, zero_point, qmin, qmax):
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


def _qb_quantize_hint(quantize_fn, got, x, scale, zero_point, qmin, qmax):
    """The hint of the first typical bug that explains the learner's codes on this case AND on every other case
    (floor and truncation, say, agree once the codes are clamped at 0: the signed case tells them apart)."""
    from .quant import qrange

    others = []
    for x2, scale2, zp2, bits2, signed2 in _QB_QUANTIZE_CASES:
        try:
            out = quantize_fn(x2.clone(), scale2, zp2, *qrange(bits2, signed2))
        except Exception:
            out = None
        others.append((out, _qb_quantize_bugs(x2, scale2, zp2, *qrange(bits2, signed2))))
    for k, (variant, text) in enumerate(_qb_quantize_bugs(x, scale, zero_point, qmin, qmax)):
        if not _qb_same(got, variant, 1e-6):
            continue
        if all(isinstance(out, torch.Tensor) and out.shape == bugs[k][0].shape and _qb_same(out, bugs[k][0], 1e-6)
               for out, bugs in others):
            return text
    if not _qb_same(got, got.double().round(), 1e-6):
        return "The codes are not whole numbers: round x / scale with torch.round()."
    if ((got.double() < qmin) | (got.double() > qmax)).any():
        return "Some codes lie outside [qmin, qmax]: clamp them."
    return "Compute clamp(round(x / scale) + zero_point, qmin, qmax), in that order."


def check_quantize(quantize_fn):
    """quantize_fn(x, scale, zero_point, qmin, qmax) -> integer codes
    clamp(round(x / scale) + zero_point, qmin, qmax)."""
    from .quant import qrange, quantize

    for x, scale, zp, bits, signed in _QB_QUANTIZE_CASES:
        qmin, qmax = qrange(bits, signed)
        want = quantize(x, torch.tensor(scale), torch.tensor(zp), bits, signed)
        got = _qb_tensor(_call(quantize_fn, "quantize", x.clone(), scale, zp, qmin, qmax), "quantize", x,
                         "a tensor of integer codes")
        case = _qb_case_text(scale, zp, qmin, qmax)
        i = _qb_first_mismatch(got, want, atol=1e-6)
        if i is not None:
            xi, wi, gi = x.flatten()[i].item(), want.flatten()[i].item(), got.flatten()[i].item()
            where = (f"with {case}: for x={xi:g} (element {i}) expected code {wi:g}, got {gi:g}.")
            if got.dtype in (torch.uint8, torch.int8, torch.int16) and _qb_same(got, want.to(got.dtype), 1e-6):
                info = torch.iinfo(got.dtype)
                raise CheckFailed(f"quantize() is not right yet {where} Your codes are {got.dtype}, which holds only "
                                  f"{info.min}..{info.max}: codes outside that range wrapped around when "
                                  f"converted (your clamp is not the problem). Return torch.int64 codes, "
                                  f".to(torch.int64), so that every code in [qmin, qmax] fits.")
            raise CheckFailed(f"quantize() is not right yet {where} "
                              f"{_qb_quantize_hint(quantize_fn, got, x, scale, zp, qmin, qmax)}")
        if got.is_floating_point() or got.is_complex() or got.dtype == torch.bool:
            raise CheckFailed(f"quantize() returns the right codes but as {got.dtype}; codes are integers, which "
                              f"is what saves the memory: convert with .to(torch.int64) at the end.")
    _passed("check_quantize passed: your codes match qsal_lab.quant.quantize on 2 hand-made tensors "
            "(4-bit unsigned with a zero point, 8-bit signed), clipping included.")


_QB_DEQUANTIZE_CASES = [
    (torch.tensor([[0, 3, 5, 15], [7, 1, 12, 9]]), 0.2, 5),
    (torch.tensor([-128, -46, -1, 0, 13, 63, 121, 127]), 0.05, 0),
    (torch.tensor([0, 2, 7, 9, 11, 200, 255]), 0.0125, 9),
]


def check_dequantize(dequantize_fn):
    """dequantize_fn(q, scale, zero_point) -> real values (q - zero_point) * scale, as floats."""
    from .quant import dequantize

    for q, scale, zp in _QB_DEQUANTIZE_CASES:
        want = dequantize(q, torch.tensor(scale), torch.tensor(zp))
        got = _qb_tensor(_call(dequantize_fn, "dequantize", q.clone(), scale, zp), "dequantize", q,
                         "a float tensor of real values")
        i = _qb_first_mismatch(got, want, atol=1e-5)
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
            hint = next((text for variant, text in hints if _qb_same(got, variant, 1e-5)), None)
            raise CheckFailed(f"dequantize() is not right yet {where} "
                              f"{hint or 'Compute (q - zero_point) * scale.'}")
        if not got.is_floating_point():
            raise CheckFailed(f"dequantize() returned a {got.dtype} tensor; real values are floats: "
                              f"make sure the result is a float tensor, e.g. (q - zero_point) * scale.")
    _passed("check_dequantize passed: your values match qsal_lab.quant.dequantize on 3 hand-made code tensors.")


# (x, bits): mixed signs, all positive (the range must be widened to include 0), all negative
_QB_QPARAMS_CASES = [
    (torch.tensor([0.4, -0.62, 2.41, 1.0, -0.3, 0.0]), 4),
    (torch.tensor([[0.5, 1.25], [3.0, 2.2]]), 3),
    (torch.tensor([-2.0, -0.25, -1.1, -0.7]), 8),
    (torch.tensor([0.2, -0.35, 1.0, 0.65]), 4),  # -min / scale = 3.89: rounding gives 4, truncating 3
]


def check_qparams_minmax(qparams_fn):
    """qparams_fn(x, bits) -> (scale, zero_point) for asymmetric unsigned codes [0, 2^bits - 1] over
    the range [min(x.min(), 0), max(x.max(), 0)], like calc_qparams(..., symmetric=False, signed=False)."""
    from .quant import calc_qparams

    for x, bits in _QB_QPARAMS_CASES:
        out = _call(qparams_fn, "qparams_minmax", x.clone(), bits)
        if out is None:
            raise CheckFailed("qparams_minmax() returned None: fill in its TODO so that it returns "
                              "(scale, zero_point).")
        if not isinstance(out, (tuple, list)) or len(out) != 2:
            raise CheckFailed(f"qparams_minmax() returned {type(out).__name__}; return a pair "
                              f"(scale, zero_point), e.g. `return scale, zero_point`.")
        scale = _as_float(out[0], "qparams_minmax", "scale", _PER_TENSOR_HINT)
        zp = _as_float(out[1], "qparams_minmax", "zero_point", _PER_TENSOR_HINT)
        lo, hi = x.min().item(), x.max().item()
        want_scale, want_zp = (v.item() for v in calc_qparams(lo, hi, bits, symmetric=False, signed=False))
        n = 2**bits - 1
        case = f"for a tensor with min {lo:g} and max {hi:g} at {bits} bits (codes 0..{n})"
        if abs(scale - want_scale) > 1e-6 * max(1.0, abs(want_scale)):
            if abs(scale - (hi - lo) / n) < 1e-6 and (lo > 0 or hi < 0):
                hint = ("The range must contain 0, so that 0.0 (zero padding, ReLU outputs) is exactly "
                        "representable: use min(x.min(), 0) and max(x.max(), 0).")
            elif abs(scale - want_scale * n / 2**bits) < 1e-6:
                hint = (f"{bits} bits give 2^{bits} = {2**bits} codes but only {n} steps between the lowest and "
                        f"the highest: divide the range by 2**bits - 1.")
            elif abs(scale - want_scale * n) < 1e-6:
                hint = "Divide the range (max - min) by the number of steps, 2**bits - 1."
            else:
                hint = "scale = (max - min) / (2**bits - 1), with the range widened to include 0."
            raise CheckFailed(f"qparams_minmax() returned scale {scale:g} {case}; expected {want_scale:g}. {hint}")
        if abs(zp - round(zp)) > 1e-6:
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
    _passed(f"check_qparams_minmax passed: scale and zero point match qsal_lab.quant.calc_qparams on "
            f"{len(_QB_QPARAMS_CASES)} tensors (mixed signs, all positive, all negative, a zero point to round up).")


def check_quantization_roundtrip(quantize_fn, dequantize_fn, qparams_fn, x, bit_widths=(2, 3, 4, 5, 6, 7, 8)):
    """Quantize and dequantize real data x with the learner's three functions at each bit width and
    compare with qsal_lab.quant.fake_quantize; prints the error table and returns {bits: MSE}.

    Columns: the scale s, the code of 0 before rounding (-min / s) and after (zero_point), the MSE, the
    uniform-rounding prediction s^2 / 12, how many times smaller the MSE is than one bit fewer, and the SQNR."""
    from .quant import calc_qparams, fake_quantize

    x = torch.as_tensor(x, dtype=torch.float32)
    lo, hi = x.min().item(), x.max().item()
    mse = {}
    print(f"{'bits':>4} {'scale':>9} {'-min/scale':>10} {'zero_point':>10} {'MSE':>10} {'s^2/12':>10} "
          f"{'shrink':>7} {'SQNR (dB)':>9}")
    previous = None
    for bits in bit_widths:
        out = _call(qparams_fn, "qparams_minmax", x.clone(), bits)
        if out is None:
            raise CheckFailed("qparams_minmax() returned None: fill in its TODO (and pass check_qparams_minmax) first.")
        if not isinstance(out, (tuple, list)) or len(out) != 2:
            raise CheckFailed("qparams_minmax() must return a pair (scale, zero_point): pass check_qparams_minmax "
                              "first.")
        scale, zp = out
        q = _call(quantize_fn, "quantize", x.clone(), scale, zp, 0, 2**bits - 1)
        q = _qb_tensor(q, "quantize", x, "a tensor of integer codes")
        x_hat = _qb_tensor(_call(dequantize_fn, "dequantize", q, scale, zp), "dequantize", x,
                           "a float tensor of real values")
        ref_scale, ref_zp = calc_qparams(lo, hi, bits, symmetric=False, signed=False)
        want = fake_quantize(x, ref_scale, ref_zp, bits, signed=False)
        diff = (x_hat.double() - want.double()).abs()
        # an exact .5 tie may round either way (torch.round rounds half to even): one step off is fine there
        tie = ((x / ref_scale - torch.floor(x / ref_scale)) - 0.5).abs() < 1e-4
        bad = (diff > 1e-5) & ~(tie & (diff < ref_scale.item() * 1.001))
        if bad.any():
            i = int(bad.flatten().nonzero()[0])
            raise CheckFailed(f"at {bits} bits your quantize -> dequantize round trip gives "
                              f"{x_hat.flatten()[i].item():g} for x={x.flatten()[i].item():g} (element {i}); "
                              f"qsal_lab.quant.fake_quantize gives "
                              f"{want.flatten()[i].item():g}. Pass the three checks above first.")
        err = (x_hat.double() - x.double()).pow(2).mean().item()
        sqnr = 10 * torch.log10(x.double().pow(2).mean() / max(err, 1e-30)).item()
        mse[bits] = err
        s = _as_float(scale, "qparams_minmax")
        shrink = f"{previous / err:>6.1f}x" if previous is not None and err > 0 else f"{'':>7}"
        print(f"{bits:>4} {s:>9.5f} {-min(lo, 0.0) / s:>10.3f} {int(_as_float(zp, 'qparams_minmax')):>10d} "
              f"{err:>10.2e} {s * s / 12:>10.2e} {shrink} {sqnr:>9.1f}")
        previous = err
    _passed(f"check_quantization_roundtrip passed: your functions reproduce qsal_lab.quant on {x.numel():,} real "
            f"values at {len(mse)} bit widths.")
    return mse


# ----------------------------------------------------------------------------- chapter 4: PACT quantization-aware training

def _pact_cases():
    """(x, alpha, bits) on hand-made inputs: negatives, zero, values inside, exactly alpha, above alpha.
    Inside values stay clear of rounding ties, so any correct formula gives the same levels."""
    x = torch.tensor([-1.5, -0.2, 0.0, 0.3, 0.55, 0.9, 1.27, 1.61, 1.95, 2.0, 2.4, 7.0])
    return [(x, 2.0, 2), (x, 2.0, 3), (x * 0.75, 1.5, 4), (x * 3.0, 6.0, 8)]


def _pact_first_mismatch(got, want, x, what, atol=1e-5):
    """'at x=.., expected .. but got ..' for the first element where got and want differ, or None."""
    bad = ((got - want).abs() > atol + 1e-5 * want.abs()).nonzero().flatten()
    if len(bad) == 0:
        return None
    i = int(bad[0])
    return (f"{what} at element {i} (x = {x[i].item():g}): expected {want[i].item():.6g}, got {got[i].item():.6g} "
            f"({len(bad)} of {len(x)} elements differ)")


def _pact_tensor(value, x, name):
    if value is None:
        raise CheckFailed(f"{name}() returned None: fill in its TODO so that it returns a tensor.")
    if not isinstance(value, torch.Tensor):
        raise CheckFailed(f"{name}() returned a {type(value).__name__}; return a torch tensor the shape of x.")
    if value.shape != x.shape:
        raise CheckFailed(f"{name}() returned shape {tuple(value.shape)} for x of shape {tuple(x.shape)}; "
                          f"PACT works elementwise, so the output has the shape of x.")
    return value.detach().float()


def _pact_forward_hint(got, x, alpha, bits):
    """Name the usual forward bug when the learner's output matches it exactly."""
    n = 2**bits - 1
    y = x.clamp(0.0, alpha)
    candidates = [
        (torch.round(x * n / alpha) * alpha / n, "Outputs fall outside [0, alpha]: you forgot to clip x to [0, alpha] "
                                                 "before rounding (x.clamp(0, alpha))."),
        (torch.round(x.clamp(min=0.0) * n / alpha) * alpha / n,
         "The output is not clipped at alpha: inputs above alpha must give alpha. Clip to [0, alpha] "
         "(x.clamp(0, alpha), not only relu / clamp(min=0)) before rounding."),
        (torch.round(x.clamp(max=alpha) * n / alpha) * alpha / n,
         "Negative inputs must give 0: clip at 0 too, x.clamp(0, alpha), before rounding."),
        (torch.round(y * 2**bits / alpha) * alpha / 2**bits, f"You used 2^k = {2**bits} steps; k bits give 2^k levels, "
                                                             f"i.e. 2^k - 1 = {n} steps between 0 and alpha."),
        (torch.round(y * (2**bits + 1) / alpha) * alpha / (2**bits + 1), f"You used 2^k + 1 steps; use 2^k - 1 = {n}."),
        (y, "The output is clipped but not quantized: round y * (2^k - 1) / alpha to an integer, then scale back."),
        (torch.round(y * n / alpha), "The output is the integer code: multiply it back by alpha / (2^k - 1)."),
        (torch.floor(y * n / alpha) * alpha / n, "You rounded down (floor); use torch.round, to the nearest level."),
    ]
    for wrong, hint in candidates:
        if got.shape == wrong.shape and torch.allclose(got, wrong, atol=1e-5):
            return " " + hint
    return " PACT: y = clip(x, 0, alpha), then round(y * (2^k - 1) / alpha) * alpha / (2^k - 1)."


def check_pact_forward(pact_forward_fn):
    """pact_forward_fn(x, alpha: float, bits) -> clip(x, 0, alpha) quantized to 2^bits levels in [0, alpha]."""
    from qsal_lab.quant import pact_quantize

    for x, alpha, bits in _pact_cases():
        want = pact_quantize(x, alpha, bits)
        got = _pact_tensor(_call(pact_forward_fn, "pact_forward", x.clone(), alpha, bits), x, "pact_forward")
        problem = _pact_first_mismatch(got, want, x, f"pact_forward(x, alpha={alpha:g}, bits={bits})")
        if problem:
            raise CheckFailed(problem + "." + _pact_forward_hint(got, x, alpha, bits))
    _passed(f"check_pact_forward passed: your pact_forward() matches qsal_lab.quant.pact_quantize on "
            f"{len(_pact_cases())} hand-made tensors (2, 3, 4 and 8 bits).")


class _PactSavedContext:
    """Stands in for autograd's ctx, to call a Function's backward directly."""

    def __init__(self, *saved):
        self.saved_tensors = saved
        self.needs_input_grad = (True, True, False)


def _pact_function_outputs(function, x, alpha, bits, grad):
    """(y, x.grad, alpha.grad) through autograd, plus backward's raw return value."""
    x = x.clone().requires_grad_(True)
    a = torch.tensor(float(alpha), requires_grad=True)
    y = _call(function.apply, "PACTFunction.apply", x, a, bits)
    if y is None:
        raise CheckFailed("PACTFunction.apply(x, alpha, bits) returned None: its forward returns pact_forward(...), "
                          "so finish pact_forward first (check_pact_forward must pass).")
    if not isinstance(y, torch.Tensor) or y.shape != x.shape:
        raise CheckFailed(f"PACTFunction.apply(x, alpha, bits) returned {type(y).__name__} "
                          f"{tuple(getattr(y, 'shape', ()))}; it must return a tensor the shape of x.")
    if not y.requires_grad:
        raise CheckFailed("PACTFunction.apply(...) returned a tensor without a gradient: forward must not detach "
                          "or leave the autograd graph (return a tensor computed from x).")
    try:  # backward's raw return value, to see a per-element alpha gradient that autograd would sum silently
        raw = function.backward(_PactSavedContext(x.detach(), a.detach()), grad.clone())
    except Exception:  # e.g. it reads something else from ctx; the autograd call below reports real errors
        raw = ()
    if raw is None:
        raise CheckFailed("PACTFunction.backward() returned None: fill in its TODO so that it returns "
                          "(grad_x, grad_alpha, None).")
    try:
        y.backward(grad)
    except Exception as e:  # wrong number, type or shape of gradients
        hint = ""
        raw_parts = raw if isinstance(raw, (tuple, list)) else ()
        if "incorrect number of gradients" in str(e):
            hint = (" backward must return one gradient per input of forward(ctx, x, alpha, bits): "
                    "(grad_x, grad_alpha, None), None for bits.")
        elif len(raw_parts) > 1 and isinstance(raw_parts[1], (int, float)) or "got float" in str(e):
            hint = (" The gradient for alpha must be a tensor, like alpha itself: return (grad * (x >= alpha)).sum() "
                    "without .item() or float().")
        elif len(raw_parts) > 2 and raw_parts[2] is not None or "at position 3" in str(e):
            hint = (" bits is a Python int, not a tensor, so it has no gradient: return None in its place "
                    "(not 0): (grad_x, grad_alpha, None).")
        raise CheckFailed(f"backward failed: {type(e).__name__}: {e}.{hint}") from None
    return y.detach(), x.grad, a.grad, raw


def check_pact_function(function):
    """function: a torch.autograd.Function with forward(ctx, x, alpha, bits) and backward(ctx, grad) ->
    (grad_x, grad_alpha, None), compared with qsal_lab.quant.pact_quantize's autograd on hand-made inputs."""
    from qsal_lab.quant import pact_quantize

    if not (isinstance(function, type) and issubclass(function, torch.autograd.Function)):
        raise CheckFailed(f"check_pact_function needs the class itself (a torch.autograd.Function subclass), "
                          f"got {type(function).__name__}.")
    for x, alpha, bits in _pact_cases():
        grad = torch.arange(1.0, len(x) + 1)  # distinct upstream gradients: a wrong mask shows up in the sum
        xr, ar = x.clone().requires_grad_(True), torch.tensor(alpha, requires_grad=True)
        want_y = pact_quantize(xr, ar, bits)
        want_y.backward(grad)
        want_gx, want_ga = xr.grad, ar.grad
        y, gx, ga, raw = _pact_function_outputs(function, x, alpha, bits, grad)
        where = f"(alpha={alpha:g}, bits={bits}, upstream gradient 1..{len(x)})"

        problem = _pact_first_mismatch(y, want_y.detach(), x, f"forward {where}")
        if problem:
            raise CheckFailed(problem + "." + _pact_forward_hint(y, x, alpha, bits))

        if gx is None:
            raise CheckFailed(f"backward returned None as the gradient for x {where}: return grad where "
                              f"0 <= x < alpha and 0 elsewhere.")
        problem = _pact_first_mismatch(gx, want_gx, x, f"gradient for x {where}")
        if problem:
            hint = " The straight-through estimator passes grad where 0 <= x < alpha and 0 elsewhere."
            if torch.allclose(gx, grad):
                hint = " You passed the gradient everywhere; zero it where x was clipped (x < 0 or x >= alpha)."
            elif torch.allclose(gx, grad * (x < alpha)):
                hint = " Zero the gradient where x < 0 too: the clip to 0 is flat there."
            elif torch.allclose(gx, grad * (x >= 0)):
                hint = " Zero the gradient where x >= alpha: those outputs are alpha, whatever x is (alpha gets that gradient)."
            elif torch.allclose(gx, grad * ((x > 0) & (x < alpha))):
                hint = " Keep the gradient at x == 0 exactly (PACT's mask is 0 <= x < alpha)."
            elif torch.allclose(gx, grad * ((x >= 0) & (x <= alpha))):
                hint = " At x == alpha the output is clipped: its gradient goes to alpha, not to x (use x < alpha)."
            raise CheckFailed(problem + "." + hint)

        raw_ga = raw[1] if isinstance(raw, (tuple, list)) and len(raw) > 1 else None
        if isinstance(raw_ga, torch.Tensor) and raw_ga.numel() == x.numel() and x.numel() > 1:
            raise CheckFailed(f"backward returned a gradient for alpha of shape {tuple(raw_ga.shape)}, one value per "
                              f"element of x; alpha is one number shared by all elements, so sum over them: "
                              f"(grad * (x >= alpha)).sum().")
        if ga is None:
            raise CheckFailed(f"backward returned None as the gradient for alpha {where}: return the sum of grad "
                              f"over the elements where x >= alpha.")
        got, want = ga.item(), want_ga.item()
        if abs(got - want) > 1e-4 * max(1.0, abs(want)):
            hint = " d y / d alpha is 1 where x >= alpha (the output is alpha there) and 0 elsewhere; sum grad times that mask."
            if abs(got + want) < 1e-4 * max(1.0, abs(want)):
                hint = " The sign is flipped: d y / d alpha = +1 where x >= alpha."
            elif abs(got - (grad * (x > alpha)).sum().item()) < 1e-4:
                hint = " Include x == alpha in the mask (x >= alpha): the output there is alpha too."
            elif abs(got - (grad * (x < alpha)).sum().item()) < 1e-4 or \
                    abs(got - (grad * ((x >= 0) & (x < alpha))).sum().item()) < 1e-4:
                hint = " The mask is inverted: alpha gets the gradient where x >= alpha (the clipped elements)."
            elif abs(got - grad.sum().item()) < 1e-4:
                hint = " You summed grad over all elements; keep only those where x >= alpha."
            raise CheckFailed(f"gradient for alpha {where}: expected {want:g}, got {got:g}.{hint}")
    _passed(f"check_pact_function passed: outputs, x-gradients and alpha-gradients match qsal_lab.quant.PACT on "
            f"{len(_pact_cases())} hand-made tensors.")


class _PactLearnerModule(nn.Module):
    """A PACT activation that runs the learner's autograd Function."""

    def __init__(self, function, bits, alpha):
        super().__init__()
        self.function, self.bits = function, bits
        self.alpha = nn.Parameter(torch.tensor(float(alpha)))

    def forward(self, x):
        return self.function.apply(x, self.alpha, self.bits)


def check_pact_qat(function, train_ds, test_ds, bits: int = 2, steps: int = 60, min_accuracy: float = 0.95,
                   batch_size: int = 128, lr: float = 1e-3, alpha_lr_scale: float = 30.0):
    """Fine-tune the pretrained SmallCNN at W{bits}A{bits} with the learner's PACT Function in every activation.

    First one batch must give the same loss and alpha gradients as the library's PACT; then `steps`
    AdamW steps of QAT must keep test accuracy >= min_accuracy. As in chapter 4, the alphas get an optimizer
    group of their own (no weight decay, learning rate lr * alpha_lr_scale). Prints the learned alphas.
    """
    from qsal_lab.data import make_loader
    from qsal_lab.pretrained import load_pretrained
    from qsal_lab.quant import PACT, QATConfig, pact_alpha_l2, quantize_model
    from qsal_lab.train import cross_entropy_loss, evaluate, make_optimizer

    config = QATConfig(w_bits=bits, a_bits=bits, pact_alpha=2.0)
    float_model, _ = load_pretrained("mnist_smallcnn")
    reference = quantize_model(copy.deepcopy(float_model), config).train()
    model = quantize_model(copy.deepcopy(float_model), config).train()
    names = [n for n, m in model.named_modules() if isinstance(m, PACT)]
    for name in names:
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent), child, _PactLearnerModule(function, bits, config.pact_alpha))

    def loss_fn(m, x, y):
        return cross_entropy_loss(m, x, y) + config.alpha_l2 * pact_alpha_l2_any(m)

    def pact_alpha_l2_any(m):
        return sum(mod.alpha.pow(2) for mod in m.modules() if isinstance(mod, (PACT, _PactLearnerModule)))

    x, alpha, _ = _pact_cases()[0]
    _pact_function_outputs(function, x, alpha, bits, torch.ones_like(x))  # a clear message if it is unfinished
    torch.manual_seed(0)
    x, y = next(iter(make_loader(train_ds, batch_size=batch_size, train=True, seed=0)))
    model.eval(), reference.eval()  # no dropout, BN running stats: the two forwards are comparable
    try:
        loss = loss_fn(model, x, y)
    except Exception as e:
        raise CheckFailed(f"running SmallCNN with your PACTFunction raised {type(e).__name__}: {e}") from None
    if not isinstance(loss, torch.Tensor):
        raise CheckFailed("PACTFunction.apply returned None inside the model: finish pact_forward first "
                          "(check_pact_forward must pass).")
    want = cross_entropy_loss(reference, x, y) + config.alpha_l2 * pact_alpha_l2(reference)
    loss.backward()
    want.backward()
    if abs(loss.item() - want.item()) > 1e-4:
        raise CheckFailed(f"SmallCNN with your PACT gives loss {loss.item():.5f} on a batch, the library's PACT "
                          f"{want.item():.5f}; run check_pact_function first.")
    for name in names:
        got, ref = model.get_submodule(name).alpha.grad, reference.get_submodule(name).alpha.grad
        if got is None or abs(got.item() - ref.item()) > 1e-3 * max(1.0, abs(ref.item())):
            raise CheckFailed(f"alpha gradient of activation {name!r}: expected {ref.item():.5g}, got "
                              f"{None if got is None else round(got.item(), 5)}; run check_pact_function first.")
    # a short QAT run with the learner's PACT
    model.zero_grad(set_to_none=True)
    model.train()
    opt = make_optimizer(model, "adamw", lr, 0.0, alpha_lr_scale=alpha_lr_scale)
    torch.manual_seed(0)  # dropout
    done = 0
    while done < steps:
        for xb, yb in make_loader(train_ds, batch_size=batch_size, train=True, seed=done):
            opt.zero_grad(set_to_none=True)
            loss_fn(model, xb, yb).backward()
            opt.step()
            done += 1
            if done == steps:
                break
    acc = evaluate(model, make_loader(test_ds, batch_size=512))["accuracy"]
    learned = {n: model.get_submodule(n).alpha.item() for n in names}
    alphas = ", ".join(f"{n}: {a:.3f} ({a - config.pact_alpha:+.3f})" for n, a in learned.items())
    if acc < min_accuracy:
        raise CheckFailed(f"after {steps} QAT steps with your PACT, W{bits}A{bits} SmallCNN reaches {acc:.2%} test "
                          f"accuracy, below {min_accuracy:.0%}; learned alphas: {alphas}.")
    _passed(f"check_pact_qat passed: same loss and alpha gradients as the library on a batch; after {steps} QAT "
            f"steps your W{bits}A{bits} SmallCNN reaches {acc:.2%} on {len(test_ds):,} test images. "
            f"Learned alphas (all started at {config.pact_alpha:g}; learning rate {lr * alpha_lr_scale:g}, "
            f"{alpha_lr_scale:g}x the weights'): {alphas}.")
