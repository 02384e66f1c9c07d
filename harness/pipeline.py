"""The phase table, and the whole study under one parent run: one pipeline per seed, paired seeds
under a study run. How one phase runs (its key, reuse, the claim, its run) is harness/runner.py.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable


from harness.config import Config, apply, config_hash, flat

if TYPE_CHECKING:
    from harness.context import Context, PhaseResult

# The table imports no torch or MLflow at import time, so that the CLI builds its commands from it
# and `harness --help` stays instant; phase modules and generator kinds are imported when used.


def _kind(cfg: Config):
    from harness import generators
    return generators.get(cfg.generator.kind)


def _quality(cfg: Config) -> bool:
    return cfg.quality.enabled


def _trains(cfg: Config) -> bool:
    return _kind(cfg).TRAINS


def _generator_sections(cfg: Config) -> tuple[str, ...]:
    return ("data", "generator") + _kind(cfg).SECTIONS


def _generate_data(cfg: Config) -> tuple[str, ...]:
    from harness import generators
    return () if _trains(cfg) else generators.data(cfg)


def _generate_sections(cfg: Config) -> tuple[str, ...]:
    # A kind that trains is configured in the generator phase, whose key this one consumes, less the
    # settings it reads when sampling only (diffusion.sample_steps): those are this phase's.
    from harness import generators
    return ("data", "generator", "generate") + (generators.sampling(cfg) if _trains(cfg) else _kind(cfg).SECTIONS)


def _generator_ignores(cfg: Config) -> tuple[str, ...]:
    from harness import generators
    return ("generator.mixup_alpha", "quality.cas", "quality.evaluator_per_class", "quality.evaluator_epochs",
            "quality.precision") + generators.sampling(cfg)


def _generate_ignores(cfg: Config) -> tuple[str, ...]:
    return () if cfg.generator.kind == "mixup" else ("generator.mixup_alpha",)


# Sample-quality fields a phase computes nothing from: the evaluator's own settings reach the
# generator phases through the evaluator's key, and CAS is the generate phase's alone.
_NOT_EVALUATOR = ("quality.enabled", "quality.n_samples", "quality.k", "quality.cas")
_CLASSIFIER_SYNTHETIC = ("classifier.budget", "classifier.synthetic_share", "classifier.synthetic_weight",
                         "classifier.real_only_epochs")  # how synthetic images enter training: not the baseline's


def _evaluator_data(cfg: Config):
    from harness.phases import evaluator
    return evaluator.data_config(cfg)


def _generate_outside(ctx: Context, cfg: Config) -> str:
    from harness import generators
    return generators.identity(ctx, cfg)


@dataclass(frozen=True)
class Phase:
    """One row of the table. `sections`, `upstream` and `data` may depend on the config (callables)."""
    name: str
    module_name: str  # harness.phases.X: compute(ctx, cfg, inputs, **options), load(ctx, cfg, run), summary(result, cfg), check, before
    sections: tuple | Callable  # config sections (or single section.field) its key covers (and its run logs)...
    ignores: tuple | Callable = ()  # ...less these section.field it does not read (tests/test_pipeline.py perturbs every other field)
    upstream: tuple = ()  # phases whose outputs it consumes
    data: tuple | Callable = ()  # splits of its data draw whose content its key covers
    outside: Callable | None = None  # (ctx, cfg) -> digest of what it reads from outside config and data (a folder, a model)
    when: Callable[[Config], bool] | None = None  # runs only under configs where this holds
    quality: bool = False  # with quality.enabled it also reads [quality] and consumes the evaluator
    long: bool = False  # trains for minutes: its run samples system metrics (CPU, memory, GPU)
    data_of: Callable | None = None  # cfg -> the DataConfig of the draw it reads [default: cfg.data]
    kind_code: bool = False  # its code is also the generator kind's module (a change there is a new key)
    logs_inputs: tuple = ()  # upstream phases whose images it records as an MLflow dataset input
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
        return sections, upstream, data

    @property
    def module(self):
        return importlib.import_module(self.module_name)

    def runs(self, cfg: Config) -> bool:
        return self.when is None or self.when(cfg)

    def code(self, cfg: Config) -> tuple[str, ...]:
        return (self.module_name, _kind(cfg).__name__) if self.kind_code else (self.module_name,)


PHASES: dict[str, Phase] = {p.name: p for p in [
    Phase("evaluator", "harness.phases.evaluator", ("data", "quality"), ignores=_NOT_EVALUATOR, data=("train", "test"),
          when=_quality, long=True, data_of=_evaluator_data, command=False, help="Train the sample-quality evaluator CNN (quality.enabled)."),
    Phase("baseline", "harness.phases.baseline", ("data", "classifier"), ignores=_CLASSIFIER_SYNTHETIC,
          data=("train", "val", "test"), long=True, help="Train SimpleCNN on the real images only; log metrics, report, confusion matrix, weights."),
    Phase("generator", "harness.phases.generator", _generator_sections, ignores=_generator_ignores,
          data=("train",), when=_trains, quality=True, long=True, kind_code=True, resumable=True,
          help="Train the generator (generator.kind=gan: the GAN family of [gan]; diffusion: the diffusion "
               "model of [diffusion]); log losses, sample grids, checkpoints."),
    Phase("generate", "harness.phases.generate", _generate_sections, ignores=_generate_ignores, upstream=("generator",),
          data=_generate_data,
          outside=_generate_outside, quality=True, kind_code=True, in_memory=True, help="Draw generate.n_samples images from the generator into synthetic.npz."),
    Phase("pseudolabel", "harness.phases.pseudolabel", ("data", "pseudolabel"), upstream=("generate", "baseline"),
          in_memory=True,
          help="Label synthetic images with the baseline; keep those with confidence >= pseudolabel.threshold."),
    Phase("synthetic", "harness.phases.synthetic", ("data", "classifier"), upstream=("pseudolabel",), data=("train", "val", "test"),
          long=True, logs_inputs=("pseudolabel",),
          help="Retrain SimpleCNN from scratch on real + kept synthetic images; log it like the baseline."),
    Phase("compare", "harness.phases.compare", ("data.classes",), upstream=("baseline", "synthetic"), command=False,
          help="Synthetic minus baseline for every test metric."),
]}


def seeded(cfg: Config, seed: int) -> Config:
    """The config of one seed of a multi-seed study: every seed of the study set to `seed`."""
    return apply(cfg, {"data.seed": seed, "classifier.seed": seed, "gan.seed": seed, "generate.seed": seed})


@dataclass
class PipelineResult:
    run_id: str
    results: dict[str, PhaseResult]
    table_md: str
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def kept(self) -> dict:
        return {k: v for k, v in self.results["pseudolabel"].metrics.items() if k.startswith("kept/")}


def run(ctx: Context, cfg: Config, gan_cfg: Config | None = None, note: str = "",
        reuse_shared: bool = False, tags: dict | None = None) -> PipelineResult:
    """One pipeline under one parent run: every phase of the table that runs under this config, in
    order. `gan_cfg` lets several seeds share one trained generator (fitted on its own data draw);
    `reuse_shared`: it was trained by an earlier seed of this study, reuse it even under --no-cache."""
    import mlflow

    from harness import generators
    from harness.tracking.store import NOTE, phase_run
    generators.check(cfg)
    generators.preflight(ctx, cfg)
    shared = gan_cfg is not None and gan_cfg is not cfg
    with phase_run(ctx.store, "pipeline", {**flat(cfg), "pipeline.generator_shared": shared},
                   run_name=f"pipeline seed={cfg.data.seed}",
                   tags={"harness.config_hash": config_hash(cfg), "harness.preset": cfg.preset, **(tags or {})}) as parent:
        # A shared generator reads its own draw's evaluator, and is trained once per study.
        results = ctx.runner.walk(cfg, under={"generator": gan_cfg} if shared else None, cached=reuse_shared,
                                  say=ctx.store.say)
        seconds = {name: r.seconds for name, r in results.items()}
        base, syn, cmp = results["baseline"], results["synthetic"], results["compare"]
        quality = {k: v for k, v in results["generate"].metrics.items() if k.startswith("quality/")}
        kept = {k: v for k, v in results["pseudolabel"].metrics.items() if k.startswith("kept/")}
        headline = {"baseline/test_accuracy": base.metrics["test/accuracy"],
                    "baseline/test_f1_weighted": base.metrics["test/f1_weighted"],
                    "synthetic/test_accuracy": syn.metrics["test/accuracy"],
                    "synthetic/test_f1_weighted": syn.metrics["test/f1_weighted"],
                    "delta/accuracy": cmp.deltas["delta/accuracy"],
                    "delta/f1_weighted": cmp.deltas["delta/f1_weighted"],
                    **kept, **quality, **{f"time/{k}_seconds": v for k, v in seconds.items()}}
        mlflow.log_metrics(headline)
        mlflow.log_text(cmp.table_md, "comparison.md")
        mlflow.set_tag(NOTE, _description(cfg, headline, cmp.table_md) + note)
    return PipelineResult(parent.run_id, results, cmp.table_md, seconds)


def run_seeds(ctx: Context, cfg: Config, seeds: list[int], share_gan: bool = False):
    """Paired pipelines, one per seed, under one `study` parent run; then the seed statistics.

    Baseline and synthetic arm of a pair share the seed's data draw. With `share_gan`, one generator
    (trained on the first seed's images) serves every seed: cheaper, but then the generator's own
    seed noise is not in the spread, and the report says so.
    """
    import mlflow

    from harness import generators
    from harness.compare import render, runs, stats
    from harness.phases import compare
    from harness.tracking.store import NOTE, phase_run
    generators.check(cfg)
    first = seeded(cfg, seeds[0])
    generators.preflight(ctx, first)
    share_gan = share_gan and generators.get(cfg.generator.kind).TRAINS  # nothing to share otherwise
    results = []
    with phase_run(ctx.store, "study", {**flat(cfg), "study.seeds": ",".join(map(str, seeds)),
                                        "study.share_gan": share_gan},
                   run_name=f"study {cfg.preset} seeds={','.join(map(str, seeds))}",
                   tags={"harness.config_hash": config_hash(cfg), "harness.preset": cfg.preset}) as study:
        for seed in seeds:
            ctx.store.say(f"=== seed {seed}")
            note = f"\n\nGenerator shared across seeds: trained once on seed {seeds[0]}'s images." if share_gan else ""
            results.append(run(ctx, seeded(cfg, seed), gan_cfg=first if share_gan else None, note=note,
                               reuse_shared=share_gan and seed != seeds[0]))
        report = stats.seed_report(ctx.store.client, runs.pairs_of_study(ctx.store.client, study.run_id),
                                   share_gan=share_gan)
        compare.run_report(ctx, report)
        md = render.report_markdown(report)
        mlflow.log_metrics(report.headline())
        mlflow.log_text(md, "comparison.md")
        mlflow.set_tag(NOTE, f"**Study** of {len(seeds)} paired seeds, preset `{cfg.preset}`, generator "
                             f"`{cfg.generator.kind}`.\n\n" + md)
    return study.run_id, results, report


def _description(cfg: Config, m: dict, table_md: str) -> str:
    from harness import generators
    what = generators.in_words(cfg)
    return (f"**Pipeline** (preset `{cfg.preset}`, classes {', '.join(cfg.data.classes)}, "
            f"{cfg.data.n_per_class} real images per class): baseline SimpleCNN, {what}, "
            f"{cfg.generate.n_samples} synthetic images, kept {int(m['kept/count'])} (pseudolabel.mode "
            f"{cfg.pseudolabel.mode}, threshold {cfg.pseudolabel.threshold}), synthetic arm SimpleCNN retrained "
            f"from scratch.\n\nTest accuracy {100 * m['baseline/test_accuracy']:.2f}% -> "
            f"{100 * m['synthetic/test_accuracy']:.2f}% ({100 * m['delta/accuracy']:+.2f} points).\n\n{table_md}")
