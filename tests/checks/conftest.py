"""Fixtures for the checks' tests: small models and data, built once per session."""
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset


@pytest.fixture(scope="session")
def mnist_calibration():
    """The shipped SmallCNN and two calibration batches of digit-like random images."""
    from qsal_lab.pretrained import load_pretrained

    model, _ = load_pretrained("mnist_smallcnn")
    g = torch.Generator().manual_seed(0)
    x = torch.rand(64, 1, 28, 28, generator=g) * 3.2 - 0.42
    return model, DataLoader(TensorDataset(x, torch.zeros(64, dtype=torch.long)), batch_size=32)


@pytest.fixture(scope="session")
def small_maps():
    """Saliency maps of three 'methods' for the same 5 images of 8x8, two of them related, one with ties."""
    g = torch.Generator().manual_seed(5)
    base = torch.randn(5, 1, 8, 8, generator=g)
    tied = base.abs().round()  # many equal values
    return {"saliency": base, "smoothgrad": base + 0.5 * torch.randn(5, 1, 8, 8, generator=g), "gradcam": tied}


@pytest.fixture(scope="session")
def small_classifier():
    """(model, x, y, maps): a linear classifier on 8 random 8x8 images, their labels and signed maps."""
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 4)).eval()
    g = torch.Generator().manual_seed(6)
    x = torch.randn(8, 1, 8, 8, generator=g)
    with torch.no_grad():
        y = model(x).argmax(1)
    return model, x, y, {"saliency": torch.randn(8, 1, 8, 8, generator=g)}


@pytest.fixture(scope="session")
def maps_by_bits():
    """Float maps and 'quantized' ones of 6 images: W8A8 close, W2A2 far, one W2A2 map zero everywhere."""
    g = torch.Generator().manual_seed(7)
    base = torch.randn(6, 1, 8, 8, generator=g)
    w2 = torch.randn(6, 1, 8, 8, generator=g)
    w2[2] = 0.0
    return {"float": base, "W8A8": base + 0.1 * torch.randn(6, 1, 8, 8, generator=g), "W2A2": w2}


@pytest.fixture(scope="session")
def folded_resnet20():
    """A ResNet-20 with BN statistics that differ per channel (as after training), BN folded into the convs."""
    from torch import nn

    from qsal_lab.models import resnet20
    from qsal_lab.quant import fold_batchnorm

    torch.manual_seed(0)
    model = resnet20()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_var.uniform_(0.01, 4.0)
            m.weight.data.uniform_(0.2, 2.0)
    return fold_batchnorm(model).eval()


@pytest.fixture(scope="session")
def cifar_like_loader():
    g = torch.Generator().manual_seed(1)
    return DataLoader(TensorDataset(torch.randn(40, 3, 32, 32, generator=g), torch.arange(40) % 10), batch_size=20)


@pytest.fixture(scope="session")
def validation_and_test():
    """What cell 11 of exercise 9 reads: labels and P(pneumonia) of a validation and a test split (synthetic;
    the test split's scores are shifted, so that it would choose another threshold) and TARGET."""
    import numpy as np

    from qsal_lab import clinical

    rng = np.random.default_rng(3)

    def split(n_pos, n_neg, shift):
        y = np.r_[np.ones(n_pos, dtype=np.int64), np.zeros(n_neg, dtype=np.int64)]
        p = np.clip(np.r_[rng.beta(5, 2, n_pos), rng.beta(2, 5, n_neg)] + shift, 0, 1).astype(np.float32)
        return y, p
    y_val, p_val = split(60, 40, 0.0)
    y_test, p_test = split(70, 30, 0.08)
    return {"y_val": y_val, "p_val": p_val, "y_test": y_test, "p_test": p_test, "TARGET": 0.95, "clinical": clinical}


@pytest.fixture(scope="session")
def mnist_tiny(mnist_root):
    """512 MNIST training digits and 256 test digits: enough for a check that trains a few steps."""
    from qsal_lab.data import load_dataset

    return load_dataset("mnist", "train", subset=512, seed=0), load_dataset("mnist", "test", subset=256, seed=0)
