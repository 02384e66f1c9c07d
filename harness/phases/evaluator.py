"""Evaluator phase (quality.enabled only): a SimpleCNN trained on real training images, separate from
the baseline (its own seed, optionally more images per class), whose hidden layer is the feature
space of the sample-quality metrics (harness/quality.py). Trained once per data draw and reused.

Artifacts: model/model.pt (as the baseline's). Metrics: evaluator/test_accuracy, evaluator/n_train.
"""
from __future__ import annotations

import dataclasses

import mlflow
import torch

from harness import quality, tracking, train
from harness.config import Config
from harness.data import Splits, load_splits
from harness.phases.baseline import load_model

SEED_OFFSET = 1000  # the evaluator's weights and batch order differ from the baseline's


def classifier_config(cfg: Config):
    """Fixed training settings (the reference's, with crop+flip), independent of classifier.*: presets
    that differ in how they train their arms still share one evaluator, so their figures compare."""
    from harness.config import ClassifierConfig
    return ClassifierConfig(epochs=cfg.quality.evaluator_epochs, augment=True, seed=SEED_OFFSET + cfg.data.seed)


def training_images(cfg: Config, splits: Splits, data_dir) -> tuple[torch.Tensor, torch.Tensor]:
    n = cfg.quality.evaluator_per_class
    if not n or n == cfg.data.n_per_class:
        return splits.train_x, splits.train_y
    more = load_splits(dataclasses.replace(cfg.data, n_per_class=n, val_per_class=0), data_dir)
    return more.train_x, more.train_y


def run(cfg: Config, splits: Splits, device: torch.device, key: str, use_cache: bool = True,
        data_dir=None) -> quality.Evaluator:
    with tracking.phase_run("evaluator", cfg, key=key, use_cache=use_cache) as pr:
        if pr.hit:
            model = load_model(pr.source_id)[0]
        else:
            x, y = training_images(cfg, splits, data_dir)
            ccfg = classifier_config(cfg)
            model, history = train.train_classifier(x, y, len(splits.classes), ccfg, device, label="evaluator")
            tracking.log_history(history.epochs)
            acc = (train.predict_proba(model, splits.test_x, device).argmax(1) == splits.test_y).float().mean().item()
            mlflow.log_metrics({"evaluator/test_accuracy": acc, "evaluator/n_train": len(x)})
            tracking.log_torch({"state_dict": {k: v.cpu() for k, v in model.state_dict().items()},
                                "config": dataclasses.asdict(cfg), "classes": list(splits.classes)}, "model/model.pt")
            tracking.describe(f"**evaluator**: SimpleCNN (crop+flip) trained on {len(x)} real images for "
                              f"{ccfg.epochs} epochs; test accuracy {100 * acc:.2f}%. Its hidden layer is the "
                              "feature space of the sample-quality metrics (FD, KID, precision/recall).")
        return quality.Evaluator(model, quality.features(model, splits.test_x, device), device)
