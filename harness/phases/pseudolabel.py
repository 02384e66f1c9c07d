"""Pseudo-label phase: the baseline classifier labels each synthetic image; those with top-class
probability >= pseudolabel.threshold are kept for the augmented training set.

pseudolabel.mode: label (the reference: the class is the baseline's), filter (the class is the one the
generator drew, for kinds that know it; kept when the baseline agrees with at least the threshold's confidence)
or none (the generator's class, every image kept). top_k_per_class keeps the k most
confident per class; soft_labels trains on the baseline's tempered probabilities.

Artifacts of the run:
  kept.npz                  images: uint8 [K, C, H, W], labels: int64 [K], confidence: float32 [K],
                            soft: float32 [K, C] (soft_labels only)
  pseudo_labels.json        MLflow table: index, predicted, class, confidence, kept (+ generated: the class
                            the generator drew, for kinds that know it); mlflow.load_table reads it
  confidence_histogram.png  top-class probability of every synthetic image, per predicted class
  kept/<class>.png          a grid of (up to 64) kept images per class
  kept.png                  8 kept images of each class, one row per class with its name
Metrics: kept/count, kept/fraction, kept/<class>/count, confidence/mean, confidence/kept_mean;
agreement/rate (kinds that know classes: how often the baseline's class is the generated one).
"""
from __future__ import annotations

from dataclasses import dataclass

import mlflow
import numpy as np
import torch

from harness import train
from harness.context import PhaseResult
from harness.errors import HarnessError
from harness.tracking import codecs
from harness.tracking.store import describe
from harness.phases import before, check  # noqa: F401 (the protocol's defaults)


@dataclass
class PseudolabelResult(PhaseResult):
    images: torch.Tensor | None = None  # uint8 [K, C, H, W], the kept images
    labels: torch.Tensor | None = None  # int64 [K]
    soft: torch.Tensor | None = None  # float32 [K, C] soft targets (pseudolabel.soft_labels), else None

    def digest(self) -> str:
        """Later phases are keyed by the kept images themselves, not by the settings that chose them:
        two thresholds that keep the same images (say, all) share one synthetic run."""
        import hashlib
        h = hashlib.sha256(self.images.numpy().tobytes() + self.labels.numpy().tobytes())
        if self.soft is not None:
            h.update(self.soft.numpy().tobytes())
        return f"kept:{h.hexdigest()[:16]}"


def _predict(model, images: torch.Tensor, device, chunk: int = 4096) -> np.ndarray:
    """The model's probabilities of many images, chunk by chunk under a progress bar (50,000 images are
    tens of seconds on a CPU)."""
    from harness import progress
    out = np.zeros((len(images), 0), np.float32)
    parts = []
    with progress.shown(len(images), "pseudolabel") as bar:
        for i in range(0, len(images), chunk):
            parts.append(train.predict_proba(model, images[i:i + chunk], device).numpy())
            bar.update(len(parts[-1]))
    return np.concatenate(parts) if parts else out


def _baseline_proba(ctx, baseline, synthetic: torch.Tensor) -> np.ndarray:
    """The baseline's probabilities, per image and memoized in ctx.memo by baseline run: a sweep
    trial whose images are a prefix of a stream labelled before (same checkpoint, fewer samples; or
    only a new threshold) labels nothing, and a longer stream labels only its new tail. `baseline`
    is the baseline phase's result: its model in memory when it was just trained."""
    memo = ctx.memo.labelled
    n = len(synthetic)
    for i, (run_id, images, proba) in enumerate(memo):
        if run_id != baseline.source_run_id:
            continue
        m = min(n, len(images))
        if m and torch.equal(images[:m], synthetic[:m]):
            if n > m:
                tail = _predict(baseline.model, synthetic[m:], ctx.device)
                images, proba = synthetic, np.concatenate([proba, tail])
            memo.pop(i)
            memo.append((run_id, images, proba))
            return proba[:n]
    proba = _predict(baseline.model, synthetic, ctx.device)
    memo.append((baseline.source_run_id, synthetic, proba))
    del memo[:-ctx.memo.kept]
    return proba


def histogram_figure(confidence: np.ndarray, pred: np.ndarray, classes, threshold: float):
    from matplotlib.ticker import MaxNLocator

    from harness.figures import style, subplots, tight, wrap
    fig, ax = subplots(figsize=(7.5, 3.6))
    bins = np.linspace(1 / len(classes), 1, 31)
    # Stacked steps from precomputed counts: one artist per class (ax.hist draws a patch per bin
    # and cost ~0.6 s a figure, which a sweep pays every trial).
    bottom = np.zeros(len(bins) - 1)
    for i, name in enumerate(classes):
        counts, _ = np.histogram(confidence[pred == i], bins=bins)
        ax.stairs(bottom + counts, bins, baseline=bottom, fill=True, label=wrap(name, 18),
                  color=style(i)["color"], alpha=0.85)
        bottom = bottom + counts
    ax.axvline(threshold, color="k", linestyle="--", label=f"threshold {threshold}")
    # Few, fixed ticks: matplotlib's tick machinery is most of what drawing this figure costs.
    ax.set_xticks(np.round(np.linspace(bins[0], 1, 5), 2))
    ax.yaxis.set_major_locator(MaxNLocator(4, integer=True))
    ax.set_xlabel("baseline probability of the assigned class")
    ax.set_ylabel("synthetic images")
    ax.set_title(f"kept {(confidence >= threshold).sum()} of {len(confidence)}")
    # Beside the axes, not over the stairs; a fixed place (loc="best" searches and cost 0.1 s a figure).
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, ncols=1 if len(classes) <= 10 else 2)
    tight(fig)
    return fig


def select(cfg, proba: np.ndarray, generated: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(class, confidence in that class, keep mask) of each synthetic image under pseudolabel.*."""
    p = cfg.pseudolabel
    if p.mode == "label":
        cls = proba.argmax(1)
    else:
        cls = generated
    confidence = proba[np.arange(len(proba)), cls] if len(proba) else np.zeros(0, np.float32)
    if p.mode == "none":
        keep = np.ones(len(cls), bool)
    else:
        keep = confidence >= p.threshold
        if p.mode == "filter":
            keep &= proba.argmax(1) == cls
    if p.top_k_per_class:
        # Class-balanced: the k most confident of each class among those that passed.
        for c in np.unique(cls):
            members = np.flatnonzero(keep & (cls == c))
            keep[members[np.argsort(-confidence[members], kind="stable")[p.top_k_per_class:]]] = False
    return cls, confidence, keep


def soft_targets(proba: np.ndarray, temperature: float) -> np.ndarray:
    """p ** (1/T), renormalized: T < 1 sharpens the baseline's probabilities, T > 1 flattens them."""
    logp = np.log(np.clip(proba, 1e-12, None)) / temperature
    e = np.exp(logp - logp.max(1, keepdims=True))
    return (e / e.sum(1, keepdims=True)).astype(np.float32)


@dataclass
class Labelled:
    """What the pseudo-labelling decided for each synthetic image, before anything is logged."""
    images: torch.Tensor  # uint8 [K, 3, 32, 32], the kept images
    labels: torch.Tensor  # int64 [K]
    soft: torch.Tensor | None  # float32 [K, C] (pseudolabel.soft_labels), else None
    metrics: dict[str, float]
    proba: np.ndarray  # [N, C] the baseline's probabilities of every synthetic image
    cls: np.ndarray  # [N] the class each image would carry
    confidence: np.ndarray  # [N] the baseline's probability of that class
    keep: np.ndarray  # [N] bool
    generated: np.ndarray | None  # [N] a conditional generator's classes


def label(ctx, cfg, baseline, synthetic: torch.Tensor, classes, generated: torch.Tensor | None = None) -> Labelled:
    """Label and filter the synthetic images under pseudolabel.*, logging nothing."""
    if cfg.pseudolabel.mode != "label" and generated is None:
        raise HarnessError(f"pseudolabel.mode={cfg.pseudolabel.mode} needs synthetic images that carry their "
                           "classes (generator.kind=oracle or noise, or a class-conditional GAN)")
    proba = _baseline_proba(ctx, baseline, synthetic)
    gen = generated.numpy() if generated is not None else None
    cls, confidence, keep = select(cfg, proba, gen)
    m = {"kept/count": int(keep.sum()), "kept/fraction": float(keep.mean()) if len(keep) else 0.0,
         "confidence/mean": float(confidence.mean()) if len(keep) else 0.0,
         "confidence/kept_mean": float(confidence[keep].mean()) if keep.any() else 0.0}
    if gen is not None and len(gen):
        m["agreement/rate"] = float((proba.argmax(1) == gen).mean())
    for i, name in enumerate(classes):
        m[f"kept/{name}/count"] = int((keep & (cls == i)).sum())
    soft = soft_targets(proba[keep], cfg.pseudolabel.temperature) if cfg.pseudolabel.soft_labels else None
    return Labelled(synthetic[torch.from_numpy(keep)], torch.from_numpy(cls[keep]).long(),
                    torch.from_numpy(soft) if soft is not None else None, m, proba, cls, confidence, keep, gen)


def draft(ctx, cfg, inputs) -> PseudolabelResult:
    """The kept images in memory, logging nothing (a sweep trial's form of the phase: harness/runner/)."""
    lab = label(ctx, cfg, inputs["baseline"], inputs["generate"].images, cfg.data.classes, inputs["generate"].labels)
    return PseudolabelResult("", lab.metrics, images=lab.images, labels=lab.labels, soft=lab.soft)


def compute(ctx, cfg, inputs) -> PseudolabelResult:
    classes = cfg.data.classes
    gen_res = inputs["generate"]
    lab = label(ctx, cfg, inputs["baseline"], gen_res.images, classes, gen_res.labels)
    m, images, labels, keep, cls, gen = lab.metrics, lab.images, lab.labels, lab.keep, lab.cls, lab.generated
    mlflow.log_metrics(m)
    codecs.log_npz("kept.npz", images=images.numpy(), labels=labels.numpy(), confidence=lab.confidence[keep],
                   **({"soft": lab.soft.numpy()} if lab.soft is not None else {}))
    pred = lab.proba.argmax(1) if len(lab.proba) else cls
    table = {"index": list(range(len(cls))), "predicted": pred.tolist(), "class": [classes[c] for c in cls],
             "confidence": lab.confidence.round(6).tolist(), "kept": keep.astype(int).tolist()}
    if gen is not None:
        table["generated"] = gen.tolist()
    mlflow.log_table(table, "pseudo_labels.json")
    codecs.log_figure(histogram_figure(lab.confidence, cls, classes, cfg.pseudolabel.threshold),
                      "confidence_histogram.png")
    for i, name in enumerate(classes):
        first = images[(labels == i).nonzero().flatten()[:64]]  # indices: a mask would copy the whole class
        codecs.log_image_grid(first, f"kept/{name}.png")
        codecs.log_image_grid(first, key=f"kept/{codecs.series_name(name, i)}")  # the run page's image view
    codecs.log_class_grid(images, labels, classes, "kept.png")  # every class at a glance, named
    per_class = ", ".join(f"{c} {m[f'kept/{c}/count']}" for c in classes)
    how = {"label": f"the baseline labelled {len(keep)} synthetic images and kept",
           "filter": f"of {len(keep)} images with known classes, the baseline agreed (confidence >= "
                     f"{cfg.pseudolabel.threshold}) with",
           "none": f"all {len(keep)} images kept, with the class the generator drew:"}[cfg.pseudolabel.mode]
    describe(f"**pseudolabel**: {how} **{m['kept/count']}** ({100 * m['kept/fraction']:.1f}%): "
             f"{per_class}. See confidence_histogram.png and kept/.")
    return PseudolabelResult("", m, images=images, labels=labels, soft=lab.soft)


def load(ctx, cfg, run) -> PseudolabelResult:
    kept = codecs.load_npz(run.info.run_id, "kept.npz")
    return PseudolabelResult(run.info.run_id, dict(run.data.metrics), images=torch.from_numpy(kept["images"]),
                             labels=torch.from_numpy(kept["labels"]),
                             soft=torch.from_numpy(kept["soft"]) if "soft" in kept else None)


def summary(result: PseudolabelResult, cfg) -> str:
    per_class = ", ".join(f"{c} {int(result.metrics[f'kept/{c}/count'])}" for c in cfg.data.classes)
    return f"pseudolabel run {result.run_id}: kept {int(result.metrics['kept/count'])} ({per_class})"
