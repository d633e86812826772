"""quantize_model: layer swaps, first/last layers at 8 bits, every ReLU -> PACT, for all three models."""
import pytest
import torch
from torch import nn
import torch.nn.functional as F

from qsal_lab.models import build_model
from qsal_lab.quant import PACT, PTQConfig, QATConfig, QuantConv2d, QuantLinear, describe_quantization, quantize_model
from qsal_lab.quant.weights import dorefa_weight, symmetric_weight

MODELS = {  # name -> (in_channels, image_size, first layer, last layer)
    "smallcnn": (1, 28, "features.0", "classifier.5"),
    "resnet20": (3, 32, "conv1", "fc"),
    "resnet18": (3, 28, "conv1", "fc"),
}


@pytest.mark.parametrize("name", list(MODELS))
def test_quantize_model_all_models(name):
    torch.manual_seed(0)
    in_ch, size, first, last = MODELS[name]
    model = build_model(name, in_channels=in_ch, image_size=size)
    n_relu = sum(isinstance(m, nn.ReLU) for m in model.modules())
    n_layers = sum(isinstance(m, (nn.Conv2d, nn.Linear)) for m in model.modules())
    weights = {n: m.weight for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}

    config = QATConfig(w_bits=4, a_bits=3)
    assert quantize_model(model, config) is model
    assert model.qsal_config is config
    assert not any(type(m) in (nn.ReLU, nn.Conv2d, nn.Linear) for m in model.modules())
    pacts = [m for m in model.modules() if isinstance(m, PACT)]
    assert len(pacts) == n_relu and all(p.bits == 3 and p.alpha.item() == 10.0 for p in pacts)
    layers = {n: m for n, m in model.named_modules() if isinstance(m, (QuantConv2d, QuantLinear))}
    assert len(layers) == n_layers
    assert {n: m.w_bits for n, m in layers.items() if m.w_bits == 8} == {first: 8, last: 8}
    assert all(m.w_bits == 4 and m.weight_quant == "dorefa" for n, m in layers.items() if n not in (first, last))
    assert all(layers[n].weight is w for n, w in weights.items())  # same Parameters: trained weights kept

    rows = describe_quantization(model)
    assert rows[0] == (first, "QuantConv2d (dorefa)", 8, None)
    assert [r for r in rows if r.layer == last][0].w_bits == 8
    assert sum(r.kind == "PACT" for r in rows) == n_relu

    side = size if name == "smallcnn" else 8  # the ResNets pool adaptively: small inputs keep the test fast
    out = model(torch.randn(2, in_ch, side, side))
    assert out.shape == (2, 10)
    if name == "resnet18":  # 11 M weights: the backward pass is checked on the two small models
        return
    out.sum().backward()
    assert all(p.alpha.grad is not None for p in pacts)
    assert layers[first].weight.grad is not None


def test_quant_layers_compute_with_quantized_weights():
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 3, padding=1)
    x = torch.randn(2, 3, 8, 8)
    q = QuantConv2d.from_float(conv, w_bits=4, weight_quant="dorefa")
    assert torch.equal(q(x), F.conv2d(x, dorefa_weight(conv.weight, 4), conv.bias, padding=1))
    q = QuantConv2d.from_float(conv, w_bits=2, weight_quant="symmetric")
    assert torch.equal(q(x), F.conv2d(x, symmetric_weight(conv.weight, 2), conv.bias, padding=1))
    assert torch.equal(QuantConv2d.from_float(conv, w_bits=32)(x), conv(x))
    lin = nn.Linear(5, 3)
    x = torch.randn(4, 5)
    assert torch.equal(QuantLinear.from_float(lin, w_bits=3, weight_quant="symmetric")(x),
                       F.linear(x, symmetric_weight(lin.weight, 3), lin.bias))


def test_32_bit_config_with_huge_alpha_is_the_float_model():
    torch.manual_seed(0)
    model = build_model("resnet20", in_channels=3, image_size=32).eval()
    x = torch.randn(2, 3, 8, 8)
    expected = model(x)
    quantize_model(model, QATConfig(w_bits=32, a_bits=32, first_last_bits=32, pact_alpha=1e6))
    assert torch.equal(model.eval()(x), expected)


def test_symmetric_config_and_first_last_bits():
    model = quantize_model(build_model("smallcnn"), QATConfig(w_bits=2, a_bits=2, first_last_bits=4,
                                                              weight_quant="symmetric", per_channel=False))
    bits = [(r.w_bits, r.kind) for r in describe_quantization(model) if r.w_bits is not None]
    assert bits == [(4, "QuantConv2d (symmetric)"), (2, "QuantConv2d (symmetric)"), (2, "QuantConv2d (symmetric)"),
                    (2, "QuantLinear (symmetric)"), (4, "QuantLinear (symmetric)")]
    assert not model.features[0].per_channel


def test_config_validation_messages():
    with pytest.raises(ValueError, match=r"invalid bit width 5\.5 for QATConfig\.w_bits"):
        QATConfig(w_bits=5.5)
    with pytest.raises(ValueError, match="first_last_bits"):
        QATConfig(first_last_bits=1)
    with pytest.raises(ValueError, match="choose one of: dorefa, symmetric"):
        QATConfig(weight_quant="lsq")
    with pytest.raises(ValueError, match="pact_alpha"):
        QATConfig(pact_alpha=0)
    config = QATConfig()
    config.a_bits = 12  # changed after construction: caught when used
    with pytest.raises(ValueError, match="a_bits"):
        quantize_model(build_model("smallcnn"), config)


def test_misuse_errors():
    model = quantize_model(build_model("smallcnn"))
    with pytest.raises(ValueError, match="already quantized"):
        quantize_model(model)
    with pytest.raises(TypeError, match="ptq_model"):
        quantize_model(build_model("smallcnn"), PTQConfig())
    with pytest.raises(ValueError, match="no nn.Conv2d or nn.Linear"):
        quantize_model(nn.Sequential(nn.ReLU()))
    with pytest.raises(TypeError, match="nn.Module"):
        quantize_model("smallcnn")
