"""DiffAugment (Zhao et al. 2020): differentiable augmentations applied to every critic input, real
and fake alike, so that a critic trained on a few thousand images cannot simply memorize them.

Follows the authors' PyTorch reference (color = brightness, saturation, contrast; translation by up
to 1/8 of the image with zero fill; cutout of a half-size square), on images in [-1, 1], with an
explicit generator so that runs repeat.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def _rand(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    return torch.rand(x.size(0), 1, 1, 1, generator=gen, device=x.device, dtype=x.dtype)


def brightness(x, gen):
    return x + (_rand(x, gen) - 0.5)


def saturation(x, gen):
    mean = x.mean(dim=1, keepdim=True)
    return (x - mean) * (_rand(x, gen) * 2) + mean


def contrast(x, gen):
    mean = x.mean(dim=[1, 2, 3], keepdim=True)
    return (x - mean) * (_rand(x, gen) + 0.5) + mean


def translation(x, gen, ratio: float = 0.125):
    b, _, h, w = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    ty = torch.randint(-sh, sh + 1, (b, 1, 1), generator=gen, device=x.device)
    tx = torch.randint(-sw, sw + 1, (b, 1, 1), generator=gen, device=x.device)
    gb, gy, gx = torch.meshgrid(torch.arange(b, device=x.device), torch.arange(h, device=x.device),
                                torch.arange(w, device=x.device), indexing="ij")
    gy = torch.clamp(gy + ty + 1, 0, h + 1)
    gx = torch.clamp(gx + tx + 1, 0, w + 1)
    padded = F.pad(x, [1, 1, 1, 1]).permute(0, 2, 3, 1)  # the 1-px zero border is what shifts in
    return padded[gb, gy, gx].permute(0, 3, 1, 2)


def cutout(x, gen, ratio: float = 0.5):
    b, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    oy = torch.randint(0, h + (1 - ch % 2), (b, 1, 1), generator=gen, device=x.device)
    ox = torch.randint(0, w + (1 - cw % 2), (b, 1, 1), generator=gen, device=x.device)
    gb, gy, gx = torch.meshgrid(torch.arange(b, device=x.device), torch.arange(ch, device=x.device),
                                torch.arange(cw, device=x.device), indexing="ij")
    gy = torch.clamp(gy + oy - ch // 2, 0, h - 1)
    gx = torch.clamp(gx + ox - cw // 2, 0, w - 1)
    mask = torch.ones(b, h, w, dtype=x.dtype, device=x.device)
    mask[gb, gy, gx] = 0
    return x * mask.unsqueeze(1)


POLICIES = {"color": (brightness, saturation, contrast), "translation": (translation,), "cutout": (cutout,)}


def diff_augment(x: torch.Tensor, policy: str, gen: torch.Generator) -> torch.Tensor:
    """Apply the comma-separated `policy` ("" = none) to a batch in [-1, 1]; differentiable in x."""
    for name in filter(None, policy.split(",")):
        for fn in POLICIES[name]:
            x = fn(x, gen)
    return x.contiguous()
