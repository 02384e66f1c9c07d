"""Pseudo-label phase: the baseline classifier labels each synthetic image; those with top-class
probability >= pseudolabel.threshold are kept for the augmented training set.

Artifacts of the run:
  kept.npz                  images: uint8 [K, 3, 32, 32], labels: int64 [K], confidence: float32 [K]
  pseudo_labels.csv         index, predicted, class, confidence, kept (one row per synthetic image)
  confidence_histogram.png  top-class probability of every synthetic image, per predicted class
  kept/<class>.png          a grid of (up to 64) kept images per class
Metrics: kept/count, kept/fraction, kept/<class>/count, confidence/mean, confidence/kept_mean.
"""
from __future__ import annotations

from dataclasses import dataclass

import mlflow
import numpy as np
import torch

from harness import tracking, train
from harness.config import Config
from harness.phases.baseline import load_model


@dataclass
class PseudolabelResult:
    run_id: str
    images: torch.Tensor  # uint8 [K, 3, 32, 32], the kept images
    labels: torch.Tensor  # int64 [K]
    metrics: dict[str, float]


_proba_memo: dict[tuple[str, str], np.ndarray] = {}


def _baseline_proba(baseline_run_id: str, synthetic: torch.Tensor, device: torch.device) -> np.ndarray:
    """The baseline's probabilities for these images, computed once per process: sweep trials that
    change only the threshold label the same images with the same model."""
    import hashlib
    key = (baseline_run_id, hashlib.sha256(synthetic.numpy().tobytes()).hexdigest())
    if key not in _proba_memo:
        model, _ = load_model(baseline_run_id)
        _proba_memo.clear()  # one entry is what a sweep reuses; keep memory flat
        _proba_memo[key] = train.predict_proba(model, synthetic, device).numpy()
    return _proba_memo[key]


def histogram_figure(confidence: np.ndarray, pred: np.ndarray, classes, threshold: float):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.5, 3.5))
    bins = np.linspace(1 / len(classes), 1, 31)
    ax.hist([confidence[pred == i] for i in range(len(classes))], bins=bins, stacked=True, label=list(classes))
    ax.axvline(threshold, color="k", linestyle="--", label=f"threshold {threshold}")
    ax.set_xlabel("baseline top-class probability")
    ax.set_ylabel("synthetic images")
    ax.set_title(f"kept {(confidence >= threshold).sum()} of {len(confidence)}")
    ax.legend()
    fig.tight_layout()
    return fig


def run(cfg: Config, baseline_run_id: str, synthetic: torch.Tensor, classes, device: torch.device,
        key: str, use_cache: bool = True, extra_params: dict | None = None) -> PseudolabelResult:
    with tracking.phase_run("pseudolabel", cfg, key=key, use_cache=use_cache,
                            extra_params={"pseudolabel.baseline_run": baseline_run_id, **(extra_params or {})}) as pr:
        if pr.hit:
            kept = tracking.load_npz(pr.source_id, "kept.npz")
            return PseudolabelResult(pr.source_id, torch.from_numpy(kept["images"]), torch.from_numpy(kept["labels"]),
                                     dict(pr.hit.data.metrics))
        proba = _baseline_proba(baseline_run_id, synthetic, device)
        pred, confidence = proba.argmax(1), proba.max(1)
        keep = confidence >= cfg.pseudolabel.threshold
        m = {"kept/count": int(keep.sum()), "kept/fraction": float(keep.mean()) if len(keep) else 0.0,
             "confidence/mean": float(confidence.mean()) if len(keep) else 0.0,
             "confidence/kept_mean": float(confidence[keep].mean()) if keep.any() else 0.0}
        for i, name in enumerate(classes):
            m[f"kept/{name}/count"] = int((keep & (pred == i)).sum())
        mlflow.log_metrics(m)
        images, labels = synthetic[torch.from_numpy(keep)], torch.from_numpy(pred[keep])
        tracking.log_npz("kept.npz", images=images.numpy(), labels=labels.numpy(), confidence=confidence[keep])
        mlflow.log_text(tracking.csv_text(["index", "predicted", "class", "confidence", "kept"],
                                          ((i, p, classes[p], f"{c:.6f}", int(k)) for i, (p, c, k)
                                           in enumerate(zip(pred, confidence, keep)))), "pseudo_labels.csv")
        tracking.log_figure(histogram_figure(confidence, pred, classes, cfg.pseudolabel.threshold),
                            "confidence_histogram.png")
        for i, name in enumerate(classes):
            tracking.log_image_grid(images[labels == i][:64], f"kept/{name}.png")
        per_class = ", ".join(f"{c} {m[f'kept/{c}/count']}" for c in classes)
        tracking.describe(f"**pseudolabel**: the baseline labelled {len(keep)} synthetic images and kept "
                          f"**{m['kept/count']}** ({100 * m['kept/fraction']:.1f}%) with confidence >= "
                          f"{cfg.pseudolabel.threshold}: {per_class}. See confidence_histogram.png and kept/.")
        return PseudolabelResult(pr.run_id, images, labels, m)
