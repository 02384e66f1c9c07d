"""Compare phase: augmented minus baseline for every test metric.

Artifacts of the run: comparison.md (metric, baseline, augmented, difference), comparison.json, comparison.png.
Metrics: delta/accuracy, delta/f1_weighted, delta/f1_macro, delta/<class>/precision|recall|f1.
"""
from __future__ import annotations

from dataclasses import dataclass

import mlflow

from harness import compare, tracking
from harness.config import Config


@dataclass
class CompareResult:
    run_id: str
    table_md: str
    deltas: dict[str, float]


def run(cfg: Config, base_metrics: dict, aug_metrics: dict, classes, key: str | None = None, use_cache: bool = True,
        extra_params: dict | None = None) -> CompareResult:
    table = compare.rows(base_metrics, aug_metrics, classes)
    md = compare.markdown(table)
    deltas = compare.delta_metrics(table)
    with tracking.phase_run("compare", cfg, key=key, use_cache=use_cache, extra_params=extra_params) as pr:
        if not pr.hit:
            mlflow.log_metrics(deltas)
            mlflow.log_text(md, "comparison.md")
            tracking.log_json({"rows": [{"metric": k, "baseline": b, "augmented": a, "difference": a - b}
                                        for k, _, b, a in table]}, "comparison.json")
            tracking.log_figure(compare.figure(table, classes), "comparison.png")
            tracking.describe(f"**compare**: augmented minus baseline, accuracy {100 * deltas['delta/accuracy']:+.2f} "
                              f"points, weighted F1 {deltas['delta/f1_weighted']:+.4f}.\n\n{md}")
        return CompareResult(pr.source_id, md, deltas)


def run_report(cfg: Config, report: compare.SeedReport, extra_params: dict | None = None) -> str:
    """A compare run for several paired seeds: comparison.md / .json / .png and the statistics as metrics."""
    with tracking.phase_run("compare", cfg, run_name=f"compare {report.n} seeds",
                            extra_params={"compare.seeds": ",".join(report.seeds), **(extra_params or {})}) as pr:
        mlflow.log_metrics(report.headline())
        mlflow.log_text(report.markdown(), "comparison.md")
        tracking.log_json(report.to_json(), "comparison.json")
        tracking.log_figure(compare.seed_figure(report), "comparison.png")
        mlflow.set_tag("harness.verdict", report.verdict())
        tracking.describe(f"**compare** over {report.n} paired seeds.\n\n{report.markdown()}")
        return pr.run_id
