"""The whole comparison under one parent run: one pipeline per seed (every phase of the table, walked
by the runner), paired seeds under a `seeds` run. The table is harness/table.py; how one phase runs (its
key, reuse, the claim, its run) is harness/runner/.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from harness.config import Config, apply, config_hash, fields_where, flat
from harness.runner import Runner

if TYPE_CHECKING:
    from harness.context import Context, PhaseResult


def seeded(cfg: Config, seed: int) -> Config:
    """The config of one seed of paired seeds: every field declared a seed set to `seed`."""
    return apply(cfg, {key: seed for key in fields_where("seed")})


@dataclass
class PipelineResult:
    run_id: str
    results: dict[str, PhaseResult]
    table_md: str
    seconds: dict[str, float] = field(default_factory=dict)
    headline: dict[str, float] = field(default_factory=dict)  # the parent run's metrics

    @property
    def kept(self) -> dict:
        return {k: v for k, v in self.results["pseudolabel"].metrics.items() if k.startswith("kept/")}


def run(ctx: Context, cfg: Config, generator_cfg: Config | None = None, note: str = "",
        reuse_shared: bool = False, tags: dict | None = None) -> PipelineResult:
    """One pipeline under one parent run: every phase of the table that runs under this config, in
    order (checked before by the command's preflight, harness/preflight.py). `generator_cfg` lets several
    seeds share one trained generator (fitted on its own data draw);
    `reuse_shared`: it was trained by an earlier seed of these, reuse it even under --no-cache."""
    import mlflow

    from harness.tracking.store import NOTE, phase_run
    shared = generator_cfg is not None and generator_cfg is not cfg
    with phase_run(ctx.store, "pipeline", {**flat(cfg), "pipeline.generator_shared": shared},
                   run_name=f"pipeline seed={cfg.data.seed}",
                   tags={"harness.config_hash": config_hash(cfg), "harness.preset": cfg.preset, **(tags or {})}) as parent:
        # A shared generator reads its own draw's evaluator, and is trained once for all the seeds.
        results = Runner(ctx).walk(cfg, under={"generator": generator_cfg} if shared else None, cached=reuse_shared,
                                  say=ctx.store.say)
        seconds = {name: r.seconds for name, r in results.items()}
        base, syn, cmp = results["baseline"], results["synthetic"], results["compare"]
        quality = {k: v for k, v in results["generate"].metrics.items() if k.startswith("quality/")}
        kept = {k: v for k, v in results["pseudolabel"].metrics.items() if k.startswith("kept/")}
        arms = [("baseline", base), ("synthetic", syn)] + ([("control", results["control"])] if "control" in results else [])
        # images/* (synthetic - control) is the headline; recipe/* (control - baseline) and delta/* (synthetic
        # - baseline, its meaning since the first version) beside it: no metric name changes meaning.
        differences = ("images", "recipe", "delta") if "control" in results else ("delta",)
        headline = {**{f"{arm}/test_{m}": r.metrics[f"test/{m}"] for arm, r in arms
                       for m in ("accuracy", "f1_weighted", "f1_macro")},
                    **{f"{d}/{m}": cmp.deltas[f"{d}/{m}"] for d in differences for m in ("accuracy", "f1_weighted", "f1_macro")},
                    **kept, **quality, **{f"time/{k}_seconds": v for k, v in seconds.items()}}
        # The runs table shows a metric as logged: the same accuracies in points and percent, two decimals,
        # are what a person reads there (the fractions stay the metrics of record).
        # Short names: the table's columns are narrow and cut longer ones.
        headline |= {**{f"{d}/points": round(100 * headline[f"{d}/accuracy"], 2) for d in differences},
                     **{f"{arm}/percent": round(100 * r.metrics["test/accuracy"], 2) for arm, r in arms}}
        mlflow.log_metrics(headline)
        mlflow.log_text(cmp.table_md, "comparison.md")
        mlflow.set_tag(NOTE, _description(cfg, headline, cmp.table_md) + note)
    return PipelineResult(parent.run_id, results, cmp.table_md, seconds, headline)


def run_seeds(ctx: Context, cfg: Config, seeds: list[int], share_generator: bool = False):
    """Paired pipelines, one per seed, under one `seeds` parent run; then the seed statistics (a compare
    run with the report page). Returns the seeds run's id, the pipelines, the report, the compare run's id.

    Baseline and synthetic arm of a pair share the seed's data draw. With `share_generator`, one generator
    (trained on the first seed's images) serves every seed: cheaper, but then the generator's own
    seed noise is not in the spread, and the report says so.
    """
    import mlflow

    from harness import generators
    from harness.analysis import render, runs, stats
    from harness.phases import compare
    from harness.tracking.store import NOTE, phase_run
    first = seeded(cfg, seeds[0])
    share_generator = share_generator and generators.get(cfg.generator.kind).TRAINS  # nothing to share otherwise
    results = []
    with phase_run(ctx.store, "seeds", {**flat(cfg), "seeds.count": len(seeds), "seeds.list": ",".join(map(str, seeds)),
                                        "seeds.share_generator": share_generator},
                   run_name=f"seeds {cfg.preset} {','.join(map(str, seeds))}",
                   tags={"harness.config_hash": config_hash(cfg), "harness.preset": cfg.preset}) as parent:
        for seed in seeds:
            ctx.store.say(f"=== seed {seed}")
            note = f"\n\nGenerator shared across seeds: trained once on seed {seeds[0]}'s images." if share_generator else ""
            results.append(run(ctx, seeded(cfg, seed), generator_cfg=first if share_generator else None, note=note,
                               reuse_shared=share_generator and seed != seeds[0]))
        report = stats.seed_report(ctx.store.client, runs.pairs_of_seeds(ctx.store.client, parent.run_id),
                                   share_generator=share_generator)
        compare_id = compare.run_report(ctx, report)
        md = render.report_markdown(report)
        mlflow.log_metrics(report.headline())
        mlflow.log_text(md, "comparison.md")
        mlflow.set_tag(NOTE, f"**Paired seeds**: {len(seeds)}, preset `{cfg.preset}`, generator "
                             f"`{cfg.generator.kind}`.\n\n" + md)
    return parent.run_id, results, report, compare_id


def _description(cfg: Config, m: dict, table_md: str) -> str:
    from harness import classifiers, generators
    what, net = generators.in_words(cfg), classifiers.in_words(cfg.classifier)
    # The headline first: a run page shows the description's first lines and folds the rest.
    return (f"{headline_words(m, cfg)}\n\n**Pipeline** (preset `{cfg.preset}`, classes {', '.join(cfg.data.classes)}, "
            f"{cfg.data.n_per_class} real images per class): baseline {net} (which labels the synthetic images), "
            f"{what}, "
            f"{cfg.generate.n_samples} synthetic images, kept {int(m['kept/count'])} (pseudolabel.mode "
            f"{cfg.pseudolabel.mode}, threshold {cfg.pseudolabel.threshold}), synthetic arm {net} retrained "
            f"from scratch{'; control arm: the same recipe with the real training images in the synthetic slot' if 'images/accuracy' in m else ''}."
            f"\n\n{table_md}")


def headline_words(m: dict, cfg: Config | None = None) -> str:
    """The pipeline's result in one line, the images' effect first (from its parent run's metrics), and
    with `cfg` how far its baseline is from its plateau where its preset measured that."""
    from harness.analysis import plateau
    budget = (plateau.line(flat(cfg)) or "") if cfg is not None else ""
    if "images/accuracy" not in m:
        return (f"Test accuracy {100 * m['baseline/test_accuracy']:.2f}% -> {100 * m['synthetic/test_accuracy']:.2f}% "
                f"({100 * m['delta/accuracy']:+.2f} points; recipe not controlled: control.enabled=false). {budget}").strip()
    from harness.analysis import render, stats
    return " ".join([f"**The images' effect: {100 * m['images/accuracy']:+.2f} points** (synthetic "
                     f"{100 * m['synthetic/test_accuracy']:.2f}% - control {100 * m['control/test_accuracy']:.2f}%); the "
                     f"recipe's: {100 * m['recipe/accuracy']:+.2f} points (control - baseline "
                     f"{100 * m['baseline/test_accuracy']:.2f}%); synthetic - baseline {100 * m['delta/accuracy']:+.2f} points.",
                     *render.recipe_line(m["recipe/accuracy"], stats.MARGIN), budget]).strip()
