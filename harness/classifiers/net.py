"""What every classifier kind's network is to the rest of the harness: a module that takes uint8
images [B, C, S, S] and normalizes them itself (so that training, evaluation and pseudo-labelling feed
it the same thing), with `embed` (the backbone's features) and `classify` (the head) such that
`forward(x) == classify(embed(x))`: the training loop runs the backbone under bf16 autocast and the
head in fp32, and a probe trains the head alone."""
from __future__ import annotations

import torch
from torch import nn

# Per-channel statistics of the CIFAR-10 training set (published values, checked on ../shared).
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
# For one channel, the luma of those. Any data set uses them: BatchNorm follows the first conv, so
# the exact input scale matters little, and fixed constants keep every caller's input the same.
GRAY_MEAN, GRAY_STD = (0.4808,), (0.2392,)


def stats(channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    return (CIFAR_MEAN, CIFAR_STD) if channels == 3 else (GRAY_MEAN, GRAY_STD)


class Normalize(nn.Module):
    """uint8 images -> normalized float, in channels-last memory (oneDNN's and cuDNN's faster layout)."""

    def __init__(self, channels: int, mean=None, std=None):
        super().__init__()
        m, s = (mean, std) if mean is not None else stats(channels)
        self.register_buffer("mean", torch.tensor(m, dtype=torch.float32).view(1, channels, 1, 1) * 255)
        self.register_buffer("std", torch.tensor(s, dtype=torch.float32).view(1, channels, 1, 1) * 255)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ((x.float() - self.mean) / self.std).contiguous(memory_format=torch.channels_last)


class Classifier(nn.Module):
    """A kind's backbone and head behind the one interface (see the module docstring). `kind` and
    `width` are what a checkpoint records, so that loading rebuilds the same network."""

    head_prefix = "head."  # the head's keys in the state dict
    head_source: str | None = None  # the raw network's head layer, where a checkpoint of it names one

    def __init__(self, kind: str, width: int, backbone: nn.Module, head: nn.Module, channels: int, image_size: int,
                 mean=None, std=None):
        super().__init__()
        self.kind, self.width, self.channels, self.image_size = kind, width, channels, image_size
        self.normalize = Normalize(channels, mean, std)
        self.backbone, self.head = backbone, head

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.backbone(self.normalize(x)), 1)

    def classify(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.head(hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(self.embed(x))


def last_linear(module: nn.Module) -> tuple[str, nn.Linear]:
    """The name and layer of a network's last nn.Linear: the head of a torchvision model."""
    found = [(name, m) for name, m in module.named_modules() if isinstance(m, nn.Linear)]
    if not found:
        raise ValueError("no nn.Linear layer to serve as the head")
    return found[-1]


def replace(module: nn.Module, name: str, new: nn.Module) -> None:
    parent = module.get_submodule(name.rpartition(".")[0]) if "." in name else module
    setattr(parent, name.rpartition(".")[2], new)
