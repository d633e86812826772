"""Integration: our fake-quant W8A8 PTQ model predicts what ONNX Runtime's real int8 model predicts.

Both quantize the pretrained SmallCNN the same way (int8 symmetric per-channel weights, uint8
per-tensor activations, min-max ranges) from the same 512 training images, so on MNIST test
images their predictions must agree almost everywhere (the issue's target: >= 99 %). They are
not bit-identical: ONNX Runtime also quantizes every layer's output (logits included) and does
bias and requantization in integers.
"""
import pytest
import torch

from qsal_lab.data import load_dataset, make_loader
from qsal_lab.pretrained import available, load_pretrained
from qsal_lab.quant import OnnxClassifier, PTQConfig, export_onnx, ptq_model, quantize_onnx
from qsal_lab.train import predict

CALIB_IMAGES, TEST_IMAGES, BATCH = 512, 2000, 128


@pytest.fixture(scope="module")
def setup(mnist_root, tmp_path_factory):
    if "mnist_smallcnn" not in available():
        pytest.skip("the pretrained mnist_smallcnn checkpoint is not in qsal_lab/pretrained/")
    torch.manual_seed(0)
    model, _ = load_pretrained("mnist_smallcnn")
    # not shuffled: both calibrations iterate over exactly the same 4 batches
    calib_loader = make_loader(load_dataset("mnist", "train", root=mnist_root, subset=CALIB_IMAGES, seed=0), BATCH)
    test_loader = make_loader(load_dataset("mnist", "test", root=mnist_root, subset=TEST_IMAGES, seed=0), 500)
    num_batches = len(calib_loader)
    assert num_batches * BATCH == CALIB_IMAGES

    fake_quant = ptq_model(model, PTQConfig(w_bits=8, a_bits=8, observer="minmax"), calib_loader,
                           num_batches=num_batches, progress=False)
    folder = tmp_path_factory.mktemp("ptq_vs_ort")
    fp32 = export_onnx(model, folder / "smallcnn_fp32.onnx", input_shape=(1, 1, 28, 28))
    int8 = quantize_onnx(fp32, folder / "smallcnn_int8.onnx", calib_loader, num_batches=num_batches, method="minmax")

    fp_logits, labels = predict(model, test_loader)
    fq_logits, _ = predict(fake_quant, test_loader)
    ort_logits, ort_labels = predict(OnnxClassifier(int8, threads=1), test_loader)
    assert torch.equal(labels, ort_labels) and len(labels) == TEST_IMAGES
    return {"fp": fp_logits, "fake_quant": fq_logits, "ort_int8": ort_logits, "labels": labels,
            "fp32_path": fp32, "int8_path": int8}


def accuracy(logits, labels):
    return (logits.argmax(1) == labels).float().mean().item()


def test_ort_int8_agrees_with_fake_quant_int8_on_99_percent_of_mnist_test_images(setup):
    agreement = (setup["ort_int8"].argmax(1) == setup["fake_quant"].argmax(1)).float().mean().item()
    assert agreement >= 0.99, (f"ORT int8 and fake-quant W8A8 agree on only {agreement:.2%} of "
                               f"{TEST_IMAGES} MNIST test images (need >= 99%)")


def test_both_int8_models_stay_close_to_float_accuracy(setup):
    labels = setup["labels"]
    fp = accuracy(setup["fp"], labels)
    assert fp >= 0.98, f"the pretrained float SmallCNN is at {fp:.2%}: is it the trained checkpoint?"
    for name in ("fake_quant", "ort_int8"):
        acc = accuracy(setup[name], labels)
        assert abs(acc - fp) <= 0.005, f"{name} int8 accuracy {acc:.2%} is more than 0.5 points from float {fp:.2%}"


def test_int8_file_is_about_a_quarter_of_fp32(setup):
    ratio = setup["int8_path"].stat().st_size / setup["fp32_path"].stat().st_size
    assert 0.2 < ratio <= 0.27, f"int8 .onnx is {ratio:.3f} x the fp32 file; expected about 1/4 (<= 0.27)"
