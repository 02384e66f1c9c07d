"""Prefix-consistent image streams: image i of a stream does not depend on how many images were
asked for. Each block of BLOCK images draws from its own seeded generator, so the first 500 of
10000 images are the 500 images, and a sweep serves every sample count from one stream, extending
it block by block (context.Memo keeps the streams)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

BLOCK = 256  # images per independently seeded block


def block_seed(seed: int, block: int) -> int:
    return int(np.random.SeedSequence([seed, block]).generate_state(1)[0])


def blocks(start: int, stop: int, size: int = BLOCK) -> range:
    return range(start // size, (stop + size - 1) // size)


def from_blocks(start: int, stop: int, make, empty: torch.Tensor, size: int = BLOCK) -> torch.Tensor:
    """Rows start..stop-1 of a stream whose block b is `make(b)` (`size` rows); `empty` when none."""
    rows = [make(b) for b in blocks(start, stop, size)]
    if not rows:
        return empty
    offset = (start // size) * size
    return torch.cat(rows)[start - offset:stop - offset]


def noise(seed: int, start: int, stop: int, latent_dim: int) -> torch.Tensor:
    """The latent vectors of images start..stop-1 of noise seed `seed`."""
    return from_blocks(start, stop, lambda b: torch.randn(BLOCK, latent_dim, generator=torch.Generator().manual_seed(
        block_seed(seed, b))), torch.zeros(0, latent_dim))


def balanced_labels(start: int, stop: int, n_classes: int) -> torch.Tensor:
    """Class of image i of a class-drawing stream: i mod n_classes (balanced in any prefix)."""
    return torch.arange(start, stop) % n_classes


@dataclass
class Sampler:
    """A generator ready to draw: `draw(start, stop)` -> (uint8 images [n, C, H, W], int64 classes or
    None when the kind does not know them). `identity` names the stream (memo key); `epoch` is the
    checkpoint drawn from (0 for kinds that do not train); `describe` says where images come from."""
    identity: tuple
    draw: Callable[[int, int], tuple[torch.Tensor, torch.Tensor | None]]
    epoch: int = 0
    describe: str = ""
    record: Callable[[torch.Tensor, torch.Tensor | None], None] | None = None  # logs what the drawn images came from (prompts, seed images) into the active run


def take(memo, sampler: Sampler, n: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The first n images of the sampler's stream, drawing only what the memo does not hold yet."""
    images, labels = memo.pools.pop(sampler.identity, (None, None))
    have = 0 if images is None else len(images)
    if have < n:
        more, more_labels = sampler.draw(have, n)
        images = more if images is None else torch.cat([images, more])
        if more_labels is not None:
            labels = more_labels if labels is None else torch.cat([labels, more_labels])
    memo.remember(memo.pools, sampler.identity, (images, labels))
    return images[:n], (labels[:n] if labels is not None else None)
