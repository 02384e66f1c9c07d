"""Generate phase: N synthetic images from a generator checkpoint of the gan run.

Artifacts of the run:
  synthetic.npz   images: uint8 [N, 3, 32, 32]
  preview.png     the first 64 images as a grid
Params: generate.checkpoint_used (the epoch sampled from), generate.gan_run.
"""
from __future__ import annotations

from dataclasses import dataclass

import mlflow
import torch

from harness import tracking, train
from harness.config import Config
from harness.phases import gan


@dataclass
class GenerateResult:
    run_id: str  # the run holding synthetic.npz
    images: torch.Tensor  # uint8 [N, 3, 32, 32]


def run(cfg: Config, gan_run_id: str, device: torch.device, key: str, use_cache: bool = True) -> GenerateResult:
    with tracking.phase_run("generate", cfg, key=key, use_cache=use_cache,
                            extra_params={"generate.gan_run": gan_run_id}) as pr:
        if pr.hit:
            return GenerateResult(pr.source_id, torch.from_numpy(tracking.load_npz(pr.source_id, "synthetic.npz")["images"]))
        generator, ckpt = gan.load_generator(gan_run_id, cfg.generate.checkpoint_epoch or None)
        images = train.generate(generator, cfg.generate.n_samples, ckpt["config"]["latent_dim"],
                                cfg.generate.seed, device)
        mlflow.log_params({"generate.checkpoint_used": ckpt["epoch"]})
        mlflow.log_metrics({"generate/n_samples": len(images), "generate/checkpoint_epoch": ckpt["epoch"]})
        tracking.log_npz("synthetic.npz", images=images.numpy())
        tracking.log_image_grid(images[:64], "preview.png")
        tracking.describe(f"**generate**: {len(images)} images from the epoch-{ckpt['epoch']} generator of gan run "
                          f"`{gan_run_id}` (noise seed {cfg.generate.seed}). `synthetic.npz`, `preview.png`.")
        return GenerateResult(pr.run_id, images)
