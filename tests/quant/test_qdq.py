"""export_qat_onnx: a PACT QAT model as an int8 QDQ file that ONNX Runtime runs with integer kernels."""
import copy

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from onnx import numpy_helper
from torch import nn

from qsal_lab.machine import torch_threads
from qsal_lab.models import build_model
from qsal_lab.quant import PTQConfig, QATConfig, ptq_model, quantize_model
from qsal_lab.quant import qdq
from qsal_lab.quant.int8 import OnnxClassifier, export_onnx
from qsal_lab.quant.qdq import (compare_with_torch, executed_ops, export_qat_onnx, integer_weight, precision_summary,
                                qdq_layers)
from tests.quant.test_int8 import prototype_data


def train(model, steps, seed, lr=2e-3):
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    x, y = prototype_data(steps * 32, seed=seed)
    model.train()
    for xb, yb in zip(x.split(32), y.split(32)):
        optimizer.zero_grad()
        F.cross_entropy(model(xb), yb).backward()
        optimizer.step()
    return model.eval()


@pytest.fixture(scope="module")
def float_model():
    torch.manual_seed(0)
    with torch_threads(1):  # 2 shared cores: extra threads only fight each other
        model = train(build_model("smallcnn"), 30, seed=1)
    return model


# (bits, weight quantizer, bits of the first and last layer). DoReFa's 8-bit levels need 9-bit integers, so
# those layers are re-rounded to int8; with 7-bit first/last layers every weight in the file is the trained one.
CONFIGS = [(8, "dorefa", 8), (4, "dorefa", 8), (2, "dorefa", 8), (4, "dorefa", 7), (4, "symmetric", 8)]


def exact_weights(weight_quant, first_last_bits):
    return weight_quant == "symmetric" or first_last_bits < 8


@pytest.fixture(scope="module", params=CONFIGS, ids=lambda p: f"W{p[0]}A{p[0]}-{p[1]}-edges{p[2]}")
def exported(request, float_model, tmp_path_factory):
    bits, weight_quant, first_last_bits = request.param
    torch.manual_seed(1)
    config = QATConfig(w_bits=bits, a_bits=bits, weight_quant=weight_quant, pact_alpha=float(bits),
                       first_last_bits=first_last_bits)
    model = train(quantize_model(copy.deepcopy(float_model), config), 20, seed=2, lr=5e-4)
    example = prototype_data(128, seed=4)[0]
    path = export_qat_onnx(model, tmp_path_factory.mktemp("qdq") / f"w{bits}a{bits}.onnx", example)
    return bits, (weight_quant, first_last_bits), model, path


def test_onnx_runtime_agrees_with_the_fake_quant_model(exported):
    bits, (weight_quant, first_last_bits), model, path = exported
    x, y = prototype_data(1024, seed=5)
    loader = list(zip(x.split(256), y.split(256)))
    clf = OnnxClassifier(path, threads=1)
    result = compare_with_torch(clf, model, loader)
    with torch.no_grad():
        expected = model(x)
    diff = (clf(x) - expected).abs().amax(1)  # per image
    scale = expected.abs().max().item()
    print(f"W{bits}A{bits} {weight_quant}: {result}; per-image max |logit diff| median {diff.median():.3f}, "
          f"largest logit {scale:.1f}")
    assert result["n"] == 1024 and result["torch_accuracy"] > 0.8  # the model did learn something
    assert result["agreement"] >= 0.99
    assert abs(result["accuracy"] - result["torch_accuracy"]) <= 0.01
    assert result["max_abs_logit_diff"] == pytest.approx(diff.max().item())
    # What differs: the input's 8-bit rounding, int32 biases, re-rounded 9-bit DoReFa weights; each can move
    # a value across a rounding boundary of the next activation grid, one code (alpha / (2^k - 1)) at a time.
    if weight_quant == "symmetric":
        assert result["max_abs_logit_diff"] < 0.05 * scale
    else:  # DoReFa drops the weights' scale: without a BatchNorm after it, classifier.2 amplifies such flips
        assert diff.median() < 0.06 * scale and result["max_abs_logit_diff"] < 0.25 * scale


def test_every_conv_and_gemm_runs_as_an_integer_kernel(exported):
    bits, _, _, path = exported
    ops = executed_ops(path)
    names = [o["op"] for o in ops]
    assert names.count("QLinearConv") == 3 and names.count("QGemm") == 2
    assert not {"Conv", "Gemm", "MatMul", "FusedConv", "FusedGemm"} & set(names)
    assert all(o["input"] == "uint8" for o in ops if o["op"] in ("QLinearConv", "QGemm", "MaxPool"))
    summary = precision_summary(ops)
    assert summary["float32"] == "none" and summary["conversions"] == "QuantizeLinear x1"  # only the input's
    if bits < 8:  # the k-bit clip at alpha: a Clip on uint8 codes after each PACT layer
        assert names.count("Clip") == 4 and "Clip x4" in summary["integer"]


def _initializers(path):
    return {t.name: numpy_helper.to_array(t) for t in onnx.load(path).graph.initializer}


def test_activation_scales_are_the_learned_alphas(exported):
    bits, _, model, path = exported
    init = _initializers(path)
    for name, m in model.named_modules():
        if type(m).__name__ == "PACT":
            assert init[f"{name}.scale"] == np.float32(m.alpha.item() / (2**bits - 1))
            assert init[f"{name}.zero_point"].dtype == np.uint8 and init[f"{name}.zero_point"] == 0
            if bits < 8:
                assert init[f"{name}.code_max"] == 2**bits - 1


def test_weights_are_the_trained_grid_with_batchnorm_folded(exported):
    bits, (weight_quant, first_last_bits), model, path = exported
    init, layers = _initializers(path), {row["layer"]: row for row in qdq_layers(path)}
    conv, bn = model.features[4], model.features[5]  # a middle layer: w_bits = bits
    codes, scale = init["features.4.weight_codes"], init["features.4.weight_scale"]
    assert codes.dtype == np.int8 and scale.shape == (conv.out_channels,)
    with torch.no_grad():
        w_q = conv.quantized_weight().double()
        factor = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
        folded = (w_q * factor.reshape(-1, 1, 1, 1)).numpy()
    stored = codes * scale.astype(np.float64).reshape(-1, 1, 1, 1)
    nine_bits = weight_quant == "dorefa" and bits == 8  # DoReFa's 8-bit levels: odd integers -255..255 over 255
    if nine_bits:  # re-rounded to int8: each weight moves by at most half an int8 step
        assert not layers["features.4"]["exact"] and "re-rounded to int8" in layers["features.4"]["weights"]
        assert np.all(np.abs(stored - folded) <= 0.5 * scale.reshape(-1, 1, 1, 1) * (1 + 1e-6))
    else:  # exactly the trained grid, BN folded into the scale; codes spread over int8 (m * K, scale / K)
        np.testing.assert_allclose(stored, folded, rtol=1e-6, atol=1e-9)
        m, _, _ = integer_weight(conv)
        spread = np.abs(codes).reshape(len(codes), -1).max(1) // np.abs(m.numpy()).reshape(len(m), -1).max(1)
        assert np.all(spread == 127 // np.abs(m.numpy()).reshape(len(m), -1).max(1))
        np.testing.assert_array_equal(np.abs(codes), np.abs(m.numpy()) * spread.reshape(-1, 1, 1, 1))  # signs: BN
        assert layers["features.4"]["exact"] and layers["features.4"]["bn_folded"]
    first = layers["features.0"]  # the first layer, at first_last_bits
    assert first["exact"] == exact_weights(weight_quant, first_last_bits)
    if not first["exact"]:
        assert "re-rounded to int8" in first["weights"] and first["reround_max_error_steps"] <= 0.5


def test_the_file_stores_one_byte_per_weight(exported, float_model, tmp_path):
    _, _, model, path = exported
    fp32 = export_onnx(float_model, tmp_path / "fp32.onnx")
    weights = sum(m.weight.numel() for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
    size = path.stat().st_size
    print(f"QDQ {size / 1024:.1f} KiB, fp32 {fp32.stat().st_size / 1024:.1f} KiB, {weights:,} weights")
    assert weights < size < 0.27 * fp32.stat().st_size


def test_metadata_records_the_input_and_the_check(exported):
    _, _, _, path = exported
    clf = OnnxClassifier(path)
    assert clf.input_shape == (1, 28, 28)
    assert clf.metadata["input_quantization"].startswith("uint8 scale")
    assert float(clf.metadata["check_agreement"]) >= 0.9 and clf.metadata["check_images"] == "128"


def test_float_input_leaves_the_first_layer_in_float(float_model, tmp_path):
    model = quantize_model(copy.deepcopy(float_model), QATConfig(4, 4, pact_alpha=4.0)).eval()
    path = export_qat_onnx(model, tmp_path / "m.onnx", prototype_data(64, seed=4)[0], quantize_input=False)
    ops = executed_ops(path)
    float_convs = [o for o in ops if o["op"] in ("Conv", "FusedConv")]
    assert len(float_convs) == 1 and float_convs[0]["input"] == "float32"  # the first conv, on dequantized weights
    assert [o["op"] for o in ops].count("QLinearConv") == 2
    assert OnnxClassifier(path).metadata["input_quantization"] == "none (float32 input)"


def test_not_a_qat_model_gets_a_clear_error(float_model, tmp_path):
    x = prototype_data(8, seed=0)[0]
    with pytest.raises(ValueError, match=r"needs a model from quantize_model\(model, QATConfig\(...\)\).*export_onnx"):
        export_qat_onnx(float_model, tmp_path / "m.onnx", x)
    ptq = ptq_model(float_model, PTQConfig(8, 8), [(x, None)], num_batches=1, progress=False)
    with pytest.raises(ValueError, match="this one comes from ptq_model.*quantize_onnx"):
        export_qat_onnx(ptq, tmp_path / "m.onnx", x)
    with pytest.raises(TypeError, match="torch.nn.Module"):
        export_qat_onnx(lambda x: x, tmp_path / "m.onnx", x)
    qat = quantize_model(copy.deepcopy(float_model), QATConfig(4, 4))
    with pytest.raises(ValueError, match=r"example must be a float \(N, C, H, W\) batch.*got \(28, 28\)"):
        export_qat_onnx(qat, tmp_path / "m.onnx", x[0, 0])
    assert list(tmp_path.iterdir()) == []


def test_unsupported_layers_are_named(tmp_path):
    model = quantize_model(build_model("resnet20", 10, 3, 32), QATConfig(4, 4))  # option-A shortcut: slicing + pad
    with pytest.raises(ValueError, match=r"cannot export the operation `getitem` \(on layers_0_2_relu2\); it supports"):
        export_qat_onnx(model.eval(), tmp_path / "m.onnx", torch.randn(4, 3, 32, 32))
    odd = quantize_model(nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 26 * 26, 10),
                                       nn.Softmax(dim=1)), QATConfig(4, 4))
    with pytest.raises(ValueError, match=r"cannot export 4 \(Softmax\)"):
        export_qat_onnx(odd.eval(), tmp_path / "m.onnx", torch.randn(4, 1, 28, 28))


def test_residual_network_runs_on_integers_up_to_the_pooling(tmp_path):
    torch.manual_seed(0)
    model = quantize_model(build_model("resnet18", 10, 3, 28), QATConfig(4, 4, pact_alpha=4.0))
    x = torch.randn(32, 3, 28, 28)
    model.train()
    with torch.no_grad():
        model(x)  # BatchNorm statistics of this data
    model.eval()
    path = export_qat_onnx(model, tmp_path / "r18.onnx", x)
    result = compare_with_torch(path, model, [(x, torch.zeros(32, dtype=torch.int64))])
    assert result["agreement"] >= 0.9
    summary = precision_summary(executed_ops(path))  # the residual adds' conv inputs get an 8-bit grid of their own
    assert summary["integer"] == "QLinearConv x20, Clip x17, QLinearAdd x8"
    assert summary["float32"] == "GlobalAveragePool x1, Flatten x1, Gemm x1"
    adds = [row for row in qdq_layers(path) if row["op"] == "Add"]
    assert len(adds) == 8 and all("uint8" in row["activations"] for row in adds)
    float_adds = export_qat_onnx(model, tmp_path / "r18_float_adds.onnx", x, quantize_residuals=False)
    assert "Add x8" in precision_summary(executed_ops(float_adds))["float32"]


def test_a_wrong_export_is_refused(float_model, tmp_path, monkeypatch):
    model = train(quantize_model(copy.deepcopy(float_model), QATConfig(4, 4, pact_alpha=4.0)), 10, seed=2, lr=5e-4)
    real = qdq.integer_weight
    monkeypatch.setattr(qdq, "integer_weight", lambda layer: (lambda m, s, how: (-m, s, how))(*real(layer)))  # a sign bug
    with pytest.raises(RuntimeError, match="predicts the fake-quant model's class on only .* was not written"):
        export_qat_onnx(model, tmp_path / "m.onnx", prototype_data(256, seed=4)[0])
    assert list(tmp_path.iterdir()) == []


def test_precision_summary_groups_ops_in_order():
    ops = [{"op": "QuantizeLinear", "input": "float32"}, {"op": "QLinearConv", "input": "uint8"},
           {"op": "Clip", "input": "uint8"}, {"op": "QLinearConv", "input": "uint8"}, {"op": "Conv", "input": "float32"}]
    assert precision_summary(ops) == {"integer": "QLinearConv x2, Clip x1", "float32": "Conv x1",
                                      "conversions": "QuantizeLinear x1"}
