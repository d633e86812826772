"""Shared test setup: a quick budget, a headless matplotlib, and where the data lives."""

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Set before anything imports qsal_lab or matplotlib; notebook kernels started by the tests
# inherit QSAL_BUDGET (tools/nbtools.py takes MPLBACKEND out of their environment again).
os.environ.setdefault("QSAL_BUDGET", "ci")
os.environ["MPLBACKEND"] = "Agg"


def find_data_root():
    """The folder holding the datasets (MNIST/, medmnist/, ...), or None if there is none.

    QSAL_DATA wins; otherwise the offline copy that the project's own machines keep at
    ../shared/data beside the repository. The tests export what they found as QSAL_DATA,
    so that the notebooks they execute read the same files instead of downloading.
    """
    if os.environ.get("QSAL_DATA"):
        return Path(os.environ["QSAL_DATA"]).expanduser()
    beside_repo = ROOT.parent / "shared" / "data"
    return beside_repo if beside_repo.is_dir() else None


DATA_ROOT = find_data_root()
if DATA_ROOT is not None:
    os.environ["QSAL_DATA"] = str(DATA_ROOT)


@pytest.fixture(scope="session")
def data_root():
    """QSAL_DATA as a Path; skips the test when no data folder is set or found."""
    if DATA_ROOT is None:
        pytest.skip("no data: set QSAL_DATA to the folder that holds MNIST/ (and medmnist/)")
    if not DATA_ROOT.is_dir():
        pytest.fail(f"QSAL_DATA={DATA_ROOT} is not a folder; point it at the folder that holds MNIST/")
    return DATA_ROOT


@pytest.fixture(scope="session")
def mnist_root(data_root):
    """The root to pass to torchvision.datasets.MNIST(root, download=False)."""
    if not (data_root / "MNIST" / "raw").is_dir():
        pytest.skip(f"no MNIST in QSAL_DATA={data_root}: expected {data_root / 'MNIST' / 'raw'}")
    return data_root
