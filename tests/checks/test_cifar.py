"""The chapter 8 (CIFAR-10, ResNet-20) exercise checks: right answers pass, typical mistakes fail with the
message that explains them."""
import copy

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from qsal_lab.checks import CheckFailed
from qsal_lab.checks.cifar import (check_layer_errors, check_quantize_weight, check_quantize_weights,
                                   reference_layer_errors, weight_layers)
from qsal_lab.models import resnet20
from qsal_lab.quant import fold_batchnorm, symmetric_weight


# ----------------------------------------------------------------------------- quantize_weight

def good_quantize(w, bits, per_channel):
    qmax = 2 ** (bits - 1) - 1
    if per_channel:
        top = w.flatten(1).abs().amax(dim=1).view(-1, *[1] * (w.dim() - 1))
    else:
        top = w.abs().max()
    scale = top / qmax
    return torch.round(w / scale) * scale


def clamped_quantize(w, bits, per_channel):  # another right answer: clamps (a no-op) and loops over channels
    qmax = 2 ** (bits - 1) - 1
    if not per_channel:
        s = w.abs().max() / qmax
        return (w / s).round().clamp(-qmax, qmax) * s
    return torch.stack([(c / (c.abs().max() / qmax)).round().clamp(-qmax, qmax) * (c.abs().max() / qmax) for c in w])


def quantize_with(steps=None, top=None, rounding=torch.round, dims=None, codes=False):
    def quantize(w, bits, per_channel):
        n = steps(bits) if steps else 2 ** (bits - 1) - 1
        if per_channel:
            d = dims if dims is not None else tuple(range(1, w.dim()))
            t = top(w, d) if top else w.abs().amax(dim=d, keepdim=True)
        else:
            t = top(w, None) if top else w.abs().max()
        scale = t / n
        q = rounding(w / scale)
        return q if codes else q * scale
    return quantize


def test_check_quantize_weight_passes_right_answers(capsys):
    check_quantize_weight(good_quantize)
    check_quantize_weight(clamped_quantize)
    check_quantize_weight(lambda w, b, pc: symmetric_weight(w, b, pc))
    assert "✅ check_quantize_weight passed" in capsys.readouterr().out


def test_check_quantize_weight_names_the_usual_mistakes():
    with pytest.raises(CheckFailed, match=r"quantize_weight\(\) returned None: fill in its TODO"):
        check_quantize_weight(lambda w, b, pc: None)
    with pytest.raises(CheckFailed, match="every channel got the same scale"):
        check_quantize_weight(lambda w, b, pc: good_quantize(w, b, False))
    with pytest.raises(CheckFailed, match="must use ONE scale for the whole tensor"):
        check_quantize_weight(lambda w, b, pc: good_quantize(w, b, True))
    with pytest.raises(CheckFailed, match="wrong dimension: one per INPUT channel"):
        check_quantize_weight(quantize_with(dims=(0, 2, 3)))
    with pytest.raises(CheckFailed, match="by 2\\^k - 1 = 15: that is the step of UNSIGNED codes"):
        check_quantize_weight(quantize_with(steps=lambda b: 2**b - 1))
    with pytest.raises(CheckFailed, match="by 2\\^\\(k-1\\) = 8; the narrow symmetric range"):
        check_quantize_weight(quantize_with(steps=lambda b: 2 ** (b - 1)))
    with pytest.raises(CheckFailed, match=r"from max\(w\), not from max\|w\|"):
        check_quantize_weight(quantize_with(top=lambda w, d: w.amax(dim=d, keepdim=True) if d else w.max()))
    with pytest.raises(CheckFailed, match="rounded down"):
        check_quantize_weight(quantize_with(rounding=torch.floor))
    with pytest.raises(CheckFailed, match="truncated toward zero"):
        check_quantize_weight(quantize_with(rounding=torch.trunc))
    with pytest.raises(CheckFailed, match="That is the integer code"):
        check_quantize_weight(quantize_with(codes=True))
    with pytest.raises(CheckFailed, match="equals the input: nothing was rounded"):
        check_quantize_weight(lambda w, b, pc: w.clone())

    def unshaped(w, bits, per_channel):  # a (C,) scale against a (C, I, kh, kw) weight
        scale = (w.flatten(1).abs().amax(1) if per_channel else w.abs().max()) / (2 ** (bits - 1) - 1)
        return torch.round(w / scale) * scale
    with pytest.raises(CheckFailed, match=r"raised RuntimeError.*reshape it to \(C, 1, 1, 1\)"):
        check_quantize_weight(unshaped)

    def in_place(w, bits, per_channel):
        q = good_quantize(w, bits, per_channel)
        w.mul_(0)
        return q
    with pytest.raises(CheckFailed, match="changed w in place"):
        check_quantize_weight(in_place)
    with pytest.raises(CheckFailed, match=r"returned shape \(6,\) for w of shape \(6, 3, 3, 3\)"):
        check_quantize_weight(lambda w, b, pc: w.flatten(1).abs().amax(1))
    with pytest.raises(CheckFailed, match="returned a value of type list; return a torch tensor"):
        check_quantize_weight(lambda w, b, pc: w.tolist())


# ----------------------------------------------------------------------------- layer_errors

@pytest.fixture(scope="module")
def folded():
    torch.manual_seed(0)
    model = resnet20()
    for m in model.modules():  # BN statistics that differ per channel, as after training
        if isinstance(m, nn.BatchNorm2d):
            m.running_var.uniform_(0.01, 4.0)
            m.weight.data.uniform_(0.2, 2.0)
    return fold_batchnorm(model)


def good_layer_errors(model, bits, quantize):
    out = {}
    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            w = m.weight.detach()
            out[name] = tuple(float(((quantize(w, bits, pc) - w) ** 2).sum() / (w ** 2).sum()) for pc in (False, True))
    return out


def errors_with(fn, only=(nn.Conv2d, nn.Linear)):
    def layer_errors(model, bits, quantize):
        return {name: fn(m.weight.detach(), quantize, bits) for name, m in model.named_modules() if isinstance(m, only)}
    return layer_errors


def test_check_layer_errors_passes_and_names_the_worst_layers(folded, capsys):
    got = check_layer_errors(good_layer_errors, folded, bits=4)
    out = capsys.readouterr().out
    assert "✅ check_layer_errors passed: all 20 weight layers" in out
    assert "One scale per tensor costs most" in out
    want = reference_layer_errors(folded, 4)
    assert got.keys() == want.keys() and all(got[n] == pytest.approx(want[n]) for n in want)
    ratios = {n: pt / pc for n, (pt, pc) in got.items()}
    assert all(r >= 1 for r in ratios.values())  # per channel is never worse


def test_check_layer_errors_names_the_usual_mistakes(folded):
    with pytest.raises(CheckFailed, match=r"layer_errors\(\) returned None"):
        check_layer_errors(lambda m, b, q: None, folded)
    with pytest.raises(CheckFailed, match="returned a list; return a dict"):
        check_layer_errors(lambda m, b, q: list(good_layer_errors(m, b, q).values()), folded)
    with pytest.raises(CheckFailed, match=r"misses 1 of the model's 20 weight layers: fc.*nn.Linear"):
        check_layer_errors(errors_with(_pair, only=nn.Conv2d), folded)
    with pytest.raises(CheckFailed, match=r"not Conv2d or Linear layers of the model: layers.0.0.bn1 \(Identity\)"):
        def with_bn(model, bits, quantize):
            out = good_layer_errors(model, bits, quantize)
            out["layers.0.0.bn1"] = (0.0, 0.0)
            return out
        check_layer_errors(with_bn, folded)
    with pytest.raises(CheckFailed, match=r"\(per-channel, per-tensor\); return \(per-tensor error, per-channel"):
        check_layer_errors(lambda m, b, q: {n: (pc, pt) for n, (pt, pc) in good_layer_errors(m, b, q).items()}, folded)
    with pytest.raises(CheckFailed, match="mean squared error itself; divide it by the mean square weight"):
        check_layer_errors(errors_with(lambda w, q, b: tuple(float(((q(w, b, pc) - w) ** 2).mean())
                                                             for pc in (False, True))), folded)
    with pytest.raises(CheckFailed, match="square root of the relative error"):
        check_layer_errors(errors_with(lambda w, q, b: tuple(float((q(w, b, pc) - w).norm() / w.norm())
                                                             for pc in (False, True))), folded)
    with pytest.raises(CheckFailed, match="divided by the quantized weights' energy"):
        check_layer_errors(errors_with(lambda w, q, b: tuple(float(((q(w, b, pc) - w) ** 2).sum() / (q(w, b, pc) ** 2).sum())
                                                             for pc in (False, True))), folded)
    with pytest.raises(CheckFailed, match=r"\['conv1'\] has 1 numbers"):
        check_layer_errors(lambda m, b, q: {n: (pt,) for n, (pt, pc) in good_layer_errors(m, b, q).items()}, folded)

    def overwrites(model, bits, quantize):
        out = good_layer_errors(model, bits, quantize)
        with torch.no_grad():
            model.fc.weight.copy_(quantize(model.fc.weight, bits, True))
        return out
    before = copy.deepcopy(folded.state_dict())
    with pytest.raises(CheckFailed, match="changed the model's weights.*restored"):
        check_layer_errors(overwrites, folded)
    assert all(torch.equal(v, folded.state_dict()[k]) for k, v in before.items())


def _pair(w, quantize, bits):
    return tuple(float(((quantize(w, bits, pc) - w) ** 2).sum() / (w ** 2).sum()) for pc in (False, True))


# ----------------------------------------------------------------------------- quantize_weights

@pytest.fixture(scope="module")
def loader():
    g = torch.Generator().manual_seed(1)
    return DataLoader(TensorDataset(torch.randn(40, 3, 32, 32, generator=g), torch.arange(40) % 10), batch_size=20)


def good_quantize_weights(model, bits, per_channel, quantize):
    q = copy.deepcopy(model)
    layers = [n for n, m in q.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        for name in layers:
            m = q.get_submodule(name)
            m.weight.copy_(quantize(m.weight, 8 if name in (layers[0], layers[-1]) else bits, per_channel))
    return q


def test_check_quantize_weights_passes_and_reports_accuracy(folded, loader, capsys):
    result = check_quantize_weights(good_quantize_weights, folded, loader, bits=4, quantize=good_quantize)
    out = capsys.readouterr().out
    assert "✅ check_quantize_weights passed" in out and "on 40 test images: per tensor" in out
    assert set(result) == {"float", "per_tensor", "per_channel"}


def test_check_quantize_weights_names_the_usual_mistakes(folded, loader):
    with pytest.raises(CheckFailed, match=r"quantize_weights\(\) returned None"):
        check_quantize_weights(lambda m, b, pc, q: None, folded, loader)

    def all_layers(model, bits, per_channel, quantize):
        q = copy.deepcopy(model)
        with torch.no_grad():
            for _, m in weight_layers(q):
                m.weight.copy_(quantize(m.weight, bits, per_channel))
        return q
    with pytest.raises(CheckFailed, match="conv1 is the first weight layer: it keeps 8-bit weights"):
        check_quantize_weights(all_layers, folded, loader)

    def in_place(model, bits, per_channel, quantize):
        with torch.no_grad():
            for _, m in weight_layers(model):
                m.weight.copy_(quantize(m.weight, bits, per_channel))
        return model
    before = copy.deepcopy(folded.state_dict())
    with pytest.raises(CheckFailed, match=r"changed the model it was given; quantize a copy"):
        check_quantize_weights(in_place, folded, loader)
    assert all(torch.equal(v, folded.state_dict()[k]) for k, v in before.items())
    with pytest.raises(CheckFailed, match="weight is the float one: assign the quantized weight"):
        check_quantize_weights(lambda m, b, pc, q: copy.deepcopy(m), folded, loader)
    with pytest.raises(CheckFailed, match="opposite per_channel"):
        check_quantize_weights(lambda m, b, pc, q: good_quantize_weights(m, b, not pc, q), folded, loader)
    # the learner's own quantizer goes through its check first: its mistake is named there
    with pytest.raises(CheckFailed, match=r"quantize_weight\(w of shape .* You rounded down \(floor\)"):
        check_quantize_weights(good_quantize_weights, folded, loader, quantize=quantize_with(rounding=torch.floor))

    def floor_on_resnet(w, bits, per_channel):  # right on the hand-made weights (6 or 5 rows), wrong on ResNet-20
        rounding = torch.floor if w.shape[0] not in (5, 6) else torch.round
        return quantize_with(rounding=rounding)(w, bits, per_channel)
    with pytest.raises(CheckFailed, match="with your quantize_weight, layer .* run check_quantize_weight first"):
        check_quantize_weights(good_quantize_weights, folded, loader, quantize=floor_on_resnet)
