"""Datasets: one entry point, `load_dataset(name, split)`, over the official loaders.

torchvision (MNIST, Fashion-MNIST, CIFAR-10) and medmnist (every 2D MedMNIST flag, at 28x28 or,
for users who download them, 64, 128 or 224 pixels: 'pneumoniamnist_64' or `size=64`) read and
download the files; this module checks them against the official MD5s, keeps the images in
memory as uint8, normalises per batch item, and draws stratified, seeded subsets for small
budgets. Where the data lives: the `root` argument, else `$QSAL_DATA`, else a per-user cache.

CIFAR-10 has a synthetic *stand-in* for offline runs (made by `qsal_lab.standin`). It is used only
when asked for (`standin=True` or `QSAL_STANDIN=1`), warns when loaded, and its name says "stand-in" so
every table and figure made from it is labelled. It is versioned (`STANDIN_VERSION`): the data set a run
actually loaded, stand-in key and version included, is what its checkpoint and metrics record.
"""
from __future__ import annotations

import difflib
import functools
import hashlib
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from .standin import STANDIN_SHAPES, STANDIN_VERSION, STANDIN_VERSIONS, make_standin


class DataError(RuntimeError):
    """A dataset is missing, corrupt or unknown; the message says what to do."""


@dataclass(frozen=True)
class DatasetInfo:
    name: str            # the key passed to load_dataset
    display_name: str    # what tables and figures call it
    num_classes: int
    in_channels: int
    image_size: int
    task: str            # "multi-class", "binary-class", "multi-label" or "ordinal-regression"
    class_names: tuple
    mean: tuple
    std: tuple
    splits: tuple = ("train", "test")
    standin: bool = False
    version: str | None = None  # the stand-in's generator version ("v3"); None for real data sets


_MNIST_DIGITS = tuple(str(i) for i in range(10))
_FASHION = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
_CIFAR = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

# What each torchvision dataset reads, relative to the data root, with official MD5s.
# MNIST's idx files are the gunzip of the official .gz files (MD5s from torchvision's
# MNIST.resources); the .gz files are checked too when they are there.
_TORCHVISION_FILES = {
    "mnist": {
        "MNIST/raw/train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
        "MNIST/raw/train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
        "MNIST/raw/t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
        "MNIST/raw/t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
    },
    "fashionmnist": {  # only the .gz MD5s are published; the idx files are checked via them
        "FashionMNIST/raw/train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "FashionMNIST/raw/train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "FashionMNIST/raw/t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "FashionMNIST/raw/t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    },
    "cifar10": {
        "cifar-10-batches-py/data_batch_1": "c99cafc152244af753f735de768cd75f",
        "cifar-10-batches-py/data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
        "cifar-10-batches-py/data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
        "cifar-10-batches-py/data_batch_4": "634d18415352ddfa80567beed471001a",
        "cifar-10-batches-py/data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
        "cifar-10-batches-py/test_batch": "40351d587109b95175f43aff81a1287e",
    },
}
_MNIST_GZ = {
    "MNIST/raw/train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "MNIST/raw/train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "MNIST/raw/t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "MNIST/raw/t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
_SOURCES = {
    "mnist": "https://ossci-datasets.s3.amazonaws.com/mnist/ (torchvision.datasets.MNIST, download=True)",
    "fashionmnist": "torchvision.datasets.FashionMNIST(download=True)",
    "cifar10": "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz (torchvision.datasets.CIFAR10, download=True)",
}


MEDMNIST_SIZES = (28, 64, 128, 224)  # MedMNIST+ image sizes of the 2D flags; 28 is MedMNIST v2's


def _medmnist_info():
    from medmnist import INFO  # lazy: slow (seconds), and only MedMNIST needs it

    # Only the 2D flags: the 3D volumes need other models.
    return {k: v for k, v in INFO.items() if not k.endswith("3d")}


def _medmnist_3d_flags() -> list[str]:
    from medmnist import INFO  # lazy: slow

    return sorted(k for k in INFO if k.endswith("3d"))


def _medmnist_size(name: str) -> tuple[str, int]:
    """('pneumoniamnist', 64) from the canonical name 'pneumoniamnist_64'; size 28 has no suffix."""
    flag, _, size = name.partition("_")
    return flag, int(size) if size else 28


def _info_for(name: str) -> DatasetInfo:
    if name == "mnist":
        return DatasetInfo("mnist", "MNIST", 10, 1, 28, "multi-class", _MNIST_DIGITS, (0.1307,), (0.3081,))
    if name == "fashionmnist":
        return DatasetInfo("fashionmnist", "Fashion-MNIST", 10, 1, 28, "multi-class", _FASHION, (0.2860,), (0.3530,))
    if name == "cifar10":
        return DatasetInfo("cifar10", "CIFAR-10", 10, 3, 32, "multi-class", _CIFAR,
                           (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
    if name == "cifar10-standin-v1":
        return DatasetInfo(name, "CIFAR-10 stand-in (synthetic) v1", 10, 3, 32, "multi-class",
                           tuple(f"standin-{i}" for i in range(10)), (0.5, 0.5, 0.5), (0.25, 0.25, 0.25),
                           standin=True, version="v1")
    if name in ("cifar10-standin-v2", "cifar10-standin-v3"):
        version = name.rpartition("-")[2]
        return DatasetInfo(name, f"CIFAR-10 stand-in (synthetic) {version}", 10, 3, 32, "multi-class", STANDIN_SHAPES,
                           (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), standin=True, version=version)
    flag, size = _medmnist_size(name)
    med = _medmnist_info()[flag]
    task = "multi-label" if med["task"].startswith("multi-label") else med["task"]
    labels = tuple(med["label"][k] for k in sorted(med["label"], key=int))
    c = med["n_channels"]
    display = med["python_class"] + ("" if size == 28 else f" ({size}x{size})")
    # MedMNIST v2's own recipe normalises every channel with mean 0.5, std 0.5.
    return DatasetInfo(name, display, len(labels), c, size, task, labels,
                       (0.5,) * c, (0.5,) * c, splits=("train", "val", "test"))


def available_datasets() -> list[str]:
    """Every dataset name at its default size (MedMNIST flags also take a size suffix: 'pathmnist_64')."""
    return ["mnist", "fashionmnist", "cifar10"] + sorted(_medmnist_info())


def dataset_info(name: str, size: int | None = None) -> DatasetInfo:
    """Facts about a dataset (classes, channels, image size, normalisation) without loading it.
    size: for MedMNIST flags, 28 (default), 64, 128 or 224, the same as the suffix in 'pathmnist_64'."""
    return _info_for(_canonical(name, size))


def _canonical(name: str, size: int | None = None) -> str:
    """The dataset's key: 'mnist', ..., a 2D MedMNIST flag ('pathmnist'), or a flag with its image size
    ('pathmnist_64'). Case, '-' and '_' do not matter; a 3D flag or a size MedMNIST lacks is refused."""
    if not isinstance(name, str):
        raise DataError(f"a dataset name is a string such as 'pneumoniamnist', got {name!r}")
    key = name.lower().replace("-", "")
    match = re.fullmatch(r"([a-z0-9_]*?mnist)_?(\d+)", key) if not key.endswith("3d") else None
    flag, suffix = (match.group(1).replace("_", ""), int(match.group(2))) if match else (key.replace("_", ""), None)
    if flag in ("cifar10standin", "standin"):
        return f"cifar10-standin-{STANDIN_VERSION}"
    if flag.startswith("cifar10standinv") or flag.startswith("standinv"):
        version = flag.rpartition("standin")[2]
        if version not in STANDIN_VERSIONS:
            raise DataError(f"unknown CIFAR-10 stand-in version {version!r} in {name!r}; versions: "
                            f"{', '.join(STANDIN_VERSIONS)} (current: {STANDIN_VERSION})")
        return f"cifar10-standin-{version}"
    if any(flag.startswith(f) for f in _medmnist_3d_flags()):
        raise DataError(f"{name!r} is a 3D MedMNIST flag (volumes, not images); qsal_lab's models classify "
                        f"2D images, so use one of the 2D flags: {', '.join(sorted(_medmnist_info()))}")
    if flag not in available_datasets():
        close = difflib.get_close_matches(flag, available_datasets(), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise DataError(f"unknown dataset {name!r}; valid names: {', '.join(available_datasets())}{hint}")
    if suffix is not None and size is not None and suffix != size:
        raise DataError(f"dataset {name!r} says size {suffix} but size={size} was asked for; give the size once")
    size = suffix if suffix is not None else size
    if size is None:
        return flag
    if flag not in _medmnist_info():
        raise DataError(f"{flag} comes in one size; image sizes ({', '.join(map(str, MEDMNIST_SIZES))}) "
                        f"are for MedMNIST flags only")
    if size not in MEDMNIST_SIZES:
        raise DataError(f"MedMNIST images come in sizes {', '.join(map(str, MEDMNIST_SIZES))} pixels; "
                        f"got {size} for {flag}")
    return flag if size == 28 else f"{flag}_{size}"


def default_root() -> Path:
    """`$QSAL_DATA` if set, else a per-user cache folder."""
    if os.environ.get("QSAL_DATA"):
        return Path(os.environ["QSAL_DATA"]).expanduser()
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return cache / "qsal_lab" / "data"


def md5sum(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def expected_files(name: str) -> dict[str, str]:
    """{path relative to the data root: official MD5} for a dataset."""
    name = _canonical(name)
    if name in _TORCHVISION_FILES:
        return dict(_TORCHVISION_FILES[name])
    if is_standin(name):
        return {}
    flag, size = _medmnist_size(name)
    suffix = "" if size == 28 else f"_{size}"
    return {f"medmnist/{flag}{suffix}.npz": _medmnist_info()[flag][f"MD5{suffix}"]}


def check_files(name: str, root: str | Path | None = None) -> dict[str, str]:
    """Status of each expected file: 'ok', 'missing' or 'corrupt (md5 X)'."""
    root = Path(root) if root else default_root()
    files = expected_files(name)
    if _canonical(name) == "mnist":  # the .gz files, where present, must match too
        files.update({k: v for k, v in _MNIST_GZ.items() if (root / k).exists()})
    status = {}
    for rel, md5 in files.items():
        path = root / rel
        if not path.exists():
            status[rel] = "missing"
        else:
            got = md5sum(path)
            status[rel] = "ok" if got == md5 else f"corrupt (md5 {got})"
    return status


def _raise_missing(name: str, root: Path, cause: Exception | None = None):
    lines = [f"dataset {name!r} is not available under {root}"]
    if cause is not None:
        first = next((line.strip() for line in str(cause).splitlines() if line.strip()), "")  # medmnist's start blank
        lines[0] += f" and could not be downloaded ({type(cause).__name__}: {first[:160]})"
    lines.append("expected files (path: official MD5):")
    lines += [f"  {root / rel}: {md5}" for rel, md5 in expected_files(name).items()]
    if name in _SOURCES:
        source = _SOURCES[name]
    else:
        flag, size = _medmnist_size(name)
        med, suffix = _medmnist_info()[flag], "" if size == 28 else f"_{size}"
        source = (f"medmnist.{med['python_class']}(split=..., root='{root}/medmnist', "
                  f"{'' if size == 28 else f'size={size}, '}download=True) from {med.get('url' + suffix, '')}")
    lines.append(f"get them from {source}, or point QSAL_DATA (or root=) at a folder that has them.")
    if not root.is_absolute():  # notebooks run from their own folder, so a relative root moves with them
        lines.append(f"note: {root} is a relative path, read from the current folder {Path.cwd()}; "
                     f"set QSAL_DATA to an absolute path.")
    if name == "cifar10":
        lines.append("Offline, you may instead ask for the labelled synthetic stand-in: QSAL_STANDIN=1 "
                     "or load_dataset('cifar10', standin=True).")
    raise DataError("\n".join(lines))


def _verify(name: str, root: Path):
    bad = {k: v for k, v in check_files(name, root).items() if v.startswith("corrupt")}
    if bad:
        exp = expected_files(name) | _MNIST_GZ
        detail = "; ".join(f"{root / k}: {v}, expected md5 {exp[k]}" for k, v in bad.items())
        raise DataError(f"dataset {name!r} has corrupt files: {detail}. Delete them and download again "
                        f"(download=True), or point QSAL_DATA at a good copy.")


def _read_official(name: str, split: str, root: Path, download: bool):
    """(uint8 images NxHxW[xC], labels) read by the official loader."""
    import torchvision  # lazy: slow (seconds), and a stand-in or MedMNIST run needs none of it

    if name in ("mnist", "fashionmnist", "cifar10"):
        cls = {"mnist": torchvision.datasets.MNIST, "fashionmnist": torchvision.datasets.FashionMNIST,
               "cifar10": torchvision.datasets.CIFAR10}[name]
        missing = [k for k, v in check_files(name, root).items() if v == "missing"]
        if missing and not download:
            _raise_missing(name, root)
        try:
            ds = cls(str(root), train=(split == "train"), download=download)
        except Exception as e:  # offline, or a half-downloaded folder
            _raise_missing(name, root, e)
        images = np.asarray(ds.data)
        labels = np.asarray(ds.targets, dtype=np.int64)
        return images, labels

    import medmnist  # lazy: slow

    flag, size = _medmnist_size(name)
    med = _medmnist_info()[flag]
    folder = root / "medmnist"
    if not (root / next(iter(expected_files(name)))).exists():
        if not download:
            _raise_missing(name, root)
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            _raise_missing(name, root, e)
    try:
        ds = getattr(medmnist, med["python_class"])(split=split, root=str(folder), download=download, size=size)
    except Exception as e:
        _raise_missing(name, root, e)
    labels = np.asarray(ds.labels)
    labels = labels.astype(np.float32) if med["task"].startswith("multi-label") else labels.reshape(-1).astype(np.int64)
    return np.asarray(ds.imgs), labels


class ImageDataset(Dataset):
    """uint8 images in memory, normalised per item: (float tensor CxHxW, label).

    faint: for the stand-in, a bool tensor saying which images show their object faint (v3); None otherwise."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, info: DatasetInfo, split: str,
                 augment: bool | str = False, faint: np.ndarray | None = None):
        if images.ndim == 3:
            images = images[..., None]
        # np.require copies read-only arrays (the memoised stand-in), so nothing here can write into them
        self.images = torch.from_numpy(np.require(images, requirements=["C", "W"])).permute(0, 3, 1, 2).contiguous()
        self.labels = torch.from_numpy(np.require(labels, requirements=["W"]))
        self.faint = None if faint is None else torch.from_numpy(np.require(faint, requirements=["W"]))
        if self.faint is not None and len(self.faint) != len(self.labels):
            raise ValueError(f"faint has {len(self.faint)} flags for {len(self.labels)} images")
        self.info, self.split, self.augment = info, split, check_augment(augment)
        self._mean = torch.tensor(info.mean).view(-1, 1, 1)
        self._std = torch.tensor(info.std).view(-1, 1, 1)

    def __len__(self):
        return len(self.labels)

    def keep(self, indices: torch.Tensor):
        """Keep only the examples at `indices` (images, labels and faint flags alike), in place."""
        self.images, self.labels = self.images[indices], self.labels[indices]
        if self.faint is not None:
            self.faint = self.faint[indices]

    def __getitem__(self, i):
        x = self.images[i].float().div_(255)
        if self.augment == "crop_flip":  # the standard CIFAR recipe: 4-pixel padded random crop + horizontal flip
            x = _random_crop_flip(x)
        elif self.augment == "shift":  # up to 2 pixels each way, no flip: an X-ray's left and right differ
            x = _random_crop_flip(x, pad=2, flip=False)
        return (x - self._mean) / self._std, self.labels[i]

    @property
    def name(self):
        return self.info.display_name

    def __repr__(self):
        return f"ImageDataset({self.info.display_name}, split={self.split}, n={len(self)})"


AUGMENTATIONS = ("crop_flip", "shift")  # True means "crop_flip"


def check_augment(augment) -> str | None:
    """None (no augmentation), 'crop_flip' (4-pixel padded random crop + flip; also True) or 'shift' (+-2 px)."""
    if augment is None or augment is False:
        return None
    if augment is True:
        return "crop_flip"
    if augment not in AUGMENTATIONS:
        raise ValueError(f"unknown augmentation {augment!r}; choose False, True (= 'crop_flip') or one of: "
                         f"{', '.join(AUGMENTATIONS)}")
    return augment


def _random_crop_flip(x: torch.Tensor, pad: int = 4, flip: bool = True) -> torch.Tensor:
    x = torch.nn.functional.pad(x, (pad,) * 4)
    i, j = torch.randint(0, 2 * pad + 1, (2,)).tolist()
    x = x[:, i: i + x.shape[1] - 2 * pad, j: j + x.shape[2] - 2 * pad]
    return x.flip(2) if flip and torch.rand(()) < 0.5 else x


def stratified_indices(labels: torch.Tensor, n: int, seed: int = 0) -> torch.Tensor:
    """n indices whose class proportions match `labels`, drawn reproducibly from `seed`."""
    if labels.ndim > 1:  # multi-label: stratify on the most frequent positive label pattern is overkill
        return torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))[:n].sort().values
    if n >= len(labels):
        return torch.arange(len(labels))
    g = torch.Generator().manual_seed(seed)
    classes, counts = labels.unique(return_counts=True)
    quota = (counts.double() * n / len(labels)).floor().long()
    # hand out the remainder to the classes with the largest fractional parts
    frac = counts.double() * n / len(labels) - quota
    quota[frac.argsort(descending=True)[: n - int(quota.sum())]] += 1
    picked = []
    for c, q in zip(classes, quota):
        idx = (labels == c).nonzero().flatten()
        picked.append(idx[torch.randperm(len(idx), generator=g)[:q]])
    return torch.cat(picked).sort().values


def is_standin(name: str) -> bool:
    """Whether a canonical dataset key names a synthetic stand-in ('cifar10-standin-v3', ...)."""
    return name.startswith("cifar10-standin")


def _standin_requested(standin: bool | None) -> bool:
    if standin is not None:
        return standin
    return os.environ.get("QSAL_STANDIN", "").lower() in ("1", "true", "yes")


def load_dataset(name: str, split: str = "train", root: str | Path | None = None, download: bool = True,
                 subset: int | None = None, seed: int = 0, augment: bool | str = False,
                 standin: bool | None = None, size: int | None = None, holdout: int | None = None) -> ImageDataset:
    """Load a dataset split as an `ImageDataset` of (normalised image, label).

    name: 'mnist', 'fashionmnist', 'cifar10' or any 2D MedMNIST flag ('pneumoniamnist', ...), optionally
    with its image size ('pneumoniamnist_64').
    split: 'train' or 'test' ('val' too for MedMNIST), or 'holdout' (with `holdout`).
    subset: keep only this many examples, stratified by class and seeded by `seed`.
    holdout: a validation set carved out of the training split, for choices test must not see: `holdout`
    training images (stratified, always the same ones: `HOLDOUT_SEED`) are split 'holdout', and split
    'train' leaves them out (then `subset` draws from the rest).
    augment: True or 'crop_flip' (random crop + flip, used for CIFAR-10), 'shift' (+-2 px, for X-rays).
    standin: for 'cifar10' only, use the synthetic stand-in (default: `$QSAL_STANDIN`); the returned
    dataset's `info` is then the stand-in's (name, version), whatever name was asked for, and its
    `faint` says which images show their object faint.
    size: MedMNIST image size, 28 (default), 64, 128 or 224 (medmnist's `size`; the files are
    <flag>_<size>.npz, downloaded on first use like the 28x28 ones).
    """
    key = _canonical(name, size)
    augment = check_augment(augment)
    if key == "cifar10" and _standin_requested(standin):
        key = f"cifar10-standin-{STANDIN_VERSION}"
    info = _info_for(key)
    source_split = _check_holdout(split, holdout, info)
    if is_standin(key):
        warnings.warn(f"Using the synthetic CIFAR-10 STAND-IN, not CIFAR-10: results made from it are labelled "
                      f"'{info.display_name}' and say nothing about real CIFAR-10 accuracy.",
                      UserWarning, stacklevel=2)
        images, labels, faint = make_standin(source_split, version=info.version, return_faint=True)
    else:
        root = Path(root).expanduser() if root else default_root()
        _verify(key, root)
        (images, labels), faint = _read_official(key, source_split, root, download), None
    ds = ImageDataset(images, labels, info, split, augment=augment, faint=faint)
    if holdout:
        held = stratified_indices(ds.labels, holdout, HOLDOUT_SEED)
        ds.keep(held if split == "holdout" else _complement(held, len(ds.labels)))
    if subset is not None:
        if subset <= 0:
            raise DataError(f"subset must be a positive number of examples, got {subset}")
        ds.keep(stratified_indices(ds.labels, subset, seed))
    return ds


HOLDOUT_SEED = 2718  # the held-out validation images are the same whatever a run's seed


def _check_holdout(split: str, holdout, info: DatasetInfo) -> str:
    """The split to read: 'holdout' reads 'train'; a held-out set needs a positive size smaller than train's."""
    if holdout is not None and not (isinstance(holdout, int) and not isinstance(holdout, bool) and holdout > 0):
        raise DataError(f"holdout must be a positive number of training images, got {holdout!r}")
    if split == "holdout":
        if not holdout:
            raise DataError("split 'holdout' is carved out of the training split: say how many images with holdout=N")
        return "train"
    if split not in info.splits:
        raise DataError(f"{info.display_name} has no split {split!r}; choose one of: "
                        f"{', '.join(info.splits + ('holdout',))}")
    if holdout and split != "train":
        raise DataError(f"holdout=N removes images from the training split only, not from {split!r}")
    return split


def _complement(indices: torch.Tensor, n: int) -> torch.Tensor:
    keep = torch.ones(n, dtype=torch.bool)
    keep[indices] = False
    return keep.nonzero().flatten()


def make_loader(ds: Dataset, batch_size: int = 128, train: bool = False, seed: int = 0,
                epoch: int = 0, num_workers: int = 0, sample_weights=None) -> DataLoader:
    """A DataLoader whose shuffle order depends only on (seed, epoch), so a resumed run sees
    exactly the batches an uninterrupted one would have seen.

    sample_weights (training only): instead of shuffling, draw len(ds) examples with replacement,
    example i with probability proportional to sample_weights[i] (e.g. `balanced_sample_weights`),
    again a function of (seed, epoch)."""
    g = torch.Generator().manual_seed(seed * 100_003 + epoch)
    if train and sample_weights is not None:
        sampler = torch.utils.data.WeightedRandomSampler(torch.as_tensor(sample_weights, dtype=torch.double),
                                                         num_samples=len(ds), replacement=True, generator=g)
        return DataLoader(ds, batch_size=batch_size, sampler=sampler, num_workers=num_workers, drop_last=False)
    return DataLoader(ds, batch_size=batch_size, shuffle=train, generator=g if train else None,
                      num_workers=num_workers, drop_last=False)


def balanced_sample_weights(labels: torch.Tensor) -> torch.Tensor:
    """Per-example weights 1 / (count of its class): a sampler drawing with them sees every class equally often."""
    labels = torch.as_tensor(labels)
    if labels.ndim > 1:
        raise ValueError("class-balanced sampling needs one class per example; multi-label data (ChestMNIST) "
                         "has several: use a weighted loss (pos_weight per label) instead")
    counts = torch.bincount(labels)
    return 1.0 / counts[labels].double()
