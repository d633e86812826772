import os
import shutil
import urllib.error

import pytest
import torch

from qsal_lab import data
from qsal_lab.data import DataError, dataset_info, load_dataset, make_loader, stratified_indices


def test_unknown_name_lists_valid_ones():
    with pytest.raises(DataError, match=r"unknown dataset 'mnits'; valid names: mnist, fashionmnist, cifar10, .*pneumoniamnist"):
        load_dataset("mnits")


def test_every_2d_medmnist_flag_is_known():
    from medmnist import INFO
    flags = [k for k in INFO if not k.endswith("3d")]
    assert len(flags) == 12
    for flag in flags:
        info = dataset_info(flag)
        assert info.num_classes == len(INFO[flag]["label"]) and info.in_channels == INFO[flag]["n_channels"]
        assert info.splits == ("train", "val", "test")
    assert dataset_info("chestmnist").task == "multi-label"
    assert dataset_info("PneumoniaMNIST").task == "binary-class"  # names are case-insensitive
    with pytest.raises(DataError, match="unknown dataset"):
        dataset_info("organmnist3d")


def test_mnist_loads_normalised_and_stratified(mnist_root):
    ds = load_dataset("mnist", "train", root=mnist_root, subset=1000, seed=3)
    assert len(ds) == 1000 and ds[0][0].shape == (1, 28, 28) and ds[0][0].dtype == torch.float32
    counts = ds.labels.bincount()
    full = torch.tensor([5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949])
    assert (counts - full * 1000 / 60000).abs().max() <= 1  # proportions of the full split
    x = torch.stack([ds[i][0] for i in range(len(ds))])
    assert abs(x.mean().item()) < 0.05 and abs(x.std().item() - 1) < 0.05  # standard MNIST normalisation
    again = load_dataset("mnist", "train", root=mnist_root, subset=1000, seed=3)
    other = load_dataset("mnist", "train", root=mnist_root, subset=1000, seed=4)
    assert torch.equal(ds.images, again.images) and not torch.equal(ds.images, other.images)


def test_mnist_full_splits(mnist_root):
    assert len(load_dataset("mnist", "test", root=mnist_root)) == 10000
    with pytest.raises(DataError, match="has no split 'val'; choose one of: train, test"):
        load_dataset("mnist", "val", root=mnist_root)


def test_pneumoniamnist_splits(mnist_root):
    sizes = {s: len(load_dataset("pneumoniamnist", s, root=mnist_root)) for s in ("train", "val", "test")}
    assert sizes == {"train": 4708, "val": 524, "test": 624}
    ds = load_dataset("pneumoniamnist", "test", root=mnist_root)
    assert ds.labels.bincount().tolist() == [234, 390]
    assert ds[0][0].shape == (1, 28, 28)


def test_missing_dataset_names_files_and_md5(tmp_path):
    with pytest.raises(DataError) as e:
        load_dataset("mnist", root=tmp_path, download=False)
    msg = str(e.value)
    assert str(tmp_path / "MNIST/raw/train-images-idx3-ubyte") in msg and "6bbc9ace898e44ae57da46a324031adb" in msg
    assert "QSAL_DATA" in msg and "relative path" not in msg


def test_missing_data_under_a_relative_root_says_so(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("QSAL_DATA", "../shared/data")
    with pytest.raises(DataError, match=r"\.\./shared/data is a relative path.*set QSAL_DATA to an absolute path"):
        load_dataset("mnist", download=False)


def test_failed_download_is_explained(tmp_path, monkeypatch):
    import torchvision

    def offline(self):
        raise urllib.error.URLError("Name or service not known")
    monkeypatch.setattr(torchvision.datasets.MNIST, "download", offline)
    with pytest.raises(DataError, match="could not be downloaded .*URLError"):
        load_dataset("mnist", root=tmp_path, download=True)


def test_corrupt_file_says_so(tmp_path, mnist_root):
    (tmp_path / "medmnist").mkdir()
    bad = tmp_path / "medmnist" / "pneumoniamnist.npz"
    shutil.copy(os.path.join(mnist_root, "medmnist", "pneumoniamnist.npz"), bad)
    bad.chmod(0o644)
    with open(bad, "r+b") as f:
        f.seek(1000)
        f.write(b"\x00\x01\x02")
    with pytest.raises(DataError, match="corrupt.*expected md5 28209eda62fecd6e6a2d98b1501bb15f"):
        load_dataset("pneumoniamnist", root=tmp_path)
    assert data.check_files("pneumoniamnist", tmp_path)["medmnist/pneumoniamnist.npz"].startswith("corrupt")


def test_cifar10_never_falls_back_to_the_standin_silently(tmp_path, monkeypatch):
    monkeypatch.delenv("QSAL_STANDIN", raising=False)
    with pytest.raises(DataError, match="QSAL_STANDIN=1"):
        load_dataset("cifar10", root=tmp_path, download=False)


def test_standin_is_labelled_deterministic_and_balanced(monkeypatch):
    monkeypatch.setenv("QSAL_STANDIN", "1")
    with pytest.warns(UserWarning, match="STAND-IN"):
        ds = load_dataset("cifar10", "test", subset=2000)
    assert "stand-in" in ds.name and ds.info.standin
    assert ds[0][0].shape == (3, 32, 32)
    assert ds.labels.bincount().tolist() == [200] * 10
    with pytest.warns(UserWarning):
        again = load_dataset("cifar10", "test", subset=2000)
    assert torch.equal(ds.images, again.images)
    # colour alone must not give the class away: a nearest-class-mean classifier on each image's
    # mean colour, fitted on half the images, is near chance (10 %) on the other half
    colour = ds.images.float().mean((2, 3))
    fit_x, fit_y, val_x, val_y = colour[:1000], ds.labels[:1000], colour[1000:], ds.labels[1000:]
    centres = torch.stack([fit_x[fit_y == c].mean(0) for c in range(10)])
    acc = (torch.cdist(val_x, centres).argmin(1) == val_y).float().mean().item()
    assert acc < 0.16


def test_stratified_indices_keep_proportions():
    labels = torch.tensor([0] * 90 + [1] * 10)
    idx = stratified_indices(labels, 20, seed=0)
    assert len(idx) == 20 and labels[idx].bincount().tolist() == [18, 2]
    assert torch.equal(idx, stratified_indices(labels, 20, seed=0))


def test_loader_order_depends_only_on_seed_and_epoch(mnist_root):
    ds = load_dataset("mnist", "test", root=mnist_root, subset=300)
    first = lambda epoch: next(iter(make_loader(ds, 32, train=True, seed=1, epoch=epoch)))[1]  # noqa: E731
    assert torch.equal(first(0), first(0)) and not torch.equal(first(0), first(1))


def test_data_root_resolution(monkeypatch, tmp_path):
    monkeypatch.setenv("QSAL_DATA", str(tmp_path))
    assert data.default_root() == tmp_path
    monkeypatch.delenv("QSAL_DATA")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert data.default_root() == tmp_path / "cache" / "qsal_lab" / "data"
