"""Augmented phase: the same SimpleCNN, trained from scratch on real + kept synthetic images, and
evaluated and logged exactly like the baseline (same metrics and artifacts; see phases/baseline.py),
plus data/n_real and data/n_synthetic.
"""
from __future__ import annotations

import mlflow
import torch

from harness import tracking
from harness.config import Config
from harness.data import Splits
from harness.phases.baseline import ClassifierResult, fit_and_report


def run(cfg: Config, splits: Splits, synthetic_x: torch.Tensor, synthetic_y: torch.Tensor, device: torch.device,
        key: str, use_cache: bool = True, extra_params: dict | None = None, on_epoch=None,
        evaluate_test: bool = True, soft: torch.Tensor | None = None) -> ClassifierResult:
    """`soft`: soft targets of the synthetic images (pseudolabel.soft_labels), else None."""
    with tracking.phase_run("augmented", cfg, key=key, use_cache=use_cache, extra_params=extra_params) as pr:
        if pr.hit:
            return ClassifierResult(pr.source_id, dict(pr.hit.data.metrics))
        mlflow.log_metrics({"data/n_real": len(splits.train_x), "data/n_synthetic": len(synthetic_x)})
        model, m = fit_and_report(cfg, splits, splits.train_x, splits.train_y, device, "augmented", on_epoch=on_epoch,
                                  evaluate_test=evaluate_test, synthetic=(synthetic_x, synthetic_y, soft))
        return ClassifierResult(pr.run_id, m | {"data/n_real": len(splits.train_x),
                                                "data/n_synthetic": len(synthetic_x)}, model)
