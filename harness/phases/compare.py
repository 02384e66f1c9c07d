"""Compare phase: synthetic minus baseline for every test metric.

Artifacts of the run: comparison.md (metric, baseline, synthetic, difference), comparison.json, comparison.png.
Metrics: delta/accuracy, delta/f1_weighted, delta/f1_macro, delta/<class>/precision|recall|f1.
"""
from __future__ import annotations

from dataclasses import dataclass

import mlflow

from harness.compare import render
from harness.compare.stats import SeedReport
from harness.context import PhaseResult
from harness.tracking import codecs
from harness.tracking.store import describe, phase_run
from harness.phases import before, check  # noqa: F401 (the protocol's defaults)


@dataclass
class CompareResult(PhaseResult):
    table_md: str = ""
    deltas: dict | None = None


def table(base_metrics: dict, syn_metrics: dict, classes) -> tuple[list, str, dict]:
    rows = render.rows(base_metrics, syn_metrics, classes)
    return rows, render.markdown(rows), render.delta_metrics(rows)


def log_pair(base_metrics: dict, syn_metrics: dict, classes) -> tuple[str, dict]:
    """The pair's comparison on the active run: deltas as metrics, comparison.md/.json/.png."""
    rows, md, deltas = table(base_metrics, syn_metrics, classes)
    mlflow.log_metrics(deltas)
    mlflow.log_text(md, "comparison.md")
    codecs.log_json({"rows": [{"metric": k, "baseline": b, "synthetic": a, "difference": a - b}
                              for k, _, b, a in rows]}, "comparison.json")
    codecs.log_figure(render.figure(rows, classes), "comparison.png")
    describe(f"**compare**: synthetic minus baseline, accuracy {100 * deltas['delta/accuracy']:+.2f} "
             f"points, weighted F1 {deltas['delta/f1_weighted']:+.4f}.\n\n{md}")
    return md, deltas


def compute(ctx, cfg, inputs) -> CompareResult:
    md, deltas = log_pair(inputs["baseline"].metrics, inputs["synthetic"].metrics, cfg.data.classes)
    return CompareResult("", deltas, table_md=md, deltas=deltas)


def load(ctx, cfg, run) -> CompareResult:
    _, md, deltas = table(_metrics_of(ctx, run, "baseline"), _metrics_of(ctx, run, "synthetic"), cfg.data.classes)
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
        codecs.log_figure(render.seed_figure(report), "comparison.png")
        mlflow.set_tag("harness.verdict", report.verdict())
        describe(f"**compare** over {report.n} paired seeds.\n\n{md}")
        return pr.run_id


def summary(result: CompareResult, cfg) -> str:
    return f"compare run {result.run_id}\n\n{result.table_md}"
