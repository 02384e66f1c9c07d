"""Control stage phase (classifier.synthetic_use=pretrain with control.enabled): the control's mirror of
the synthetic stage, the same network trained on replayed real images alone (as many as were kept,
drawn as the control draws them), from classifier.init, with the classifier's recipe; the control phase
then trains it on the real images. Keyed on the kept count, not the kept images: one serves every
generator that keeps as many. Metrics: curves, val/accuracy and data/n_replayed.
"""
from __future__ import annotations

from harness import arms
from harness.arms import ClassifierResult
from harness.phases import before, check, control  # noqa: F401 (the protocol's defaults)

keyed_on = control.keyed_on  # starting weights from outside, and the slot's size


def compute(ctx, cfg, inputs) -> ClassifierResult:
    return arms.train_stage(ctx, cfg, inputs, "control_stage", "replayed real", "replayed",
                            lambda splits: control.slot(cfg, inputs, splits))


def load(ctx, cfg, run) -> ClassifierResult:
    return ClassifierResult(run.info.run_id, dict(run.data.metrics))


def summary(result: ClassifierResult, cfg) -> str:
    return arms.stage_summary("control_stage", result, "replayed", cfg)
