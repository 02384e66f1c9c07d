"""Generate phase: N synthetic images from a generator checkpoint of the gan run.

Artifacts of the run:
  synthetic.npz   images: uint8 [N, 3, 32, 32]; labels: int64 [N], the class drawn (conditional GAN only)
  preview.png     the first 64 images as a grid
Params: generate.checkpoint_used (the epoch sampled from), generate.gan_run.
With quality.enabled: quality/fd, quality/kid, quality/precision, quality/recall of these images and
quality/cas (test accuracy of a SimpleCNN trained on them alone; an unconditional GAN's images are
labelled by the evaluator for it).
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

import mlflow
import torch

from harness import tracking, train
from harness.config import Config
from harness.phases import gan


@dataclass
class GenerateResult:
    run_id: str  # the run holding synthetic.npz
    images: torch.Tensor  # uint8 [N, 3, 32, 32]
    labels: torch.Tensor | None = None  # int64 [N]: the class a conditional generator drew; None if unconditional
    metrics: dict = field(default_factory=dict)


# (gan run, checkpoint epoch, noise seed) -> the longest image stream generated so far in this process.
# A sweep asks one checkpoint for many sample counts: each is a prefix (see train.noise), so only
# blocks never generated before cost anything. A few checkpoints' pools stay (a sweep alternates them).
_pools: OrderedDict[tuple, torch.Tensor] = OrderedDict()
POOLS_KEPT = 8


def sample(generator, gan_run_id: str, epoch: int, latent_dim: int, n: int, seed: int,
           device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
    key = (gan_run_id, epoch, seed)
    pool = _pools.pop(key, torch.zeros(0, 3, 32, 32, dtype=torch.uint8))
    if len(pool) < n:
        pool = torch.cat([pool, train.generate(generator, latent_dim, seed, device, len(pool), n)[0]])
    _pools[key] = pool
    while len(_pools) > POOLS_KEPT:
        _pools.popitem(last=False)
    return pool[:n], (train.stream_labels(0, n, generator.n_classes) if generator.n_classes else None)


def draw(cfg: Config, gan_run_id: str, device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None, int]:
    """generate.n_samples images (+ their drawn classes, or None) and the checkpoint epoch used."""
    epoch = cfg.generate.checkpoint_epoch
    if epoch == -1:
        epoch = gan.best_checkpoint(gan_run_id)
    generator, ckpt = gan.load_generator(gan_run_id, epoch or None)
    images, labels = sample(generator, gan_run_id, ckpt["epoch"], ckpt["config"]["latent_dim"], cfg.generate.n_samples,
                            cfg.generate.seed, device)
    return images, labels, ckpt["epoch"]


def measure(cfg: Config, images: torch.Tensor, labels: torch.Tensor | None, evaluator, splits, device) -> dict:
    m = evaluator.measure(images, cfg.quality.k)
    if cfg.quality.cas and splits is not None and len(images):
        from harness import train
        y = labels if labels is not None else torch.from_numpy(
            train.predict_proba(evaluator.model, images, device).argmax(1).numpy())
        from harness.phases.evaluator import classifier_config
        model, _ = train.train_classifier(images, y, len(splits.classes), classifier_config(cfg), device, label="cas")
        pred = train.predict_proba(model, splits.test_x, device).argmax(1)
        m["quality/cas"] = (pred == splits.test_y).float().mean().item()
    return m


def run(cfg: Config, gan_run_id: str, device: torch.device, key: str, use_cache: bool = True,
        evaluator=None, splits=None) -> GenerateResult:
    """`evaluator` (quality.Evaluator) and `splits`: measure the images' quality (and CAS)."""
    with tracking.phase_run("generate", cfg, key=key, use_cache=use_cache,
                            extra_params={"generate.gan_run": gan_run_id}) as pr:
        if pr.hit:
            saved = tracking.load_npz(pr.source_id, "synthetic.npz")
            return GenerateResult(pr.source_id, torch.from_numpy(saved["images"]),
                                  torch.from_numpy(saved["labels"]) if "labels" in saved else None,
                                  dict(pr.hit.data.metrics))
        images, labels, epoch = draw(cfg, gan_run_id, device)
        mlflow.log_params({"generate.checkpoint_used": epoch})
        mlflow.log_metrics({"generate/n_samples": len(images), "generate/checkpoint_epoch": epoch})
        tracking.log_npz("synthetic.npz", images=images.numpy(), **({} if labels is None else {"labels": labels.numpy()}))
        tracking.log_image_grid(images[:64], "preview.png")
        q, m = "", {}
        if evaluator is not None:
            m = measure(cfg, images, labels, evaluator, splits, device)
            mlflow.log_metrics(m)
            q = "\n\nSample quality: " + ", ".join(f"{k.split('/')[1]} {v:.4g}" for k, v in m.items()) + "."
        tracking.describe(f"**generate**: {len(images)} images from the epoch-{epoch} generator of gan run "
                          f"`{gan_run_id}` (noise seed {cfg.generate.seed}). `synthetic.npz`, `preview.png`.{q}")
        return GenerateResult(pr.run_id, images, labels, m)
