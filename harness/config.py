"""One frozen config for the whole study, presets from TOML, `--set section.key=value` overrides.

The defaults *are* the reference study (3 CIFAR-10 classes, 1000 images each, SimpleCNN, WGAN-GP,
1500 synthetic images, confidence >= 0.95). A preset file only lists what it changes.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.metadata
import json
import math
import re
import sys
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from harness.errors import HarnessError

# Presets and sweep specs ship inside the package (a wheel has them); a user's own ./experiments/X.toml
# or any .toml path is found first.
EXPERIMENTS_DIR = Path(__file__).resolve().parent / "experiments"

SEED_MAX = 2 ** 32 - 1  # numpy's and torch's seeds: what every seed field takes
PRECISIONS = ("fp32", "bf16", "auto")  # harness/precision.py resolves auto per machine
AUGMENTATIONS = ("none", "crop-flip", "trivialaugment", "randaugment", "mixup", "cutmix")  # harness/train.py: augment


def setting(default, *, gt=None, ge=None, lt=None, le=None, choices=None, why: str = "", seed: bool = False,
            precision: bool = False, unhashed: bool = False):
    """A config field with its facts beside it: its range (gt/ge/lt/le) or choices, checked when a
    config is made (`check_fields`); `seed`: set to the seed of each pipeline of a multi-seed study
    (`seed_fields`); `precision`: an fp32|bf16|auto arithmetic setting that commands resolve per
    machine (`precision_fields`); `unhashed`: in no key (where, not what; or a speed-only switch)."""
    meta = {"gt": gt, "ge": ge, "lt": lt, "le": le, "choices": choices, "why": why, "seed": seed,
            "precision": precision, "unhashed": unhashed}
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
    precision: str = setting("auto", choices=PRECISIONS, precision=True)  # fp32 | bf16 (training forward passes under bf16 autocast; weights, optimizer and evaluation fp32) | auto: bf16 where the device has bf16 units, resolved and logged per machine (harness/precision.py)


@dataclass(frozen=True)
class GeneratorConfig:
    kind: str = "gan"  # gan (the family configured by [gan]) | diffusion ([diffusion]) | oracle | replay | mixup | noise | folder | text2image | an installed plugin's name: `harness kinds`
    mixup_alpha: float = setting(1.0, gt=0.0)  # mixup: the mixing weight of a pair is drawn from Beta(alpha, alpha)
    folder: str = setting("", unhashed=True)  # folder: images made by any outside tool, <class>/* folders or one flat folder (not hashed: the key covers its content)


@dataclass(frozen=True)
class GanConfig:
    epochs: int = setting(2500, gt=0)  # passes of the critic over the real set; 3000 images / 64 / 5 = ~9.4 generator iters each
    iterations: int = setting(0, ge=0)  # > 0: train for exactly this many generator iterations instead (gan.epochs is then unused), so that data sizes get one GAN budget
    width: int = setting(64, gt=0)  # DCGAN base channel count
    latent_dim: int = setting(128, gt=0)  # size of the noise vector
    batch_size: int = setting(64, gt=0)  # images per critic step
    lr: float = setting(1e-4, gt=0.0)  # Adam learning rate, generator and critic (Gulrajani et al. 2017)
    beta1: float = setting(0.0, ge=0.0, lt=1.0, why="an Adam beta")  # Adam beta1 (Gulrajani et al. 2017)
    beta2: float = setting(0.9, ge=0.0, lt=1.0, why="an Adam beta")  # Adam beta2 (Gulrajani et al. 2017)
    critic_steps: int = setting(5, gt=0)  # critic updates per generator update
    gp_weight: float = setting(10.0, ge=0.0)  # gradient-penalty weight lambda
    gp_fraction: float = setting(1.0, ge=0.0, le=1.0)  # share of each batch the gradient penalty is computed on (cheaper below 1)
    loss: str = setting("wgan-gp", choices=("wgan-gp", "hinge"))  # wgan-gp (the reference) | hinge (with spectral_norm: SNGAN, Miyato et al. 2018)
    spectral_norm: bool = False  # spectral normalization on every critic layer
    lr_d: float = setting(0.0, ge=0.0)  # critic learning rate; 0 = gan.lr (two-timescale: e.g. lr 1e-4, lr_d 4e-4)
    conditional: str = setting("none", choices=("none", "projection", "acgan"))  # none | projection (Miyato & Koyama 2018) | acgan (AC-WGAN-GP auxiliary classifier)
    ac_weight: float = setting(1.0, ge=0.0)  # acgan: weight of the auxiliary classification loss
    diffaugment: str = ""  # DiffAugment policy on real and fake critic inputs, e.g. color,translation,cutout
    # The three below: equal training in eager mode (tests/test_generators.py); on the cpu preset here
    # channels_last alone 1.16x, all three 1.29x generator iterations/s (benchmarks/bench_gan.py).
    one_pass: bool = setting(True, unhashed=True)  # the critic scores real and fake images as one batch (one forward and backward, not two)
    channels_last: bool = setting(True, unhashed=True)  # both networks and their inputs in channels-last memory layout
    fused_adam: bool = setting(True, unhashed=True)  # Adam's fused implementation (one kernel per step over all parameters)
    compile: bool = False  # torch.compile the generator (and the critic when gp_weight = 0); costs compile time up front; on CUDA with CUDA graphs (mode reduce-overhead)
    precision: str = setting("auto", choices=PRECISIONS, precision=True)  # fp32 | bf16: the training step's forward passes under bf16 autocast (weights, optimizer state and the EMA stay fp32) | auto: bf16 where the device has bf16 units (docs/precision.md: the same FD within the seed-to-seed spread)
    ema: float = setting(0.0, ge=0.0, lt=1.0)  # > 0: sample from an exponential moving average of the generator weights (e.g. 0.999)
    sample_every: int = setting(100, gt=0)  # epochs between sample grids
    checkpoint_every: int = setting(250, gt=0)  # epochs between generator checkpoints
    seed: int = setting(0, ge=0, le=SEED_MAX, seed=True)  # weight init, noise and batch order


@dataclass(frozen=True)
class DiffusionConfig:
    """generator.kind = diffusion: a class-conditional denoising diffusion model (diffusers' UNet2DModel)
    trained from scratch on the training images (pip install -e '.[diffusion]')."""
    OPTIONAL: ClassVar[bool] = True  # read by its kind only: out of the whole-config hash while at its defaults
    iterations: int = setting(4000, ge=0)  # optimizer steps (the budget, the same for every data size); 0 = diffusion.epochs
    epochs: int = setting(100, gt=0)  # passes over the training images, when iterations = 0
    width: int = setting(64, gt=0)  # channels of the UNet's first level (then 2x, 2x; 64 px adds a level)
    layers_per_block: int = setting(2, gt=0)  # ResNet blocks per UNet level
    attention: bool = True  # self-attention at 16 px
    batch_size: int = setting(64, gt=0)
    lr: float = setting(2e-4, gt=0.0)  # AdamW, after a linear warm-up
    warmup: int = setting(200, ge=0)  # steps of linear learning-rate warm-up
    weight_decay: float = setting(0.0, ge=0.0)
    beta_schedule: str = setting("linear", choices=("linear", "squaredcos_cap_v2"))  # linear | squaredcos_cap_v2 (DDPMScheduler, 1000 steps)
    prediction: str = setting("epsilon", choices=("epsilon", "v_prediction"))  # epsilon | v_prediction: what the UNet learns to predict
    label_dropout: float = setting(0.1, ge=0.0, lt=1.0)  # share of training images shown without their class (classifier-free guidance)
    guidance: float = setting(0.0, ge=0.0)  # classifier-free guidance at sampling: cond + guidance * (cond - uncond); 0 = plain conditional
    sample_steps: int = setting(50, gt=0)  # DDIM steps per image at generate time
    flip: bool = True  # random horizontal flips of the training images
    ema: float = setting(0.999, ge=0.0, lt=1.0)  # exponential moving average of the weights, which sampling uses (0 = the live weights)
    precision: str = setting("auto", choices=PRECISIONS, precision=True)  # fp32 | bf16 (the training forward pass under autocast) | auto: bf16 where the device has bf16 units
    sample_every: int = setting(10, gt=0)  # epochs between sample grids
    checkpoint_every: int = setting(10, gt=0)  # epochs between checkpoints
    seed: int = setting(0, ge=0, le=SEED_MAX, seed=True)  # weight init, noise, timesteps, batch order


@dataclass(frozen=True)
class Text2ImageConfig:
    """generator.kind = text2image: a pretrained diffusers pipeline (pip install -e '.[diffusion]')."""
    OPTIONAL: ClassVar[bool] = True
    SWEEP: ClassVar[bool] = True  # sampled per trial (no generator phase)
    model: str = ""  # a hub id (e.g. stable-diffusion-v1-5/stable-diffusion-v1-5) or a local folder written by save_pretrained
    revision: str = "main"  # hub branch, tag or commit; the key covers the commit it resolves to
    prompt: str = "a photo of a {class}"  # template; {class} is the class name
    prompts: tuple[tuple[str, str], ...] = ()  # per-class prompts that replace the template: a [text2image.prompts] table, or --set text2image.prompts="bird=a small bird;airplane=a jet"
    negative_prompt: str = ""
    steps: int = setting(30, gt=0)  # denoising steps
    guidance: float = setting(7.5, ge=0.0, why="1 or less: no classifier-free guidance")  # classifier-free guidance scale (1 = none)
    batch_size: int = setting(8, gt=0)  # images per pipeline call (part of the key: batches are computed whole)
    dtype: str = setting("fp32", choices=("fp32", "fp16", "bf16"))  # fp32 | fp16 (CUDA only) | bf16
    mode: str = setting("txt2img", choices=("txt2img", "img2img"))  # txt2img | img2img: start from a real training image of the class (DA-Fusion, Real Guidance)
    strength: float = setting(0.5, gt=0.0, le=1.0)  # img2img: how far from the real image (0 = unchanged, 1 = pure noise)
    resolution: int = 0  # pixels per side the pipeline draws at; 0 = the model's own (512 for SD 1.5); brought to data.image_size after


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
    gan: GanConfig = field(default_factory=GanConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    text2image: Text2ImageConfig = field(default_factory=Text2ImageConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    pseudolabel: PseudolabelConfig = field(default_factory=PseudolabelConfig)
    quality: QualityConfig = field(default_factory=QualityConfig)
    seeds: SeedsConfig = field(default_factory=SeedsConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    control: ControlConfig = field(default_factory=ControlConfig)
    # The sections of installed plugin kinds that differ from their defaults, by name (`cfg.<kind>` reads
    # them like a built-in section; `plugin_sections` says which exist).
    plugins: tuple[tuple[str, typing.Any], ...] = ()

    def __getattr__(self, name: str):  # only for what is not a field: a plugin kind's section
        if name.startswith("_"):
            raise AttributeError(name)
        cls = plugin_sections().get(name)
        if cls is None:
            raise AttributeError(f"Config has no section {name!r}")
        return dict(object.__getattribute__(self, "plugins")).get(name) or cls()


def _builtin_sections() -> dict[str, type]:
    return {name: typ for name, typ in typing.get_type_hints(Config).items() if dataclasses.is_dataclass(typ)}


def plugin_sections() -> dict[str, type]:
    """The config sections installed plugin kinds declare, by kind name: a plugin module's `CONFIG`, a frozen
    dataclass of `setting(...)` fields like the sections above (docs/own-generator.md)."""
    return _plugin_sections(tuple(sys.path))


@functools.lru_cache(maxsize=4)  # per sys.path (what the entry points are read from): config is made often
def _plugin_sections(_path: tuple[str, ...]) -> dict[str, type]:
    from harness.registry import GROUPS
    builtin, out = _builtin_sections(), {}
    for group in GROUPS:
        for ep in importlib.metadata.entry_points(group=group):
            if ep.name in builtin or ep.name in out or not re.fullmatch(r"[a-z][a-z0-9_]*", ep.name):
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
    """Section name -> its dataclass, in the config's order, installed plugin kinds' sections last."""
    return {**_builtin_sections(), **plugin_sections()}


def with_sections(cfg: Config, new: dict[str, typing.Any]) -> Config:
    """The config with these sections (name -> dataclass instance) replaced, a plugin's too."""
    builtin = {k: v for k, v in new.items() if k in _builtin_sections()}
    plugins = {**dict(cfg.plugins), **{k: v for k, v in new.items() if k not in builtin}}
    plugins = tuple(sorted((k, v) for k, v in plugins.items() if v != type(v)()))  # defaults are implied
    return dataclasses.replace(cfg, **builtin, plugins=plugins)


def fields_where(fact: str) -> tuple[str, ...]:
    """The `section.field`s whose declaration (`setting(...)`) states `fact` (seed, precision, unhashed)."""
    return tuple(f"{name}.{f.name}" for name, cls in sections().items() for f in dataclasses.fields(cls)
                 if f.metadata.get(fact))


def sweepable_sections() -> tuple[str, ...]:
    """Sections a sweep's trial may vary (declared SWEEP on the section): the others are read by the
    phases a sweep runs once for all its trials, a new kind's section among them until it says so."""
    return tuple(name for name, cls in sections().items() if getattr(cls, "SWEEP", False))


UNHASHED = {"preset", "device"}
# Out of every key: where, not what (a folder's path is not its content: the folder kind's key covers
# its pixels and labels), and speed-only switches tested to train the same GAN
# (tests/test_generators.py::test_speedups_train_the_same_gan), as `device` is: `unhashed` on the field.
UNHASHED_FIELDS = frozenset(fields_where("unhashed"))  # the built-in sections' (a plugin's: fields_where)


def optional_sections() -> tuple[str, ...]:
    """Sections only some kinds read (OPTIONAL on the section, and every plugin kind's): left out of the
    whole-config hash while at their defaults, so that hashes made before the section existed (a sweep
    study's guard) stay the same, and installing a plugin changes no other config's hash."""
    return tuple(name for name, cls in sections().items() if getattr(cls, "OPTIONAL", False)) + tuple(plugin_sections())


def to_dict(cfg) -> dict:
    """Section -> {field: value} (and the top-level fields), plugin kinds' sections as if built in."""
    d = dataclasses.asdict(cfg)
    del d["plugins"]
    return {**d, **{name: dataclasses.asdict(getattr(cfg, name)) for name in plugin_sections()}}


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
    if sections is not None:  # whole sections, or single fields as section.field
        chosen: dict = {}
        for s in sections:
            section, _, sub = s.partition(".")
            if sub:
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


# ---------------------------------------------------------------------------------------------
# Validation, presets and overrides

def _fields(cls) -> dict[str, type]:
    """A dataclass's settings and their types: its fields, not its ClassVars (SWEEP, OPTIONAL)."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _top() -> dict[str, type]:
    """The config's top-level names and types: its fields and sections, a plugin kind's too."""
    return {**{k: v for k, v in _fields(Config).items() if k != "plugins"}, **plugin_sections()}


def valid_keys() -> list[str]:
    keys = []
    for name, typ in _top().items():
        if dataclasses.is_dataclass(typ):
            keys += [f"{name}.{sub}" for sub in _fields(typ)]
        else:
            keys.append(name)
    return keys


def _coerce(key: str, typ, value):
    """Check a TOML value (or parse a --set string) against the field's declared type."""
    if key == "data.n_per_class" and isinstance(value, str) and value.strip().lower() == "all":
        return 0
    want = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
    if typ == tuple[tuple[str, str], ...]:
        return _table(key, value)
    if typing.get_origin(typ) is tuple:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value) or not value:
            raise HarnessError(f"{key} must be a non-empty list of names (a,b,c), got {value!r}")
        return tuple(value)
    if isinstance(value, str) and typ is not str:
        text = value.strip().lower()
        try:
            if typ is bool:
                if text not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError
                return text in ("true", "1", "yes")
            return typ(text)
        except ValueError:
            raise HarnessError(f"{key} must be {want[typ]}, got {value!r}") from None
    if typ is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if type(value) is not typ:
        raise HarnessError(f"{key} must be {want[typ]}, got {value!r}")
    return value


def _table(key: str, value) -> tuple[tuple[str, str], ...]:
    """A name -> text table: a TOML table, or `name=text;name=text` from --set (texts may hold commas)."""
    if isinstance(value, str):
        items = [part.partition("=") for part in value.split(";") if part.strip()]
        if any(not sep or not k.strip() for k, sep, _ in items):
            raise HarnessError(f"{key} takes name=text items separated by ';', got {value!r}")
        value = {k.strip(): v.strip() for k, _, v in items}
    if isinstance(value, (list, tuple)) and all(isinstance(p, (list, tuple)) and len(p) == 2 for p in value):
        value = dict(value)
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise HarnessError(f"{key} must be a table of name = \"text\" (a [{key}] table in TOML), got {value!r}")
    return tuple(sorted(value.items()))


def _bounds(meta: dict) -> str:
    """A field's range in words: "> 0", ">= 0", "in [0, 1)"."""
    num = lambda v: str(v) if isinstance(v, int) else f"{v:g}"  # noqa: E731 (4294967295, not 4.29497e+09)
    lo = ("(", meta["gt"]) if "gt" in meta else ("[", meta["ge"]) if "ge" in meta else None
    hi = (")", meta["lt"]) if "lt" in meta else ("]", meta["le"]) if "le" in meta else None
    if lo and hi:
        return f"in {lo[0]}{num(lo[1])}, {num(hi[1])}{hi[0]}"
    if lo:
        return f"{'>' if lo[0] == '(' else '>='} {num(lo[1])}"
    return f"{'<' if hi[0] == ')' else '<='} {num(hi[1])}"


def _in_range(value, meta: dict) -> bool:
    return not (("gt" in meta and not value > meta["gt"]) or ("ge" in meta and not value >= meta["ge"])
                or ("lt" in meta and not value < meta["lt"]) or ("le" in meta and not value <= meta["le"]))


def check_fields(cfg: Config) -> None:
    """Every field against what its declaration states: finite numbers, its range, its choices."""
    for name, cls in sections().items():
        section = getattr(cfg, name)
        for f in dataclasses.fields(cls):
            key, value, meta = f"{name}.{f.name}", getattr(section, f.name), f.metadata
            if isinstance(value, float) and not math.isfinite(value):  # inf and nan parse as floats; no setting means either
                raise HarnessError(f"{key} must be a finite number, got {value}")
            why = f" ({meta['why']})" if meta.get("why") else ""
            if "choices" in meta and value not in meta["choices"]:
                raise HarnessError(f"{key} must be one of {', '.join(map(str, meta['choices']))}, got {value!r}{why}")
            if not _in_range(value, meta):
                raise HarnessError(f"{key} must be {_bounds(meta)}{why}, got {value}")


def _check_ranges(cfg: Config) -> None:
    """The declared ranges, then the rules that tie fields together."""
    check_fields(cfg)
    if cfg.classifier.real_only_epochs > cfg.classifier.epochs:
        raise HarnessError(f"classifier.real_only_epochs ({cfg.classifier.real_only_epochs}) exceeds classifier.epochs "
                           f"({cfg.classifier.epochs})")
    least = min_quality_images(cfg.quality.k)
    if cfg.quality.n_samples < least:
        raise HarnessError(f"quality.n_samples ({cfg.quality.n_samples}) is too few images to measure: precision and "
                           f"recall need more than quality.k ({cfg.quality.k}) neighbours and FD/KID a spread; "
                           f"use at least {least}")
    from harness.diffaugment import POLICIES
    unknown = [p for p in cfg.gan.diffaugment.split(",") if p and p not in POLICIES]
    if unknown:
        raise HarnessError(f"gan.diffaugment: unknown policy {', '.join(unknown)}; choose from {', '.join(POLICIES)}")
    if cfg.generate.checkpoint_epoch == -1 and not cfg.quality.enabled:
        raise HarnessError("generate.checkpoint_epoch=-1 (the best checkpoint by quality) needs quality.enabled=true")
    overlap = sorted(set(cfg.pretrain.classes) & set(cfg.data.classes))
    if overlap:
        raise HarnessError(f"pretrain.classes overlaps data.classes ({', '.join(overlap)}): pretraining on the study's "
                           "own classes leaks its task into both arms; pretrain on other classes")
    if cfg.data.classes != ("all",) and (len(set(cfg.data.classes)) != len(cfg.data.classes) or len(cfg.data.classes) < 2):
        raise HarnessError(f"data.classes must name at least 2 distinct classes (or be all), got {list(cfg.data.classes)}")
    if cfg.diffusion.guidance > 0 and cfg.diffusion.label_dropout == 0:
        raise HarnessError(f"diffusion.guidance={cfg.diffusion.guidance} needs a model that also learned without its "
                           "class: set diffusion.label_dropout > 0 (e.g. 0.1)")
    if cfg.text2image.resolution < 0 or cfg.text2image.resolution % 8:
        raise HarnessError(f"text2image.resolution must be 0 (the model's own) or a positive multiple of 8, got {cfg.text2image.resolution}")
    if cfg.data.source and not cfg.data.source.startswith("torchvision:"):
        raise HarnessError(f"data.source must be empty (use --data-dir) or torchvision:NAME, got {cfg.data.source!r}")


def set_keys(overrides: typing.Sequence[str]) -> list[str]:
    """The keys a user's --set overrides name."""
    return [item.partition("=")[0].strip() for chunk in overrides for item in _items(chunk)]


def ignored(cfg: Config, overrides: typing.Sequence[str] = ()) -> list[str]:
    """What the user set with --set that nothing under this config reads, in words (commands print each as
    a `note:` line): a plugin kind's section while another kind runs (a phase's own: its module's
    `unused_settings`, e.g. phases/pretrain.py). A preset's own sections are not said: a preset sizes every phase,
    whether a command runs it or not."""
    keys = set_keys(overrides)
    out = []
    for name in plugin_sections():
        mine = [k for k in keys if k.startswith(f"{name}.")]
        if mine and name not in (cfg.classifier.kind, cfg.generator.kind):
            out.append(f"{', '.join(mine)} ignored: [{name}] belongs to the {name} kind, and this config has "
                       f"classifier.kind={cfg.classifier.kind}, generator.kind={cfg.generator.kind}")
    return out


def min_quality_images(k: int) -> int:
    """The fewest images FD, KID and k-NN precision/recall are measured on: k + 1 for the k-th
    neighbour, and 10 so that a mean and covariance are more than a couple of points."""
    return max(k + 1, 10)


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


# Names of 0.1 that now say one thing each ("study" is the Optuna study, "gan" the GAN kind):
# accepted for one release, with a line naming the new one.
RENAMED = {"study.seeds": "seeds.count", "study.share_gan": "seeds.share_generator",
           "study.generators": "seeds.generators"}


def renamed(key: str) -> str:
    """The current name of a config key; an old one is said once per use (a FutureWarning, which the
    CLI prints as one `Deprecated:` line)."""
    if key in RENAMED:
        import warnings

        from harness import REMOVED_IN
        warnings.warn(f"{key} is now {RENAMED[key]}; the old name works until harness {REMOVED_IN}", FutureWarning,
                      stacklevel=3)
        return RENAMED[key]
    return key


def apply(cfg: Config, updates: dict[str, object]) -> Config:
    """Return a new Config with `section.key -> value` updates, each checked against its type."""
    sections: dict[str, dict] = {}
    top: dict[str, object] = {}
    hints = _top()
    updates = {renamed(key): value for key, value in updates.items()}
    for key, value in updates.items():
        section, _, sub = key.partition(".")
        typ = hints.get(section)
        if typ is None or (sub and not dataclasses.is_dataclass(typ)) or (not sub and dataclasses.is_dataclass(typ)):
            raise HarnessError(f"unknown config key {key!r}; valid keys: {', '.join(valid_keys())}")
        if sub:
            sub_hints = _fields(typ)
            if sub not in sub_hints:
                raise HarnessError(f"unknown config key {key!r}; valid keys: {', '.join(valid_keys())}")
            default = next(f.default for f in dataclasses.fields(typ) if f.name == sub)
            if default == () and value in ("", [], ()):  # a list whose empty default means something (pretrain.classes)
                sections.setdefault(section, {})[sub] = ()
                continue
            sections.setdefault(section, {})[sub] = _coerce(key, sub_hints[sub], value)
        else:
            top[section] = _coerce(key, typ, value)
    replaced = {name: dataclasses.replace(getattr(cfg, name), **subs) for name, subs in sections.items()}
    new = with_sections(dataclasses.replace(cfg, **top), replaced)
    _check_ranges(new)
    return new


def available_presets() -> list[str]:
    return sorted(p.stem for p in EXPERIMENTS_DIR.glob("*.toml") if not p.stem.startswith("sweep"))


def preset_path(name_or_path: str) -> Path:
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        if path.is_dir():
            raise HarnessError(f"preset {path} is a folder; give a preset name or a .toml file")
        if not path.is_file():
            raise HarnessError(f"preset file {path} does not exist")
        return path
    for base in (Path.cwd() / "experiments", EXPERIMENTS_DIR):
        candidate = base / f"{name_or_path}.toml"
        if candidate.is_file():
            return candidate
    raise HarnessError(f"unknown preset {name_or_path!r}; available: {', '.join(available_presets())} "
                       "(or give a path to a .toml file)")


def _items(chunk: str) -> list[str]:
    return [part for part in re.split(r"\s+(?=[A-Za-z_]\w*(?:\.\w+)?=)", chunk.strip()) if part]


def load(preset: str = "reference", overrides: typing.Sequence[str] = ()) -> Config:
    """Defaults <- preset file <- `--set section.key=value` overrides, validated at each step."""
    path = preset_path(preset)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise HarnessError(f"preset {path} is not valid TOML: {e}") from None
    except UnicodeDecodeError:
        raise HarnessError(f"preset {path} is not a text file (TOML is UTF-8 text)") from None
    updates: dict[str, object] = {}
    unknown = [key for key, value in data.items() if isinstance(value, dict) and key not in sections()
               and not any(old.startswith(f"{key}.") for old in RENAMED)]
    if unknown:  # an empty [baseline] table would otherwise say nothing and change nothing
        raise HarnessError(f"preset {path}: unknown section [{unknown[0]}]; sections: {', '.join(sections())}")
    for key, value in data.items():
        if isinstance(value, dict):
            updates.update({f"{key}.{sub}": v for sub, v in value.items()})
        else:
            updates[key] = value
    updates.setdefault("preset", path.stem)
    cfg = apply(Config(), updates)
    parsed = {}
    # One --set may carry several space-separated items (MLproject passes them as one string); a
    # value may hold spaces (a prompt), so a chunk splits only before a space-led `section.key=`.
    for item in (part for chunk in overrides for part in _items(chunk)):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise HarnessError(f"--set takes section.key=value, got {item!r}")
        parsed[key.strip()] = value
    return apply(cfg, parsed) if parsed else cfg
