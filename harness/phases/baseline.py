"""Baseline phase: the network of classifier.kind trained on the real training images only (artifacts: harness/arms.py)."""
from __future__ import annotations

from harness import arms
from harness.arms import ClassifierResult
from harness.classifiers import weights
from harness.phases import before, check  # noqa: F401 (the protocol's defaults)


def keyed_on(ctx, cfg, inputs) -> tuple[str, ...]:
    """Starting weights from outside (a file, a URI): their content."""
    return (weights.digest(ctx, cfg.classifier.init),)


def compute(ctx, cfg, inputs) -> ClassifierResult:
    model, m = arms.fit_and_report(cfg, ctx.splits(cfg.data), ctx.device, "baseline",
                                         start=weights.starting(ctx, cfg.classifier, inputs))
    return ClassifierResult("", m, trained=model)


def load(ctx, cfg, run) -> ClassifierResult:
    return ClassifierResult(run.info.run_id, dict(run.data.metrics))


def summary(result: ClassifierResult, cfg) -> str:
    return arms.summary(f"baseline run {result.run_id}", result.metrics, cfg.data.classes)
