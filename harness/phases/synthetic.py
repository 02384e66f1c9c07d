"""Synthetic phase: the same network (classifier.kind), trained from scratch on real + kept synthetic images, and
evaluated and logged exactly like the baseline (harness/arms.py), plus data/n_real and
data/n_synthetic. Under classifier.synthetic_use=pretrain it trains on the real images alone, from the
weights the synthetic_stage phase trained on the kept images alone.

Options: `on_epoch` (a sweep reports and prunes there), `evaluate_test=False` (sweep trials choose
by validation only), `model_run` (test the model a trial trained instead of training again).
"""
from __future__ import annotations

from harness import arms
from harness.arms import ClassifierResult
from harness.classifiers import weights
from harness.phases import before, check  # noqa: F401 (the protocol's defaults)


def keyed_on(ctx, cfg, inputs) -> tuple[str, ...]:
    """Starting weights from outside (a file, a URI): their content."""
    return (weights.digest(ctx, cfg.classifier.init),)


def compute(ctx, cfg, inputs, on_epoch=None, evaluate_test: bool = True, model_run: str | None = None) -> ClassifierResult:
    kept = inputs["pseudolabel"]
    return arms.train_arm(ctx, cfg, inputs, "synthetic", "synthetic", "synthetic",
                          lambda splits: (kept.images, kept.labels, kept.soft), on_epoch, evaluate_test, model_run,
                          stage="synthetic_stage")


def load(ctx, cfg, run) -> ClassifierResult:
    return ClassifierResult(run.info.run_id, dict(run.data.metrics))


def summary(result: ClassifierResult, cfg) -> str:
    return arms.summary(f"synthetic run {result.run_id} ({int(result.metrics.get('data/n_synthetic', 0))} "
                              "synthetic images)", result.metrics, cfg.data.classes)
