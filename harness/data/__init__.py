"""A labelled image set -> uint8 tensors: train / validation / test splits (+ the unused pool) for a
class subset, with content digests for the cache keys.

Sources, chosen from `data.source`, `--data-dir` (or HARNESS_DATA_DIR) and what the folder holds:
  - a class-folder tree with splits: DIR/train/<class>/* and DIR/test/<class>/* (ImageFolder's layout);
  - one class-folder tree without splits: DIR/<class>/*; a seeded, stratified test split of
    data.test_fraction of each class is drawn (the same for every data.seed, so that paired seeds
    share one test set);
  - the official CIFAR-10 / CIFAR-100 Python releases (cifar-10-batches-py, cifar-100-python);
  - `data.source = "torchvision:NAME"` (CIFAR10, CIFAR100, SVHN, MNIST, FashionMNIST, KMNIST),
    downloaded on first use into --data-dir or the cache;
  - nothing given: CIFAR-10, downloaded into the cache.
Images of any size and mode Pillow reads are brought to data.image_size and data.channels (the
policy is in data/images.py).
"""
from __future__ import annotations

import hashlib
import os
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from harness.data.cifar import CIFAR10_CLASSES, CifarBatches, release_under
from harness.data.folders import ClassFolders, cache_dir, check_cache_dir, layout
from harness.data.images import SIZES, fit
from harness.errors import HarnessError

__all__ = ["CIFAR10_CLASSES", "Splits", "cache_dir", "check_cache_dir", "load_splits", "open_source"]

LAYOUTS = ("a class-folder tree (train/<class>/* and test/<class>/*, or <class>/* without splits), "
           "or a folder holding cifar-10-batches-py or cifar-100-python")
TEST_SEED = 20260  # the test split of a tree without splits: fixed, whatever data.seed is


@dataclass
class Splits:
    classes: tuple[str, ...]
    train_x: torch.Tensor  # uint8 [N, C, H, W]
    train_y: torch.Tensor  # int64 [N], index into classes
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    source: str  # where the pixels came from, for the log
    uri: str = ""  # the same as a URI (file:// of the data folder), for MLflow's dataset records
    pool_x: torch.Tensor | None = None  # the training images of these classes drawn for neither train nor val
    pool_y: torch.Tensor | None = None
    _digests: dict = field(default_factory=dict, repr=False)

    def digest(self, *parts: str) -> str:
        """A hash of the pixels and labels of some splits (train, val, test, pool): the same images
        reached through another path or layout give the same digest; one changed pixel another."""
        for part in parts:
            if part not in self._digests:
                self._digests[part] = content_digest(getattr(self, f"{part}_x"), getattr(self, f"{part}_y"))
        return ",".join(f"{p}:{self._digests[p]}" for p in parts)

    def counts(self, part: str = "train") -> dict[str, int]:
        y = getattr(self, f"{part}_y")
        return {name: int((y == i).sum()) for i, name in enumerate(self.classes)}


def content_digest(x: torch.Tensor, y: torch.Tensor) -> str:
    h = hashlib.sha256()
    for t in (x, y):
        h.update(str(tuple(t.shape)).encode())
        h.update(t.contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


# ---------------------------------------------------------------------------------------------
# Sources: each has `classes`, `source`, `has_test` and `images(split, class)` -> uint8 [N, H, W(, C)]

def open_source(data_dir: str | os.PathLike | None, data_cfg=None):
    """Pick the source from data.source, `data_dir`, HARNESS_DATA_DIR, or CIFAR-10's download."""
    size, channels = (data_cfg.image_size, data_cfg.channels) if data_cfg is not None else (32, 3)
    data_dir = data_dir or os.environ.get("HARNESS_DATA_DIR") or None
    named = getattr(data_cfg, "source", "")
    if named:
        from harness.data.named import open_named
        root = Path(data_dir).expanduser() if data_dir else cache_dir() / "torchvision"
        return open_named(named.split(":", 1)[1], root)
    if data_dir is None:
        return _download()
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise HarnessError(f"data dir {root} does not exist; expected {LAYOUTS}")
    found = release_under(root)
    if found:
        return CifarBatches(*found)
    kind = layout(root)
    if kind is None:
        raise HarnessError(f"data dir {root} holds no class folders; expected {LAYOUTS}")
    return ClassFolders(root, size, channels, split=kind == "split")


def _download():
    from harness.data.named import open_named
    return open_named("CIFAR10", cache_dir() / "torchvision")


# ---------------------------------------------------------------------------------------------
# Splits

def _tensor(images: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.concatenate(images)).permute(0, 3, 1, 2).contiguous()


def _rng(*seed) -> np.random.Generator:
    return np.random.default_rng(list(seed))


def load_splits(data_cfg, data_dir: str | os.PathLike | None = None) -> Splits:
    """Draw n_per_class training and val_per_class validation images per class (disjoint, seeded by
    data.seed); the test split is every test image of the chosen classes (or, without splits, a fixed
    stratified data.test_fraction of each); what is left is the pool (generator.kind = oracle)."""
    if data_cfg.image_size not in SIZES:
        raise HarnessError(f"data.image_size={data_cfg.image_size} is not supported; choose one of "
                           f"{', '.join(map(str, SIZES))}")
    source = open_source(data_dir, data_cfg)
    classes = tuple(source.classes) if tuple(data_cfg.classes) == ("all",) else tuple(data_cfg.classes)
    unknown = [c for c in classes if c not in source.classes]
    if unknown:
        # Quoted, so that a space at either end (a folder named "bird ") is visible, and said.
        spaced = [c for c in source.classes if c != c.strip()]
        note = (f"; {', '.join(map(repr, spaced))} has a space at its end: rename the folder" if spaced else "")
        raise HarnessError(f"unknown class {', '.join(map(repr, unknown))}; valid classes: "
                           f"{', '.join(map(repr, source.classes))}{note} (--set data.classes=all takes every class "
                           "of the data)")
    bad = [c for c in classes if not re.fullmatch(r"[\w.\- /:]+", c)]
    if bad:
        # Class names become metric keys (test/<class>/f1), which MLflow restricts, and data.classes
        # is a comma-separated list.
        raise HarnessError(f"class name {bad[0]!r} cannot be used: rename its folder to letters, digits, "
                           "spaces and _ - . / : only")
    if len(classes) < 2:
        raise HarnessError(f"{source.source} has one class only ({classes[0] if classes else 'none'}); "
                           "a classifier needs at least 2")
    parts = {s: ([], []) for s in ("train", "val", "test", "pool")}
    for label, name in enumerate(classes):
        for split, x in _draw(source, data_cfg, name).items():
            parts[split][0].append(fit(x, data_cfg.image_size, data_cfg.channels))
            parts[split][1].append(np.full(len(x), label, np.int64))
    x = {s: _tensor(xs) for s, (xs, _) in parts.items()}
    y = {s: torch.from_numpy(np.concatenate(ys)) for s, (_, ys) in parts.items()}
    described = source.source if source.has_test else \
        f"{source.source}; {data_cfg.test_fraction:.0%} of each class held out as the test split"
    return Splits(classes, x["train"], y["train"], x["val"], y["val"], x["test"], y["test"], described,
                  getattr(source, "uri", ""), x["pool"], y["pool"])


def _draw(source, data_cfg, name: str) -> dict[str, np.ndarray]:
    # One generator per class, seeded by its name, so that a class's draw does not depend on which
    # other classes are in the subset or in what order they are listed.
    crc = zlib.crc32(name.encode())
    if source.has_test:
        pool, test = source.images("train", name), source.images("test", name)
        if len(test) == 0:
            raise HarnessError(f"the test split of {source.source} has no images of class {name!r}")
    else:
        every = source.images("all", name)
        order = _rng(TEST_SEED, crc).permutation(len(every))
        n_test = max(1, round(data_cfg.test_fraction * len(every)))
        if n_test >= len(every):
            raise HarnessError(f"class {name!r} has {len(every)} images: too few to keep a test split of "
                               f"data.test_fraction={data_cfg.test_fraction} and train on the rest")
        test, pool = every[np.sort(order[:n_test])], every[np.sort(order[n_test:])]
    val = data_cfg.val_per_class
    n_train = data_cfg.n_per_class or len(pool) - val  # 0: all
    where = "training images" if source.has_test else f"images besides its {len(test)} test images"
    if n_train < 1 or n_train + val > len(pool):
        asked = (f"data.n_per_class ({data_cfg.n_per_class}) + " if data_cfg.n_per_class else "at least 1 + ")
        raise HarnessError(f"class {name!r} has {len(pool)} {where}, but {asked}data.val_per_class ({val}) "
                           f"= {(data_cfg.n_per_class or 1) + val}; lower them")
    order = _rng(data_cfg.seed, crc).permutation(len(pool))
    chosen = {"train": order[:n_train], "val": order[n_train:n_train + val], "pool": order[n_train + val:]}
    return {"test": test, **{split: pool[np.sort(idx)] for split, idx in chosen.items()}}
