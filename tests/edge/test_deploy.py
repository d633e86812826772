"""The deployment bundle of the shipped MNIST SmallCNN: its files, and run.py agreeing with OnnxClassifier."""
import json
from dataclasses import asdict

import numpy as np
import onnxruntime
import pytest
import torch
from PIL import Image

from qsal_lab.data import load_dataset
from qsal_lab.edge import build_bundle, runner
from qsal_lab.edge.deploy import BUNDLE_FILES
from qsal_lab.models import build_model
from qsal_lab.quant.int8 import OnnxClassifier

pytestmark = pytest.mark.slow  # each bundle exports and quantizes a model (about 10 s on 2 cores)


def test_every_file_is_there_and_says_what_it_is(mnist_bundle):
    for name in BUNDLE_FILES:
        assert (mnist_bundle / name).is_file(), name
    assert (mnist_bundle / "run.py").read_bytes() == open(runner.__file__, "rb").read()  # verbatim
    labels = json.loads((mnist_bundle / "labels.json").read_text())
    assert labels["dataset"] == "MNIST" and labels["classes"] == [str(i) for i in range(10)]
    spec = json.loads((mnist_bundle / "preprocess.json").read_text())
    assert (spec["height"], spec["width"], spec["channels"], spec["mean"], spec["std"]) == (28, 28, 1, [0.1307], [0.3081])
    requirements = [l for l in (mnist_bundle / "requirements.txt").read_text().splitlines() if not l.startswith("#")]
    assert requirements == [f"onnxruntime=={onnxruntime.__version__}", "numpy>=1.24", "pillow>=9.1"]
    readme = (mnist_bundle / "README.md").read_text()
    for step in ("Raspberry Pi OS **64-bit**", "python3 -m venv .venv", "pip install -r requirements.txt",
                 "python run.py samples/", "python run.py --bench", "MNIST"):
        assert step in readme, step
    assert len(list((mnist_bundle / "samples").glob("*.png"))) == 4
    int8 = OnnxClassifier(mnist_bundle / "model_int8.onnx")
    assert int8.metadata["quantization"].startswith("int8 QDQ") and int8.metadata["calibration_batches"] == "1"
    assert int8.file_size_bytes < 0.3 * OnnxClassifier(mnist_bundle / "model_fp32.onnx").file_size_bytes


@pytest.fixture(scope="module")
def test_images(mnist_root):
    ds = load_dataset("mnist", "test", subset=12, seed=3)
    return ds.images.numpy(), torch.stack([ds[i][0] for i in range(len(ds))])  # uint8 pixels, normalised inputs


@pytest.mark.parametrize("model", ["model_int8.onnx", "model_fp32.onnx"])
def test_runner_on_a_npy_batch_and_a_png_folder_predicts_what_onnxclassifier_predicts(
        mnist_bundle, test_images, run_py, tmp_path, model):
    pixels, x = test_images
    want = OnnxClassifier(mnist_bundle / model, threads=1)(x).numpy()
    np.save(tmp_path / "batch.npy", x.numpy())
    folder = tmp_path / "pngs"
    folder.mkdir()
    for i, img in enumerate(pixels):
        Image.fromarray(img[0]).save(folder / f"{i:02d}.png")
    run = run_py(mnist_bundle, "--model", model, tmp_path / "batch.npy", folder)
    assert run.returncode == 0, run.stderr
    preds = json.loads(run.stdout)["predictions"]
    from_npy, from_png = preds[:len(x)], preds[len(x):]
    for block in (from_npy, from_png):
        assert [p["class"] for p in block] == want.argmax(1).tolist()
        np.testing.assert_allclose([p["logits"] for p in block], want, atol=1e-4)


def test_samples_agree_with_expected_json_here(mnist_bundle, run_py):
    out = json.loads(run_py(mnist_bundle, "--expect", "samples/expected.json", "samples").stdout)
    assert out["agreement"]["inputs"] == 4 and out["agreement"]["same_class"] == 4
    assert out["agreement"]["max_abs_logit_diff"] <= 1e-5


def test_a_standin_model_says_so_in_the_bundle(tmp_path, monkeypatch):
    from qsal_lab import data, standin

    monkeypatch.setattr(standin, "STANDIN_SIZES", {"train": 200, "test": 200})  # not 20 000 images
    standin._memoised.cache_clear()
    model = build_model("smallcnn", 10, 3, 32)
    spec = {"model": "smallcnn", "num_classes": 10, "in_channels": 3, "image_size": 32, "dataset": "cifar10-standin"}
    torch.save({"model": model.state_dict(), "model_spec": spec}, tmp_path / "checkpoint.pt")
    with pytest.warns(UserWarning, match="STAND-IN"):
        out = build_bundle(tmp_path / "checkpoint.pt", tmp_path / "bundle", calib=64, samples=2)
    name = data.dataset_info("cifar10-standin").display_name  # the current version's: "... (synthetic) v2"
    assert name.startswith("CIFAR-10 stand-in (synthetic)")
    assert json.loads((out / "labels.json").read_text())["dataset"] == name
    spec = json.loads((out / "preprocess.json").read_text())
    assert spec["dataset_display_name"] == name and spec["standin"] and spec["channels"] == 3 and spec["height"] == 32
    readme = (out / "README.md").read_text()
    assert readme.startswith(f"# SmallCNN on {name}") and "not on CIFAR-10" in readme
    assert OnnxClassifier(out / "model_fp32.onnx").metadata["dataset_display_name"] == name


def test_bad_checkpoints_and_arguments(tmp_path, mnist_bundle):
    from qsal_lab.pretrained import pretrained_dir
    from qsal_lab.quant import QATConfig, quantize_model

    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        build_bundle(tmp_path / "nope", tmp_path / "out")
    with pytest.raises(ValueError, match="calib must be a positive number"):
        build_bundle(pretrained_dir("mnist_smallcnn"), tmp_path / "out", calib=0)
    with pytest.raises(ValueError, match="unknown calibration method"):
        build_bundle(pretrained_dir("mnist_smallcnn"), tmp_path / "out", method="median")
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="is a file; give a folder"):
        build_bundle(pretrained_dir("mnist_smallcnn"), tmp_path / "file")
    model = build_model("smallcnn")
    config = QATConfig(w_bits=4, a_bits=4)
    quantize_model(model, config)
    spec = {"model": "smallcnn", "num_classes": 10, "in_channels": 1, "image_size": 28, "dataset": "mnist",
            "quant": asdict(config)}
    torch.save({"model": model.state_dict(), "model_spec": spec}, tmp_path / "pact.pt")
    with pytest.raises(ValueError, match="is a PACT QAT checkpoint"):
        build_bundle(tmp_path / "pact.pt", tmp_path / "out")
