"""The phase table and its walk: the whole study under one parent run, single phases, and the
cache keys that decide what is reused.

A phase's key = its name + the config sections it reads + the keys of the phases it consumes (or
what stands for them: a named run, the kept images' digest) + a digest of the data splits it reads
+ a fingerprint of the code it runs (its module and, through imports, everything it reaches; for
the generator kind, only the chosen kind's module). A FINISHED run with the same key in the
experiment is reused: its outputs are loaded, and the new child run is tagged harness.reused_from.
"""
from __future__ import annotations

import dataclasses
import hashlib
import importlib
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable


from harness.config import Config, apply, config_hash, flat, flat_sections
from harness.errors import HarnessError

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
    # A kind that trains is configured in the generator phase, whose key this one consumes.
    return ("data", "generator", "generate") + (() if _trains(cfg) else _kind(cfg).SECTIONS)


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
    module_name: str  # harness.phases.X: compute(ctx, cfg, inputs, **options), load(ctx, cfg, run), summary(result, cfg)
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
    Phase("generator", "harness.phases.generator", _generator_sections,
          ignores=("generator.mixup_alpha", "quality.cas", "quality.evaluator_per_class", "quality.evaluator_epochs",
                   "quality.precision"),
          data=("train",), when=_trains, quality=True, long=True, kind_code=True, resumable=True,
          help="Train the generator (generator.kind=gan: the GAN family of [gan]); log losses, sample grids, "
               "checkpoints."),
    Phase("generate", "harness.phases.generate", _generate_sections, ignores=_generate_ignores, upstream=("generator",),
          data=_generate_data,
          outside=_generate_outside, quality=True, kind_code=True, help="Draw generate.n_samples images from the generator into synthetic.npz."),
    Phase("pseudolabel", "harness.phases.pseudolabel", ("data", "pseudolabel"), upstream=("generate", "baseline"),
          help="Label synthetic images with the baseline; keep those with confidence >= pseudolabel.threshold."),
    Phase("synthetic", "harness.phases.synthetic", ("data", "classifier"), upstream=("pseudolabel",), data=("train", "val", "test"),
          long=True, logs_inputs=("pseudolabel",),
          help="Retrain SimpleCNN from scratch on real + kept synthetic images; log it like the baseline."),
    Phase("compare", "harness.phases.compare", ("data.classes",), upstream=("baseline", "synthetic"), command=False,
          help="Synthetic minus baseline for every test metric."),
]}


def data_config(name: str, cfg: Config):
    phase = PHASES[name]
    return phase.data_of(cfg) if phase.data_of else cfg.data


def phase_key(ctx: Context, name: str, cfg: Config, upstream_keys: dict[str, str]) -> str:
    phase = PHASES[name]
    sections, upstream, data = phase.reads(cfg)
    parts = [name, config_hash(cfg, sections, phase.ignored(cfg)), ctx.fingerprint(phase.code(cfg))]
    if data:
        parts.append(ctx.splits(data_config(name, cfg)).digest(*data))
    outside = phase.outside(ctx, cfg) if phase.outside else ""
    if outside:
        parts.append(outside)
    parts += [f"{u}={upstream_keys[u]}" for u in upstream]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def execute(ctx: Context, name: str, cfg: Config, inputs: dict[str, PhaseResult], run_name: str | None = None,
            key_suffix: str = "", params: dict | None = None, tags: dict | None = None,
            system_metrics: bool | None = None, claim: bool | None = None, **options) -> PhaseResult:
    """Run one phase under its own MLflow run: reuse a finished run with the same key, else compute.
    `system_metrics` and `claim` (wait for another worker computing the key) override the table's
    choice for long phases (a sweep's many short trial runs go without)."""
    from harness.tracking.store import phase_run
    phase = PHASES[name]
    phase.module.check(ctx, cfg, inputs)
    sections, upstream, _ = phase.reads(cfg)
    key = phase_key(ctx, name, cfg, {u: inputs[u].downstream_key for u in upstream}) + key_suffix
    claim = phase.long if claim is None else claim  # minutes of work: never done twice by two workers
    # One lookup of the key answers every question below: reuse, wait for a live worker, continue an
    # interrupted run. Waiting comes first: a worker that died meanwhile is continued, not restarted.
    found = ctx.store.lookup(key) if ctx.use_cache or ctx.resume else None
    if claim and ctx.use_cache:
        found = ctx.store.wait_for_others(key, name, found)
    prepared = phase.module.before(ctx, cfg, found)
    ignores = phase.ignored(cfg)
    run_params = {**flat_sections(cfg, sections, ignores), **{f"upstream.{u}": inputs[u].run_id for u in upstream},
                  **(params or {})}
    with phase_run(ctx.store, name, run_params, run_name=run_name, key=key, use_cache=ctx.use_cache, claim=claim,
                   found=found,
                   system_metrics=phase.long if system_metrics is None else system_metrics,
                   tags={"harness.config_hash": config_hash(cfg, sections, ignores), "harness.preset": cfg.preset,
                         **_data_tags(ctx, name, cfg), **(tags or {}), **prepared.get("tags", {})}) as pr:
        _log_datasets(ctx, name, cfg, inputs)
        if pr.hit:
            result = phase.module.load(ctx, cfg, pr.hit)
        else:
            result = phase.module.compute(ctx, cfg, inputs, **options, **prepared.get("options", {}))
            result.run_id = pr.run_id
    result.reused, result.record_id = pr.hit is not None, pr.run_id
    return _keyed(result, key)


def _keyed(result: PhaseResult, key: str) -> PhaseResult:
    """`key` names the result; later phases' keys use the kept images' digest where there is one."""
    result.key = key
    result.downstream_key = result.digest() or key
    return result


def _data_tags(ctx: Context, name: str, cfg: Config) -> dict[str, str]:
    """The content digest of each split the phase reads, so that comparisons can check them."""
    data = PHASES[name].reads(cfg)[2]
    if not data:
        return {}
    splits = ctx.splits(data_config(name, cfg))
    return {"harness.data_source": splits.source, **{f"harness.data.{d}": splits.digest(d) for d in data}}


CONTEXTS = {"train": "train", "val": "validation", "test": "test", "pool": "pool"}


def _log_datasets(ctx: Context, name: str, cfg: Config, inputs: dict) -> None:
    """MLflow's dataset records of what the phase reads (the runs table's Datasets column), in one call:
    each split with the digest of its full content (MLflow's own numpy digest samples the first
    values only), and for the synthetic arm the kept images."""
    import warnings

    import mlflow

    from harness.tracking.store import log_inputs
    from harness import generators
    data = PHASES[name].reads(cfg)[2]
    outside = generators.datasets(ctx, cfg) if PHASES[name].outside else []
    if not data and not outside:
        return
    splits = ctx.splits(data_config(name, cfg))
    label = splits.uri.rstrip("/").rsplit("/", 1)[-1] or "data"
    sets = [(f"{label}/{CONTEXTS[d]}", getattr(splits, f"{d}_x"), getattr(splits, f"{d}_y"),
             splits.digest(d).split(":")[1], CONTEXTS[d]) for d in data]
    for u in PHASES[name].logs_inputs:  # the kept images the synthetic arm trains on
        kept = inputs[u]
        sets.append((f"{label}/synthetic", kept.images, kept.labels, kept.downstream_key.split(":")[-1], "synthetic"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "the source can be interpreted in multiple ways": a local folder either way
        datasets = [mlflow.data.from_numpy(x.numpy(), targets=y.numpy(), name=n, digest=dg, source=splits.uri or None)
                    for n, x, y, dg, _ in sets]
        datasets += [mlflow.data.from_numpy(r.images.numpy(), targets=None if r.labels is None else r.labels.numpy(),
                                            name=r.name, digest=r.digest, source=r.source) for r in outside]
    log_inputs(datasets, [c for *_, c in sets] + [r.context for r in outside])


def load_run(ctx: Context, name: str, cfg: Config, run_id: str, key: str | None = None) -> PhaseResult:
    """The outputs of a finished run of phase `name`: found by its `key`, or named by the user (it
    then stands for the phase in later keys as `run:<id>`)."""
    run = ctx.store.get_run(run_id)
    phase = run.data.tags.get("harness.phase")
    if phase != name:
        raise HarnessError(f"run {run_id} is a {phase or 'non-harness'} run, not a {name} run")
    if run.info.status != "FINISHED":
        raise HarnessError(f"run {run_id} is {run.info.status}, not FINISHED: its {name} outputs are incomplete")
    source = ctx.store.get_run(run.data.tags["harness.reused_from"]) if "harness.reused_from" in run.data.tags else run
    _check_fits(run, cfg)
    result = PHASES[name].module.load(ctx, cfg, source)
    result.reused, result.record_id = True, run_id
    return _keyed(result, key or f"run:{source.info.run_id}")


def _check_fits(run, cfg: Config) -> None:
    """A named run made for other images (size, channels, classes) would fail deep inside torch."""
    mine = flat(cfg)
    for key in ("data.image_size", "data.channels", "data.classes"):
        theirs = run.data.params.get(key)
        if theirs is not None and theirs != mine[key]:
            raise HarnessError(f"run {run.info.run_id} was made with {key}={theirs}, this config has {key}={mine[key]}; "
                               f"pass --set {key}={theirs} or name a run made for these images")


def resolve(ctx: Context, name: str, cfg: Config, pinned: dict[str, str]) -> dict[str, PhaseResult]:
    """The finished upstream results of `name` under this config (or the runs the user named)."""
    out: dict[str, PhaseResult] = {}

    def get(u: str) -> PhaseResult:
        if u in out:
            return out[u]
        if u in pinned:
            out[u] = load_run(ctx, u, cfg, pinned[u])
            return out[u]
        _, upstream, _ = PHASES[u].reads(cfg)
        key = phase_key(ctx, u, cfg, {v: get(v).downstream_key for v in upstream})
        hit = ctx.store.find_finished(key)
        if hit is None and not PHASES[u].command:  # no command of its own: computed where it is needed
            out[u] = execute(ctx, u, cfg, {})
            return out[u]
        if hit is None:
            raise HarnessError(f"no finished {u} run for this config in the experiment; run `harness {u}` "
                               f"with the same preset and --set values first, or pass --{u}-run RUN_ID")
        out[u] = load_run(ctx, u, cfg, hit.info.run_id, key)
        return out[u]

    upstream = PHASES[name].reads(cfg)[1]
    for u in upstream:  # the runs the user named first: a wrong one is the message, not a missing other
        if u in pinned:
            get(u)
    return {u: get(u) for u in upstream}


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
    gan_cfg = gan_cfg or cfg
    results: dict[str, PhaseResult] = {}
    seconds: dict[str, float] = {}
    with phase_run(ctx.store, "pipeline", {**flat(cfg), "pipeline.generator_shared": gan_cfg is not cfg},
                   run_name=f"pipeline seed={cfg.data.seed}",
                   tags={"harness.config_hash": config_hash(cfg), "harness.preset": cfg.preset, **(tags or {})}) as parent:
        for name, phase in PHASES.items():
            if not phase.runs(cfg):
                continue
            ctx.store.say(f"== {name}")
            t = time.perf_counter()
            inputs = {u: results[u] for u in phase.reads(cfg)[1]}
            if name == "generator" and gan_cfg is not cfg:
                # A shared generator reads its own draw's evaluator, and is trained once per study.
                shared = dataclasses.replace(ctx, use_cache=True) if reuse_shared else ctx
                inputs = {u: execute(shared, u, gan_cfg, {}) for u in phase.reads(gan_cfg)[1]}
                results[name] = execute(shared, name, gan_cfg, inputs)
            else:
                results[name] = execute(ctx, name, cfg, inputs)
            seconds[name] = time.perf_counter() - t
            ctx.store.say(f"   {name}: {seconds[name]:.1f} s{' (reused)' if results[name].reused else ''}")
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
