"""The book's three classifiers, chosen by name with `build_model`.

Every ReLU is its own `nn.ReLU` module (never `F.relu`, never shared) so that
quantization can swap each one for a PACT activation with its own clipping level,
and every conv is followed by a BatchNorm that post-training quantization folds away.
"""
from __future__ import annotations

from torch import nn
import torch.nn.functional as F


class SmallCNN(nn.Module):
    """MNIST-class CNN: three conv blocks and a two-layer classifier (~0.42 M parameters).

    Trained at the `full` budget it is the shipped `mnist_smallcnn` (its metrics.json: the accuracy).
    The first layer (conv1) and the last layer (fc2) are the ones PACT keeps at 8 bits.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1, image_size: int = 28):
        super().__init__()
        if image_size % 4:
            raise ValueError(f"SmallCNN needs an image size divisible by 4, got {image_size}")
        # Pool early: on a laptop CPU the full-resolution convs dominate the epoch time.
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
        )
        side = image_size // 4
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(0.25),
            nn.Linear(64 * side * side, 128), nn.ReLU(),
            nn.Dropout(0.25),
            nn.Linear(128, num_classes),
        )

    def forward(self, x):
        return self.classifier(self.features(x))


class BasicBlock(nn.Module):
    """Two 3x3 convs with a residual connection (He et al. 2016)."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1, shortcut: str = "conv"):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu2 = nn.ReLU()
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            if shortcut == "pad":  # ResNet-20's "option A": parameter-free, as in the paper
                self.shortcut = PadShortcut(planes - in_planes, stride)
            else:  # ResNet-18's projection shortcut
                self.shortcut = nn.Sequential(
                    nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
                )

    def forward(self, x):
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))


class PadShortcut(nn.Module):
    """Subsample by `stride` and zero-pad the new channels (ResNet for CIFAR, option A)."""

    def __init__(self, extra_channels: int, stride: int):
        super().__init__()
        self.extra, self.stride = extra_channels, stride

    def forward(self, x):
        x = x[:, :, :: self.stride, :: self.stride]
        half = self.extra // 2
        return F.pad(x, (0, 0, 0, 0, half, self.extra - half))


class ResNet(nn.Module):
    """A ResNet with a 3x3 stem and no max-pool, for 28x28 and 32x32 images."""

    def __init__(self, widths, blocks, num_classes=10, in_channels=3, shortcut="conv"):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU()
        layers, in_planes = [], widths[0]
        for i, (width, n) in enumerate(zip(widths, blocks)):
            stride = 1 if i == 0 else 2
            stage = []
            for j in range(n):
                stage.append(BasicBlock(in_planes, width, stride if j == 0 else 1, shortcut))
                in_planes = width
            layers.append(nn.Sequential(*stage))
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(in_planes, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        return self.fc(self.flatten(self.pool(self.layers(x))))


def resnet20(num_classes: int = 10, in_channels: int = 3, image_size: int = 32) -> ResNet:
    """ResNet-20 for 32x32 images: 3 stages of 3 blocks, 16/32/64 channels (0.27 M parameters)."""
    return ResNet([16, 32, 64], [3, 3, 3], num_classes, in_channels, shortcut="pad")


def resnet18(num_classes: int = 10, in_channels: int = 3, image_size: int = 28, width: float = 1.0) -> ResNet:
    """ResNet-18 as in MedMNIST v2: 3x3 stem, no max-pool, 4 stages of 64..512 channels.

    width scales every stage's channels: 0.5 gives 32..256 channels, about a quarter of the
    parameters and of the compute (11.2 M parameters at width 1, 2.8 M at 0.5)."""
    return ResNet([max(1, round(c * width)) for c in (64, 128, 256, 512)], [2, 2, 2, 2], num_classes, in_channels,
                  shortcut="conv")


MODELS = {"smallcnn": SmallCNN, "resnet20": resnet20, "resnet18": resnet18}


WIDTH_MODELS = ("resnet18",)  # the models whose channel counts `width` scales


def build_model(name: str, num_classes: int = 10, in_channels: int = 1, image_size: int = 28,
                width: float = 1.0) -> nn.Module:
    """Build a model by name: 'smallcnn', 'resnet20' or 'resnet18' (width: ResNet-18's channel multiplier)."""
    key = name.lower().replace("-", "").replace("_", "")
    if key not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(MODELS)}")
    if isinstance(width, bool) or not isinstance(width, (int, float)) or not width > 0:
        raise ValueError(f"width must be a number > 0 (1 = the standard channel counts), got {width!r}")
    if width != 1:
        if key not in WIDTH_MODELS:
            raise ValueError(f"width={width} applies to {', '.join(WIDTH_MODELS)} only, not {name!r}")
        return MODELS[key](num_classes=num_classes, in_channels=in_channels, image_size=image_size, width=width)
    return MODELS[key](num_classes=num_classes, in_channels=in_channels, image_size=image_size)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
