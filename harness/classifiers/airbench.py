"""classifier.kind = airbench: the network of cifar10-airbench's 94% run (Keller Jordan, 2024), in
PyTorch: a frozen 2x2 patch-whitening convolution (its filters the eigenvectors of the training
images' patch covariance, set from the data before training), then three blocks of conv - max-pool -
BatchNorm - GELU - conv - BatchNorm - GELU, a global max-pool and a bias-free linear head whose
output is scaled by 1/9. classifier.width sets the first block's channels (64 when 0; the others 4x).
Left out of the original's recipe, which is the training loop's business: its Lookahead optimizer,
label smoothing, TTA and the whitening bias warm-up."""
from __future__ import annotations

import torch
from torch import nn

from harness.classifiers.net import Classifier

NAME = "airbench"
SIZES = (32, 64)
SCALE = 1 / 9  # the head's output scaling of airbench94


class _Block(nn.Sequential):
    def __init__(self, c_in: int, c_out: int):
        super().__init__(nn.Conv2d(c_in, c_out, 3, padding="same", bias=False), nn.MaxPool2d(2),
                         nn.BatchNorm2d(c_out, momentum=0.4), nn.GELU(),
                         nn.Conv2d(c_out, c_out, 3, padding="same", bias=False),
                         nn.BatchNorm2d(c_out, momentum=0.4), nn.GELU())


class _Head(nn.Linear):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) * SCALE


def build(settings, n_classes: int, channels: int, image_size: int) -> Classifier:
    w = settings.width or 64
    whiten = nn.Conv2d(channels, 2 * channels * 2 * 2, 2, padding=0, bias=True)
    whiten.weight.requires_grad_(False)  # frozen: set from the data (fit_data), never trained
    backbone = nn.Sequential(whiten, nn.GELU(), _Block(whiten.out_channels, w), _Block(w, 4 * w), _Block(4 * w, 4 * w),
                             nn.AdaptiveMaxPool2d(1))
    return Classifier("airbench", w, backbone, _Head(4 * w, n_classes, bias=False), channels, image_size)


@torch.no_grad()
def fit_data(model: Classifier, images: torch.Tensor, eps: float = 5e-4) -> None:
    """The whitening filters from the training images' 2x2 patches (airbench's init_whitening): the
    patch covariance's eigenvectors scaled by 1/sqrt(eigenvalue), each with its negative."""
    conv = model.backbone[0]
    x = model.normalize(images[:5000].to(conv.weight.device)).float()
    c, h = x.shape[1], conv.kernel_size[0]
    patches = x.unfold(2, h, 1).unfold(3, h, 1).transpose(1, 3).reshape(-1, c, h, h).float()
    flat = patches.reshape(len(patches), -1)
    cov = (flat.T @ flat) / len(flat)
    values, vectors = torch.linalg.eigh(cov)
    filters = (vectors.T.reshape(-1, c, h, h) / torch.sqrt(values.clamp_min(0) + eps).view(-1, 1, 1, 1))
    conv.weight.copy_(torch.cat([filters, -filters]).to(conv.weight.dtype))
