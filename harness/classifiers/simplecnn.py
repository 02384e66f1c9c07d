"""classifier.kind = simplecnn, the reference (and always the quality evaluator): 3 conv blocks and a
2-layer MLP head, built for square images of 32 or 64 pixels with 1 or 3 channels. The GAN's networks
are harness/generators/dcgan.py, so that an edit here retrains no generator."""
from __future__ import annotations

import torch
from torch import nn

from harness.classifiers.net import stats


class SimpleCNN(nn.Module):
    """3 conv blocks (conv-BN-ReLU-maxpool, 32/64/128 channels) + a 2-layer MLP head, as in the reference.

    Takes uint8 images [B, C, S, S] and normalizes them itself, so that every caller (training,
    evaluation, pseudo-labelling of generated images) feeds it the same thing. The head's input is
    4 * width * (S / 8)^2: 2048 for 32 pixels, 8192 for 64.
    """

    kind = "simplecnn"
    head_prefix = "head.4."  # the last linear layer: what `classify` adds after `embed`

    def __init__(self, n_classes: int, width: int = 32, hidden: int = 256, dropout: float = 0.5,
                 channels: int = 3, image_size: int = 32):
        super().__init__()
        self.channels, self.image_size, self.width = channels, image_size, width
        mean, std = stats(channels)
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


NAME = "SimpleCNN"
SIZES = (32, 64)


def build(settings, n_classes: int, channels: int, image_size: int) -> SimpleCNN:
    return SimpleCNN(n_classes, width=settings.width or 32, channels=channels, image_size=image_size)


def split(model: SimpleCNN):
    """(backbone, head): the convolutions and the hidden layer; the last linear layer."""
    return torch.nn.Sequential(model.features, model.head[:3]), model.head[3:]
