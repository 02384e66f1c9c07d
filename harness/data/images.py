"""Pixels in the one form every phase takes: uint8 [N, H, W, C] at data.image_size, C = data.channels.

The policy, for every source:
  - size: an image that is not square is centre-cropped to its shorter side, then resized to
    image_size x image_size with Pillow's bicubic filter, which antialiases when it shrinks
    (files); arrays of one size (CIFAR batches, torchvision sets) are resized the same way, by
    torch's antialiased bicubic interpolation;
  - mode: RGB, RGBA, L, P, ... are converted by Pillow: to RGB for 3 channels (alpha is dropped,
    palette images take their palette's colours), to L (ITU-R 601 luma) for 1 channel; gray
    arrays are replicated to 3 channels, colour arrays turned to luma for 1.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from harness.errors import HarnessError

SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
SIZES = (32, 64)  # what the networks are built for (harness/classifiers/, harness/generators/dcgan.py)
LUMA = np.array([0.299, 0.587, 0.114], np.float32)


def decode(path: Path, size: int, channels: int) -> np.ndarray:
    """One image file -> uint8 [size, size, channels] under the policy above."""
    # Pillow, not torchvision.io: torchvision 0.29 deprecated its image decoders.
    from PIL import Image
    try:
        with Image.open(path) as im:
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16-bit gray: Pillow's convert would clip at 255
                im = Image.fromarray((np.asarray(im, np.float64) / 257).round().clip(0, 255).astype(np.uint8))
            im = im.convert("L" if channels == 1 else "RGB")
            w, h = im.size
            if w != h:
                side = min(w, h)
                left, top = (w - side) // 2, (h - side) // 2
                im = im.crop((left, top, left + side, top + side))
            if im.size != (size, size):
                im = im.resize((size, size), Image.Resampling.BICUBIC)
            img = np.asarray(im)
    except Exception as e:
        raise HarnessError(f"cannot decode image {path}: {str(e).splitlines()[0]}") from None
    return img[..., None] if img.ndim == 2 else img


def fit(images: np.ndarray, size: int, channels: int) -> np.ndarray:
    """Arrays of one size and mode (uint8 [N, H, W] or [N, H, W, C]) -> [N, size, size, channels]."""
    if images.ndim == 3:
        images = images[..., None]
    c = images.shape[-1]
    if c == 1 and channels == 3:
        images = np.repeat(images, 3, axis=-1)
    elif c >= 3 and channels == 1:
        images = (images[..., :3].astype(np.float32) @ LUMA).round().clip(0, 255).astype(np.uint8)[..., None]
    elif c == 4:
        images = images[..., :3]
    n, h, w, _ = images.shape
    if h != w:
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        images = images[:, top:top + side, left:left + side]
    if images.shape[1] != size and n:
        import torch
        import torch.nn.functional as F
        t = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float()
        t = F.interpolate(t, size=(size, size), mode="bicubic", antialias=True, align_corners=False)
        images = t.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return np.ascontiguousarray(images)


def to_uint8(images):
    """A generator's output in [-1, 1] (a tensor) -> uint8 images, the form real data and synthetic.npz take."""
    import torch
    return ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def from_uint8(images):
    """uint8 images (a tensor) -> [-1, 1], the scale the generators train in."""
    return images.float() / 127.5 - 1
