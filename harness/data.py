"""CIFAR-10 -> uint8 tensors: train / validation / test splits for a class subset.

Three sources, tried in this order:
  1. `--data-dir` (or `HARNESS_DATA_DIR`) holding a class-folder tree: train/<class>/*.png, test/<class>/*.png;
  2. `--data-dir` holding (or being) the official `cifar-10-batches-py` folder;
  3. neither given: torchvision downloads CIFAR-10 into the cache folder (~/.cache/harness/cifar10).

PNG decoding is the slow part (~60k files), so each (split, class) is decoded once and cached as a
.npy under `HARNESS_CACHE_DIR` (default ~/.cache/harness), keyed by the folder's file list.
"""
from __future__ import annotations

import hashlib
import os
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from harness.errors import HarnessError

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck")
LAYOUTS = ("a class-folder tree (train/<class>/*.png and test/<class>/*.png), "
           "or a folder holding the official cifar-10-batches-py")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


@dataclass
class Splits:
    classes: tuple[str, ...]
    train_x: torch.Tensor  # uint8 [N, 3, 32, 32]
    train_y: torch.Tensor  # int64 [N], index into classes
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    source: str  # where the pixels came from, for the log
    pool_x: torch.Tensor | None = None  # the training images of these classes drawn for neither train nor val
    pool_y: torch.Tensor | None = None
    _digests: dict = field(default_factory=dict, repr=False)

    def digest(self, *parts: str) -> str:
        """A hash of the pixels and labels of some splits (train, val, test, pool): the same images
        reached through another path or layout give the same digest; one changed pixel another."""
        for part in parts:
            if part not in self._digests:
                h = hashlib.sha256()
                for t in (getattr(self, f"{part}_x"), getattr(self, f"{part}_y")):
                    h.update(str(tuple(t.shape)).encode())
                    h.update(t.contiguous().numpy().tobytes())
                self._digests[part] = h.hexdigest()[:16]
        return ",".join(f"{p}:{self._digests[p]}" for p in parts)


def cache_dir() -> Path:
    return Path(os.environ.get("HARNESS_CACHE_DIR", Path.home() / ".cache" / "harness"))


# ---------------------------------------------------------------------------------------------
# Sources: each gives `images(split, class) -> uint8 [N, 32, 32, 3]` and the classes it has

class ClassFolders:
    def __init__(self, root: Path):
        self.root = root
        self.classes = tuple(sorted(p.name for p in (root / "train").iterdir() if p.is_dir()))
        self.source = f"class folders at {root}"

    def files(self, split: str, name: str) -> list[Path]:
        folder = self.root / split / name
        if not folder.is_dir():
            raise HarnessError(f"{folder} is missing: the {split} split has no folder for class {name!r}")
        return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)

    def images(self, split: str, name: str) -> np.ndarray:
        files = self.files(split, name)
        listing = "\n".join(f"{p.name}:{p.stat().st_size}" for p in files)
        key = hashlib.sha256(f"{self.root.resolve()}|{split}|{name}|{listing}".encode()).hexdigest()[:16]
        cached = cache_dir() / "decoded" / f"{split}-{name}-{key}.npy"
        if cached.is_file():
            return np.load(cached)
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
            arrays = list(pool.map(_decode, files))
        out = np.stack(arrays) if arrays else np.zeros((0, 32, 32, 3), np.uint8)
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_suffix(f".{os.getpid()}.tmp.npy")
        np.save(tmp, out)
        os.replace(tmp, cached)  # atomic, so a concurrent reader never sees half a file
        return out


def _decode(path: Path) -> np.ndarray:
    # Pillow, not torchvision.io: torchvision 0.29 deprecated its image decoders.
    from PIL import Image
    try:
        with Image.open(path) as im:
            img = np.asarray(im.convert("RGB"))
    except Exception as e:
        raise HarnessError(f"cannot decode image {path}: {str(e).splitlines()[0]}") from None
    if img.shape[:2] != (32, 32):
        raise HarnessError(f"image {path} is {img.shape[1]}x{img.shape[0]}, expected 32x32 (CIFAR-10)")
    return img


class CifarBatches:
    """The official pickled batches (data_batch_1..5, test_batch, batches.meta)."""

    def __init__(self, root: Path):
        self.root = root / "cifar-10-batches-py"
        self.source = f"cifar-10-batches-py under {root}"
        self.classes = tuple(self._unpickle("batches.meta")["label_names"])
        self._sets = {}
        for split, names in (("train", [f"data_batch_{i}" for i in range(1, 6)]), ("test", ["test_batch"])):
            batches = [self._unpickle(n) for n in names]
            try:
                data = np.concatenate([np.asarray(b["data"], np.uint8).reshape(-1, 3, 32, 32) for b in batches])
                labels = np.concatenate([np.asarray(b["labels"]) for b in batches])
            except (KeyError, ValueError) as e:
                raise HarnessError(f"{self.root} holds a batch that is not CIFAR-10 ({e})") from None
            self._sets[split] = (data.transpose(0, 2, 3, 1), labels)

    def _unpickle(self, name: str) -> dict:
        import pickle
        path = self.root / name
        try:
            with open(path, "rb") as f:
                return pickle.load(f, encoding="latin1")
        except FileNotFoundError:
            raise HarnessError(f"{path} is missing: cifar-10-batches-py needs data_batch_1..5, test_batch, batches.meta") from None
        except Exception as e:
            raise HarnessError(f"cannot read {path}: it is corrupt ({type(e).__name__}: {e})") from None

    def images(self, split: str, name: str) -> np.ndarray:
        data, labels = self._sets[split]
        return data[labels == self.classes.index(name)]


def open_source(data_dir: str | os.PathLike | None):
    """Pick the source from `data_dir`, `HARNESS_DATA_DIR`, or torchvision's download."""
    data_dir = data_dir or os.environ.get("HARNESS_DATA_DIR") or None
    if data_dir is None:
        return _download()
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise HarnessError(f"data dir {root} does not exist; expected {LAYOUTS}")
    if (root / "train").is_dir() and (root / "test").is_dir():
        return ClassFolders(root)
    if (root / "cifar-10-batches-py").is_dir():
        return CifarBatches(root)
    if root.name == "cifar-10-batches-py" and (root / "data_batch_1").is_file():
        return CifarBatches(root.parent)
    raise HarnessError(f"data dir {root} is in an unknown layout; expected {LAYOUTS}")


def _download():
    from torchvision.datasets import CIFAR10
    root = cache_dir() / "cifar10"
    try:
        CIFAR10(str(root), train=True, download=True)
    except Exception as e:
        raise HarnessError(f"no --data-dir given and downloading CIFAR-10 into {root} failed ({e}); "
                           f"pass --data-dir (or set HARNESS_DATA_DIR) to a local copy: {LAYOUTS}") from None
    return CifarBatches(root)


# ---------------------------------------------------------------------------------------------
# Splits

def _tensor(images: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.concatenate(images)).permute(0, 3, 1, 2).contiguous()


def load_splits(data_cfg, data_dir: str | os.PathLike | None = None) -> Splits:
    """Draw n_per_class training and val_per_class validation images per class (disjoint, seeded);
    the test split is every test image of the chosen classes."""
    source = open_source(data_dir)
    unknown = [c for c in data_cfg.classes if c not in source.classes]
    if unknown:
        raise HarnessError(f"unknown class {', '.join(map(repr, unknown))}; valid classes: {', '.join(source.classes)}")
    parts = {s: ([], []) for s in ("train", "val", "test", "pool")}
    for label, name in enumerate(data_cfg.classes):
        pool = source.images("train", name)
        need = data_cfg.n_per_class + data_cfg.val_per_class
        if need > len(pool):
            raise HarnessError(f"class {name!r} has {len(pool)} training images, but data.n_per_class "
                               f"({data_cfg.n_per_class}) + data.val_per_class ({data_cfg.val_per_class}) = {need}")
        # One generator per class, seeded by its name, so that a class's draw does not depend on
        # which other classes are in the subset or in what order they are listed.
        rng = np.random.default_rng([data_cfg.seed, zlib.crc32(name.encode())])
        order = rng.permutation(len(pool))
        chosen = {"train": order[:data_cfg.n_per_class],
                  "val": order[data_cfg.n_per_class:need],
                  "pool": order[need:]}  # what a perfect generator would draw from (generators/oracle.py)
        for split, idx in chosen.items():
            parts[split][0].append(pool[np.sort(idx)])
        parts["test"][0].append(source.images("test", name))
        for split in parts:
            parts[split][1].append(np.full(len(parts[split][0][-1]), label, np.int64))
    x = {s: _tensor(xs) for s, (xs, _) in parts.items()}
    y = {s: torch.from_numpy(np.concatenate(ys)) for s, (_, ys) in parts.items()}
    if len(x["test"]) == 0:
        raise HarnessError(f"the test split of {source.source} has no images of {', '.join(data_cfg.classes)}")
    return Splits(tuple(data_cfg.classes), x["train"], y["train"], x["val"], y["val"],
                  x["test"], y["test"], source.source, x["pool"], y["pool"])
