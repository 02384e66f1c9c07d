"""The config's schema: one frozen dataclass per section, each field a `setting(...)` with its facts
beside it, kinds' own sections gathered from their modules (a kind's CONFIG), and what a key covers of a
config (`config_hash`, `flat_sections`). Checked by rules.py, loaded by presets.py.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.metadata
import json
import re
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar


# Presets and sweep specs ship inside the package (a wheel has them); a user's own ./experiments/X.toml
# or any .toml path is found first.
EXPERIMENTS_DIR = Path(__file__).resolve().parents[1] / "experiments"

SEED_MAX = 2 ** 32 - 1  # numpy's and torch's seeds: what every seed field takes
PRECISIONS = ("fp32", "bf16", "auto")  # harness/precision.py resolves auto per machine
AUGMENTATIONS = ("none", "crop-flip", "trivialaugment", "randaugment", "mixup", "cutmix")  # harness/train.py: augment


def setting(default, *, gt=None, ge=None, lt=None, le=None, choices=None, why: str = "", seed: bool = False,
            precision: bool = False, unhashed: bool = False, added: bool = False):
    """A config field with its facts beside it: its range (gt/ge/lt/le) or choices, checked when a
    config is made (`check_fields`); `seed`: set to the seed of each pipeline of a multi-seed study
    (`seed_fields`); `precision`: an fp32|bf16|auto arithmetic setting that commands resolve per
    machine (`precision_fields`); `unhashed`: in no key (where, not what; or a speed-only switch);
    `added`: a field added after keys existed, hashed only away from its default, so that a setting
    that did not exist before moves no earlier key."""
    meta = {"gt": gt, "ge": ge, "lt": lt, "le": le, "choices": choices, "why": why, "seed": seed,
            "precision": precision, "unhashed": unhashed, "added": added}
    return field(default=default, metadata={k: v for k, v in meta.items() if v is not None and v is not False and v != ""})


@dataclass(frozen=True)
class DataConfig:
    source: str = ""  # "": --data-dir (or CIFAR-10's download) | torchvision:NAME (CIFAR10, CIFAR100, SVHN, MNIST, FashionMNIST, KMNIST)
    classes: tuple[str, ...] = ("airplane", "automobile", "bird")  # class names of the data, or all
    n_per_class: int = setting(1000, ge=0)  # training images drawn per class; 0 or all: every image not held out for validation
    val_per_class: int = setting(500, ge=0)  # validation images per class, drawn from the unused training images
    seed: int = setting(0, ge=0, le=SEED_MAX, seed=True)  # which training/validation images are drawn
    image_size: int = setting(32, choices=(32, 64), why="what the networks are built for")  # pixels per side every image is brought to (32 or 64; see harness/data/images.py)
    channels: int = setting(3, choices=(1, 3))  # 3 (gray images replicated) or 1 (colour images turned to luma)
    test_fraction: float = setting(0.2, gt=0.0, lt=1.0)  # a tree without train/test splits: the share of each class held out for testing


@dataclass(frozen=True)
class ClassifierConfig:
    SWEEP: ClassVar[bool] = True  # a sweep's trial may vary it (what a trial trains)
    kind: str = "simplecnn"  # the network of both arms: simplecnn (the reference) | resnet18 | airbench | torchvision:NAME | timm:NAME | an installed plugin's name: `harness kinds`
    init: str = setting("scratch", unhashed=True)  # scratch | pretrain (a pretrain phase on other classes: [pretrain]) | a weights file (state dict; torchvision, timm, Lightning or harness checkpoint) | models:/NAME/VERSION, models:/m-ID, runs:/RUN_ID (a harness run's classifier); the key covers the weights' content, not this name
    mode: str = setting("train", choices=("train", "probe", "probe-then-train"))  # train: every weight (from pretrained weights: fine-tuning) | probe: backbone frozen, its features computed once and cached, the head alone trains (no augmentation) | probe-then-train: LP-FT (Kumar et al. 2022): the first half of the epochs a probe, then every weight
    backbone_lr: float = setting(1.0, gt=0.0, le=1.0)  # the backbone's learning rate as a factor of the head's (fine-tuning)
    width: int = setting(0, ge=0)  # the kind's width (simplecnn: first conv channels, 32; resnet18: 64; airbench: first block, 64); 0 = the kind's own
    epochs: int = setting(15, gt=0)  # passes over the training set
    steps: int = setting(0, ge=0)  # > 0: train for about this many steps instead (epochs and real_only_epochs are rescaled to it), so that data sizes get one budget
    batch_size: int = setting(64, gt=0)  # images per step
    lr: float = setting(1e-3, gt=0.0)  # learning rate (the peak one under a schedule)
    weight_decay: float = setting(0.0, ge=0.0)  # L2 penalty (Adam: added to the gradient; sgd: the classic one)
    optimizer: str = setting("adam", choices=("adam", "sgd"))  # adam (the reference) | sgd (Nesterov momentum 0.9)
    schedule: str = setting("constant", choices=("constant", "onecycle", "cosine"))  # constant (the reference) | onecycle (warm up over the first 25% of steps, then cosine down) | cosine (from lr down to 0)
    augmentation: str = setting("none", choices=AUGMENTATIONS)  # standard augmentation of both arms: none (the reference) | crop-flip (random crop, 4 px padding, + horizontal flip) | trivialaugment | randaugment | mixup | cutmix (each on top of crop-flip)
    seed: int = setting(0, ge=0, le=SEED_MAX, seed=True)  # weight init and batch order
    # How synthetic images enter training (the augmented arm; no effect on the baseline).
    budget: str = setting("epochs", choices=("epochs", "steps"))  # epochs: `epochs` passes over real+synthetic (the reference) | steps: the baseline's step count
    synthetic_share: float = setting(0.0, ge=0.0, lt=1.0)  # > 0: every batch = batch_size real images + this share of synthetic ones on top; an epoch = one pass over the real images
    synthetic_weight: float = setting(1.0, ge=0.0)  # loss weight of a synthetic sample relative to a real one
    real_only_epochs: int = setting(0, ge=0)  # the last N epochs train on real images only
    synthetic_use: str = setting("mix", choices=("mix", "pretrain"), added=True)  # mix: the synthetic images mixed into the real ones' training as the four fields above say (the reference) | pretrain: the network trains on the kept synthetic images alone first (phase synthetic_stage, the classifier's recipe), then on the real images alone with the baseline's recipe from those weights ("bridged transfer"; the four fields above are not read); the control mirrors both stages with replayed real images
    precision: str = setting("auto", choices=PRECISIONS, precision=True)  # fp32 | bf16 (training forward passes under bf16 autocast; weights, optimizer and evaluation fp32) | auto: bf16 where the device has bf16 units, resolved and logged per machine (harness/precision.py)


@dataclass(frozen=True)
class GeneratorConfig:
    kind: str = "gan"  # gan (the family configured by [gan]) | diffusion ([diffusion]) | oracle | replay | mixup | noise | folder | text2image | an installed plugin's name: `harness kinds`
    mixup_alpha: float = setting(1.0, gt=0.0)  # mixup: the mixing weight of a pair is drawn from Beta(alpha, alpha)
    folder: str = setting("", unhashed=True)  # folder: images made by any outside tool, <class>/* folders or one flat folder (not hashed: the key covers its content)


@dataclass(frozen=True)
class GenerateConfig:
    SWEEP: ClassVar[bool] = True
    n_samples: int = setting(1500, gt=0)  # synthetic images to generate
    checkpoint_epoch: int = setting(0, ge=-1, why="-1: best by quality")  # generator checkpoint to sample from; 0 = the last one; -1 = the lowest quality/fd one
    seed: int = setting(0, ge=0, le=SEED_MAX, seed=True)  # noise seed


@dataclass(frozen=True)
class PseudolabelConfig:
    SWEEP: ClassVar[bool] = True
    threshold: float = setting(0.95, ge=0.0, le=1.0)  # keep a synthetic image when the baseline's top probability >= this
    mode: str = setting("label", choices=("label", "filter", "none"))  # label: the baseline's class (reference) | filter: a conditional GAN's class, kept when the baseline agrees | none: a conditional GAN's class, unfiltered
    top_k_per_class: int = setting(0, ge=0)  # > 0: of the images passing the threshold, keep the k most confident per class
    soft_labels: bool = False  # train on the baseline's tempered probabilities instead of a hard class
    temperature: float = setting(1.0, gt=0.0)  # soft labels: p ** (1 / T), renormalized (T < 1 sharpens)


@dataclass(frozen=True)
class PretrainConfig:
    """classifier.init = pretrain: the classifier's network trained first, supervised, on classes disjoint
    from the study's (harness/phases/pretrain.py), and both arms started from it; one run serves every
    seed and cell that asks for the same backbone."""
    OPTIONAL: ClassVar[bool] = True
    classes: tuple[str, ...] = ()  # the classes to pretrain on; empty: every class of the data (or of data_dir) not in data.classes (CIFAR-10's reference study: the other 7)
    data_dir: str = setting("", unhashed=True)  # another tree to pretrain on (class folders, or train/ and test/ of them); empty: the study's data. Its images' digest is in the key, not this path
    n_per_class: int = setting(0, ge=0)  # training images per class; 0: all
    epochs: int = setting(15, gt=0)  # passes over them (with the classifier's optimizer, learning rate and augmentation)
    seed: int = setting(0, ge=0, le=SEED_MAX)  # weight init, draw and batch order (one backbone for every seed of a study)


@dataclass(frozen=True)
class QualityConfig:
    enabled: bool = False  # offline sample quality on gan checkpoints and generate runs
    n_samples: int = setting(1000, gt=0)  # generated images measured per gan checkpoint
    evaluator_per_class: int = setting(0, ge=0)  # real training images per class for the evaluator CNN; 0 = data.n_per_class
    evaluator_epochs: int = setting(15, gt=0)  # evaluator training epochs
    k: int = setting(3, gt=0)  # nearest neighbour for the precision/recall manifolds (Kynkaanniemi et al. 2019)
    cas: bool = True  # on generate runs: accuracy on real test images of a CNN trained on the synthetic images only
    precision: str = setting("auto", choices=PRECISIONS, precision=True)  # the evaluator's training: fp32 | bf16 | auto, as classifier.precision


@dataclass(frozen=True)
class ControlConfig:
    """The recipe-matched control arm (harness/phases/control.py): the synthetic arm's recipe with its
    synthetic slot filled by the real training images themselves, so that synthetic minus control is
    what the images add and control minus baseline what the recipe adds."""
    OPTIONAL: ClassVar[bool] = True  # out of the whole-config hash at its default: hashes made before it stay the same
    enabled: bool = True  # false: no control arm (one classifier arm less per pipeline); the headline is then synthetic minus baseline, recipe and images mixed, and every report says "recipe not controlled"


@dataclass(frozen=True)
class SeedsConfig:
    """Paired seeds: pipelines that differ only by their seed, compared pair by pair."""
    count: int = setting(1, gt=0, le=10_000, why="paired pipelines, each minutes of work")  # paired pipelines, seeds 0..N-1; more than 1 makes `harness run` compare N pairs
    share_generator: bool = False  # one GAN (trained on seed 0's images) serves every seed
    generators: int = setting(0, ge=0, le=10_000)  # grids: K generators per cell, seed s using generator s mod K (trained on seed s mod K's images); 0 = 1 with share_generator, else min(seeds, 3); kinds that do not train ignore it


@dataclass(frozen=True)
class Config:
    preset: str = "reference"  # name of the preset this config came from (not hashed)
    device: str = "auto"  # auto | cpu | cuda | cuda:N (not hashed: it names where, not what)
    data: DataConfig = field(default_factory=DataConfig)
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    pseudolabel: PseudolabelConfig = field(default_factory=PseudolabelConfig)
    quality: QualityConfig = field(default_factory=QualityConfig)
    seeds: SeedsConfig = field(default_factory=SeedsConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    control: ControlConfig = field(default_factory=ControlConfig)
    # The sections kinds declare in their own modules (`CONFIG`: [gan], [diffusion], [text2image], a
    # plugin's) that differ from their defaults, by name: `cfg.<kind>` reads one like the sections above;
    # `kind_sections` says which exist.
    kind_settings: tuple[tuple[str, typing.Any], ...] = ()

    def __getattr__(self, name: str):  # only for what is not a field: a kind's own section
        if name.startswith("_"):
            raise AttributeError(name)
        cls = kind_sections().get(name)
        if cls is None:
            raise AttributeError(f"Config has no section {name!r}")
        return dict(object.__getattribute__(self, "kind_settings")).get(name) or cls()


def _builtin_sections() -> dict[str, type]:
    return {name: typ for name, typ in typing.get_type_hints(Config).items() if dataclasses.is_dataclass(typ)}


def kind_sections() -> dict[str, type]:
    """The config sections kinds declare, by kind name: a kind module's `CONFIG`, a frozen dataclass of
    `setting(...)` fields like the sections above, built-in kinds' (harness/registry.py lists them) and
    installed plugins' alike (docs/own-generator.md). Loading them imports the kinds' modules."""
    return _kind_sections(tuple(sys.path))


@functools.lru_cache(maxsize=4)  # per sys.path (what the entry points are read from): config is made often
def _kind_sections(_path: tuple[str, ...]) -> dict[str, type]:
    from harness import registry
    fixed, out = _builtin_sections(), {}
    for name, module in registry.builtin_modules().items():
        cls = getattr(importlib.import_module(module), "CONFIG", None)
        if cls is not None:
            out[name] = cls
    for group in registry.GROUPS:
        for ep in importlib.metadata.entry_points(group=group):
            if ep.name in fixed or ep.name in out or not re.fullmatch(r"[a-z][a-z0-9_]*", ep.name):
                continue
            try:
                cls = getattr(ep.load(), "CONFIG", None)
                ok = dataclasses.is_dataclass(cls) and cls.__dataclass_params__.frozen and cls() is not None
            except Exception:  # the kind's own error is said where it is used (harness/registry.py)
                continue
            if ok:
                out[ep.name] = cls
    return out


def sections() -> dict[str, type]:
    """Section name -> its dataclass, in the config's order, kinds' own sections last."""
    return {**_builtin_sections(), **kind_sections()}


def with_sections(cfg: Config, new: dict[str, typing.Any]) -> Config:
    """The config with these sections (name -> dataclass instance) replaced, a kind's own too."""
    fixed = {k: v for k, v in new.items() if k in _builtin_sections()}
    own = {**dict(cfg.kind_settings), **{k: v for k, v in new.items() if k not in fixed}}
    own = tuple(sorted((k, v) for k, v in own.items() if v != type(v)()))  # defaults are implied
    return dataclasses.replace(cfg, **fixed, kind_settings=own)


def _added() -> list[tuple[str, str, object]]:
    """(section, field, default) of every field declared `added`, in one pass over the sections."""
    return [(name, f.name, f.default) for name, cls in sections().items() for f in dataclasses.fields(cls)
            if f.metadata.get("added")]


def fields_where(fact: str) -> tuple[str, ...]:
    """The `section.field`s whose declaration (`setting(...)`) states `fact` (seed, precision, unhashed)."""
    return tuple(f"{name}.{f.name}" for name, cls in sections().items() for f in dataclasses.fields(cls)
                 if f.metadata.get(fact))


def sweepable_sections() -> tuple[str, ...]:
    """Sections a sweep's trial may vary (declared SWEEP on the section): the others are read by the
    phases a sweep runs once for all its trials, a new kind's section among them until it says so."""
    return tuple(name for name, cls in sections().items() if getattr(cls, "SWEEP", False))


UNHASHED = {"preset", "device"}
# How synthetic images enter an arm's training: fields the baseline, which trains on the real images alone, never reads.
MIXING = ("classifier.budget", "classifier.synthetic_share", "classifier.synthetic_weight", "classifier.real_only_epochs")
SYNTHETIC_ONLY = MIXING + ("classifier.synthetic_use",)
# Out of every key: where, not what (a folder's path is not its content: the folder kind's key covers
# its pixels and labels), and speed-only switches tested to train the same GAN
# (tests/test_generators.py::test_speedups_train_the_same_gan), as `device` is: `unhashed` on the field.


def optional_sections() -> tuple[str, ...]:
    """Sections only some configs read (OPTIONAL on the section; a kind's own section unless it says
    OPTIONAL = False, as [gan], in every hash since the first version): left out of the whole-config hash
    while at their defaults, so that hashes made before the section existed (a sweep study's guard) stay
    the same, and installing a plugin changes no other config's hash."""
    own = kind_sections()
    return tuple(name for name, cls in sections().items() if getattr(cls, "OPTIONAL", name in own))


def to_dict(cfg) -> dict:
    """Section -> {field: value} (and the top-level fields), plugin kinds' sections as if built in."""
    d = dataclasses.asdict(cfg)
    del d["kind_settings"]
    return {**d, **{name: dataclasses.asdict(getattr(cfg, name)) for name in kind_sections()}}


def flat(cfg: Config) -> dict[str, str]:
    """`section.key -> str(value)`, the form MLflow params take."""
    out = {}
    for key, value in to_dict(cfg).items():
        if isinstance(value, dict):
            for sub, v in value.items():
                out[f"{key}.{sub}"] = _text(v)
        else:
            out[key] = str(value)
    return out


def _text(v) -> str:
    if isinstance(v, (list, tuple)):
        if v and isinstance(v[0], (list, tuple)):  # a table: name=value;name=value
            return ";".join(f"{k}={x}" for k, x in v)
        return ",".join(v)
    return str(v)


def flat_sections(cfg: Config, sections: typing.Iterable[str], ignores: typing.Iterable[str] = ()) -> dict[str, str]:
    """The `section.key` params of some sections (or single `section.field`s) only, less the fields
    in `ignores`: what a phase run's key covers."""
    sections = tuple(sections)
    prefixes, fields, ignores = tuple(f"{s}." for s in sections if "." not in s), set(sections), set(ignores)
    return {k: v for k, v in flat(cfg).items() if (k.startswith(prefixes) or k in fields) and k not in ignores}


def config_hash(cfg: Config, sections: typing.Iterable[str] | None = None, ignores: typing.Iterable[str] = ()) -> str:
    """A stable 12-hex-digit hash of the config (or of some sections, less the `section.field`s in
    `ignores`, which the phase does not read): same settings, same hash."""
    d = {k: v for k, v in to_dict(cfg).items() if k not in UNHASHED}
    for name in (*fields_where("unhashed"), *ignores):
        section, _, sub = name.partition(".")
        d[section].pop(sub, None)
    for section, name, default in _added():
        if section in d and d[section].get(name, default) == default:
            d[section].pop(name, None)
    if sections is not None:  # whole sections, or single fields as section.field
        chosen: dict = {}
        for s in sections:
            section, _, sub = s.partition(".")
            if sub:
                if sub in d[section]:  # an unhashed field (a folder's path) is in no key, named or not
                    chosen.setdefault(section, {})[sub] = d[section][sub]
            else:
                chosen[section] = d[section]
        d = chosen
    else:
        defaults = to_dict(Config())
        optional = optional_sections()
        d = {k: v for k, v in d.items() if k not in optional or v != defaults[k]}
    blob = json.dumps(d, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def _fields(cls) -> dict[str, type]:
    """A dataclass's settings and their types: its fields, not its ClassVars (SWEEP, OPTIONAL)."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _top() -> dict[str, type]:
    """The config's top-level names and types: its fields and sections, kinds' own too."""
    return {**{k: v for k, v in _fields(Config).items() if k != "kind_settings"}, **kind_sections()}


def valid_keys() -> list[str]:
    keys = []
    for name, typ in _top().items():
        if dataclasses.is_dataclass(typ):
            keys += [f"{name}.{sub}" for sub in _fields(typ)]
        else:
            keys.append(name)
    return keys


def flat_values(cfg: Config) -> dict:
    """`section.key -> value` (typed, unlike `flat`)."""
    return _flat_values(cfg)


def _flat_values(cfg: Config) -> dict:
    out = {}
    for name in _top():
        value = getattr(cfg, name)
        if dataclasses.is_dataclass(value):
            for sub in _fields(type(value)):
                out[f"{name}.{sub}"] = getattr(value, sub)
        else:
            out[name] = value
    return out
