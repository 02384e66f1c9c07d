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
from harness.config import Config, config_hash
from harness.data import Splits
from harness.errors import HarnessError
from harness.phases import augment, baseline, compare as compare_phase, gan, generate, pseudolabel

# phase -> (config sections it reads, phases whose outputs it consumes)
GRAPH = {
    "baseline": (("data", "classifier"), ()),
    "gan": (("data", "gan"), ()),
    "generate": (("generate",), ("gan",)),
    "pseudolabel": (("pseudolabel",), ("generate", "baseline")),
    "augmented": (("classifier",), ("pseudolabel", "baseline")),
    "compare": ((), ("baseline", "augmented")),
}


def phase_key(phase: str, cfg: Config, pinned: dict[str, str] | None = None) -> str:
    """Cache key of `phase`. `pinned` maps an upstream phase to an explicit run id given by the user,
    which then stands in for that phase's key."""
    pinned = pinned or {}
    sections, upstream = GRAPH[phase]
    parts = [phase, config_hash(cfg, sections), tracking.code_version()]
    parts += [f"run:{pinned[u]}" if u in pinned else phase_key(u, cfg, pinned) for u in upstream]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


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


def run(cfg: Config, splits: Splits, device: torch.device, use_cache: bool = True, resume: bool = False) -> PipelineResult:
    keys = {p: phase_key(p, cfg) for p in GRAPH}
    seconds: dict[str, float] = {}

    def timed(name, fn):
        click.echo(f"== {name}", err=True)
        t = time.perf_counter()
        out = fn()
        seconds[name] = time.perf_counter() - t
        reused = " (reused)" if any(r.data.tags.get("harness.reused_from") for r in _last_child(name)) else ""
        click.echo(f"   {name}: {seconds[name]:.1f} s{reused}", err=True)
        return out

    with tracking.phase_run("pipeline", cfg, run_name=f"pipeline seed={cfg.data.seed}") as parent:
        mlflow.set_tag("harness.data_source", splits.source)
        base = timed("baseline", lambda: baseline.run(cfg, splits, device, key=keys["baseline"], use_cache=use_cache))
        g = timed("gan", lambda: gan.run(cfg, splits, device, key=keys["gan"], use_cache=use_cache, resume=resume))
        gen = timed("generate", lambda: generate.run(cfg, g.run_id, device, key=keys["generate"], use_cache=use_cache))
        pl = timed("pseudolabel", lambda: pseudolabel.run(cfg, base.run_id, gen.images, splits.classes, device,
                                                          key=keys["pseudolabel"], use_cache=use_cache,
                                                          extra_params={"pseudolabel.generate_run": gen.run_id}))
        aug = timed("augmented", lambda: augment.run(cfg, splits, pl.images, pl.labels, device, key=keys["augmented"],
                                                     use_cache=use_cache,
                                                     extra_params={"augmented.pseudolabel_run": pl.run_id}))
        cmp = timed("compare", lambda: compare_phase.run(cfg, base.metrics, aug.metrics, splits.classes,
                                                         key=keys["compare"], use_cache=use_cache))
        kept = {k: v for k, v in pl.metrics.items() if k.startswith("kept/")}
        headline = {"baseline/test_accuracy": base.metrics["test/accuracy"],
                    "baseline/test_f1_weighted": base.metrics["test/f1_weighted"],
                    "augmented/test_accuracy": aug.metrics["test/accuracy"],
                    "augmented/test_f1_weighted": aug.metrics["test/f1_weighted"],
                    "delta/accuracy": cmp.deltas["delta/accuracy"],
                    "delta/f1_weighted": cmp.deltas["delta/f1_weighted"],
                    **kept, **{f"time/{k}_seconds": v for k, v in seconds.items()}}
        mlflow.log_metrics(headline)
        mlflow.log_text(cmp.table_md, "comparison.md")
        mlflow.set_tag("mlflow.note.content", _description(cfg, headline, cmp.table_md))
    return PipelineResult(parent.run_id, base.metrics, aug.metrics, kept, cmp.table_md, seconds)


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
