"""The GAN kind's networks: the DCGAN generator and the WGAN-GP critic, each built for square images
of 32 or 64 pixels with 1 or 3 channels; they work in [-1, 1] (harness/data/images.py: to_uint8, from_uint8)."""
from __future__ import annotations

import torch
from torch import nn


def _levels(image_size: int) -> int:
    """Stride-2 steps between 4x4 and image_size (3 for 32, 4 for 64)."""
    levels = (image_size // 4).bit_length() - 1
    if image_size < 8 or 4 * 2 ** levels != image_size:
        raise ValueError(f"image_size must be a power of two >= 8, got {image_size}")
    return levels


class Generator(nn.Module):
    """DCGAN generator: z -> 4x4x(2^(L-1) w) -> ... -> 16x16xw... -> SxSxC in [-1, 1], L = log2(S / 4)
    doublings (32: 4x4x4w -> 8x8x2w -> 16x16xw -> 32x32xC; 64 adds a stage with 8w at 4x4).

    With `n_classes`, a learned class embedding is concatenated to z: sample(z, y) draws class y.
    """

    def __init__(self, latent_dim: int = 128, width: int = 64, n_classes: int = 0, channels: int = 3,
                 image_size: int = 32):
        super().__init__()
        levels = _levels(image_size)
        self.latent_dim, self.width, self.n_classes = latent_dim, width, n_classes
        self.channels, self.image_size = channels, image_size
        self.top = width * 2 ** (levels - 1)  # channels at 4x4
        self.embed = nn.Embedding(n_classes, latent_dim) if n_classes else None
        self.project = nn.Sequential(nn.Linear(latent_dim * (2 if n_classes else 1), 4 * 4 * self.top, bias=False),
                                     nn.BatchNorm1d(4 * 4 * self.top), nn.ReLU(inplace=True))
        layers, c = [], self.top
        for _ in range(levels - 1):
            layers += [nn.ConvTranspose2d(c, c // 2, 4, 2, 1, bias=False), nn.BatchNorm2d(c // 2), nn.ReLU(inplace=True)]
            c //= 2
        self.body = nn.Sequential(*layers, nn.ConvTranspose2d(c, channels, 4, 2, 1), nn.Tanh())

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if self.embed is not None:
            z = torch.cat([z, self.embed(y)], dim=1)
        return self.body(self.project(z).view(-1, self.top, 4, 4))


class Critic(nn.Module):
    """DCGAN critic without batch norm: the gradient penalty is per-sample, and batch norm would
    couple the samples of a batch (Gulrajani et al. 2017, section 4).

    conditional = "projection": score + <embed(y), features> (Miyato & Koyama 2018);
    "acgan": a second head of class logits (`forward` returns (score, logits)).
    """

    def __init__(self, width: int = 64, n_classes: int = 0, conditional: str = "none", spectral_norm: bool = False,
                 channels: int = 3, image_size: int = 32):
        super().__init__()
        sn = nn.utils.parametrizations.spectral_norm if spectral_norm else (lambda m: m)
        self.conditional = conditional
        layers, c_in, c_out = [], channels, width
        for _ in range(_levels(image_size)):  # halve the side down to 4x4, doubling the channels
            layers += [sn(nn.Conv2d(c_in, c_out, 4, 2, 1)), nn.LeakyReLU(0.2, inplace=True)]
            c_in, c_out = c_out, 2 * c_out
        self.body = nn.Sequential(*layers, nn.Flatten())
        features = c_in * 4 * 4
        self.score = sn(nn.Linear(features, 1))
        self.embed = sn(nn.Embedding(n_classes, features)) if conditional == "projection" else None
        self.classify = sn(nn.Linear(features, n_classes)) if conditional == "acgan" else None

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None):
        h = self.body(x)
        out = self.score(h).view(-1)
        if self.embed is not None:
            out = out + (self.embed(y) * h).sum(1)
        if self.classify is not None:
            return out, self.classify(h)
        return out
