"""Per-layer bit widths by layer name (`layer_bits`) in QATConfig and PTQConfig: mixed precision."""
import pytest
import torch

from qsal_lab.models import build_model
from qsal_lab.quant import (PTQConfig, QATConfig, describe_quantization, load_packed, model_size_bytes, ptq_model,
                            quantize_model, save_packed)
from qsal_lab.quant.convert import layer_names

BUILD = {"name": "resnet20", "num_classes": 10, "in_channels": 3, "image_size": 32}


def bits_of(model):
    return {r.layer: (r.w_bits, r.a_bits) for r in describe_quantization(model)}


def test_qat_layer_bits_override_weights_activations_and_the_first_last_rule():
    model = quantize_model(build_model("resnet20", 10, 3, 32),
                           QATConfig(w_bits=4, a_bits=4, layer_bits={"layers.2.0.conv1": 2, "layers.2.0.relu1": 3,
                                                                     "fc": 6}))
    rows = bits_of(model)
    assert rows["layers.2.0.conv1"] == (2, None) and rows["layers.2.0.relu1"] == (None, 3)
    assert rows["fc"] == (6, None) and rows["conv1"] == (8, None)      # the override beats first/last; the rule stays
    assert rows["layers.2.0.conv2"] == (4, None) and rows["layers.2.0.relu2"] == (None, 4)


def test_mixed_precision_is_smaller_and_survives_the_packed_file(tmp_path):
    torch.manual_seed(0)
    names = layer_names(build_model("resnet20", 10, 3, 32))["weights"]
    low = {n: 2 for n in names if n.startswith("layers.2.")}
    uniform = quantize_model(build_model("resnet20", 10, 3, 32), QATConfig(w_bits=4, a_bits=4))
    mixed = quantize_model(build_model("resnet20", 10, 3, 32), QATConfig(w_bits=4, a_bits=4, layer_bits=low))
    saved = model_size_bytes(uniform) - model_size_bytes(mixed)
    two_bit_weights = sum(m.weight.numel() for n, m in mixed.named_modules() if n in low)
    assert saved == two_bit_weights * 2 // 8  # 2 bits fewer per weight of those layers
    size = save_packed(mixed.eval(), tmp_path / "m.qsal", build=BUILD)
    restored = load_packed(tmp_path / "m.qsal")
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(restored(x), mixed(x)) and bits_of(restored) == bits_of(mixed)
    assert size < save_packed(uniform.eval(), tmp_path / "u.qsal", build=BUILD)


def test_unknown_layer_names_list_the_valid_ones():
    with pytest.raises(ValueError, match=r"names no layer of this model: 'layer3.0.conv1' \(did you mean "
                                         r"'layers.2.0.conv1'\?\); valid names: conv1, layers.0.0.conv1, .*fc, relu"):
        quantize_model(build_model("resnet20", 10, 3, 32), QATConfig(layer_bits={"layer3.0.conv1": 2}))
    with pytest.raises(ValueError, match="invalid bit width 1 for QATConfig.layer_bits\\['fc'\\]"):
        QATConfig(layer_bits={"fc": 1})
    with pytest.raises(TypeError, match="maps layer names to bit widths"):
        QATConfig(layer_bits=[("fc", 2)])
    model = build_model("resnet20", 10, 3, 32).eval()
    with pytest.raises(ValueError, match="PTQConfig.layer_bits names no layer of this model: 'layers.0.0.relu1'"):
        ptq_model(model, PTQConfig(layer_bits={"layers.0.0.relu1": 2}), [torch.randn(4, 3, 32, 32)], num_batches=1,
                  progress=False)


def test_ptq_one_layer_at_two_bits_rest_float():
    torch.manual_seed(0)
    model = build_model("resnet20", 10, 3, 32).eval()
    calib = [torch.randn(8, 3, 32, 32)]
    config = PTQConfig(w_bits=32, a_bits=32, first_last_bits=32, layer_bits={"layers.1.0.conv2": 2})
    q = ptq_model(model, config, calib, num_batches=1, progress=False)
    quantized = {n: b for n, b in bits_of(q).items() if b != (32, 32) and b[0] is not None}
    assert quantized == {"layers.1.0.conv2": (2, 2)}
    pair = ptq_model(model, PTQConfig(w_bits=32, a_bits=32, first_last_bits=32, layer_bits={"fc": (4, 8)}), calib,
                     num_batches=1, progress=False)
    assert bits_of(pair)["fc"] == (4, 8)
    with pytest.raises(ValueError, match="must be bits or \\(w_bits, a_bits\\)"):
        PTQConfig(layer_bits={"fc": (4, 8, 2)})
