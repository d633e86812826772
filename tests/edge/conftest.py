"""Bundles for the edge tests: a tiny hand-made one (no data needed) and the pretrained MNIST model's."""
import json
import shutil
import subprocess
import sys

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from qsal_lab.edge import runner

TINY_CLASSES = ["cat", "dog", "owl"]


def tiny_onnx(path):
    """A 1x8x8 -> 3 classifier (Conv, ReLU, Flatten, Gemm) written with onnx.helper: no torch.export, so
    the fixture takes milliseconds, and the runner never sees anything but an ONNX file anyway."""
    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.normal(0, 0.5, shape).astype(np.float32), name) for name, shape in
               (("w", (4, 1, 3, 3)), ("b", (4,)), ("fc_w", (3, 4 * 8 * 8)), ("fc_b", (3,)))]
    nodes = [helper.make_node("Conv", ["input", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]), helper.make_node("Flatten", ["r"], ["f"]),
             helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["logits"], transB=1)]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 8, 8])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])], weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save_model(model, path)
    return path


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory):
    """A folder laid out like a bundle (fp32 and int8 models, spec, labels, run.py) around a tiny model."""
    from qsal_lab.quant.int8 import quantize_onnx

    folder = tmp_path_factory.mktemp("tiny_bundle")
    tiny_onnx(folder / "model_fp32.onnx")
    calib = [(torch.randn(16, 1, 8, 8, generator=torch.Generator().manual_seed(0)), torch.zeros(16))]
    quantize_onnx(folder / "model_fp32.onnx", folder / "model_int8.onnx", calib, num_batches=1)
    (folder / "preprocess.json").write_text(json.dumps(
        {"height": 8, "width": 8, "channels": 1, "mean": [0.5], "std": [0.25], "task": "multi-class"}))
    (folder / "labels.json").write_text(json.dumps({"dataset": "Tiny", "classes": TINY_CLASSES}))
    shutil.copyfile(runner.__file__, folder / "run.py")
    return folder


@pytest.fixture(scope="session")
def mnist_bundle(tmp_path_factory, mnist_root):
    """build_bundle of the shipped MNIST SmallCNN (calibrated on 64 training images, 4 samples)."""
    from qsal_lab.edge import build_bundle
    from qsal_lab.pretrained import pretrained_dir

    return build_bundle(pretrained_dir("mnist_smallcnn"), tmp_path_factory.mktemp("bundle") / "mnist_bundle",
                        calib=64, samples=4)


@pytest.fixture(scope="session")
def run_py():
    """run_py(folder, *args): `python run.py ARGS` in a fresh process (this venv's python), run from the folder."""
    def run(folder, *args):
        return subprocess.run([sys.executable, str(folder / "run.py"), *map(str, args)], cwd=folder,
                              capture_output=True, text=True, timeout=120)
    return run
