"""Checks for chapter 8's exercise (CIFAR-10 with ResNet-20): per-channel against per-tensor weight
quantization, layer by layer.

    quantize_weight(w, bits, per_channel)          -> w_q, symmetric narrow-range fake-quantized weights
    layer_errors(model, bits, quantize)            -> {layer name: (per-tensor error, per-channel error)}
    quantize_weights(model, bits, per_channel, quantize) -> a quantized copy of the model

quantize_weight is qsal_lab.quant.symmetric_weight (what ONNX Runtime does to int8 weights):
scale = max|w| / (2^(k-1) - 1), over each output channel (dim 0) or over the whole tensor, and
w_q = round(w / scale) * scale. An error is the relative MSE, sum((w_q - w)^2) / sum(w^2). The copy keeps the
first and the last weight layer at 8 bits, like every quantized model in the book.
"""
from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from .common import CheckFailed, allclose, as_tensor, call, close, mismatches, passed, quietly

__all__ = ["check_quantize_weight", "check_layer_errors", "check_quantize_weights", "weight_layers",
           "reference_layer_errors"]

EDGE_BITS = 8  # the first and the last weight layer keep 8-bit weights
# a relative error sums the squares of a whole layer's weights: float32 rounding adds up over thousands of terms
SUM_SCALE = 16

# what torch says when a (C,) scale meets a (C, I, kh, kw) weight
BROADCAST_HINT = ("a per-channel scale has one number per output channel, shape (C,); reshape it to (C, 1, 1, 1) "
                  "for a conv weight (scale.view(-1, *[1] * (w.dim() - 1))) so that it divides each channel's "
                  "weights")
SHAPE_ERRORS = [("must match the size of tensor", BROADCAST_HINT), ("expanded size", BROADCAST_HINT)]
# what torch says to `m.weight = tensor` (a Parameter must stay a Parameter)
ASSIGN_ERRORS = [("cannot assign", "a weight is an nn.Parameter: assign the quantized values into it, under "
                                   "torch.no_grad(): m.weight.copy_(quantize(m.weight, bits, per_channel))")]


def weight_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, module) of every Conv2d and Linear, in module order (what the exercise quantizes)."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def _reference(w, bits, per_channel):
    from ..quant import symmetric_weight

    return symmetric_weight(w.detach(), bits, per_channel)


def relative_error(w: torch.Tensor, w_q: torch.Tensor) -> float:
    w, w_q = w.detach().double(), w_q.detach().double()
    return float((w_q - w).square().sum() / w.square().sum().clamp_min(1e-300))


# ----------------------------------------------------------------------------- (1) quantize_weight

def _cases():
    """(w, bits, per_channel): a conv weight whose output channels differ in range by 100x, a Linear
    weight, and a channel of one sign only; random values, so no element sits on a rounding tie."""
    g = torch.Generator().manual_seed(8)
    conv = torch.randn(6, 3, 3, 3, generator=g) * torch.logspace(-2, 0, 6).view(-1, 1, 1, 1)
    linear = torch.randn(5, 16, generator=g) * torch.tensor([1.0, 0.3, 0.05, 2.0, 0.6]).view(-1, 1)
    linear[1] = linear[1].abs()  # all positive: max(w) = max|w| here, min(w) != -max|w|
    linear[2] = -linear[2].abs()  # all negative: max(w) < 0, max|w| comes from the negative end
    return [(conv, 4, True), (conv, 4, False), (linear, 2, True), (linear, 3, False), (conv, 8, True),
            (linear, 8, False)]


def _scaled(w, bits, per_channel, top=None, steps=None, rounding=torch.round, dims=None):
    """round(w / s) * s for one of the usual ways of getting the scale s wrong."""
    steps = steps if steps is not None else 2 ** (bits - 1) - 1
    top = top or (lambda t, d: t.abs().amax(dim=d, keepdim=True) if d is not None else t.abs().max())
    if per_channel:
        d = dims if dims is not None else tuple(range(1, w.dim()))
    else:
        d = None
    s = (top(w, d) / steps).clamp_min(1e-12)
    return rounding(w / s) * s


def _quantize_hint(got, w, bits, per_channel):
    """Name the usual mistake when the learner's output equals what it gives."""
    qmax = 2 ** (bits - 1) - 1
    other_dims = (0,) + tuple(range(2, w.dim()))  # one scale per INPUT channel
    candidates = []
    if per_channel:
        candidates.append((_scaled(w, bits, False),
                           "per_channel=True but every channel got the same scale: take max|w| over each output "
                           "channel's weights, w.flatten(1).abs().amax(dim=1) (one number per row of dim 0), "
                           "not over the whole tensor."))
        if w.dim() > 2 or w.shape[1] > 1:
            candidates.append((_scaled(w, bits, True, dims=other_dims),
                               "Your scales run along the wrong dimension: one per INPUT channel (dim 1). An output "
                               "channel is dim 0: max|w| over w[c] for each c, w.flatten(1).abs().amax(dim=1)."))
        last = w.dim() - 1
        for dims, what in (((0,), "over dim 0 (amax(dim=0)), which gives one scale per position of the other "
                                  "dimensions, shared by all output channels"),
                           ((last,), f"over the last dimension only (amax(dim={last}) or dim=-1), which gives one "
                                     f"scale per row of the last axis, not per output channel")):
            candidates.append((_scaled(w, bits, True, dims=dims),
                               f"Your scales run along the wrong axis: you took max|w| {what}. A per-channel scale "
                               f"is the largest |w| of each output channel w[c] (dim 0 indexes them), taken over all "
                               f"its other dimensions: w.flatten(1).abs().amax(dim=1), one number per row."))
    else:
        candidates.append((_scaled(w, bits, True),
                           "per_channel=False must use ONE scale for the whole tensor (w.abs().max()); you gave "
                           "every output channel its own."))
    candidates += [
        (_scaled(w, bits, per_channel, steps=2**bits - 1),
         f"You divided max|w| by 2^k - 1 = {2**bits - 1}: that is the step of UNSIGNED codes. Symmetric signed codes "
         f"run from -{qmax} to {qmax}, so scale = max|w| / (2^(k-1) - 1) = max|w| / {qmax}."),
        (_scaled(w, bits, per_channel, steps=2 ** (bits - 1)),
         f"You divided max|w| by 2^(k-1) = {2 ** (bits - 1)}; the narrow symmetric range has codes -{qmax}..{qmax}, "
         f"so divide by 2^(k-1) - 1 = {qmax} (then the largest weight lands exactly on code {qmax})."),
        (_scaled(w, bits, per_channel, top=lambda t, d: t.amax(dim=d, keepdim=True) if d is not None else t.max()),
         "The scale comes from max(w), not from max|w|: a channel whose largest magnitude is negative gets a wrong "
         "(or negative) scale. Use the largest magnitude, w.abs().max()."),
        (_scaled(w, bits, per_channel,
                 top=lambda t, d: ((t.amax(dim=d, keepdim=True) - t.amin(dim=d, keepdim=True)) / 2
                                   if d is not None else (t.max() - t.min()) / 2)),
         "You took (max(w) - min(w)) / 2 as the range, the asymmetric min-max recipe; symmetric weight quantization "
         "has no zero point and covers [-max|w|, max|w|]: scale = max|w| / (2^(k-1) - 1)."),
        (_scaled(w, bits, per_channel, rounding=torch.floor),
         "You rounded down (floor); round to the nearest code, torch.round(w / scale)."),
        (_scaled(w, bits, per_channel, rounding=torch.trunc),
         "You truncated toward zero (int() or .to(torch.int)); round to the nearest code, torch.round(w / scale)."),
        (_scaled(w, bits, per_channel) / _scale_of(w, bits, per_channel),
         "That is the integer code round(w / scale); return the weight it stands for, code * scale."),
        (w, "The output equals the input: nothing was rounded. w_q = round(w / scale) * scale."),
    ]
    for wrong, hint in candidates:
        if allclose(got, wrong):
            return " " + hint
    return (" Symmetric narrow range: scale = max|w| / (2^(k-1) - 1) (per output channel or per tensor), "
            "w_q = round(w / scale) * scale.")


def _scale_of(w, bits, per_channel):
    from ..quant.weights import symmetric_scale

    s = symmetric_scale(w, bits, per_channel)
    return s.view(-1, *[1] * (w.dim() - 1)) if per_channel else s


def _tensor(value, like, name):
    return as_tensor(value, name, like, "the quantized weight", arg="w",
                     why_same_shape="w_q has the shape of w (one quantized value per weight).").detach().float()


def check_quantize_weight(quantize_weight):
    """quantize_weight(w, bits, per_channel) -> symmetric narrow-range fake-quantized w, as
    qsal_lab.quant.symmetric_weight, on hand-made conv and linear weights at 2, 3, 4 and 8 bits."""
    for w, bits, per_channel in _cases():
        given = w.clone()
        got = _tensor(call(quantize_weight, "quantize_weight", given, bits, per_channel, hints=SHAPE_ERRORS), w,
                      "quantize_weight")
        where = f"quantize_weight(w of shape {tuple(w.shape)}, bits={bits}, per_channel={per_channel})"
        if not torch.equal(given, w):
            raise CheckFailed(f"{where} changed w in place; compute w_q in a new tensor (w / scale, not w.div_).")
        want = _reference(w, bits, per_channel)
        bad = mismatches(got, want)
        if len(bad):
            i = tuple(int(v) for v in np.unravel_index(int(bad[0]), tuple(w.shape)))
            raise CheckFailed(f"{where}: at w{list(i)} = {w[i].item():.6g} expected {want[i].item():.6g}, got "
                              f"{got[i].item():.6g} ({len(bad)} of {w.numel()} weights differ)."
                              + _quantize_hint(got, w, bits, per_channel))
    passed(f"check_quantize_weight passed: your quantize_weight() matches qsal_lab.quant.symmetric_weight on "
           f"{len(_cases())} conv and linear weights (2, 3, 4 and 8 bits, per channel and per tensor).")


# ----------------------------------------------------------------------------- (2) layer_errors

def reference_layer_errors(model: nn.Module, bits: int) -> dict:
    """{layer: (per-tensor error, per-channel error)}: relative MSE of symmetric k-bit weights."""
    return {name: tuple(relative_error(m.weight, _reference(m.weight, bits, pc)) for pc in (False, True))
            for name, m in weight_layers(model)}


def _pair(value, name, layer):
    if isinstance(value, dict):
        raise CheckFailed(f"{name}()[{layer!r}] is a dict; give each layer a pair (per-tensor error, per-channel "
                          f"error).")
    try:
        pair = [float(v.item() if isinstance(v, torch.Tensor) else v) for v in value]
    except (TypeError, ValueError):
        raise CheckFailed(f"{name}()[{layer!r}] is {type(value).__name__} {value!r}; give each layer two numbers, "
                          f"(per-tensor error, per-channel error).") from None
    if len(pair) != 2:
        raise CheckFailed(f"{name}()[{layer!r}] has {len(pair)} numbers; give two: (per-tensor error, per-channel "
                          f"error).")
    return pair


def _layer_errors_hint(got, model, bits, layer, w, want):
    """Why the learner's pair for one layer differs."""
    g = torch.tensor(got, dtype=torch.float64)
    w64 = w.detach().double()
    variants = []
    for what, fn in [
        ("swapped", lambda q: (want[1], want[0])),
        ("mse", lambda q: tuple(float((q[pc] - w64).square().mean()) for pc in (False, True))),
        ("sse", lambda q: tuple(float((q[pc] - w64).square().sum()) for pc in (False, True))),
        ("norm", lambda q: tuple(float((q[pc] - w64).norm() / w64.norm()) for pc in (False, True))),
        ("abs", lambda q: tuple(float((q[pc] - w64).abs().mean() / w64.abs().mean()) for pc in (False, True))),
        ("over_q", lambda q: tuple(float((q[pc] - w64).square().sum() / q[pc].square().sum()) for pc in (False, True))),
    ]:
        q = {pc: _reference(w, bits, pc).double() for pc in (False, True)}
        variants.append((what, torch.tensor(fn(q), dtype=torch.float64)))
    hints = {
        "swapped": "Your pair is (per-channel, per-tensor); return (per-tensor error, per-channel error), in that order.",
        "mse": "That is the mean squared error itself; divide it by the mean square weight, "
               "((w_q - w)**2).sum() / (w**2).sum(), so that layers of different scales compare.",
        "sse": "That is the summed squared error; divide it by (w**2).sum(), the layer's own energy.",
        "norm": "That is ||w_q - w|| / ||w||, the square root of the relative error; do not take the root: "
                "((w_q - w)**2).sum() / (w**2).sum().",
        "abs": "That is a mean ABSOLUTE error ratio; use squares: ((w_q - w)**2).sum() / (w**2).sum().",
        "over_q": "You divided by the quantized weights' energy; divide by the float weights', (w**2).sum().",
    }
    for what, v in variants:
        if all(close(a, b, magnitude=0, scale=SUM_SCALE) for a, b in zip(g.tolist(), v.tolist())):
            return " " + hints[what]
    return (" Each error is the relative MSE of that layer's weight, ((w_q - w)**2).sum() / (w**2).sum(), with w_q = "
            "quantize(w, bits, per_channel=False) first and per_channel=True second.")


def check_layer_errors(layer_errors, model: nn.Module, bits: int = 4, show: int = 5) -> dict:
    """layer_errors(model, bits, quantize) -> {layer: (per-tensor error, per-channel error)} for every Conv2d and
    Linear of `model`, with the library's quantizer passed as `quantize` (so this check does not depend on yours).
    Prints the `show` layers where one scale per tensor costs most against one per channel; returns the dict."""
    from ..quant import symmetric_weight

    frozen = {k: v.clone() for k, v in model.state_dict().items()}
    got = call(layer_errors, "layer_errors", model, bits, symmetric_weight)
    if got is None:
        raise CheckFailed("layer_errors() returned None: fill in its TODO so that it returns {layer name: "
                          "(per-tensor error, per-channel error)}.")
    if not isinstance(got, dict):
        raise CheckFailed(f"layer_errors() returned a {type(got).__name__}; return a dict {{layer name: (per-tensor "
                          f"error, per-channel error)}}.")
    if any(not torch.equal(v, model.state_dict()[k]) for k, v in frozen.items()):
        model.load_state_dict(frozen)
        raise CheckFailed("layer_errors() changed the model's weights; measure the error of a quantized COPY "
                          "(w_q = quantize(m.weight, ...)), never assign it to m.weight. (The model was restored.)")
    not_names = [k for k in got if not isinstance(k, str)]
    if not_names:
        raise CheckFailed(f"layer_errors()'s keys must be the layers' names, strings as model.named_modules() gives "
                          f"them (e.g. 'layer1.0.conv1'); got a key of type {type(not_names[0]).__name__}.")
    layers = dict(weight_layers(model))
    missing = [n for n in layers if n not in got]
    extra = [n for n in got if n not in layers]
    if extra:
        kinds = ", ".join(f"{n} ({type(model.get_submodule(n)).__name__})" if _has(model, n) else n for n in extra[:4])
        raise CheckFailed(f"layer_errors() has entries for {len(extra)} name(s) that are not Conv2d or Linear layers "
                          f"of the model: {kinds}. Loop over model.named_modules() and keep the nn.Conv2d and "
                          f"nn.Linear ones.")
    if missing:
        raise CheckFailed(f"layer_errors() misses {len(missing)} of the model's {len(layers)} weight layers: "
                          f"{', '.join(missing[:6])}{' ...' if len(missing) > 6 else ''}. Every nn.Conv2d AND "
                          f"nn.Linear counts (the last layer, fc, is a Linear), named as model.named_modules() names "
                          f"them.")
    want = reference_layer_errors(model, bits)
    for name, module in layers.items():
        pair = _pair(got[name], "layer_errors", name)
        if not all(close(a, b, magnitude=0, scale=SUM_SCALE) for a, b in zip(pair, want[name])):
            raise CheckFailed(f"layer_errors()[{name!r}] at {bits} bits: expected (per-tensor {want[name][0]:.5g}, "
                              f"per-channel {want[name][1]:.5g}), got ({pair[0]:.5g}, {pair[1]:.5g})."
                              + _layer_errors_hint(pair, model, bits, name, module.weight, want[name]))
    ratio = {n: pt / max(pc, 1e-300) for n, (pt, pc) in want.items()}
    worst = sorted(ratio, key=ratio.get, reverse=True)[:show]
    lines = "; ".join(f"{n} {ratio[n]:.1f}x ({want[n][0]:.2%} vs {want[n][1]:.2%})" for n in worst)
    passed(f"check_layer_errors passed: all {len(layers)} weight layers at {bits} bits match. One scale per tensor "
           f"costs most against one per channel in: {lines}.")
    return {n: tuple(_pair(got[n], "layer_errors", n)) for n in layers}


def _has(model, name):
    try:
        model.get_submodule(name)
        return True
    except AttributeError:
        return False


# ----------------------------------------------------------------------------- (3) quantize_weights

def _reference_copy(model, bits, per_channel):
    layers = weight_layers(model)
    edges = {layers[0][0], layers[-1][0]}
    q = copy.deepcopy(model)
    with torch.no_grad():
        for name, m in weight_layers(q):
            m.weight.copy_(_reference(m.weight, EDGE_BITS if name in edges else bits, per_channel))
    return q


def check_quantize_weights(quantize_weights, model: nn.Module, test_loader, bits: int = 4, quantize=None) -> dict:
    """quantize_weights(model, bits, per_channel, quantize) -> a copy of `model` with every Conv2d/Linear weight
    replaced by quantize(w, bits, per_channel) (the first and last at 8 bits); `model` itself untouched.
    Compares the copies with the library's (per tensor and per channel), then prints their test accuracy."""
    from ..quant import symmetric_weight
    from ..train import evaluate

    quantize = quantize or symmetric_weight
    frozen = {k: v.clone() for k, v in model.state_dict().items()}
    layers = weight_layers(model)
    first, last = layers[0][0], layers[-1][0]
    copies = {}
    for per_channel in (False, True):
        q = call(quantize_weights, "quantize_weights", model, bits, per_channel, symmetric_weight, hints=ASSIGN_ERRORS)
        if q is None:
            raise CheckFailed("quantize_weights() returned None: fill in its TODO so that it returns the quantized "
                              "copy of the model.")
        if not isinstance(q, nn.Module):
            raise CheckFailed(f"quantize_weights() returned a {type(q).__name__}; return the quantized model "
                              f"(a copy.deepcopy of the model with new weights).")
        changed = any(not torch.equal(v, model.state_dict()[k]) for k, v in frozen.items())
        if q is model or changed:
            model.load_state_dict(frozen)
            raise CheckFailed("quantize_weights() changed the model it was given; quantize a copy "
                              "(q = copy.deepcopy(model)) and return that. (The model was restored.)")
        want = _reference_copy(model, bits, per_channel)
        mine = dict(weight_layers(q))
        for name, ref in weight_layers(want):
            if name not in mine:
                raise CheckFailed(f"the returned model has no weight layer {name!r}; keep the model's structure "
                                  f"(copy.deepcopy), change only the weights.")
            w, w_ref = mine[name].weight.detach(), ref.weight.detach()
            if allclose(w, w_ref):
                continue
            original = model.get_submodule(name).weight.detach()
            edge = name in (first, last)
            how = f"per_channel={per_channel}"
            if edge and allclose(w, _reference(original, bits, per_channel)):
                hint = (f"{name} is the {'first' if name == first else 'last'} weight layer: it keeps {EDGE_BITS}-bit "
                        f"weights, like every quantized model in the book (quantize(w, 8, per_channel)).")
            elif not edge and allclose(w, _reference(original, EDGE_BITS, per_channel)):
                hint = f"only the first and the last layer keep {EDGE_BITS} bits; {name} gets `bits` ({bits})."
            elif torch.equal(w, original):
                hint = "its weight is the float one: assign the quantized weight (with torch.no_grad(): m.weight.copy_(...))."
            elif allclose(w, _reference(original, bits if not edge else EDGE_BITS, not per_channel)):
                hint = "you passed the opposite per_channel to quantize; pass the per_channel you were given."
            else:
                hint = "w_q = quantize(m.weight, bits, per_channel), 8 bits for the first and last layer."
            raise CheckFailed(f"quantize_weights(model, bits={bits}, {how}): layer {name!r} differs from the "
                              f"library's: {hint}")
        copies[per_channel] = q
    if quantize is not symmetric_weight:  # the learner's own quantizer (its own check first), through their copy
        with quietly():
            check_quantize_weight(quantize)
        for per_channel in (False, True):
            q = call(quantize_weights, "quantize_weights", model, bits, per_channel, quantize)
            mine, want = dict(weight_layers(q)), dict(weight_layers(copies[per_channel]))
            for name, ref in want.items():
                if not allclose(mine[name].weight.detach(), ref.weight.detach()):
                    raise CheckFailed(f"with your quantize_weight, layer {name!r} (per_channel={per_channel}) differs "
                                      f"from the library's quantizer; run check_quantize_weight first.")
            copies[per_channel] = q
    float_acc = evaluate(model, test_loader)["accuracy"]
    acc = {pc: evaluate(copies[pc], test_loader)["accuracy"] for pc in (False, True)}
    n = len(test_loader.dataset)
    passed(f"check_quantize_weights passed: your copies match the library's. W{bits} weights (first/last at "
           f"{EDGE_BITS}, activations in float) on {n:,} test images: per tensor {acc[False]:.2%}, per channel "
           f"{acc[True]:.2%}, float {float_acc:.2%}.")
    return {"float": float_acc, "per_tensor": acc[False], "per_channel": acc[True]}
