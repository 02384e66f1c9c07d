"""Evaluator phase (quality.enabled only): a SimpleCNN trained on real training images, separate from
the baseline (its own seed, optionally more images per class), whose hidden layer is the feature
space of the sample-quality metrics (harness/quality.py). Trained once per data draw and reused.

Artifacts: model/model.pt (as the baseline's). Metrics: evaluator/test_accuracy, evaluator/n_train.
"""
from __future__ import annotations

from dataclasses import dataclass

import mlflow

from harness import quality, train
from harness.arms import load_model, log_model
from harness.context import PhaseResult
from harness.tracking.store import describe, log_history
from harness.phases import before, check  # noqa: F401 (the protocol's defaults)



@dataclass
class EvaluatorResult(PhaseResult):
    evaluator: quality.Evaluator | None = None


def compute(ctx, cfg, inputs) -> EvaluatorResult:
    splits = ctx.splits(quality.evaluator_data(cfg))
    ccfg = quality.evaluator_training(cfg)
    model, history = train.train_classifier(splits.train_x, splits.train_y, len(splits.classes), ccfg, ctx.device,
                                            label="evaluator")
    log_history(history.epochs)
    acc = (train.predict_proba(model, splits.test_x, ctx.device).argmax(1) == splits.test_y).float().mean().item()
    m = {"evaluator/test_accuracy": acc, "evaluator/n_train": len(splits.train_x)}
    mlflow.log_metrics(m)
    log_model(model, cfg, splits.classes, "evaluator", splits.test_x[:2])
    describe(f"**evaluator**: SimpleCNN (crop+flip) trained on {len(splits.train_x)} real images for "
             f"{ccfg.epochs} epochs; test accuracy {100 * acc:.2f}%. Its hidden layer is the "
             "feature space of the sample-quality metrics (FD, KID, precision/recall).")
    return EvaluatorResult("", m, evaluator=_evaluator(ctx, cfg, model))


def _evaluator(ctx, cfg, model) -> quality.Evaluator:
    test_x = ctx.splits(cfg.data).test_x
    return quality.Evaluator(model, quality.features(model, test_x, ctx.device), ctx.device)


def load(ctx, cfg, run) -> EvaluatorResult:
    return EvaluatorResult(run.info.run_id, dict(run.data.metrics),
                           evaluator=_evaluator(ctx, cfg, load_model(run.info.run_id)[0]))


def summary(result: EvaluatorResult, cfg) -> str:
    return f"evaluator run {result.run_id}: test accuracy {result.metrics.get('evaluator/test_accuracy', 0):.4f}"
