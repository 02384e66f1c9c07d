"""Pretrain phase (classifier.init = pretrain only): the classifier's network trained, supervised, on
classes disjoint from the study's (pretrain.classes: by default every other class of the data; for
CIFAR-10's reference study the other 7, 35,000 images), so that "does synthetic data help a pretrained
backbone?" is measurable on any machine, with no download. Both arms start from its weights (their
keys consume its key); it is logged like the baseline (artifacts: harness/arms.py), its test
metrics on those classes' test images.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from harness import arms, config, data
from harness.arms import ClassifierResult
from harness.errors import HarnessError
from harness.phases import before, check  # noqa: F401 (the protocol's defaults)


def runs(cfg) -> bool:
    """Whether this config pretrains: classifier.init=pretrain."""
    from harness.classifiers import weights
    return weights.parse(cfg.classifier.init).source == "pretrain"


def wanted(cfg) -> bool:
    """Whether anything pretrains on [pretrain]'s classes: the classifier, or a generator kind that
    pretrains (gan.init=pretrain: the generator_pretrain phase)."""
    from harness import generators
    return runs(cfg) or generators.pretrains(cfg)


def unused_settings(cfg, overrides) -> list[str]:
    """pretrain.* set by the user under a config that does not pretrain, in words (a `note:` line)."""
    mine = [k for k in config.set_keys(overrides) if k.startswith("pretrain.")]
    if not mine or wanted(cfg):
        return []
    return [f"{', '.join(mine)} ignored: the pretrain phase runs with classifier.init=pretrain "
            f"(this config has classifier.init={cfg.classifier.init}), the generator's with gan.init=pretrain"]


def data_config(cfg):
    """The draw it trains on: pretrain.classes, every image of each (or pretrain.n_per_class), no validation;
    from pretrain.data_dir's tree where one is given (its images at the study's size and channels)."""
    p = cfg.pretrain
    source = "" if p.data_dir else cfg.data.source
    return dataclasses.replace(cfg.data, source=source, classes=p.classes, n_per_class=p.n_per_class,
                               val_per_class=0, seed=p.seed)


def with_classes(cfg, data_dir):
    """`cfg` with pretrain.classes filled in where classifier.init = pretrain leaves them empty: every class
    of the pretraining tree (pretrain.data_dir, else `data_dir`) the study does not use, in the config every
    key sees. Per config, not per command: a grid's or a sweep's cell may be the one that asks for pretrain."""
    if not wanted(cfg) or cfg.pretrain.classes:
        return cfg
    try:
        found = data.open_source(_tree(cfg, data_dir), data_config(cfg)).classes
    except HarnessError as e:
        if not cfg.pretrain.data_dir:
            raise
        raise HarnessError(f"pretrain.data_dir {cfg.pretrain.data_dir}: {e}") from None
    others = [c for c in found if c not in cfg.data.classes]
    if not others:
        raise HarnessError("pretraining (classifier.init or gan.init=pretrain): every class of the data is one of data.classes, so none "
                           "is left to pretrain on; set pretrain.classes, or give a tree with more classes "
                           "(pretrain.data_dir)")
    return config.apply(cfg, {"pretrain.classes": others})


def check_data(ctx, cfg) -> None:
    """Before any run opens: pretrain.classes are in the pretraining tree, with images to train on."""
    if not wanted(cfg):
        return
    try:
        ctx.splits(data_config(cfg), _tree(cfg, None))
    except HarnessError as e:
        where = f"pretrain.data_dir {cfg.pretrain.data_dir}" if cfg.pretrain.data_dir else "pretrain.classes"
        raise HarnessError(f"{where}: {e}") from None


def _tree(cfg, data_dir):
    if cfg.pretrain.data_dir and not Path(cfg.pretrain.data_dir).is_dir():
        raise HarnessError(f"pretrain.data_dir: {cfg.pretrain.data_dir} is not a folder (a tree of class folders, "
                           "or train/ and test/ of them)")
    return cfg.pretrain.data_dir or data_dir


def training(cfg):
    """The study's classifier settings (kind, width, optimizer, learning rate, augmentation, precision)
    for pretrain.epochs from scratch: the arms' synthetic-image settings do not apply."""
    c, defaults = cfg.classifier, type(cfg.classifier)()
    return dataclasses.replace(c, epochs=cfg.pretrain.epochs, steps=0, seed=cfg.pretrain.seed, init="scratch",
                               mode="train", backbone_lr=1.0, budget=defaults.budget, real_only_epochs=0,
                               synthetic_share=defaults.synthetic_share, synthetic_weight=defaults.synthetic_weight)


def compute(ctx, cfg, inputs) -> ClassifierResult:
    own = dataclasses.replace(cfg, classifier=training(cfg), data=data_config(cfg))
    splits = ctx.splits(own.data, cfg.pretrain.data_dir or None)
    model, m = arms.fit_and_report(own, splits, ctx.device, "pretrain")
    return ClassifierResult("", m, trained=model)


def load(ctx, cfg, run) -> ClassifierResult:
    return ClassifierResult(run.info.run_id, dict(run.data.metrics))


def summary(result: ClassifierResult, cfg) -> str:
    return arms.summary(f"pretrain run {result.run_id}", result.metrics, cfg.pretrain.classes)
