"""Synthetic phase: the same network (classifier.kind), trained from scratch on real + kept synthetic images, and
evaluated and logged exactly like the baseline (harness/classifier.py), plus data/n_real and
data/n_synthetic.

Options: `on_epoch` (a sweep reports and prunes there), `evaluate_test=False` (sweep trials choose
by validation only), `model_run` (test the model a trial trained instead of training again).
"""
from __future__ import annotations

import mlflow

from harness import classifier
from harness.classifier import ClassifierResult
from harness.classifiers import weights
from harness.phases import before, check  # noqa: F401 (the protocol's defaults)


def compute(ctx, cfg, inputs, on_epoch=None, evaluate_test: bool = True, model_run: str | None = None) -> ClassifierResult:
    splits, kept = ctx.splits(cfg.data), inputs["pseudolabel"]
    if model_run:
        m, model = classifier.evaluate_run(ctx, cfg, splits, model_run, "synthetic", "synthetic")
        return ClassifierResult("", m, trained=model)
    sizes = {"data/n_real": len(splits.train_x), "data/n_synthetic": len(kept.images)}
    mlflow.log_metrics(sizes)
    model, m = classifier.fit_and_report(cfg, splits, ctx.device, "synthetic", on_epoch=on_epoch,
                                         evaluate_test=evaluate_test, synthetic=(kept.images, kept.labels, kept.soft),
                                         weights=weights.resolved(ctx, cfg.classifier, inputs))
    return ClassifierResult("", m | sizes, trained=model)


def load(ctx, cfg, run) -> ClassifierResult:
    return ClassifierResult(run.info.run_id, dict(run.data.metrics))


def summary(result: ClassifierResult, cfg) -> str:
    return classifier.summary(f"synthetic run {result.run_id} ({int(result.metrics.get('data/n_synthetic', 0))} "
                              "synthetic images)", result.metrics, cfg.data.classes)
