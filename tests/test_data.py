import os
import shutil
import urllib.error

import numpy as np
import pytest
import torch

from qsal_lab import data, standin
from qsal_lab.data import DataError, dataset_info, load_dataset, make_loader, stratified_indices


def test_unknown_name_lists_valid_ones():
    with pytest.raises(DataError, match=r"unknown dataset 'mnits'; valid names: mnist, fashionmnist, cifar10, .*pneumoniamnist.*; did you mean 'mnist'\?"):
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
    with pytest.raises(DataError, match="'organmnist3d' is a 3D MedMNIST flag"):
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
    with pytest.warns(UserWarning, match=f"STAND-IN.*CIFAR-10 stand-in \\(synthetic\\) {data.STANDIN_VERSION}"):
        ds = load_dataset("cifar10", "test", subset=2000)
    assert "CIFAR-10 stand-in (synthetic)" in ds.name and ds.info.standin and ds.info.version == data.STANDIN_VERSION
    assert ds.info.name == "cifar10-standin-v3" and ds.info.class_names == data.STANDIN_SHAPES
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


def test_standin_versions_and_names():
    assert data.dataset_info("cifar10-standin").name == f"cifar10-standin-{data.STANDIN_VERSION}"
    assert data.dataset_info("standin-v1").display_name == "CIFAR-10 stand-in (synthetic) v1"
    assert data.dataset_info("CIFAR10_STANDIN_V2").version == "v2"
    assert data.dataset_info("standin-v3").display_name == "CIFAR-10 stand-in (synthetic) v3"
    with pytest.raises(DataError, match="unknown CIFAR-10 stand-in version 'v9'.*v1, v2, v3"):
        data.dataset_info("cifar10-standin-v9")
    with pytest.warns(UserWarning, match="STAND-IN"):
        v1 = load_dataset("cifar10-standin-v1", "test", subset=100)
    assert v1.info.version == "v1" and v1.name.endswith("v1") and not v1.faint.any()
    made = {bytes(x) for x in standin.make_standin("test", version="v1")[0].transpose(0, 3, 1, 2).reshape(10000, -1)}
    assert all(bytes(x.numpy().reshape(-1)) in made for x in v1.images)  # v1's images, not the current version's


@pytest.mark.filterwarnings("ignore:Using the synthetic CIFAR-10 STAND-IN")
def test_a_standin_dataset_carries_its_faint_flags_through_holdout_and_subset(monkeypatch):
    monkeypatch.setattr(standin, "STANDIN_SIZES", {"train": 3000, "test": 1000})
    standin._memoised.cache_clear()
    images, labels, faint = standin.make_standin("train", return_faint=True)
    ds = load_dataset("cifar10-standin", "train", holdout=500, subset=1000, seed=2)
    assert ds.faint.dtype == torch.bool and len(ds.faint) == len(ds) == 1000 and 0 < ds.faint.sum() < 300
    where = {bytes(x): i for i, x in enumerate(images.transpose(0, 3, 1, 2).reshape(3000, -1))}
    rows = [where[bytes(x.numpy().reshape(-1))] for x in ds.images]  # each image's place in the generated split
    assert ds.faint.tolist() == faint[rows].tolist() and ds.labels.tolist() == labels[rows].tolist()
    assert load_dataset("cifar10-standin-v2", "test", subset=100).faint.sum() == 0
    with pytest.raises(ValueError, match="faint has 2 flags for 3 images"):
        data.ImageDataset(images[:3], labels[:3], ds.info, "train", faint=faint[:2])
    standin._memoised.cache_clear()


def test_holdout_is_carved_out_of_train_and_fixed(monkeypatch):
    monkeypatch.setattr(standin, "STANDIN_SIZES", {"train": 3000, "test": 1000})
    standin._memoised.cache_clear()
    with pytest.warns(UserWarning):
        held = load_dataset("cifar10-standin", "holdout", holdout=500)
        rest = load_dataset("cifar10-standin", "train", holdout=500)
        rest_sub = load_dataset("cifar10-standin", "train", holdout=500, subset=1000, seed=3)
    assert len(held) == 500 and len(rest) == 2500 and held.labels.bincount().tolist() == [50] * 10
    flat = lambda ds: {bytes(x.numpy().tobytes()) for x in ds.images}  # noqa: E731
    assert not flat(held) & flat(rest) and flat(rest_sub) <= flat(rest) and len(rest_sub) == 1000
    with pytest.raises(DataError, match="say how many images with holdout=N"):
        load_dataset("cifar10-standin", "holdout")
    with pytest.raises(DataError, match="removes images from the training split only"):
        load_dataset("cifar10-standin", "test", holdout=10)
    with pytest.raises(DataError, match="holdout must be a positive number"):
        load_dataset("cifar10-standin", "train", holdout=0)
    standin._memoised.cache_clear()


def test_offline_cifar10_download_failure_names_the_standin(tmp_path, monkeypatch):
    import torchvision

    monkeypatch.delenv("QSAL_STANDIN", raising=False)

    def offline(self):
        raise OSError("network is unreachable")
    monkeypatch.setattr(torchvision.datasets.CIFAR10, "download", offline)
    with pytest.raises(DataError) as e:
        load_dataset("cifar10", root=tmp_path, download=True)
    msg = str(e.value)
    assert "could not be downloaded (OSError: network is unreachable)" in msg and "c99cafc152244af753f735de768cd75f" in msg
    assert "QSAL_STANDIN=1" in msg and "cifar-10-python.tar.gz" in msg


def test_a_fixture_in_cifar10_layout_loads_as_real_cifar10(tmp_path, monkeypatch):
    from tests.fixtures.cifar10 import PER_BATCH, synthetic_cifar10

    monkeypatch.delenv("QSAL_STANDIN", raising=False)
    root = synthetic_cifar10(monkeypatch, tmp_path)
    train, test = load_dataset("cifar10", "train", root=root), load_dataset("cifar10", "test", root=root)
    assert len(train) == 5 * PER_BATCH and len(test) == PER_BATCH
    assert train.info.name == "cifar10" and train.name == "CIFAR-10" and not train.info.standin and train.faint is None
    x, y = train[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert train.labels.bincount().tolist() == [25] * 10
    assert set(data.check_files("cifar10", root).values()) == {"ok"}


def test_the_cifar10_fixture_fails_the_official_md5(tmp_path, monkeypatch):
    from tests.fixtures.cifar10 import write_synthetic_cifar10

    monkeypatch.delenv("QSAL_STANDIN", raising=False)
    write_synthetic_cifar10(tmp_path)
    with pytest.raises(DataError, match="'cifar10' has corrupt files: .*data_batch_1.*expected md5 c99cafc1"):
        load_dataset("cifar10", "train", root=tmp_path)


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


# ----------------------------------------------------------------------------- every 2D MedMNIST flag, every size

TWO_D = ["bloodmnist", "breastmnist", "chestmnist", "dermamnist", "octmnist", "organamnist", "organcmnist",
         "organsmnist", "pathmnist", "pneumoniamnist", "retinamnist", "tissuemnist"]


@pytest.mark.parametrize("size", data.MEDMNIST_SIZES)
def test_every_2d_flag_at_every_size(size):
    from medmnist import INFO
    for flag in TWO_D:
        for name, kwargs in ((f"{flag}_{size}", {}), (flag, {"size": size})):
            info = dataset_info(name, **kwargs)
            assert info.image_size == size and info.name == (flag if size == 28 else f"{flag}_{size}")
            suffix = "" if size == 28 else f"_{size}"
            assert data.expected_files(info.name) == {f"medmnist/{flag}{suffix}.npz": INFO[flag][f"MD5{suffix}"]}
    assert dataset_info("pathmnist_64").display_name == "PathMNIST (64x64)"
    assert dataset_info("retinamnist").task == "ordinal-regression"


@pytest.mark.parametrize("name, kwargs, message", [
    ("organmnist3d", {}, "'organmnist3d' is a 3D MedMNIST flag .* use one of the 2D flags: bloodmnist, "),
    ("NoduleMNIST3D", {}, "is a 3D MedMNIST flag"),
    ("pneumonia", {}, r"unknown dataset 'pneumonia'; valid names: mnist, .*; did you mean 'pneumoniamnist'\?"),
    ("pneumoniamnist_32", {}, "MedMNIST images come in sizes 28, 64, 128, 224 pixels; got 32"),
    ("pneumoniamnist", {"size": 100}, "got 100 for pneumoniamnist"),
    ("pneumoniamnist_64", {"size": 128}, "says size 64 but size=128 was asked for"),
    ("mnist", {"size": 64}, "mnist comes in one size"),
])
def test_wrong_and_3d_flags_are_explained(name, kwargs, message):
    with pytest.raises(DataError, match=message):
        load_dataset(name, **kwargs)


def test_a_flag_whose_file_is_missing_names_the_file_md5_and_source(tmp_path):
    from medmnist import INFO
    for name, file, md5 in (("dermamnist", "dermamnist.npz", INFO["dermamnist"]["MD5"]),
                            ("dermamnist_128", "dermamnist_128.npz", INFO["dermamnist"]["MD5_128"])):
        with pytest.raises(DataError) as e:
            load_dataset(name, "train", root=tmp_path, download=False)
        msg = str(e.value)
        assert f"dataset {name!r} is not available under {tmp_path}" in msg
        assert f"{tmp_path / 'medmnist' / file}: {md5}" in msg and "medmnist.DermaMNIST(split=..." in msg
    assert "size=128, download=True" in msg and INFO["dermamnist"]["url_128"] in msg


def test_a_synthetic_file_in_medmnist_layout_loads_like_the_real_ones(tmp_path, monkeypatch):
    from tests.fixtures.medmnist import SPLITS, synthetic_medmnist

    root = synthetic_medmnist(monkeypatch, tmp_path, "bloodmnist")
    sizes = {s: len(load_dataset("bloodmnist", s, root=root)) for s in ("train", "val", "test")}
    assert sizes == SPLITS
    ds = load_dataset("bloodmnist", "test", root=root)
    x, y = ds[0]
    assert x.shape == (3, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.int64 and ds.labels.ndim == 1
    assert ds.labels.unique().tolist() == list(range(8))
    chest = load_dataset("chestmnist", "val", root=synthetic_medmnist(monkeypatch, tmp_path, "chestmnist"))
    assert chest.labels.shape == (80, 14) and chest.labels.dtype == torch.float32
    big = load_dataset("bloodmnist", "val", size=64, root=synthetic_medmnist(monkeypatch, tmp_path, "bloodmnist", 64))
    assert big[0][0].shape == (3, 64, 64) and big.info.image_size == 64


def test_a_synthetic_file_fails_the_official_md5(tmp_path):
    from tests.fixtures.medmnist import write_synthetic_medmnist

    write_synthetic_medmnist(tmp_path, "dermamnist")
    with pytest.raises(DataError, match="dermamnist' has corrupt files: .*expected md5"):
        load_dataset("dermamnist", "train", root=tmp_path)


def test_shift_augmentation_moves_without_flipping():
    torch.manual_seed(0)
    x = torch.zeros(1, 28, 28)
    x[0, 10:12, 3:5] = 1.0  # a 2x2 spot on the left
    for _ in range(20):
        shifted = data._random_crop_flip(x, pad=2, flip=False)
        ys, xs = shifted[0].nonzero(as_tuple=True)
        assert shifted.shape == x.shape and len(ys) == 4
        assert 8 <= ys.min() <= 12 and 1 <= xs.min() <= 5  # moved by at most 2 px, still on the left
    assert data.check_augment(True) == "crop_flip" and data.check_augment(False) is None
    with pytest.raises(ValueError, match="unknown augmentation 'rotate'"):
        data.check_augment("rotate")


def test_balanced_sampler_evens_out_the_classes_reproducibly():
    labels = torch.tensor([0] * 100 + [1] * 900)
    ds = torch.utils.data.TensorDataset(torch.zeros(1000, 1), labels)
    weights = data.balanced_sample_weights(labels)
    draw = lambda epoch: torch.cat([y for _, y in make_loader(ds, 250, train=True, seed=3, epoch=epoch,  # noqa: E731
                                                                sample_weights=weights)])
    first = draw(0)
    assert len(first) == 1000 and 400 < (first == 0).sum() < 600  # about half, not a tenth
    assert torch.equal(first, draw(0)) and not torch.equal(first, draw(1))
    with pytest.raises(ValueError, match="class-balanced sampling needs one class per example"):
        data.balanced_sample_weights(torch.zeros(4, 3))
