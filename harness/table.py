"""The phase table: each phase declared once (name, config sections it reads, upstream phases, data
splits, when it runs), in the order phases run. The runner (harness/runner/) walks it; the phase
modules (harness/phases/) compute. A new phase is one module and one row here.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from types import ModuleType
from typing import Callable

from harness import config
from harness.config import Config
from harness.phases import (baseline, compare, control, control_stage, evaluator, generate, generator, generator_pretrain,
                            pretrain, pseudolabel, synthetic, synthetic_stage)

# The table imports no torch or MLflow at import time, so that the CLI builds its commands from it
# and `harness --help` stays instant: the phase modules above load on their first use
# (harness/phases/__init__.py), generator kinds when chosen.


def _kind(cfg: Config):
    from harness import generators
    return generators.get(cfg.generator.kind)


def _quality(cfg: Config) -> bool:
    return cfg.quality.enabled


def _trains(cfg: Config) -> bool:
    return _kind(cfg).TRAINS


def _own(kind: str) -> tuple[str, ...]:
    """A kind's own config section (its module's CONFIG, named after it), when it declares one."""
    return (kind,) if kind in config.kind_sections() else ()


def _kind_sections(cfg: Config) -> tuple[str, ...]:
    return _kind(cfg).SECTIONS + tuple(s for s in _own(cfg.generator.kind) if s not in _kind(cfg).SECTIONS)


def _generator_sections(cfg: Config) -> tuple[str, ...]:
    return ("data", "generator") + _kind_sections(cfg)


def _generate_data(cfg: Config) -> tuple[str, ...]:
    from harness import generators
    return () if _trains(cfg) else generators.data(cfg)


def _generate_sections(cfg: Config) -> tuple[str, ...]:
    # A kind that trains is configured in the generator phase, whose key this one consumes, less the
    # settings it reads when sampling only (diffusion.sample_steps): those are this phase's.
    from harness import generators
    return ("data", "generator", "generate") + (generators.sampling(cfg) if _trains(cfg) else _kind_sections(cfg))


def _unread_generator_fields(cfg: Config) -> tuple[str, ...]:
    """The [generator] fields besides `kind` that the chosen kind does not read: a kind names those it
    reads among its SECTIONS (mixup: generator.mixup_alpha)."""
    read = set(_kind(cfg).SECTIONS)
    return tuple(k for k in (f"generator.{f.name}" for f in dataclasses.fields(config.GeneratorConfig))
                 if k != "generator.kind" and k not in read)


def _generator_ignores(cfg: Config) -> tuple[str, ...]:
    from harness import generators
    return _unread_generator_fields(cfg) + ("quality.cas", "quality.evaluator_per_class", "quality.evaluator_epochs",
                                            "quality.precision") + generators.sampling(cfg)


# Sample-quality fields a phase computes nothing from: the evaluator's own settings reach the
# generator phases through the evaluator's key, and CAS is the generate phase's alone.
_NOT_EVALUATOR = ("quality.enabled", "quality.n_samples", "quality.k", "quality.cas")


def _staged(cfg: Config) -> bool:
    return cfg.classifier.synthetic_use == "pretrain"


def _arm_ignores(cfg: Config) -> tuple[str, ...]:
    """An arm under synthetic_use=pretrain trains its slot alone, then the real images alone: nothing mixes."""
    return config.MIXING if _staged(cfg) else ()


def _controls(cfg: Config) -> bool:
    return cfg.control.enabled


def _pretrains(cfg: Config) -> bool:
    from harness.classifiers import weights
    return weights.parse(cfg.classifier.init).source == "pretrain"


def _pretrain_data(cfg: Config):
    from harness.errors import HarnessError
    from harness.phases import pretrain
    if not cfg.pretrain.classes:
        raise HarnessError("classifier.init=pretrain needs pretrain.classes (commands fill in every class of the data "
                           "that is not in data.classes)")
    return pretrain.data_config(cfg)


# What the pretrain phase reads of the classifier: its network and how it trains, not the arms' mixing.
_PRETRAIN_READS = ("pretrain", "data.source", "data.image_size", "data.channels", "classifier.kind",
                   "classifier.width", "classifier.batch_size", "classifier.lr", "classifier.weight_decay",
                   "classifier.optimizer", "classifier.schedule", "classifier.augmentation", "classifier.precision")


def _pretrain_dir(cfg: Config) -> str | None:
    return cfg.pretrain.data_dir or None


def _generator_pretrains(cfg: Config) -> bool:
    from harness import generators
    return generators.pretrains(cfg)


def _generator_pretrain_data(cfg: Config):
    from harness.phases import pretrain
    return pretrain.data_config(cfg)


def _generator_pretrain_sections(cfg: Config) -> tuple[str, ...]:
    # The pretraining draw ([pretrain], at the study's image size and channels) and the kind's settings.
    return ("pretrain", "data.source", "data.image_size", "data.channels", "data.test_fraction") + _kind_sections(cfg)


def _generator_pretrain_ignores(cfg: Config) -> tuple[str, ...]:
    return ("pretrain.epochs",) + tuple(getattr(_kind(cfg), "PRETRAIN_UNREAD", ())) + _unread_generator_fields(cfg)


def _evaluator_data(cfg: Config):
    from harness import quality
    return quality.evaluator_data(cfg)


@dataclass(frozen=True)
class Phase:
    """One row of the table. `sections`, `upstream` and `data` may depend on the config (callables)."""
    name: str
    module: ModuleType  # harness.phases.X: compute(ctx, cfg, inputs, **options), load(ctx, cfg, run), summary(result, cfg), check, before, keyed_on
    sections: tuple | Callable  # config sections (or single section.field) its key covers (and its run logs)...
    ignores: tuple | Callable = ()  # ...less these section.field it does not read (tests/test_pipeline.py perturbs every other field)
    upstream: tuple = ()  # phases whose outputs it consumes
    data: tuple | Callable = ()  # splits of its data draw whose content its key covers
    when: Callable[[Config], bool] | None = None  # runs only under configs where this holds...
    needs: Callable[[Config], str] | None = None  # ...said in words for a config where it does not
    quality: bool = False  # with quality.enabled it also reads [quality] and consumes the evaluator
    long: bool = False  # trains for minutes: its run samples system metrics (CPU, memory, GPU)
    data_of: Callable | None = None  # cfg -> the DataConfig of the draw it reads [default: cfg.data]
    data_dir_of: Callable | None = None  # cfg -> the tree it draws from where not --data-dir (or None)
    kind_code: bool = False  # its code is also the generator kind's module (a change there is a new key)
    classifier_code: bool = False  # ...and the classifier kind's module (it builds or loads that network)
    logs_inputs: tuple = ()  # upstream phases whose images it records as an MLflow dataset input
    sized: tuple = ()  # upstream phases it reads only the size of: not their keys (its module's keyed_on says the size)
    command: bool = True  # a `harness NAME` command of its own (else it runs where it is needed)
    resumable: bool = False  # an interrupted run continues from its checkpoint (--resume)
    in_memory: bool = False  # its module's draft(ctx, cfg, inputs) computes it without a run or arrays (sweep trials)
    help: str = ""

    def ignored(self, cfg: Config) -> tuple[str, ...]:
        return tuple(self.ignores(cfg) if callable(self.ignores) else self.ignores)

    def reads(self, cfg: Config) -> tuple[tuple, tuple, tuple]:
        sections = self.sections(cfg) if callable(self.sections) else self.sections
        data = self.data(cfg) if callable(self.data) else self.data
        upstream = tuple(u for u in self.upstream if PHASES[u].runs(cfg))
        if self.quality and cfg.quality.enabled:
            sections, upstream = sections + ("quality",), upstream + ("evaluator",)
        if self.classifier_code:
            sections = tuple(sections) + _own(cfg.classifier.kind)
        return sections, upstream, data

    def runs(self, cfg: Config) -> bool:
        return self.when is None or self.when(cfg)

    def code(self, cfg: Config) -> tuple[str, ...]:
        """The roots of the code its key covers: its module, the chosen generator kind's where it runs
        one, and the data decoding where it reads splits (through the Context, not an import)."""
        from harness import classifiers
        kind = (_kind(cfg).__name__,) if self.kind_code else ()
        net = (classifiers.get(cfg.classifier.kind).__name__,) if self.classifier_code else ()
        data = ("harness.data",) if self.reads(cfg)[2] else ()
        return (self.module.__name__, *kind, *net, *data)


PHASES: dict[str, Phase] = {p.name: p for p in [
    Phase("pretrain", pretrain, _PRETRAIN_READS, data=("train", "test"), data_of=_pretrain_data,
          data_dir_of=_pretrain_dir,
          when=_pretrains, long=True, classifier_code=True,
          needs=lambda cfg: f"classifier.init=pretrain (this config has classifier.init={cfg.classifier.init})",
          help="Pretrain the classifier (classifier.init=pretrain) on classes disjoint from the study's: pretrain.classes."),
    Phase("evaluator", evaluator, ("data", "quality"), ignores=_NOT_EVALUATOR, data=("train", "test"),
          when=_quality, long=True, data_of=_evaluator_data, command=False, needs=lambda cfg: "quality.enabled=true", help="Train the sample-quality evaluator CNN (quality.enabled)."),
    Phase("baseline", baseline, ("data", "classifier"), ignores=config.SYNTHETIC_ONLY, upstream=("pretrain",),
          data=("train", "val", "test"), long=True, classifier_code=True, help="Train the classifier (classifier.kind) on the real images only; log metrics, report, confusion matrix, weights."),
    Phase("generator_pretrain", generator_pretrain, _generator_pretrain_sections, ignores=_generator_pretrain_ignores,
          data=("train",), data_of=_generator_pretrain_data, data_dir_of=_pretrain_dir, when=_generator_pretrains,
          long=True, kind_code=True, command=False,
          needs=lambda cfg: "a generator that starts from its pretraining (gan.init=pretrain)",
          help="Train the generator first on classes disjoint from the study's (pretrain.classes), for gan.init=pretrain."),
    Phase("generator", generator, _generator_sections, ignores=_generator_ignores, upstream=("generator_pretrain",),
          data=("train",), when=_trains, quality=True, long=True, kind_code=True, resumable=True,
          needs=lambda cfg: f"a generator.kind that trains (this config has generator.kind={cfg.generator.kind}, "
                            "which draws its images without a generator run)",
          help="Train the generator (generator.kind=gan: the GAN family of [gan]; diffusion: the diffusion "
               "model of [diffusion]); log losses, sample grids, checkpoints."),
    Phase("generate", generate, _generate_sections, ignores=_unread_generator_fields, upstream=("generator",),
          data=_generate_data,
          quality=True, kind_code=True, in_memory=True, help="Draw generate.n_samples images from the generator into synthetic.npz."),
    Phase("pseudolabel", pseudolabel, ("data", "pseudolabel"), upstream=("generate", "baseline"),
          in_memory=True, classifier_code=True,
          help="Label synthetic images with the baseline; keep those with confidence >= pseudolabel.threshold."),
    Phase("control_stage", control_stage, ("data", "classifier"), ignores=config.MIXING, upstream=("pretrain", "pseudolabel"),
          data=("train", "val", "test"), when=lambda cfg: _controls(cfg) and _staged(cfg), long=True,
          classifier_code=True, sized=("pseudolabel",), command=False,
          needs=lambda cfg: "classifier.synthetic_use=pretrain and control.enabled=true",
          help="classifier.synthetic_use=pretrain: the control's first stage, the network trained on replayed real "
               "images alone (as many as were kept)."),
    Phase("control", control, ("data", "classifier"), ignores=_arm_ignores, upstream=("pretrain", "pseudolabel", "control_stage"),
          data=("train", "val", "test"), when=_controls, long=True, classifier_code=True,
          needs=lambda cfg: "control.enabled=true",
          sized=("pseudolabel",),
          help="Train the recipe-matched control: the synthetic arm's recipe with the real training images in the "
               "synthetic slot (as many as were kept, or the training set once under classifier.synthetic_share); "
               "synthetic minus control is what the images add."),
    Phase("synthetic_stage", synthetic_stage, ("data", "classifier"), ignores=config.MIXING, upstream=("pretrain", "pseudolabel"),
          data=("train", "val", "test"), when=_staged, long=True, classifier_code=True, command=False,
          logs_inputs=("pseudolabel",),
          needs=lambda cfg: "classifier.synthetic_use=pretrain",
          help="classifier.synthetic_use=pretrain: the synthetic arm's first stage, the network trained on the kept "
               "synthetic images alone."),
    Phase("synthetic", synthetic, ("data", "classifier"), ignores=_arm_ignores,
          upstream=("pretrain", "pseudolabel", "synthetic_stage"), data=("train", "val", "test"),
          long=True, logs_inputs=("pseudolabel",), classifier_code=True,
          help="Train the same classifier from scratch on real + kept synthetic images; log it like the baseline."),
    Phase("compare", compare, ("data.classes",), upstream=("baseline", "control", "synthetic"),
          command=False, help="Synthetic minus control (the images' effect), control minus baseline (the recipe's) "
                              "and synthetic minus baseline for every test metric."),
]}


def code_keys(cfg: Config) -> list[tuple[str, str, list[str]]]:
    """(phase, code fingerprint, the modules its key covers) for each phase that runs under `cfg`."""
    from harness.tracking import provenance
    return [(name, provenance.fingerprint(p.code(cfg)), sorted(provenance.closure(p.code(cfg))))
            for name, p in PHASES.items() if p.runs(cfg)]
