"""classifier.kind = resnet18: torchvision's ResNet-18 (11.2 M parameters), with the usual CIFAR stem
at 32 px (a 3x3 stride-1 first convolution and no max-pool: He et al.'s 7x7 stride-2 stem and pool
would leave 8x8 features of a 32 px image before the first block) and the standard stem from 64 px up.
classifier.width scales its channels (64, the standard, when 0)."""
from __future__ import annotations

from torch import nn

from harness.classifiers.net import Classifier

NAME = "ResNet-18"
SIZES = (32, 64)


def build(settings, n_classes: int, channels: int, image_size: int) -> Classifier:
    from torchvision.models.resnet import BasicBlock, ResNet
    width = settings.width or 64
    if width == 64 and channels == 3 and image_size >= 64:
        net = ResNet(BasicBlock, [2, 2, 2, 2], num_classes=n_classes)  # torchvision's resnet18, as it is
    else:
        net = _scaled(width, channels, image_size, n_classes)
    head, net.fc = net.fc, nn.Identity()
    model = Classifier("resnet18", width, net, head, channels, image_size)
    model.head_source = "fc"  # a torchvision checkpoint's head (classifier.init)
    return model


def _scaled(width: int, channels: int, image_size: int, n_classes: int):
    """The same network at another width, channel count or stem: torchvision's ResNet fixes 64
    channels and 3 inputs in its constructor, so its layers are made here with its own `_make_layer`."""
    from torchvision.models.resnet import BasicBlock, ResNet

    class Scaled(ResNet):
        def __init__(self):
            nn.Module.__init__(self)
            self._norm_layer, self.inplanes, self.dilation, self.groups, self.base_width = nn.BatchNorm2d, width, 1, 1, 64
            cifar = image_size < 64
            self.conv1 = nn.Conv2d(channels, width, 3 if cifar else 7, 1 if cifar else 2, 1 if cifar else 3, bias=False)
            self.bn1, self.relu = nn.BatchNorm2d(width), nn.ReLU(inplace=True)
            self.maxpool = nn.Identity() if cifar else nn.MaxPool2d(3, 2, 1)
            self.layer1 = self._make_layer(BasicBlock, width, 2)
            self.layer2 = self._make_layer(BasicBlock, 2 * width, 2, stride=2)
            self.layer3 = self._make_layer(BasicBlock, 4 * width, 2, stride=2)
            self.layer4 = self._make_layer(BasicBlock, 8 * width, 2, stride=2)
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(8 * width, n_classes)
            for m in self.modules():  # torchvision's own initialisation
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                elif isinstance(m, nn.BatchNorm2d):
                    nn.init.constant_(m.weight, 1)
                    nn.init.constant_(m.bias, 0)
    return Scaled()
