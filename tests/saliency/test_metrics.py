"""Saliency metrics: faithfulness (torch and ONNX models), concentration, agreement, randomisation."""
import math

import numpy as np
import pytest
import torch
from torch import nn

from qsal_lab.data import load_dataset
from qsal_lab.quant.int8 import OnnxClassifier, export_onnx
from qsal_lab.saliency import attribute
from qsal_lab.saliency.metrics import (agreement, cascading_randomization, concentration, entropy, faithfulness,
                                       gini, random_saliency, removal_curve, spearman, ssim, topk_iou)


def tiny_cnn(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 8, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, 3)).eval()


X = torch.randn(6, 1, 12, 12, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def mnist(mnist_root):
    from qsal_lab.pretrained import load_pretrained

    model, _ = load_pretrained("mnist_smallcnn")
    ds = load_dataset("mnist", "test", root=mnist_root, subset=300)
    x, y = zip(*(ds[i] for i in range(len(ds))))
    return model, torch.stack(x), torch.stack(y)


# ----------------------------------------------------------------------------- faithfulness

def test_removal_curve_starts_at_the_accuracy_and_its_area_is_the_trapezoid():
    model = tiny_cnn()
    y = model(X).argmax(1)
    curve = removal_curve(model, X, y, random_saliency(X), fractions=(0, 0.25, 0.5))
    assert curve.fractions == [0, 0.25, 0.5] and curve.accuracy[0] == 1.0
    a = curve.accuracy
    assert curve.area == pytest.approx((0.25 * (a[0] + a[1]) / 2 + 0.25 * (a[1] + a[2]) / 2) / 0.5)
    assert curve.to_dict()["area"] == curve.area


def test_removal_curve_is_seeded():
    model, y = tiny_cnn(), torch.tensor([0, 1, 2, 0, 1, 2])
    a = removal_curve(model, X, y, random_saliency(X, 1), seed=3)
    assert a == removal_curve(model, X, y, random_saliency(X, 1), seed=3)


def test_faithfulness_runs_on_an_onnx_model_like_on_torch(tmp_path):
    model = tiny_cnn()
    onnx_model = OnnxClassifier(export_onnx(model, tmp_path / "m.onnx", input_shape=(1, 1, 12, 12)), threads=1)
    y = model(X).argmax(1)
    on_onnx = faithfulness(onnx_model, X, y, fractions=(0, 0.3, 0.6))
    assert set(on_onnx) == {"occlusion", "random"}  # all that an ONNX model can be attributed with
    on_torch = faithfulness(model, X, y, methods=["occlusion"], fractions=(0, 0.3, 0.6))
    for name in on_onnx:
        assert on_onnx[name].accuracy == on_torch[name].accuracy


def test_faithfulness_takes_precomputed_maps_and_a_plain_callable():
    model = tiny_cnn()
    y = model(X).argmax(1)
    maps = {"mine": attribute(model, X, y, "saliency")}
    result = faithfulness(lambda x: model(x), X, y, maps=maps, fractions=(0, 0.5))
    assert set(result) == {"mine", "random"}


def test_gradient_saliency_is_more_faithful_than_random_on_the_pretrained_model(mnist):
    """Fine steps: on a model trained without SGT, 20 % of noisy pixels anywhere already ruin MNIST
    (accuracy at chance), so p = 10 %, 20 %, ... would not tell the methods apart."""
    model, x, y = mnist
    fractions = (0, 0.02, 0.04, 0.06, 0.08, 0.1)
    curves = faithfulness(model, x, y, methods=["saliency"], fractions=fractions)
    assert curves["saliency"].accuracy[0] > 0.98
    assert curves["saliency"].area < curves["random"].area - 0.03, {k: c.area for k, c in curves.items()}


@pytest.mark.parametrize("fractions", [(), (0, 1.0), (0.5, 0.1), (-0.1, 0.2)])
def test_bad_fractions(fractions):
    with pytest.raises(ValueError, match=r"fractions must be increasing numbers in \[0, 1\)"):
        removal_curve(tiny_cnn(), X, torch.zeros(6, dtype=torch.long), X, fractions=fractions)


# ----------------------------------------------------------------------------- concentration

def test_gini_and_entropy_by_hand():
    ramp = torch.tensor([1.0, 2.0, 3.0, 4.0]).view(1, 1, 2, 2)
    assert gini(ramp)[0] == pytest.approx(0.25)  # (-3*1 - 1*2 + 1*3 + 3*4) / (4 * 10)
    flat, spike = torch.ones(1, 1, 4, 4), torch.zeros(1, 1, 4, 4)
    spike[0, 0, 1, 2] = -5.0  # magnitudes count
    assert gini(flat)[0] == pytest.approx(0.0) and gini(spike)[0] == pytest.approx(15 / 16)
    assert entropy(flat)[0] == pytest.approx(1.0) and entropy(spike)[0] == pytest.approx(0.0)
    assert entropy(flat, normalized=False)[0] == pytest.approx(math.log(16))
    assert gini(3 * ramp)[0] == pytest.approx(gini(ramp)[0])  # scale-free
    c = concentration(torch.cat([flat, spike]))
    assert c["gini"] == pytest.approx(15 / 32) and c["entropy"] == pytest.approx(0.5)


# ----------------------------------------------------------------------------- agreement

def test_agreement_is_one_on_identical_maps_and_about_zero_on_independent_ones():
    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(20, 1, 28, 28, generator=g), torch.rand(20, 1, 28, 28, generator=g)
    same = agreement(a, a.clone(), k=0.1)
    assert same == {"spearman": pytest.approx(1.0), "top10_iou": 1.0, "ssim": pytest.approx(1.0)}
    random = agreement(a, b, k=0.1)
    assert abs(random["spearman"]) < 0.05 and abs(random["ssim"]) < 0.05
    assert random["top10_iou"] < 0.1  # chance: 0.1 / 1.9 = 0.053
    assert (spearman(a, -a) == pytest.approx(1.0))  # magnitudes: the sign does not count


def test_topk_iou_by_hand():
    a = torch.tensor([4.0, 3.0, 2.0, 1.0]).view(1, 1, 2, 2)
    b = torch.tensor([4.0, 1.0, 3.0, 2.0]).view(1, 1, 2, 2)
    assert topk_iou(a, b, k=0.5)[0] == pytest.approx(1 / 3)  # {0, 1} vs {0, 2}
    with pytest.raises(ValueError, match=r"k must be a fraction in \(0, 1\]"):
        topk_iou(a, b, k=10)


def test_agreement_needs_maps_of_the_same_images():
    with pytest.raises(ValueError, match="same shape"):
        ssim(torch.rand(2, 1, 8, 8), torch.rand(3, 1, 8, 8))
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        spearman(torch.rand(8, 8), torch.rand(8, 8))
    assert np.isfinite(ssim(torch.rand(2, 1, 5, 5), torch.rand(2, 1, 5, 5))).all()  # small maps: a smaller window


# ----------------------------------------------------------------------------- sanity check

def test_cascading_randomization_loses_similarity_and_leaves_the_model_alone(mnist):
    model, x, y = mnist
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rows = cascading_randomization(model, x[:40], y[:40], "saliency")
    names = [r["layer"] for r in rows]
    assert names == ["(trained)", "classifier.5", "classifier.2", "features.8", "features.4", "features.0"]
    assert rows[0]["spearman"] == pytest.approx(1.0)
    assert rows[-1]["spearman"] < 0.5 and rows[-1]["ssim"] < 0.5
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_cascading_randomization_needs_a_torch_model():
    with pytest.raises(TypeError, match="ONNX model has no parameters"):
        cascading_randomization(lambda x: x.flatten(1)[:, :3], X, 0)


def test_summarize_holds_what_the_cli_prints():
    from qsal_lab.saliency import summarize

    model = tiny_cnn()
    y = model(X).argmax(1)
    maps, summary = summarize(model, X, y, "gradcam", fractions=(0, 0.5))
    assert maps.shape == X.shape and summary["accuracy"] == 1.0 and summary["images"] == 6
    assert {"faithfulness_area", "random_area", "gini", "entropy", "seconds_per_image"} <= summary.keys()
    assert summary["faithfulness_curve"][0] == 1.0 and summary["fractions"] == [0, 0.5]
