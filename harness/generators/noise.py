"""`generator.kind = "noise"`: images drawn from a per-class Gaussian fitted to the real training
images (per-pixel mean and standard deviation), clipped to [0, 255]. Class i mod C for image i.
The floor: anything a generator learns beyond pixel statistics should beat it."""
from __future__ import annotations

import torch

from harness.generators import stream

TRAINS = False
SECTIONS = ()
DATA = ("train",)
CLASSES = "always"
NEEDS = "nothing"


def knows_classes(cfg) -> bool:
    return True


def sampler(ctx, cfg, splits) -> stream.Sampler:
    n_classes = len(splits.classes)
    x = splits.train_x.float()
    mean = torch.stack([x[splits.train_y == c].mean(0) for c in range(n_classes)])
    std = torch.stack([x[splits.train_y == c].std(0) for c in range(n_classes)])
    seed = cfg.generate.seed

    def block(b: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(stream.block_seed(seed, b))
        y = stream.balanced_labels(b * stream.BLOCK, (b + 1) * stream.BLOCK, n_classes)
        z = torch.randn((stream.BLOCK, *mean.shape[1:]), generator=g)
        return (mean[y] + std[y] * z).clamp(0, 255).round().to(torch.uint8)

    def draw(start: int, stop: int):
        return stream.from_blocks(start, stop, block, splits.train_x[:0]), stream.balanced_labels(start, stop, n_classes)

    return stream.Sampler(("noise", splits.digest("train"), seed), draw, 0,
                          f"per-class Gaussians fitted to the {len(x)} real training images")
