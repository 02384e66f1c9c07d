"""A frozen backbone's features, computed once per (weights, images) and kept on disk beside the
decoded images, so that a linear probe trains in seconds and a second arm (or a second seed) reads
the real images' features instead of computing them again. Features of the un-augmented images: a
probe sees no augmentation."""
from __future__ import annotations

import hashlib
import os

import numpy as np
import torch


def key(model, weights_digest: str, images: torch.Tensor) -> str:
    h = hashlib.sha256(f"{model.kind}|{model.width}|{weights_digest}|{tuple(images.shape)}|".encode())
    h.update(images.cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:24]


@torch.no_grad()
def compute(model, images: torch.Tensor, device: torch.device, batch: int = 256) -> torch.Tensor:
    model.eval()
    out = [model.embed(images[i:i + batch].to(device)).float().cpu() for i in range(0, len(images), batch)]
    return torch.cat(out) if out else torch.zeros(0)


def features(model, images: torch.Tensor, weights_digest: str, device: torch.device) -> torch.Tensor:
    """`model.embed(images)` [N, D] (float32, on `device`), from the cache when it holds them."""
    from harness.data import cache_dir
    if not len(images):
        return torch.zeros(0, device=device)
    path = cache_dir() / "features" / f"{key(model, weights_digest, images)}.npy"
    if path.is_file():
        try:
            return torch.from_numpy(np.load(path)).to(device)
        except (OSError, ValueError):  # torn by a full disk or a kill: compute again
            pass
    feats = compute(model, images, device)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp.npy")
        np.save(tmp, feats.numpy())
        os.replace(tmp, path)  # atomic: a concurrent reader sees none or all of it
    except OSError:
        pass  # an unwritable cache only costs the next arm the forward passes
    return feats.to(device)
