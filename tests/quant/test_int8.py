"""Real int8 through ONNX: export, static quantization, and the OnnxClassifier wrapper."""
import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from onnx import numpy_helper
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from qsal_lab.machine import torch_threads
from qsal_lab.models import build_model
from qsal_lab.quant.int8 import OnnxClassifier, export_onnx, quantize_onnx

SHAPES = {"smallcnn": (1, 28), "resnet20": (3, 32), "resnet18": (3, 28)}  # (channels, image size)
METADATA = {"class_names": [str(i) for i in range(10)]}


def randomize_batchnorm(model, seed=0):
    """Fresh BN layers are the identity; random statistics make BN folding actually matter."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.rand(n, generator=g) * 0.4 - 0.2)
    return model


@pytest.fixture(scope="module", params=list(SHAPES))
def exported(request, tmp_path_factory):
    name = request.param
    if name == "smallcnn":  # reuse the trained one below: exporting costs seconds
        model, path, *_ = request.getfixturevalue("trained")
        return name, model, path
    c, s = SHAPES[name]
    torch.manual_seed(0)
    model = randomize_batchnorm(build_model(name, 10, c, s)).train()
    path = export_onnx(model, tmp_path_factory.mktemp(name) / f"{name}.onnx", input_shape=(1, c, s, s),
                       metadata=METADATA | {"model_name": name})
    assert model.training, "export_onnx must restore the caller's train/eval mode"
    return name, model.eval(), path


def test_export_matches_torch_at_batch_1_and_7(exported):
    name, model, path = exported
    c, s = SHAPES[name]
    clf = OnnxClassifier(path, threads=1)
    for batch in (1, 7):
        x = torch.randn(batch, c, s, s, generator=torch.Generator().manual_seed(batch))
        with torch.no_grad():
            expected = model(x)
        got = clf(x)
        assert isinstance(got, torch.Tensor) and got.shape == (batch, 10)
        torch.testing.assert_close(got, expected, atol=1e-4 * max(1.0, expected.abs().max().item()), rtol=1e-4)


def test_export_is_one_self_contained_file_with_folded_batchnorm(exported):
    name, _, path = exported
    assert {p.name for p in path.parent.iterdir()} <= {path.name, "int8.onnx"}  # no .data file, no temp leftovers
    proto = onnx.load(path, load_external_data=False)
    assert all(t.data_location == onnx.TensorProto.DEFAULT for t in proto.graph.initializer)
    ops = {n.op_type for n in proto.graph.node}
    assert "BatchNormalization" not in ops and "Conv" in ops
    (inp,), (out,) = proto.graph.input, proto.graph.output
    assert (inp.name, out.name) == ("input", "logits")
    batch_dim = inp.type.tensor_type.shape.dim[0]
    assert batch_dim.dim_param and not batch_dim.HasField("dim_value")  # symbolic, i.e. dynamic
    assert b"/work/" not in path.read_bytes() and b"stack_trace" not in path.read_bytes()


def test_export_metadata_describes_the_input(exported):
    name, _, path = exported
    c, s = SHAPES[name]
    props = {p.key: p.value for p in onnx.load(path).metadata_props}
    assert props["input_shape"] == f"[{c}, {s}, {s}]"
    assert props["input_dtype"] == "float32" and props["input_name"] == "input"
    assert props["num_classes"] == "10" and props["model_name"] == name
    assert props["class_names"] == '["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"]'
    clf = OnnxClassifier(path, threads=1)
    assert clf.input_shape == (c, s, s) and clf.metadata["model_name"] == name
    assert clf.file_size_bytes == path.stat().st_size


def test_export_bad_arguments(tmp_path):
    model = build_model("smallcnn")
    with pytest.raises(ValueError, match=r"input_shape must be 4 positive integers \(N, C, H, W\).*\(1, 28, 28\)"):
        export_onnx(model, tmp_path / "m.onnx", input_shape=(1, 28, 28))
    with pytest.raises(ValueError, match="input_shape"):
        export_onnx(model, tmp_path / "m.onnx", input_shape=(0, 1, 28, 28))
    with pytest.raises(TypeError, match="torch.nn.Module"):
        export_onnx(lambda x: x, tmp_path / "m.onnx")
    with pytest.raises(ValueError, match=r"must return one \(N, num_classes\) tensor of logits, got a tensor of shape \(3, 16, 28, 28\)"):
        export_onnx(model.features[:3], tmp_path / "m.onnx")
    with pytest.raises(ValueError, match=r"metadata keys \['input_shape'\] are set by export_onnx"):
        export_onnx(model, tmp_path / "m.onnx", metadata={"input_shape": "[3, 32, 32]"})
    assert list(tmp_path.iterdir()) == []


class NoisyModel(nn.Module):
    """Draws fresh random numbers on every call: no export can reproduce its outputs."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(x.flatten(1)) + torch.rand(x.shape[0], 3)


def test_export_refuses_a_file_that_disagrees_with_torch(tmp_path):
    with pytest.raises(RuntimeError, match="does not reproduce PyTorch.*was not written"):
        export_onnx(NoisyModel(), tmp_path / "noisy.onnx", input_shape=(1, 1, 2, 2))
    assert list(tmp_path.iterdir()) == []  # atomic: nothing, not even a temp file


class Branchy(nn.Module):
    """A Python `if` on a tensor value: torch.export refuses it, the TorchScript exporter copes."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        if x.abs().sum() >= 0:
            return self.fc(x.flatten(1))
        return -self.fc(x.flatten(1))


def test_export_falls_back_to_torchscript_quietly(tmp_path, capfd):
    model = Branchy()
    with pytest.warns(UserWarning, match="legacy TorchScript exporter"):
        path = export_onnx(model, tmp_path / "branchy.onnx", input_shape=(1, 1, 2, 2))
    out, err = capfd.readouterr()
    assert out == "" and err == ""  # no graph dumps, no deprecation chatter
    x = torch.randn(5, 1, 2, 2)
    with torch.no_grad():
        torch.testing.assert_close(OnnxClassifier(path, threads=1)(x), model(x), atol=1e-5, rtol=1e-5)


def prototype_data(n, seed):
    """Ten smooth random 'digit' prototypes plus noise: structured enough to learn in seconds."""
    prototypes = F.interpolate(torch.randn(10, 1, 7, 7, generator=torch.Generator().manual_seed(123)),
                               size=28, mode="bilinear", align_corners=False)
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 10, (n,), generator=g)
    return prototypes[y] + 0.8 * torch.randn(n, 1, 28, 28, generator=g), y


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A SmallCNN trained for 30 small steps, its fp32 and int8 ONNX files and test data."""
    torch.manual_seed(0)
    model = build_model("smallcnn")
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    x, y = prototype_data(30 * 32, seed=1)
    with torch_threads(1):  # 2 shared cores: extra threads only fight each other
        for xb, yb in zip(x.split(32), y.split(32)):
            optimizer.zero_grad()
            F.cross_entropy(model(xb), yb).backward()
            optimizer.step()
    folder = tmp_path_factory.mktemp("int8")
    # Still in train mode, and training gave BN real running statistics to fold.
    fp32 = export_onnx(model, folder / "fp32.onnx", metadata=METADATA | {"model_name": "smallcnn"})
    assert model.training, "export_onnx must restore the caller's train/eval mode"
    calib = DataLoader(TensorDataset(*prototype_data(10 * 16, seed=2)), batch_size=16)
    int8 = quantize_onnx(fp32, folder / "int8.onnx", calib, num_batches=4)
    test = DataLoader(TensorDataset(*prototype_data(256, seed=3)), batch_size=64)
    return model.eval(), fp32, int8, calib, test


# ----------------------------------------------------------------------------- OnnxClassifier

def test_wrong_shapes_and_dtypes_name_the_expected_shape(trained):
    _, path, *_ = trained
    clf = OnnxClassifier(path, threads=1)
    expected = "fp32.onnx expects input of shape (N, 1, 28, 28) float32, got "
    for bad, got in [(torch.randn(8, 3, 32, 32), "(8, 3, 32, 32) float32"),
                     (torch.randn(1, 28, 28), "(1, 28, 28) float32"),            # no batch dimension
                     (torch.zeros(8, 1, 28, 28, dtype=torch.int64), "(8, 1, 28, 28) int64"),
                     (np.zeros((2, 1, 28, 28), dtype=np.uint8), "(2, 1, 28, 28) uint8")]:
        with pytest.raises(ValueError) as err:
            clf(bad)
        assert str(err.value) == expected + got
    with pytest.raises(TypeError, match="torch.Tensor or numpy array, got list"):
        clf([[0.0]])


def test_float64_and_numpy_inputs_are_accepted(trained):
    model, path, *_ = trained
    clf = OnnxClassifier(path, threads=1)
    x = torch.randn(5, 1, 28, 28, generator=torch.Generator().manual_seed(3))
    ref = clf(x)
    torch.testing.assert_close(clf(x.double()), ref)
    torch.testing.assert_close(clf(x.numpy()), ref)
    torch.testing.assert_close(clf(x.requires_grad_()), ref)
    with torch.no_grad():
        torch.testing.assert_close(ref, model(x.detach()), atol=1e-4, rtol=1e-4)


def test_missing_file_and_bad_threads(tmp_path, trained):
    with pytest.raises(FileNotFoundError, match="export_onnx"):
        OnnxClassifier(tmp_path / "nope.onnx")
    with pytest.raises(ValueError, match="threads"):
        OnnxClassifier(trained[1], threads=0)


# ----------------------------------------------------------------------------- int8

def test_int8_model_is_qdq_with_per_channel_weight_scales(trained):
    model, _, int8, _, _ = trained
    proto = onnx.load(int8)
    ops = [n.op_type for n in proto.graph.node]
    assert ops.count("QuantizeLinear") >= 5 and ops.count("DequantizeLinear") >= 10
    init = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    producer = {o: n for n in proto.graph.node for o in n.output}
    convs = [n for n in proto.graph.node if n.op_type == "Conv"]
    torch_convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
    torch_bns = [m for m in model.features if isinstance(m, nn.BatchNorm2d)]
    assert len(convs) == len(torch_convs) == 3
    for node, conv, bn in zip(convs, torch_convs, torch_bns):
        dq = producer[node.input[1]]
        assert dq.op_type == "DequantizeLinear"
        q_weight, scale, zero_point = (init[name] for name in dq.input)
        assert q_weight.dtype == np.int8 and zero_point.dtype == np.int8 and not zero_point.any()
        assert scale.shape == (conv.out_channels,)  # one scale per output channel
        # Hand-computed: fold BN into the conv, then symmetric int8 => scale_c = max|w_c| / 127.
        with torch.no_grad():
            folded = conv.weight * (bn.weight / (bn.running_var + bn.eps).sqrt()).view(-1, 1, 1, 1)
        absmax = folded.abs().flatten(1).max(1).values.numpy()
        np.testing.assert_allclose(scale, absmax / 127, rtol=1e-5)
        np.testing.assert_array_equal(q_weight, np.round(folded.numpy() / scale.reshape(-1, 1, 1, 1)))


def test_int8_file_is_about_a_quarter_of_fp32(trained):
    _, fp32, int8, _, _ = trained
    ratio = int8.stat().st_size / fp32.stat().st_size
    print(f"SmallCNN: fp32 {fp32.stat().st_size / 1e6:.3f} MB, int8 {int8.stat().st_size / 1e6:.3f} MB, ratio {ratio:.3f}")
    assert 0.2 < ratio <= 0.27


def test_int8_predictions_agree_with_fp32(trained):
    model, fp32, int8, _, test = trained
    logits32, labels = OnnxClassifier(fp32, threads=1).predict(test)
    logits8, labels8 = OnnxClassifier(int8, threads=1).predict(test)
    assert torch.equal(labels, labels8) and logits8.shape == (256, 10)
    assert (logits32.argmax(1) == labels).float().mean() > 0.9  # the model did learn something
    agreement = (logits8.argmax(1) == logits32.argmax(1)).float().mean().item()
    relative_error = ((logits8 - logits32).norm() / logits32.norm()).item()
    assert agreement >= 0.97, agreement
    assert 1e-4 < relative_error < 0.1, relative_error  # really quantized, yet close


def test_onnx_classifier_works_with_train_evaluate(trained):
    from qsal_lab.train import evaluate

    _, _, int8, _, test = trained
    clf = OnnxClassifier(int8, threads=1)
    logits, labels = clf.predict(test)
    metrics = evaluate(clf, test, device="cpu")
    assert metrics["n"] == 256
    assert metrics["accuracy"] == pytest.approx((logits.argmax(1) == labels).float().mean().item())


@pytest.mark.parametrize("method", ["percentile", "entropy"])
def test_histogram_calibration_methods(trained, tmp_path, method, capsys):
    _, fp32, _, calib, test = trained
    out = quantize_onnx(fp32, tmp_path / f"{method}.onnx", calib, num_batches=3, method=method)
    assert capsys.readouterr().out == ""  # onnxruntime's print() chatter is swallowed
    clf = OnnxClassifier(out, threads=1)
    assert clf.metadata["calibration_method"] == method and clf.metadata["calibration_batches"] == "3"
    assert clf.metadata["input_shape"] == "[1, 28, 28]"  # fp32 metadata survives quantization
    agreement = (clf.predict(test)[0].argmax(1) == OnnxClassifier(fp32, threads=1).predict(test)[0].argmax(1)).float().mean()
    assert agreement >= 0.9


def test_quantize_bad_arguments(trained, tmp_path):
    _, fp32, _, calib, _ = trained
    with pytest.raises(ValueError, match="unknown calibration method 'kl'; choose one of: minmax, percentile, entropy"):
        quantize_onnx(fp32, tmp_path / "q.onnx", calib, method="kl")
    with pytest.raises(ValueError, match="yielded no batches"):
        quantize_onnx(fp32, tmp_path / "q.onnx", [], num_batches=2)
    wrong = DataLoader(TensorDataset(torch.randn(8, 3, 32, 32), torch.zeros(8)), batch_size=4)
    with pytest.raises(ValueError, match=r"expects input of shape \(N, 1, 28, 28\) float32, got \(4, 3, 32, 32\)"):
        quantize_onnx(fp32, tmp_path / "q.onnx", wrong)
    with pytest.raises(FileNotFoundError):
        quantize_onnx(tmp_path / "missing.onnx", tmp_path / "q.onnx", calib)
    with pytest.raises(ValueError, match="num_batches"):
        quantize_onnx(fp32, tmp_path / "q.onnx", calib, num_batches=0)
    assert list(tmp_path.iterdir()) == []  # failures leave no files behind
