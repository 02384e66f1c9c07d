"""The whole study under one parent run: baseline, gan, generate, pseudolabel, augmented, compare.

Each phase has a cache key = its config sections + the keys of the phases it consumes + the code
version. A FINISHED run with the same key in the experiment is reused (its artifacts loaded, the new
child tagged harness.reused_from), so rerunning an identical pipeline takes seconds.
"""
from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field

import click
import mlflow
import torch

from harness import tracking
from harness.config import Config, apply, config_hash
from harness.data import Splits
from harness.errors import HarnessError
from harness.phases import augment, baseline, compare as compare_phase, evaluator, gan, generate, pseudolabel

# phase -> (config sections it reads, phases whose outputs it consumes)
GRAPH = {
    "evaluator": (("data", "quality"), ()),
    "baseline": (("data", "classifier"), ()),
    "gan": (("data", "gan"), ()),
    "generate": (("generate",), ("gan",)),
    "pseudolabel": (("pseudolabel",), ("generate", "baseline")),
    "augmented": (("classifier",), ("pseudolabel", "baseline")),
    "compare": ((), ("baseline", "augmented")),
}


def phase_key(phase: str, cfg: Config, fixed: dict[str, str] | None = None) -> str:
    """Cache key of `phase`. `fixed` maps an upstream phase to a key that stands in for the one
    this config would give it: `run:<id>` for a run the user named, or a shared GAN's key."""
    fixed = fixed or {}
    sections, upstream = GRAPH[phase]
    if phase in ("gan", "generate") and cfg.quality.enabled:  # their runs then carry quality metrics
        sections, upstream = sections + ("quality",), upstream + ("evaluator",)
    parts = [phase, config_hash(cfg, sections), tracking.code_version()]
    parts += [fixed[u] if u in fixed else phase_key(u, cfg, fixed) for u in upstream]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def kept_fixed(fixed: dict[str, str], images: torch.Tensor, labels: torch.Tensor,
               soft: torch.Tensor | None = None) -> dict[str, str]:
    """Key downstream phases by the kept images themselves, not by the settings that chose them:
    two thresholds that keep the same images (say, none) then share one augmented run."""
    blob = images.numpy().tobytes() + labels.numpy().tobytes() + (b"" if soft is None else soft.numpy().tobytes())
    digest = hashlib.sha256(blob).hexdigest()[:16]
    return {**fixed, "pseudolabel": f"kept:{digest}"}


def seeded(cfg: Config, seed: int) -> Config:
    """The config of one seed of a multi-seed study: every seed of the study set to `seed`."""
    return apply(cfg, {"data.seed": seed, "classifier.seed": seed, "gan.seed": seed, "generate.seed": seed})


def evaluator_for(cfg: Config, splits: Splits, device: torch.device, use_cache: bool = True, data_dir=None):
    """The sample-quality evaluator (trained once, then reused), or None when quality is off."""
    if not cfg.quality.enabled:
        return None
    return evaluator.run(cfg, splits, device, key=phase_key("evaluator", cfg), use_cache=use_cache, data_dir=data_dir)


def upstream_run(phase: str, cfg: Config, run_id: str | None, command: str) -> str:
    """The run holding `phase`'s outputs: given by the user, or the finished one for this config."""
    if run_id:
        return run_id
    hit = tracking.find_finished(phase_key(phase, cfg))
    if hit is None:
        raise HarnessError(f"no finished {phase} run for this config in the experiment; run `harness {command}` "
                           f"with the same preset and --set values first, or pass --{phase}-run RUN_ID")
    return hit.info.run_id


@dataclass
class PipelineResult:
    run_id: str
    baseline: dict
    augmented: dict
    kept: dict
    table_md: str
    seconds: dict[str, float] = field(default_factory=dict)


def run(cfg: Config, splits: Splits, device: torch.device, use_cache: bool = True, resume: bool = False,
        gan_cfg: Config | None = None, gan_splits: Splits | None = None, note: str = "",
        data_dir=None) -> PipelineResult:
    """One pipeline under one parent run. `gan_cfg`/`gan_splits` let several seeds share one GAN."""
    gan_cfg, gan_splits = gan_cfg or cfg, gan_splits or splits
    fixed = {"gan": phase_key("gan", gan_cfg)}
    keys = {p: fixed.get(p) or phase_key(p, cfg, fixed) for p in GRAPH}
    seconds: dict[str, float] = {}

    def timed(name, fn):
        click.echo(f"== {name}", err=True)
        t = time.perf_counter()
        out = fn()
        seconds[name] = time.perf_counter() - t
        reused = " (reused)" if any(r.data.tags.get("harness.reused_from") for r in _last_child(name)) else ""
        click.echo(f"   {name}: {seconds[name]:.1f} s{reused}", err=True)
        return out

    with tracking.phase_run("pipeline", cfg, run_name=f"pipeline seed={cfg.data.seed}",
                            extra_params={"pipeline.gan_shared": gan_cfg is not cfg}) as parent:
        mlflow.set_tag("harness.data_source", splits.source)
        ev = timed("evaluator", lambda: evaluator_for(cfg, splits, device, use_cache, data_dir)) \
            if cfg.quality.enabled else None
        base = timed("baseline", lambda: baseline.run(cfg, splits, device, key=keys["baseline"], use_cache=use_cache))
        g = timed("gan", lambda: gan.run(gan_cfg, gan_splits, device, key=keys["gan"], use_cache=use_cache,
                                         resume=resume, evaluator=ev))
        gen = timed("generate", lambda: generate.run(cfg, g.run_id, device, key=keys["generate"], use_cache=use_cache,
                                                     evaluator=ev, splits=splits))
        pl = timed("pseudolabel", lambda: pseudolabel.run(cfg, base.run_id, gen.images, splits.classes, device,
                                                          key=keys["pseudolabel"], use_cache=use_cache,
                                                          extra_params={"pseudolabel.generate_run": gen.run_id},
                                                          generated=gen.labels))
        by_kept = kept_fixed(fixed, pl.images, pl.labels, pl.soft)
        keys["augmented"], keys["compare"] = (phase_key(p, cfg, by_kept) for p in ("augmented", "compare"))
        aug = timed("augmented", lambda: augment.run(cfg, splits, pl.images, pl.labels, device, key=keys["augmented"],
                                                     use_cache=use_cache,
                                                     extra_params={"augmented.pseudolabel_run": pl.run_id},
                                                     soft=pl.soft))
        cmp = timed("compare", lambda: compare_phase.run(cfg, base.metrics, aug.metrics, splits.classes,
                                                         key=keys["compare"], use_cache=use_cache))
        kept = {k: v for k, v in pl.metrics.items() if k.startswith("kept/")}
        quality = {k: v for k, v in gen.metrics.items() if k.startswith("quality/")} if ev is not None else {}
        headline = {"baseline/test_accuracy": base.metrics["test/accuracy"],
                    "baseline/test_f1_weighted": base.metrics["test/f1_weighted"],
                    "augmented/test_accuracy": aug.metrics["test/accuracy"],
                    "augmented/test_f1_weighted": aug.metrics["test/f1_weighted"],
                    "delta/accuracy": cmp.deltas["delta/accuracy"],
                    "delta/f1_weighted": cmp.deltas["delta/f1_weighted"],
                    **kept, **quality, **{f"time/{k}_seconds": v for k, v in seconds.items()}}
        mlflow.log_metrics(headline)
        mlflow.log_text(cmp.table_md, "comparison.md")
        mlflow.set_tag("mlflow.note.content", _description(cfg, headline, cmp.table_md) + note)
    return PipelineResult(parent.run_id, base.metrics, aug.metrics, kept, cmp.table_md, seconds)


def run_seeds(cfg: Config, seeds: list[int], data_dir, device: torch.device, use_cache: bool = True,
              resume: bool = False, share_gan: bool = False):
    """Paired pipelines, one per seed, under one `study` parent run; then the seed statistics.

    Baseline and augmented of a pair share the seed's data draw. With `share_gan`, one GAN (trained
    on the first seed's images) serves every seed: cheaper, but then the GAN's own seed noise is not
    in the spread, and the report says so.
    """
    from harness import compare, data
    from harness.phases import compare as compare_phase
    first = seeded(cfg, seeds[0])
    first_splits = data.load_splits(first.data, data_dir)
    results = []
    with tracking.phase_run("study", cfg, run_name=f"study {cfg.preset} seeds={','.join(map(str, seeds))}",
                            extra_params={"study.seeds": ",".join(map(str, seeds)), "study.share_gan": share_gan}) as study:
        for seed in seeds:
            cfg_s = seeded(cfg, seed)
            splits = first_splits if seed == seeds[0] else data.load_splits(cfg_s.data, data_dir)
            click.echo(f"=== seed {seed}", err=True)
            note = f"\n\nGAN shared across seeds: trained once on seed {seeds[0]}'s images." if share_gan else ""
            results.append(run(cfg_s, splits, device, use_cache, resume,
                               gan_cfg=first if share_gan else None,
                               gan_splits=first_splits if share_gan else None, note=note, data_dir=data_dir))
        report = compare.seed_report(compare.pairs_of_study(study.run_id), share_gan=share_gan)
        cmp = compare_phase.run_report(cfg, report)
        mlflow.log_metrics(report.headline())
        mlflow.log_text(report.markdown(), "comparison.md")
        mlflow.set_tag("mlflow.note.content", f"**Study** of {len(seeds)} paired seeds, preset `{cfg.preset}`.\n\n"
                       + report.markdown())
    return study.run_id, results, report, cmp


def _last_child(phase: str):
    active = mlflow.active_run()
    if active is None:
        return []
    return mlflow.MlflowClient().search_runs(
        [active.info.experiment_id],
        f"tags.`mlflow.parentRunId` = '{active.info.run_id}' and tags.`harness.phase` = '{phase}'",
        order_by=["attributes.start_time DESC"], max_results=1)


def _description(cfg: Config, m: dict, table_md: str) -> str:
    return (f"**Pipeline** (preset `{cfg.preset}`, classes {', '.join(cfg.data.classes)}, "
            f"{cfg.data.n_per_class} real images per class): baseline SimpleCNN, WGAN-GP for {cfg.gan.epochs} epochs, "
            f"{cfg.generate.n_samples} synthetic images, kept {int(m['kept/count'])} at confidence >= "
            f"{cfg.pseudolabel.threshold}, augmented SimpleCNN retrained from scratch.\n\n"
            f"Test accuracy {100 * m['baseline/test_accuracy']:.2f}% -> {100 * m['augmented/test_accuracy']:.2f}% "
            f"({100 * m['delta/accuracy']:+.2f} points).\n\n{table_md}")
