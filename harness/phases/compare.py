"""Compare phase: for every test metric, synthetic minus control (what the images add: the headline),
control minus baseline (what the recipe adds) and synthetic minus baseline (the two together).

Artifacts of the run: comparison.md (metric, the arms, the differences), comparison.json, comparison.png,
report.html (all of it in one page: harness/analysis/page.py).
Metrics: images/<m>, recipe/<m>, delta/<m> for accuracy, f1_weighted, f1_macro, <class>/precision|recall|f1
(images/ and recipe/ only where the control arm ran: control.enabled, the default).
"""
from __future__ import annotations

from dataclasses import dataclass

import mlflow

from harness.analysis import page, plateau, render
from harness.analysis.stats import MARGIN, SeedReport
from harness.config import flat
from harness.context import PhaseResult
from harness.tracking import codecs
from harness.tracking.store import describe, phase_run
from harness.phases import before, check  # noqa: F401 (the protocol's defaults)


@dataclass
class CompareResult(PhaseResult):
    table_md: str = ""
    deltas: dict | None = None


def table(base_metrics: dict, syn_metrics: dict, classes, control: dict | None = None) -> tuple[list, str, dict]:
    rows = render.rows(base_metrics, syn_metrics, classes)
    if control is None:
        return rows, f"{render.NOT_CONTROLLED[0].upper()}{render.NOT_CONTROLLED[1:]}.\n\n" + render.markdown(rows), \
            render.delta_metrics(rows)
    return rows, render.arms_markdown(base_metrics, control, syn_metrics, classes), \
        render.effects(base_metrics, control, syn_metrics, classes)


def headline(deltas: dict) -> float:
    """The number a pipeline is judged by: the images' effect on accuracy where a control ran, else the delta."""
    return deltas.get("images/accuracy", deltas["delta/accuracy"])


def log_pair(base_metrics: dict, syn_metrics: dict, classes, control: dict | None = None,
             title: str = "One pipeline's arms compared", params: dict | None = None) -> tuple[str, dict]:
    """The comparison on the active run: differences as metrics, comparison.md/.json/.png, report.html;
    `params` (the pipeline's flat config) adds what the report says about the baseline's budget."""
    rows, md, deltas = table(base_metrics, syn_metrics, classes, control)
    mlflow.log_metrics(deltas)
    mlflow.log_text(md, "comparison.md")
    codecs.log_json({"controlled": control is not None, "rows": [
        {"metric": k, "baseline": b, "synthetic": a, "difference": a - b,
         **({"control": control[f"test/{k}"], "images": a - control[f"test/{k}"], "recipe": control[f"test/{k}"] - b}
            if control is not None else {})} for k, _, b, a in rows]}, "comparison.json")
    fig = render.figure(rows, classes, control)
    figure_png = page.png(fig)
    codecs.log_figure(fig, "comparison.png")
    if control is not None:
        words = (f"The images' effect (synthetic minus control) on accuracy "
                 f"**{100 * deltas['images/accuracy']:+.2f} points**, weighted F1 {deltas['images/f1_weighted']:+.4f}; "
                 f"the recipe's (control minus baseline) {100 * deltas['recipe/accuracy']:+.2f} points; synthetic "
                 f"minus baseline {100 * deltas['delta/accuracy']:+.2f} points.")
    else:
        words = (f"Synthetic minus baseline, accuracy {100 * deltas['delta/accuracy']:+.2f} points, "
                 f"weighted F1 {deltas['delta/f1_weighted']:+.4f} ({render.NOT_CONTROLLED}).")
    words = " ".join([words, *(render.recipe_line(deltas["recipe/accuracy"], MARGIN) if control is not None else []),
                      *([plateau.line(params) or ""] if params else [])]).strip()
    describe(f"**compare**: {words[0].lower()}{words[1:]}\n\n{md}")
    page.log(title, f"{words}\n\n{md}", [("Test F1 per arm (comparison.png)", figure_png)])
    return md, deltas


def compute(ctx, cfg, inputs) -> CompareResult:
    control = inputs["control"].metrics if "control" in inputs else None
    md, deltas = log_pair(inputs["baseline"].metrics, inputs["synthetic"].metrics, cfg.data.classes, control,
                          title=f"Pipeline, preset {cfg.preset}, seed {cfg.data.seed}: {cfg.generator.kind} images",
                          params=flat(cfg))
    return CompareResult("", deltas, table_md=md, deltas=deltas)


def load(ctx, cfg, run) -> CompareResult:
    control = _metrics_of(ctx, run, "control") if "upstream.control" in run.data.params else None
    _, md, deltas = table(_metrics_of(ctx, run, "baseline"), _metrics_of(ctx, run, "synthetic"), cfg.data.classes,
                          control)
    return CompareResult(run.info.run_id, dict(run.data.metrics), table_md=md, deltas=deltas)


def _metrics_of(ctx, run, phase: str) -> dict:
    return dict(ctx.store.get_run(run.data.params[f"upstream.{phase}"]).data.metrics)


def run_report(ctx, report: SeedReport, params: dict | None = None) -> str:
    """A compare run for several paired seeds: comparison.md / .json / .png and the statistics as metrics."""
    with phase_run(ctx.store, "compare", {"compare.seeds": ",".join(report.seeds), **(params or {})},
                   run_name=f"compare {report.n} seeds") as pr:
        md = render.report_markdown(report)
        mlflow.log_metrics(report.headline())
        mlflow.log_text(md, "comparison.md")
        codecs.log_json(report.to_json(), "comparison.json")
        fig = render.seed_figure(report)
        figure_png = page.png(fig)
        codecs.log_figure(fig, "comparison.png")
        page.log(f"{report.n} paired seeds: {report.effect}", md, [("Per metric: the arms and their difference "
                                                                   "(comparison.png)", figure_png)])
        mlflow.set_tag("harness.verdict", report.verdict())
        describe(f"**compare** over {report.n} paired seeds.\n\n{md}")
        return pr.run_id


def summary(result: CompareResult, cfg) -> str:
    return f"compare run {result.run_id}\n\n{result.table_md}"
