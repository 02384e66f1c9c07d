"""`generator.kind = "mixup"`: convex combinations of random pairs of real training images, the
weight of a pair drawn from Beta(generator.mixup_alpha, ...). A trivial generator: the baseline
labels its images like a GAN's."""
from __future__ import annotations

import numpy as np
import torch

from harness.generators import stream

TRAINS = False
SECTIONS = ("generator.mixup_alpha",)  # the [generator] field it reads
DATA = ("train",)
CLASSES = "no: the baseline labels them"
NEEDS = "nothing"


def knows_classes(cfg) -> bool:
    return False


def sampler(ctx, cfg, splits) -> stream.Sampler:
    x = splits.train_x  # uint8: only the drawn pairs become floats (a sweep builds a sampler per trial)
    seed, alpha = cfg.generate.seed, cfg.generator.mixup_alpha

    def block(b: int) -> torch.Tensor:
        rng = np.random.default_rng(stream.block_seed(seed, b))
        i, j = (torch.from_numpy(rng.integers(0, len(x), stream.BLOCK)) for _ in range(2))
        lam = torch.from_numpy(rng.beta(alpha, alpha, stream.BLOCK)).float().view(-1, 1, 1, 1)
        return (lam * x[i].float() + (1 - lam) * x[j].float()).round().to(torch.uint8)

    def draw(start: int, stop: int):
        return stream.from_blocks(start, stop, block, splits.train_x[:0]), None

    return stream.Sampler(("mixup", splits.digest("train"), seed, alpha), draw, 0,
                          f"mixup (alpha {alpha}) of pairs of the {len(x)} real training images")
