"""Synthetic stage phase (classifier.synthetic_use=pretrain): the synthetic arm's network trained on the
kept synthetic images alone (their labels, soft where pseudolabel.soft_labels), from classifier.init,
with the classifier's recipe; the synthetic phase then trains it on the real images ("bridged
transfer", Li et al., ICLR 2024). Logged as an arm (harness/arms.py) but for the test set, which only
the arm it leads to sees. Metrics: curves, val/accuracy and data/n_synthetic.
"""
from __future__ import annotations

from harness import arms
from harness.arms import ClassifierResult
from harness.classifiers import weights
from harness.phases import before, check  # noqa: F401 (the protocol's defaults)


def keyed_on(ctx, cfg, inputs) -> tuple[str, ...]:
    """Starting weights from outside (a file, a URI): their content."""
    return (weights.digest(ctx, cfg.classifier.init),)


def compute(ctx, cfg, inputs) -> ClassifierResult:
    kept = inputs["pseudolabel"]
    return arms.train_stage(ctx, cfg, inputs, "synthetic_stage", "synthetic", "synthetic",
                            lambda splits: (kept.images, kept.labels, kept.soft))


def load(ctx, cfg, run) -> ClassifierResult:
    return ClassifierResult(run.info.run_id, dict(run.data.metrics))


def summary(result: ClassifierResult, cfg) -> str:
    return arms.stage_summary("synthetic_stage", result, "synthetic", cfg)
