"""Data sets by name (`data.source = "torchvision:NAME"`), downloaded by torchvision into the cache
(or `--data-dir`) on first use, then read from their official files.

CIFAR-10/100 and SVHN are read by the harness itself (data/cifar.py, scipy for SVHN's .mat files):
torchvision verifies them by checksum, which a local or partial copy cannot pass offline. The
MNIST family is read through torchvision, which only checks that its raw files exist.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from harness.data.cifar import CifarBatches
from harness.errors import HarnessError

MNIST_FAMILY = ("MNIST", "FashionMNIST", "KMNIST")
SUPPORTED = ("CIFAR10", "CIFAR100", "SVHN", *MNIST_FAMILY)


class Arrays:
    """A source held as arrays: images(split, class) -> uint8 [N, H, W(, C)]."""
    has_test = True

    def __init__(self, source: str, classes, sets: dict, root: Path):
        self.source, self.classes, self._sets = source, tuple(classes), sets
        self.uri = root.resolve().as_uri()

    def images(self, split: str, name: str) -> np.ndarray:
        data, labels = self._sets[split]
        return data[labels == self.classes.index(name)]


def _download(name: str, root: Path, **kwargs):
    import torchvision.datasets as tvd
    try:
        return getattr(tvd, name)(str(root), download=True, **kwargs)
    except Exception as e:
        raise HarnessError(f"downloading torchvision's {name} into {root} failed ({str(e).splitlines()[0]}); "
                           "without a network, pass --data-dir to a folder that holds its files") from None


def _svhn(root: Path) -> Arrays:
    from scipy.io import loadmat
    folder = root / "svhn"
    sets = {}
    for split in ("train", "test"):
        path = folder / f"{split}_32x32.mat"
        if not path.is_file():
            _download("SVHN", folder, split=split)
        try:
            mat = loadmat(path)
            x, y = np.asarray(mat["X"], np.uint8).transpose(3, 0, 1, 2), np.asarray(mat["y"]).reshape(-1)
        except Exception as e:
            raise HarnessError(f"cannot read {path}: not SVHN's format ({type(e).__name__}: {e})") from None
        sets[split] = (x, np.where(y == 10, 0, y))  # SVHN writes digit 0 as label 10
    return Arrays(f"SVHN under {folder}", [str(d) for d in range(10)], sets, folder)


def _mnist_family(name: str, root: Path) -> Arrays:
    sets, classes = {}, None
    for split, train in (("train", True), ("test", False)):
        ds = _download(name, root, train=train)
        sets[split] = (np.asarray(ds.data, np.uint8), np.asarray(ds.targets))
        classes = [c.split(" - ")[-1] for c in ds.classes]  # MNIST names its classes "0 - zero"
    return Arrays(f"torchvision {name} under {root}", classes, sets, root)


def open_named(name: str, root: Path):
    if name not in SUPPORTED:
        raise HarnessError(f"data.source torchvision:{name} is not supported; choose torchvision:"
                           f"{', torchvision:'.join(SUPPORTED)}")
    root.mkdir(parents=True, exist_ok=True)
    if name in ("CIFAR10", "CIFAR100"):
        release = "cifar-10-batches-py" if name == "CIFAR10" else "cifar-100-python"
        if not (root / release).is_dir():
            _download(name, root, train=True)
        return CifarBatches(root, release)
    if name == "SVHN":
        return _svhn(root)
    return _mnist_family(name, root)
