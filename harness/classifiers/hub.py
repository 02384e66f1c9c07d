"""classifier.kind = torchvision:NAME or timm:NAME: any model of those libraries by name, built
without weights (`torchvision.models.get_model(NAME, weights=None)`, `timm.create_model(NAME,
pretrained=False)`), its head sized to data.classes and its first layer to data.channels where the
library allows. The backbone is everything but the last linear layer. timm is an extra:
pip install -e '.[timm]'."""
from __future__ import annotations

import torch
from torch import nn

from harness.classifiers.net import Classifier, last_linear, replace
from harness.errors import HarnessError

NAME = "a torchvision or timm model by name"
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
SIZES = ()  # whatever the model takes: checked by building it and running one image


def _library(kind: str) -> tuple[str, str]:
    library, _, name = kind.partition(":")
    return library, name


def build(settings, n_classes: int, channels: int, image_size: int) -> Classifier:
    from harness.classifiers.weights import parse
    library, name = _library(settings.kind)
    imported = parse(settings.init).library_statistics and channels == 3
    if library == "timm":
        import timm
        net = timm.create_model(name, pretrained=False, num_classes=n_classes, in_chans=channels)
        head, cfg = net.get_classifier(), net.pretrained_cfg
        net.reset_classifier(0)  # the backbone returns its pooled features
        # Pretrained weights come with the statistics they were trained on (timm's pretrained_cfg).
        stats = (cfg.get("mean"), cfg.get("std")) if imported else (None, None)
        model = Classifier(settings.kind, settings.width, net, head, channels, image_size, *stats)
        model.head_source = cfg.get("classifier")
        return model
    import torchvision
    net = torchvision.models.get_model(name, weights=None)
    layer_name, old = last_linear(net)
    replace(net, layer_name, nn.Identity())
    if channels != 3:
        _first_conv(net, channels)
    # torchvision's pretrained weights are ImageNet's, normalized with its statistics.
    stats = (IMAGENET_MEAN, IMAGENET_STD) if imported else (None, None)
    model = Classifier(settings.kind, settings.width, net, nn.Linear(old.in_features, n_classes), channels, image_size,
                       *stats)
    model.head_source = layer_name
    return model


def _first_conv(net: nn.Module, channels: int) -> None:
    """A torchvision model's first convolution, remade for `channels` inputs."""
    name, conv = next((n, m) for n, m in net.named_modules() if isinstance(m, nn.Conv2d))
    replace(net, name, nn.Conv2d(channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                                 conv.dilation, conv.groups, conv.bias is not None))


def check(settings, channels: int, image_size: int) -> None:
    """The library is there, the name is one of its models, and the network takes this image size:
    one image through the model on the CPU, before any run opens."""
    library, name = _library(settings.kind)
    if library == "timm":
        try:
            import timm
        except ImportError:
            raise HarnessError(f"classifier.kind={settings.kind} needs timm: pip install -e '.[timm]'") from None
        if not timm.is_model(name):
            raise HarnessError(f"classifier.kind={settings.kind}: timm has no model {name!r} (timm.list_models() "
                               "lists them)")
    else:
        import torchvision
        if name not in torchvision.models.list_models():
            raise HarnessError(f"classifier.kind={settings.kind}: torchvision has no model {name!r} "
                               "(torchvision.models.list_models() lists them)")
    try:
        with torch.no_grad():
            build(settings, 2, channels, image_size).eval()(torch.zeros(1, channels, image_size, image_size,
                                                                        dtype=torch.uint8))
    except Exception as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise HarnessError(f"classifier.kind={settings.kind} cannot take {image_size} px images with {channels} "
                           f"channel(s) (data.image_size, data.channels): {first}") from None
