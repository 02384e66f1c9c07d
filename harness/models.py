"""The networks: SimpleCNN (the classifier of both arms), the DCGAN generator and WGAN-GP critic,
each built for square images of 32 or 64 pixels with 1 or 3 channels (data.image_size, data.channels)."""
from __future__ import annotations

import torch
from torch import nn

# Per-channel statistics of the CIFAR-10 training set (published values, checked on ../shared).
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
# For one channel, the luma of those. Any data set uses them: BatchNorm follows the first conv, so
# the exact input scale matters little, and fixed constants keep every caller's input the same.
GRAY_MEAN, GRAY_STD = (0.4808,), (0.2392,)


def _levels(image_size: int) -> int:
    """Stride-2 steps between 4x4 and image_size (3 for 32, 4 for 64)."""
    levels = (image_size // 4).bit_length() - 1
    if image_size < 8 or 4 * 2 ** levels != image_size:
        raise ValueError(f"image_size must be a power of two >= 8, got {image_size}")
    return levels


class SimpleCNN(nn.Module):
    """3 conv blocks (conv-BN-ReLU-maxpool, 32/64/128 channels) + a 2-layer MLP head, as in the reference.

    Takes uint8 images [B, C, S, S] and normalizes them itself, so that every caller (training,
    evaluation, pseudo-labelling of generated images) feeds it the same thing. The head's input is
    4 * width * (S / 8)^2: 2048 for 32 pixels, 8192 for 64.
    """

    def __init__(self, n_classes: int, width: int = 32, hidden: int = 256, dropout: float = 0.5,
                 channels: int = 3, image_size: int = 32):
        super().__init__()
        self.channels, self.image_size = channels, image_size
        mean, std = (CIFAR_MEAN, CIFAR_STD) if channels == 3 else (GRAY_MEAN, GRAY_STD)
        self.register_buffer("mean", torch.tensor(mean).view(1, channels, 1, 1) * 255)
        self.register_buffer("std", torch.tensor(std).view(1, channels, 1, 1) * 255)
        chans = [channels, width, 2 * width, 4 * width]
        blocks = []
        for c_in, c_out in zip(chans, chans[1:]):
            blocks += [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out),
                       nn.ReLU(inplace=True), nn.MaxPool2d(2)]
        self.features = nn.Sequential(*blocks)
        side = image_size // 8
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(4 * width * side * side, hidden), nn.ReLU(inplace=True),
                                  nn.Dropout(dropout), nn.Linear(hidden, n_classes))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The hidden layer (after ReLU): the feature space of the sample-quality metrics."""
        x = ((x.float() - self.mean) / self.std).contiguous(memory_format=torch.channels_last)
        return self.head[:3](self.features(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # channels_last: oneDNN's CPU convolutions run ~1.3x faster on NHWC for this net (measured
        # here); cuDNN prefers it as well.
        x = ((x.float() - self.mean) / self.std).contiguous(memory_format=torch.channels_last)
        return self.head(self.features(x))

    def classify(self, hidden: torch.Tensor) -> torch.Tensor:
        """Logits from the hidden layer: `forward(x) == classify(embed(x))`."""
        return self.head[3:](hidden)


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


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Generator output in [-1, 1] -> uint8 images, the form real data and synthetic.npz take."""
    return ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def from_uint8(images: torch.Tensor) -> torch.Tensor:
    """uint8 images -> [-1, 1], the critic's input scale."""
    return images.float() / 127.5 - 1
