"""Generate phase: generate.n_samples images from the chosen generator kind (a checkpoint of the
generator run, or the data itself for kinds that do not train).

Artifacts of the run:
  synthetic.npz   images: uint8 [N, C, H, W]; labels: int64 [N], their classes when the kind knows them
  preview.png     the first 64 images as a grid
  preview_classes.png  kinds that know their images' classes: 8 per class, one named row per class
  memorization.png the 16 generated images closest to a real training image, each beside it (pairs in a row)
Metrics: memorization/near_copy_share (per-pixel RMS distance to the nearest training image < 0.05),
memorization/median_rms, and with quality.enabled memorization/feature_near_copy_share (cosine > 0.99
in the evaluator's features).
Params: generate.checkpoint_used (the epoch sampled from; 0 for kinds that do not train).
With quality.enabled: quality/fd, quality/kid, quality/precision, quality/recall of these images and
quality/cas (test accuracy of a SimpleCNN trained on them alone; images without classes are
labelled by the evaluator for it).
"""
from __future__ import annotations

from dataclasses import dataclass

import mlflow
import torch

from harness import generators, train
from harness.context import PhaseResult
from harness.generators import stream
from harness.phases import before  # noqa: F401 (the protocol's default)
from harness.tracking import codecs
from harness.tracking.store import describe


@dataclass
class GenerateResult(PhaseResult):
    images: torch.Tensor | None = None  # uint8 [N, C, H, W]
    labels: torch.Tensor | None = None  # int64 [N]: the classes when the kind knows them, else None
    epoch: int = 0  # the checkpoint drawn from
    drawn_from: str = ""  # the sampler in words, for descriptions


def check(ctx, cfg, inputs) -> None:
    """Enough unused images for an oracle, a checkpoint the generator run has, too few images for quality."""
    generators.preflight(ctx, cfg, inputs["generator"].source_run_id if "generator" in inputs else None)


def keyed_on(ctx, cfg, inputs) -> tuple[str, ...]:
    """What the kind reads from outside the config and the data (a folder's pixels, a model's commit)."""
    return (generators.identity(ctx, cfg),)


def outside_records(ctx, cfg) -> list:
    """MLflow dataset records of what the kind read from outside, for the run's Datasets column."""
    return generators.datasets(ctx, cfg)


def draw(ctx, cfg, inputs) -> tuple[torch.Tensor, torch.Tensor | None, stream.Sampler]:
    """generate.n_samples images (+ their classes, or None), drawing only what ctx.memo lacks."""
    kind = generators.get(cfg.generator.kind)
    source = inputs["generator"].source_run_id if kind.TRAINS else ctx.splits(cfg.data)
    sampler = kind.sampler(ctx, cfg, source)
    images, labels = stream.take(ctx.memo, sampler, cfg.generate.n_samples)
    return images, labels, sampler


def measure(ctx, cfg, images: torch.Tensor, labels: torch.Tensor | None, evaluator) -> dict:
    from harness.config import min_quality_images
    from harness.quality import evaluator_training
    least = min_quality_images(cfg.quality.k)
    if len(images) >= least:
        m = evaluator.measure(images, cfg.quality.k)
    else:  # not a NaN, nor an FD of 2 images that looks like a result
        ctx.store.say(f"generate: FD, KID, precision and recall not measured: {len(images)} images, they need "
                      f"at least {least}")
        m = {}
    splits = ctx.splits(cfg.data)
    if cfg.quality.cas and len(images):
        y = labels if labels is not None else train.predict_proba(evaluator.model, images, ctx.device).argmax(1)
        model, _ = train.train_classifier(images, y, len(splits.classes), evaluator_training(cfg), ctx.device, label="cas")
        pred = train.predict_proba(model, splits.test_x, ctx.device).argmax(1)
        m["quality/cas"] = (pred == splits.test_y).float().mean().item()
    return m


def draft(ctx, cfg, inputs) -> GenerateResult:
    """The images in memory, logging nothing (a sweep trial's form of the phase: harness/runner/)."""
    return _drafted(ctx, cfg, inputs)[0]


def _drafted(ctx, cfg, inputs) -> tuple[GenerateResult, stream.Sampler]:
    images, labels, sampler = draw(ctx, cfg, inputs)
    m = {"generate/n_samples": len(images), "generate/checkpoint_epoch": sampler.epoch}
    return GenerateResult("", m, images=images, labels=labels, epoch=sampler.epoch, drawn_from=sampler.describe), sampler


def compute(ctx, cfg, inputs) -> GenerateResult:
    result, sampler = _drafted(ctx, cfg, inputs)
    images, labels, m = result.images, result.labels, result.metrics
    mlflow.log_params({"generate.checkpoint_used": sampler.epoch})
    codecs.log_npz("synthetic.npz", images=images.numpy(), **({} if labels is None else {"labels": labels.numpy()}))
    if sampler.record is not None:
        sampler.record(images, labels)
    codecs.log_image_grid(images[:64], "preview.png")
    if labels is not None:  # the kind knows the classes: show them by name
        codecs.log_class_grid(images, labels, cfg.data.classes, "preview_classes.png")
    q = ""
    ev = inputs["evaluator"].evaluator if inputs.get("evaluator") is not None else None
    m |= _memorization(ctx, cfg, images, ev)
    if inputs.get("evaluator") is not None:
        qm = measure(ctx, cfg, images, labels, inputs["evaluator"].evaluator)
        m |= qm
        q = "\n\nSample quality: " + ", ".join(f"{k.split('/')[1]} {v:.4g}" for k, v in qm.items()) + "."
    mlflow.log_metrics(m)
    describe(f"**generate** ({cfg.generator.kind}): {len(images)} images from {sampler.describe} "
             f"(seed {cfg.generate.seed}). `synthetic.npz`, `preview.png`.{q}")
    return result


def _memorization(ctx, cfg, images: torch.Tensor, evaluator) -> dict:
    """Near-copies of the training images among the generated ones (metrics), and the closest pairs
    (`memorization.png`: each synthetic image beside its nearest real one, closest first)."""
    from harness import quality
    real = ctx.splits(cfg.data).train_x
    m, index, dist = quality.memorization(images, real, evaluator)
    if len(images):
        closest = dist.argsort()[:16]
        pairs = torch.stack([torch.stack([images[i], real[index[i]]]) for i in closest.tolist()]).flatten(0, 1)
        codecs.log_image_grid(pairs, "memorization.png", nrow=8)
    return m


def load(ctx, cfg, run) -> GenerateResult:
    saved = codecs.load_npz(run.info.run_id, "synthetic.npz")
    return GenerateResult(run.info.run_id, dict(run.data.metrics), images=torch.from_numpy(saved["images"]),
                          labels=torch.from_numpy(saved["labels"]) if "labels" in saved else None,
                          epoch=int(run.data.params.get("generate.checkpoint_used", 0)))


def summary(result: GenerateResult, cfg) -> str:
    return f"generate run {result.run_id}: {len(result.images)} images ({cfg.generator.kind})"
