"""Offline sample quality, in the feature space of an evaluator CNN trained on real images only
(phases/evaluator.py): no Inception weights, no downloads, so it works anywhere. The figures are
comparable between runs that share an evaluator, not with published FID values.

- Frechet distance (Heusel et al. 2017) and KID (Binkowski et al. 2018, unbiased MMD^2 with the
  cubic polynomial kernel) between generated and real test images: lower is better;
- precision and recall of k-NN manifolds (Kynkaanniemi et al. 2019): precision = share of generated
  images inside the real manifold (fidelity), recall = share of real images inside the generated one
  (coverage);
- CAS (Ravuri & Vinyals 2019): test accuracy of a SimpleCNN trained on the synthetic images alone.
"""
from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from harness.config import ClassifierConfig
from harness.classifiers.simplecnn import SimpleCNN


EVALUATOR_SEED_OFFSET = 1000  # the evaluator's weights and batch order differ from the baseline's


def evaluator_training(cfg) -> ClassifierConfig:
    """Fixed training settings (the reference's, with crop+flip), independent of classifier.*: presets
    that differ in how they train their arms still share one evaluator, so their figures compare."""
    return ClassifierConfig(epochs=cfg.quality.evaluator_epochs, augmentation="crop-flip", seed=EVALUATOR_SEED_OFFSET + cfg.data.seed,
                            precision=cfg.quality.precision)


def evaluator_data(cfg):
    """The draw the evaluator trains on: data.n_per_class images per class, or quality.evaluator_per_class."""
    n = cfg.quality.evaluator_per_class
    if not n or n == cfg.data.n_per_class:
        return cfg.data
    return dataclasses.replace(cfg.data, n_per_class=n, val_per_class=0)


@dataclass
class Evaluator:
    model: SimpleCNN
    real: np.ndarray  # features of the real test images [N, D]
    device: torch.device

    def features(self, images: torch.Tensor) -> np.ndarray:
        return features(self.model, images, self.device)

    def measure(self, images: torch.Tensor, k: int = 3, seed: int = 0) -> dict[str, float]:
        """fd, kid, precision, recall of `images` against the real test images."""
        fake = self.features(images)
        p, r = precision_recall(self.real, fake, k)
        return {"quality/fd": frechet_distance(self.real, fake), "quality/kid": kid(self.real, fake, seed=seed),
                "quality/precision": p, "quality/recall": r}


@torch.no_grad()
def features(model: SimpleCNN, images: torch.Tensor, device: torch.device, batch: int = 500) -> np.ndarray:
    model.to(device, memory_format=torch.channels_last).eval()
    out = [model.embed(images[i:i + batch].to(device)).double().cpu() for i in range(0, len(images), batch)]
    return torch.cat(out).numpy() if out else np.zeros((0, model.head[1].out_features))


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)) of Gaussians fitted to two feature sets."""
    from scipy import linalg
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    def sqrtm(m):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # near-singular products warn; checked below instead
            return linalg.sqrtm(m)

    covmean = sqrtm(s_a @ s_b)
    if not np.isfinite(covmean).all():  # singular product: nudge the diagonals (as pytorch-fid does)
        eps = np.eye(len(s_a)) * 1e-6
        covmean = sqrtm((s_a + eps) @ (s_b + eps))
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a) + np.trace(s_b) - 2 * np.trace(covmean.real))


def kid(a: np.ndarray, b: np.ndarray, subsets: int = 10, subset_size: int = 1000, seed: int = 0) -> float:
    """Mean over random subsets of the unbiased MMD^2 with k(x, y) = (x.y / d + 1)^3."""
    rng = np.random.default_rng(seed)
    m = min(subset_size, len(a), len(b))
    if m < 2:
        return float("nan")
    d = a.shape[1]
    values = []
    for _ in range(subsets):
        x, y = a[rng.choice(len(a), m, replace=False)], b[rng.choice(len(b), m, replace=False)]
        kxx, kyy, kxy = ((x @ x.T) / d + 1) ** 3, ((y @ y.T) / d + 1) ** 3, ((x @ y.T) / d + 1) ** 3
        values.append((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
                      - 2 * kxy.mean())
    return float(np.mean(values))


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3) -> tuple[float, float]:
    """(precision, recall): each point's manifold ball has the radius of its k-th nearest neighbour
    within its own set."""
    r, f = torch.from_numpy(real), torch.from_numpy(fake)
    if len(r) <= k or len(f) <= k:
        return float("nan"), float("nan")

    def radii(x):  # distance to the k-th neighbour, the point itself (distance 0) excluded
        return torch.cdist(x, x).kthvalue(k + 1, dim=1).values

    cross = torch.cdist(f, r)  # [fake, real]
    precision = (cross <= radii(r)[None, :]).any(1).double().mean().item()
    recall = (cross.T <= radii(f)[None, :]).any(1).double().mean().item()
    return precision, recall


# ---------------------------------------------------------------------------------------------
# Memorization: does the generator copy its training images?

NEAR_COPY_RMS = 0.05  # per-pixel RMS distance (pixels in [0, 1]) under which an image counts as a copy:
# ~13 grey levels per pixel; distinct CIFAR-10 images of one class sit ~0.15-0.3 apart at their nearest
NEAR_COPY_COSINE = 0.99  # evaluator features: cosine similarity above which two images look the same to it


@torch.no_grad()
def nearest_real(synthetic: torch.Tensor, real: torch.Tensor, chunk: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """For each synthetic uint8 image, the index of the nearest real image and their per-pixel RMS
    distance (pixels in [0, 1]), in chunks so that memory stays bounded."""
    r = real.flatten(1).float() / 255
    dims = r.shape[1]
    r_sq = r.square().sum(1)
    # The answers are allocated once, before the chunks: small tensors left behind by each chunk between
    # its large temporaries fragment the heap, and a 50,000-image draw then grew the process by 500 MiB.
    dist, index = torch.empty(len(synthetic)), torch.empty(len(synthetic), dtype=torch.long)
    for i in range(0, len(synthetic), chunk):
        s = synthetic[i:i + chunk].flatten(1).float() / 255
        d2 = (s.square().sum(1)[:, None] + r_sq[None, :] - 2 * s @ r.T).clamp_min(0)
        torch.min(d2, 1, out=(dist[i:i + chunk], index[i:i + chunk]))
    return index, (dist / dims).sqrt()


def memorization(synthetic: torch.Tensor, real: torch.Tensor, evaluator: Evaluator | None = None) -> tuple[dict, torch.Tensor, torch.Tensor]:
    """The share of synthetic images that are near-copies of a real training image, in pixels (and, with
    an evaluator, in its feature space); returns the metrics and each image's nearest index and distance."""
    index, dist = nearest_real(synthetic, real)
    out = {"memorization/near_copy_share": float((dist < NEAR_COPY_RMS).float().mean()) if len(dist) else 0.0,
           "memorization/median_rms": float(dist.median()) if len(dist) else float("nan")}
    if evaluator is not None and len(synthetic):
        fs = torch.from_numpy(evaluator.features(synthetic)).float()
        fr = torch.from_numpy(evaluator.features(real)).float()
        cos = torch.nn.functional.normalize(fs, dim=1) @ torch.nn.functional.normalize(fr, dim=1).T
        out["memorization/feature_near_copy_share"] = float((cos.max(1).values > NEAR_COPY_COSINE).float().mean())
    return out, index, dist
