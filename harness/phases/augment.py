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
from harness.phases.baseline import ClassifierResult, fit_and_report, load_model, log_model, report_test


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


def evaluate(cfg: Config, splits: Splits, model_run_id: str, device: torch.device, key: str,
             use_cache: bool = True, extra_params: dict | None = None) -> ClassifierResult:
    """The test evaluation of an augmented model trained earlier without it (a sweep trial's, which
    chose by validation only): the same metrics and artifacts as `run`, without training again."""
    with tracking.phase_run("augmented", cfg, key=key, use_cache=use_cache,
                            extra_params={"augmented.model_run": model_run_id, **(extra_params or {})}) as pr:
        if pr.hit:
            return ClassifierResult(pr.source_id, dict(pr.hit.data.metrics))
        model, _ = load_model(model_run_id)
        trained = dict(mlflow.MlflowClient().get_run(model_run_id).data.metrics)
        m = {k: trained[k] for k in ("val/accuracy", "data/n_real", "data/n_synthetic") if k in trained}
        mlflow.log_metrics(m)
        log_model(model, cfg, splits.classes)
        m |= report_test(model, splits, device, "augmented",
                         f"**augmented**: the SimpleCNN of run `{model_run_id}` (trained on real + "
                         f"{int(m.get('data/n_synthetic', 0))} synthetic images, chosen by validation), "
                         "evaluated once on the test set.")
        return ClassifierResult(pr.run_id, m, model)
