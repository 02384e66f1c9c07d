"""The official Python releases of CIFAR-10 (`cifar-10-batches-py`) and CIFAR-100 (`cifar-100-python`),
read from their pickled files (no torchvision integrity check, so that local copies work offline)."""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from harness.errors import HarnessError

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck")
RELEASES = {  # folder -> (train files, test files, meta file, names key, labels key)
    "cifar-10-batches-py": ([f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], "batches.meta",
                            "label_names", "labels"),
    "cifar-100-python": (["train"], ["test"], "meta", "fine_label_names", "fine_labels"),
}


class CifarBatches:
    """`root/<release folder>/`: images(split, class) -> uint8 [N, 32, 32, 3]."""
    has_test = True

    def __init__(self, root: Path, release: str = "cifar-10-batches-py"):
        self.root = root / release
        self.source = f"{release} under {root}"
        self.uri = self.root.resolve().as_uri()
        train, test, meta, names_key, self._labels_key = RELEASES[release]
        self._files = {"train": train, "test": test}
        self.classes = tuple(self._unpickle(meta)[names_key])
        self._sets = {split: self._load(split) for split in ("train", "test")}

    def _load(self, split: str):
        batches = [self._unpickle(n) for n in self._files[split]]
        try:
            data = np.concatenate([np.asarray(b["data"], np.uint8).reshape(-1, 3, 32, 32) for b in batches])
            labels = np.concatenate([np.asarray(b[self._labels_key]) for b in batches])
        except (KeyError, ValueError) as e:
            raise HarnessError(f"{self.root} holds a batch that is not a CIFAR release ({e})") from None
        return data.transpose(0, 2, 3, 1), labels

    def _unpickle(self, name: str) -> dict:
        path = self.root / name
        try:
            with open(path, "rb") as f:
                return pickle.load(f, encoding="latin1")
        except FileNotFoundError:
            raise HarnessError(f"{path} is missing: {self.root.name} needs "
                               f"{', '.join(self._files_needed())}") from None
        except Exception as e:
            raise HarnessError(f"cannot read {path}: it is corrupt ({type(e).__name__}: {e})") from None

    def _files_needed(self) -> list[str]:
        train, test, meta, _, _ = RELEASES[self.root.name]
        return train + test + [meta]

    def images(self, split: str, name: str) -> np.ndarray:
        data, labels = self._sets[split]
        return data[labels == self.classes.index(name)]


def release_under(root: Path) -> tuple[Path, str] | None:
    """(parent, release) when `root` holds or is a CIFAR release folder."""
    for release in RELEASES:
        if (root / release).is_dir():
            return root, release
        if root.name == release and root.is_dir():
            return root.parent, release
    return None
