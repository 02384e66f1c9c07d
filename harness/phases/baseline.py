"""Baseline phase: the network of classifier.kind trained on the real training images only (artifacts: harness/classifier.py)."""
from __future__ import annotations

from harness import classifier
from harness.classifier import ClassifierResult
from harness.phases import before, check  # noqa: F401 (the protocol's defaults)


def compute(ctx, cfg, inputs) -> ClassifierResult:
    from harness.classifiers import weights
    model, m = classifier.fit_and_report(cfg, ctx.splits(cfg.data), ctx.device, "baseline",
                                         weights=weights.resolved(ctx, cfg.classifier, inputs))
    return ClassifierResult("", m, trained=model)


def load(ctx, cfg, run) -> ClassifierResult:
    return ClassifierResult(run.info.run_id, dict(run.data.metrics))


def summary(result: ClassifierResult, cfg) -> str:
    return classifier.summary(f"baseline run {result.run_id}", result.metrics, cfg.data.classes)
