"""`generator.kind = "replay"`: the classifier's own real training images again, with their labels, in
a seeded order (cycled when more are asked for than there are). No new information at all: what the
synthetic arm's recipe alone does (its larger batches, the synthetic loss weight, the real-only last
epochs) against the baseline. The rung at 0 real images added of a grid's oracle ladder
(`--oracle-ladder 0,150,...`), where the exchange rate's curve starts."""
from __future__ import annotations

import numpy as np
import torch

from harness.generators import stream

TRAINS = False
SECTIONS = ()
DATA = ("train",)
CLASSES = "always"
NEEDS = "nothing"


def real_images_added(cfg) -> int:
    """No new real image: the ladder's rung 0, the recipe's own effect."""
    return 0


def knows_classes(cfg) -> bool:
    return True


def indices(n: int, seed: int, start: int, stop: int) -> torch.Tensor:
    """Positions start..stop-1 of the replay stream over n training images: pass p over them in its own
    seeded order, every image once per pass, so that a prefix of the stream is the same images at any
    count (the control arm, harness/phases/control.py, replays the same way)."""
    def one_pass(p: int) -> torch.Tensor:
        return torch.from_numpy(np.random.default_rng([seed, 0x5EED, p]).permutation(n))
    return stream.from_blocks(start, stop, one_pass, torch.zeros(0, dtype=torch.long), size=n)


def sampler(ctx, cfg, splits) -> stream.Sampler:
    x, y = splits.train_x, splits.train_y
    seed = cfg.generate.seed

    def draw(start: int, stop: int):
        idx = indices(len(x), seed, start, stop)
        return x[idx], y[idx]

    return stream.Sampler(("replay", splits.digest("train"), seed), draw, 0,
                          f"the {len(x)} real training images themselves, replayed")


def cost_note(cfg, device) -> str | None:
    n_train = cfg.data.n_per_class * len(cfg.data.classes)
    if n_train and cfg.generate.n_samples > n_train:
        return (f"generator.kind=replay: generate.n_samples={cfg.generate.n_samples} replays the {n_train} training "
                f"images {cfg.generate.n_samples / n_train:.1f} times each (passes over them); the images add no "
                "information however many times they come")
    return None
