"""Evaluator phase (quality.enabled only): a SimpleCNN trained on real training images, separate from
the baseline (its own seed, optionally more images per class), whose hidden layer is the feature
space of the sample-quality metrics (harness/quality.py). Trained once per data draw and reused.

Artifacts: model/model.pt (as the baseline's). Metrics: evaluator/test_accuracy, evaluator/n_train.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import mlflow

from harness import quality, train
from harness.classifier import load_model, log_model
from harness.config import ClassifierConfig
from harness.context import PhaseResult
from harness.tracking.store import describe, log_history
from harness.phases import before, check  # noqa: F401 (the protocol's defaults)

SEED_OFFSET = 1000  # the evaluator's weights and batch order differ from the baseline's


@dataclass
class EvaluatorResult(PhaseResult):
    evaluator: quality.Evaluator | None = None


def classifier_config(cfg) -> ClassifierConfig:
    """Fixed training settings (the reference's, with crop+flip), independent of classifier.*: presets
    that differ in how they train their arms still share one evaluator, so their figures compare."""
    return ClassifierConfig(epochs=cfg.quality.evaluator_epochs, augmentation="crop-flip", seed=SEED_OFFSET + cfg.data.seed,
                            precision=cfg.quality.precision)


def data_config(cfg):
    """The draw the evaluator trains on: data.n_per_class images per class, or quality.evaluator_per_class."""
    n = cfg.quality.evaluator_per_class
    if not n or n == cfg.data.n_per_class:
        return cfg.data
    return dataclasses.replace(cfg.data, n_per_class=n, val_per_class=0)


def compute(ctx, cfg, inputs) -> EvaluatorResult:
    splits = ctx.splits(data_config(cfg))
    ccfg = classifier_config(cfg)
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
