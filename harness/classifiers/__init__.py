"""Classifier kinds behind one protocol, chosen by classifier.kind: the built-in ones (simplecnn, the
reference; resnet18; airbench), any torchvision or timm model by name (torchvision:NAME, timm:NAME),
and plugins installed under the entry-point group harness.classifiers.

A kind is a module with
  NAME                    how descriptions name the network ("ResNet-18")
  build(settings, n_classes, channels, image_size) -> nn.Module
                          a fresh network (classifier.* settings as `settings`) that takes uint8
                          images and has `embed` and `classify` (harness/classifiers/net.py: Classifier)
and, optionally,
  CONFIG                  a frozen dataclass of config.setting fields: the kind's own section [NAME]
                          (a plugin's; build then takes it as `section=`), keyed, seeded and checked
                          like a built-in section
  SIZES                   the image sizes it is built for (checked before any run opens)
  check(settings, channels, image_size)
                          raise HarnessError for what it cannot take
  fit_data(model, images) set data-dependent parts (airbench's whitening) from the training images
  split(model)            (backbone, head) where the head a probe trains is not all of `model.head`
Both arms build the same kind; the pseudo-labeller is the baseline's; the sample-quality evaluator
is always simplecnn, so FD and KID compare across classifier kinds.
"""
from __future__ import annotations

from harness.errors import HarnessError
from harness.registry import BUILTIN_CLASSIFIERS, CLASSIFIER_PATTERNS, CLASSIFIERS, Registry

GROUP, BUILTIN, PATTERNS = CLASSIFIERS, BUILTIN_CLASSIFIERS, CLASSIFIER_PATTERNS
REQUIRED = ("NAME", "build")
KINDS = Registry("classifier", GROUP, BUILTIN, REQUIRED, "harness/classifiers/__init__.py", PATTERNS)
get, names = KINDS.get, KINDS.names


def check(settings, channels: int, image_size: int) -> None:
    """The kind exists and takes these images; before any run opens."""
    kind = get(settings.kind)
    sizes = getattr(kind, "SIZES", ())
    if sizes and image_size not in sizes:
        raise HarnessError(f"classifier.kind={settings.kind} is built for {' or '.join(map(str, sizes))} px images, "
                           f"not data.image_size={image_size}")
    if hasattr(kind, "check"):
        kind.check(settings, channels, image_size)


def check_config(cfg) -> None:
    """check() for a whole config: its classifier on its images."""
    check(cfg.classifier, cfg.data.channels, cfg.data.image_size)


def build(settings, n_classes: int, channels: int, image_size: int, section=None):
    """A fresh network; `section`: a plugin kind's own config section (its CONFIG), which its build takes."""
    extra = {"section": section} if section is not None else {}
    return get(settings.kind).build(settings, n_classes, channels, image_size, **extra)


def section_of(cfg):
    """The chosen kind's own config section, when it is a plugin that declares one (else None)."""
    from harness import config
    return getattr(cfg, cfg.classifier.kind) if cfg.classifier.kind in config.kind_sections() else None


def fit_data(settings, model, images) -> None:
    kind = get(settings.kind)
    if hasattr(kind, "fit_data"):
        kind.fit_data(model, images)


def head_of(model):
    """The part a probe trains and the head's learning rate covers: the kind's `split(model)` head where
    it declares one (simplecnn: the last linear layer, not its hidden one), else the module `classify` applies."""
    kind = get(model.kind) if getattr(model, "kind", "") else None
    return kind.split(model)[1] if hasattr(kind, "split") else model.head


def in_words(settings) -> str:
    kind = get(settings.kind)
    name = settings.kind.partition(":")[2] if ":" in settings.kind else kind.NAME
    return f"{name}{f' (width {settings.width})' if settings.width else ''}"


def describe() -> list[dict[str, str]]:
    """Every kind, built-in and installed, as `harness kinds` lists it."""
    rows = []
    for name in names():
        try:
            kind = get(name) if not name.endswith(":NAME") else get(name.replace(":NAME", ":x"))
        except HarnessError as e:
            rows.append({"kind": name, "network": str(e), "from": KINDS.origin(name)})
            continue
        rows.append({"kind": name, "network": getattr(kind, "NAME", "?"), "from": KINDS.origin(name)})
    return rows
