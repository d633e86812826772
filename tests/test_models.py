import pytest
import torch
from torch import nn

from qsal_lab.models import build_model, count_parameters


@pytest.mark.parametrize("name,channels,size,params", [
    ("smallcnn", 1, 28, 426_234), ("resnet20", 3, 32, 269_722), ("resnet18", 1, 28, 11_172_810),
    ("resnet18", 3, 28, 11_173_962)])
def test_shapes_and_sizes(name, channels, size, params):
    model = build_model(name, num_classes=10, in_channels=channels, image_size=size)
    assert model(torch.randn(2, channels, size, size)).shape == (2, 10)
    assert count_parameters(model) == params


def test_num_classes_and_aliases():
    assert build_model("ResNet-20", num_classes=7, in_channels=3, image_size=32)(torch.randn(1, 3, 32, 32)).shape == (1, 7)


def test_unknown_model_lists_valid_names():
    with pytest.raises(ValueError, match="unknown model 'vgg16'; choose one of: smallcnn, resnet20, resnet18"):
        build_model("vgg16")


@pytest.mark.parametrize("name", ["smallcnn", "resnet20", "resnet18"])
def test_every_relu_is_its_own_module(name):
    # quantization swaps each ReLU for a PACT activation with its own clipping level
    model = build_model(name, in_channels=3)
    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    assert len(relus) == len({id(m) for m in relus}) >= 3


def test_resnet18_width_scales_the_channels():
    half = build_model("resnet18", num_classes=2, in_channels=1, width=0.5)
    assert [half.conv1.out_channels, half.fc.in_features] == [32, 256]
    assert 2_780_000 < count_parameters(half) < 2_800_000  # about a quarter of width 1's 11.17 M
    assert half(torch.randn(2, 1, 28, 28)).shape == (2, 2)
    assert count_parameters(build_model("resnet18", width=1.0)) == count_parameters(build_model("resnet18"))
    with pytest.raises(ValueError, match="width=0.5 applies to resnet18 only, not 'smallcnn'"):
        build_model("smallcnn", width=0.5)
    with pytest.raises(ValueError, match="width must be a number > 0"):
        build_model("resnet18", width=0)
