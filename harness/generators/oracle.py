"""`generator.kind = "oracle"`: real training images the classifier never saw (the pool left after
the train and validation draws), in a seeded order. What a perfect generator would give: the
ceiling of the synthetic arm at this data size."""
from __future__ import annotations

import numpy as np
import torch

from harness.errors import HarnessError
from harness.generators import stream

TRAINS = False
SECTIONS = ()
DATA = ("pool",)
CLASSES = "always"
NEEDS = "a pool of unused real training images (data.n_per_class + data.val_per_class below the class size)"


def real_images_added(cfg) -> int:
    """New real images it adds: a rung of a grid's oracle ladder (harness/grid/report.py)."""
    return cfg.generate.n_samples


def knows_classes(cfg) -> bool:
    return True


def preflight(ctx, cfg, source=None) -> None:
    """Before any run opens: the pool must hold generate.n_samples images."""
    have = len(ctx.splits(cfg.data).pool_x)
    if cfg.generate.n_samples > have:
        raise HarnessError(f"generator.kind=oracle draws unused real training images, and the data has {have} "
                           f"beyond train and validation; lower generate.n_samples ({cfg.generate.n_samples}) to at "
                           f"most {have}, or data.n_per_class / data.val_per_class")


def sampler(ctx, cfg, splits) -> stream.Sampler:
    pool_x, pool_y = splits.pool_x, splits.pool_y
    order = torch.from_numpy(np.random.default_rng([cfg.generate.seed, 0xC0FFEE]).permutation(len(pool_x)))

    def draw(start: int, stop: int):
        if stop > len(pool_x):  # a sweep asking for more than preflight saw
            raise HarnessError(f"generator.kind=oracle: {stop} images asked for, {len(pool_x)} unused real "
                               "training images available")
        idx = order[start:stop]
        return pool_x[idx], pool_y[idx]

    return stream.Sampler(("oracle", splits.digest("pool"), cfg.generate.seed), draw, 0,
                          f"{len(pool_x)} unused real training images")
