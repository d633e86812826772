"""attribute(): every method on float, PACT and int8 ONNX models; shapes, errors, the STE gradient."""
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from qsal_lab.quant import QATConfig, quantize_model
from qsal_lab.quant.int8 import OnnxClassifier, export_onnx, quantize_onnx
from qsal_lab.saliency import (GRADIENT_METHODS, METHODS, attribute, black_baseline, last_conv_layer,
                               normalize_maps)


def tiny_cnn(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.Conv2d(4, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                         nn.Linear(32, 3)).eval()


X = torch.randn(5, 1, 12, 12, generator=torch.Generator().manual_seed(1))
Y = torch.tensor([0, 1, 2, 1, 0])
FAST = {"ig": {"n_steps": 8}, "smoothgrad": {"nt_samples": 4, "seed": 0}, "occlusion": {"window": 3}}


@pytest.fixture(scope="module")
def onnx_int8(tmp_path_factory):
    folder = tmp_path_factory.mktemp("onnx")
    fp32 = export_onnx(tiny_cnn(), folder / "tiny.onnx", input_shape=(1, 1, 12, 12))
    calib = DataLoader(TensorDataset(torch.randn(32, 1, 12, 12), torch.zeros(32, dtype=torch.long)), batch_size=16)
    return OnnxClassifier(quantize_onnx(fp32, folder / "tiny_int8.onnx", calib, num_batches=2), threads=1)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("kind", ["float", "pact"])
def test_torch_models_give_finite_maps_of_the_input_shape(method, kind):
    model = tiny_cnn()
    if kind == "pact":
        quantize_model(model, QATConfig(w_bits=4, a_bits=4)).eval()
    model.train()
    maps = attribute(model, X, Y, method, **FAST.get(method, {}))
    assert maps.shape == X.shape and torch.isfinite(maps).all() and maps.abs().sum() > 0
    assert model.training, "attribute must restore the model's train mode"


def test_int8_onnx_model_gets_occlusion(onnx_int8):
    maps = attribute(onnx_int8, X, Y, "occlusion", window=3)
    assert maps.shape == X.shape and torch.isfinite(maps).all() and maps.abs().sum() > 0


@pytest.mark.parametrize("method", GRADIENT_METHODS)
def test_gradient_method_on_onnx_names_what_works(onnx_int8, method):
    with pytest.raises(TypeError, match=r"needs gradients.*occlusion"):
        attribute(onnx_int8, X, Y, method)


def test_occlusion_agrees_between_torch_and_its_fp32_onnx_export(tmp_path):
    model = tiny_cnn()
    onnx_fp32 = OnnxClassifier(export_onnx(model, tmp_path / "m.onnx", input_shape=(1, 1, 12, 12)), threads=1)
    torch.testing.assert_close(attribute(onnx_fp32, X, Y, "occlusion"), attribute(model, X, Y, "occlusion"),
                               atol=1e-4, rtol=1e-3)


def test_pact_saliency_is_the_straight_through_gradient():
    """The step function's gradient is 0 almost everywhere; the map is the STE surrogate's gradient."""
    model = quantize_model(tiny_cnn(), QATConfig(w_bits=4, a_bits=4, pact_alpha=2.0)).eval()
    x = X.clone().requires_grad_(True)
    logits = model(x)
    expected, = torch.autograd.grad(logits.gather(1, Y[:, None]).sum(), x)
    assert expected.abs().sum() > 0
    torch.testing.assert_close(attribute(model, X, Y, "saliency", abs=False), expected)
    torch.testing.assert_close(attribute(model, X, Y, "saliency"), expected.abs())


def test_integrated_gradients_completeness_from_the_black_baseline():
    """IG's attributions sum to f(x) - f(baseline) (Sundararajan et al.'s completeness axiom)."""
    model = tiny_cnn()
    maps = attribute(model, X, Y, "ig", n_steps=200)
    with torch.no_grad():
        gap = (model(X) - model(black_baseline(X))).gather(1, Y[:, None]).squeeze(1)
    torch.testing.assert_close(maps.sum((1, 2, 3)), gap, atol=2e-3, rtol=2e-2)


def test_black_baseline_from_the_dataset_normalisation():
    x = torch.zeros(2, 1, 4, 4)
    base = black_baseline(x, "mnist")
    assert torch.allclose(base, torch.full_like(x, -0.1307 / 0.3081), atol=1e-4)
    with pytest.raises(ValueError, match="3 channels"):
        black_baseline(x, "cifar10")


def test_gradcam_uses_the_last_conv_and_upsamples():
    model = tiny_cnn()
    assert last_conv_layer(model) is model[3]
    assert last_conv_layer(quantize_model(tiny_cnn(), QATConfig())) is not None
    maps = attribute(model, X, Y, "gradcam")
    assert (maps >= 0).all()  # relu_attributions=True: Grad-CAM keeps positive evidence
    first = attribute(model, X, Y, "gradcam", layer="0")
    assert not torch.allclose(first, maps)


def test_smoothgrad_is_reproducible_under_a_seed():
    model = tiny_cnn()
    a = attribute(model, X, Y, "smoothgrad", nt_samples=4, seed=3)
    b = attribute(model, X, Y, "smoothgrad", nt_samples=4, seed=3)
    assert torch.equal(a, b)


@pytest.mark.parametrize("call, error, message", [
    (lambda m: attribute(m, X, Y, "lime"), ValueError, r"unknown attribution method 'lime'; choose one of: saliency"),
    (lambda m: attribute(m, X, torch.tensor([0, 1, 2, 3, 0]), "saliency"), ValueError,
     r"target 3 is out of range: the model has 3 classes \(0..2\)"),
    (lambda m: attribute(m, X, Y[:2], "saliency"), ValueError, r"2 class indices for 5 images"),
    (lambda m: attribute(m, X, Y.float(), "saliency"), TypeError, r"integer class indices"),
    (lambda m: attribute(m, X[0], Y[0], "saliency"), ValueError, r"\(N, C, H, W\).*x\[None\]"),
    (lambda m: attribute(m, X, Y, "ig", steps=3), TypeError, r"unknown option\(s\) steps; valid: baseline"),
    (lambda m: attribute(m, X, Y, "ig", baseline="white"), ValueError, r"unknown baseline 'white'"),
    (lambda m: attribute(m, X, Y, "gradcam", layer="nope"), ValueError, r"no layer 'nope'; its conv layers: 0, 3"),
])
def test_bad_input_gets_a_one_line_message(call, error, message):
    with pytest.raises(error, match=message) as info:
        call(tiny_cnn())
    assert "\n" not in str(info.value)


def test_one_int_target_serves_the_whole_batch():
    model = tiny_cnn()
    torch.testing.assert_close(attribute(model, X, 2), attribute(model, X, torch.full((5,), 2)))


def test_normalize_maps_per_image():
    maps = torch.stack([torch.linspace(-1, 1, 100), 10 * torch.linspace(0, 1, 100)]).view(2, 1, 10, 10)
    shown = normalize_maps(maps, percentile=100)
    assert shown.shape == maps.shape and shown.min() == 0 and torch.allclose(shown.amax((1, 2, 3)), torch.ones(2))
    signed = normalize_maps(maps, abs=False, percentile=100)
    assert signed.min() == -1 and signed.max() == 1
    clipped = normalize_maps(maps, percentile=50)
    assert (clipped == 1).float().mean() >= 0.45  # half of each map reaches the clip level
    assert normalize_maps(torch.zeros(1, 1, 3, 3)).abs().sum() == 0
    with pytest.raises(ValueError, match="percentile"):
        normalize_maps(maps, percentile=0)
