"""`generator.kind = "folder"` (`generator.folder = PATH`): synthetic images made by any outside tool
(a diffusion model, a GAN trained elsewhere, an image API), judged like the kinds the harness trains.

Layouts:
  PATH/<class>/*   class folders named as (a subset of) data.classes: the kind knows its images'
                   classes, so pseudolabel.mode label, filter and none all work
  PATH/*           one flat folder of unlabelled images: the baseline labels them (mode label only)
Every format and size the data loaders take, brought to data.image_size and data.channels by the same
code as the real data (data/images.py), decoded once and cached like them. Images are drawn in a
seeded order (generate.seed), so that n images are a prefix of n + 1.

The key covers the folder's content (pixels and labels), not its path: a copy elsewhere is the same
generator, one changed pixel is another. The generate run records the folder as an MLflow dataset
input (context `generated`) with that digest and its URI.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from harness.errors import HarnessError
from harness.generators import Record, stream

TRAINS = False
SECTIONS = ("generator.folder",)  # the [generator] field it reads
DATA = ()
CLASSES = "with class folders (a flat folder: no)"
NEEDS = "generator.folder: <class>/ folders named as data.classes, or one flat folder of images"


@dataclass
class Images:
    root: Path
    images: torch.Tensor  # uint8 [N, C, H, W]
    labels: torch.Tensor | None  # int64 [N] (index into data.classes), None for a flat folder
    digest: str


def _root(cfg) -> Path:
    if not cfg.generator.folder:
        raise HarnessError("generator.kind=folder needs generator.folder=PATH: a folder of class folders "
                           "(<class>/*.png, ...) or one flat folder of images")
    root = Path(cfg.generator.folder).expanduser()
    if not root.exists():
        raise HarnessError(f"generator.folder {root} does not exist")
    if not root.is_dir():
        raise HarnessError(f"generator.folder {root} is a file, not a folder of images")
    return root


def _layout(root: Path) -> tuple[list[str], bool]:
    """(class folder names, whether it is class folders); a mix of images and folders is refused."""
    entries = [e for e in root.iterdir() if not e.name.startswith(".")]
    folders = sorted(e.name for e in entries if e.is_dir())
    if not entries:
        raise HarnessError(f"generator.folder {root} is empty: put the generated images in it, or in one "
                           "folder per class")
    if folders and len(folders) != len(entries):
        files = sorted(e.name for e in entries if not e.is_dir())
        raise HarnessError(f"generator.folder {root} mixes class folders ({', '.join(folders[:3])}) with files "
                           f"({', '.join(files[:3])}); keep either <class>/ folders only or images only")
    return folders, bool(folders)


def knows_classes(cfg) -> bool:
    try:
        return _layout(_root(cfg))[1]
    except HarnessError:  # check() says what is wrong with the folder
        return False


def check(cfg) -> None:
    """Before anything loads: the folder exists, its class folders are classes of the data, and a flat
    folder is used with pseudolabel.mode=label."""
    root = _root(cfg)
    folders, by_class = _layout(root)
    classes = cfg.data.classes
    if by_class and classes != ("all",):
        unknown = [f for f in folders if f not in classes]
        if unknown:
            raise HarnessError(f"generator.folder {root} has class folders that are not in data.classes "
                               f"({', '.join(classes)}): {', '.join(unknown)}; rename or remove them")
    if not by_class and cfg.pseudolabel.mode != "label":
        raise HarnessError(f"generator.folder {root} is one flat folder: its images have no classes, so "
                           f"pseudolabel.mode={cfg.pseudolabel.mode} cannot be used; use pseudolabel.mode=label "
                           "(the baseline labels them) or sort the images into <class>/ folders")


def load(ctx, cfg) -> Images:
    """The folder's images at this data size, decoded once per process (and cached on disk)."""
    from harness.data import content_digest
    from harness.data.folders import decode_folder
    root = _root(cfg)
    folders, by_class = _layout(root)
    key = ("folder", str(root.resolve()), cfg.data.image_size, cfg.data.channels, cfg.data.classes)
    if key in ctx.memo.generators:
        return ctx.memo.generators[key]
    size, channels = cfg.data.image_size, cfg.data.channels
    if by_class:
        parts, labels = [], []
        for name in folders:
            if name not in cfg.data.classes:
                raise HarnessError(f"generator.folder {root} has a class folder {name!r} that is not a class of the "
                                   f"data ({', '.join(cfg.data.classes)}); rename or remove it")
            x = decode_folder(root / name, size, channels, f"decoding {root.name}/{name}", what="generated class folder")
            parts.append(x)
            labels.append(np.full(len(x), cfg.data.classes.index(name), np.int64))
        x, y = np.concatenate(parts), torch.from_numpy(np.concatenate(labels))
    else:
        x, y = decode_folder(root, size, channels, f"decoding {root.name}", what="generator folder"), None
    images = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()
    found = Images(root, images, y, content_digest(images, y if y is not None else torch.zeros(0, dtype=torch.int64)))
    return ctx.memo.remember(ctx.memo.generators, key, found)


def preflight(ctx, cfg, source=None) -> None:
    """Before any run opens: every image decodes, and there are generate.n_samples of them."""
    check(cfg)
    found = load(ctx, cfg)
    if cfg.generate.n_samples > len(found.images):
        raise HarnessError(f"generator.folder {found.root} holds {len(found.images)} images; lower generate.n_samples "
                           f"({cfg.generate.n_samples}) to at most {len(found.images)}, or add images")


def identity(ctx, cfg) -> str:
    return f"folder:{load(ctx, cfg).digest}"


def datasets(ctx, cfg) -> list[Record]:
    found = load(ctx, cfg)
    return [Record(f"{found.root.name}/generated", found.images, found.labels, found.digest,
                   found.root.resolve().as_uri(), "generated")]


def sampler(ctx, cfg, splits) -> stream.Sampler:
    found = load(ctx, cfg)
    order = torch.from_numpy(np.random.default_rng([cfg.generate.seed, 0xF01DE7]).permutation(len(found.images)))

    def draw(start: int, stop: int):
        if stop > len(order):  # a sweep asking for more than preflight saw
            raise HarnessError(f"generator.folder {found.root}: {stop} images asked for, {len(order)} in the folder")
        idx = order[start:stop]
        return found.images[idx], (found.labels[idx] if found.labels is not None else None)

    layout = "class folders" if found.labels is not None else "one flat folder"
    return stream.Sampler(("folder", found.digest, cfg.generate.seed), draw, 0,
                          f"the {len(found.images)} images of {found.root} ({layout})")
