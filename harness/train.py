"""Training loops on in-memory tensors: the classifier and WGAN-GP. Device-agnostic, seeded.

The data set is small (a few thousand 32x32 images = a few MB), so it lives on the device as
uint8 and every batch is sliced, augmented and normalized there: no DataLoader, no PIL, no
per-image Python work in the loop (the airbench recipe).
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Callable

import click
import torch
import torch.nn.functional as F

from harness.errors import HarnessError
from harness.models import SimpleCNN


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise HarnessError(f"device must be auto, cpu, cuda or cuda:N, got {name!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise HarnessError(f"device {name!r} asked for, but CUDA is not available here; use device=auto or cpu")
    return device


def progress(total: int, label: str):
    """A progress bar on stderr, so that stdout stays clean for tables and run ids."""
    return click.progressbar(length=total, label=label, file=sys.stderr, show_eta=True, show_pos=True,
                             item_show_func=lambda s: s)


# ---------------------------------------------------------------------------------------------
# Augmentation, batched on uint8 tensors

def augment_batch(x: torch.Tensor, gen: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Random crop with `pad`-px zero padding + random horizontal flip, for a whole batch at once."""
    b, c, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=gen, device=gen.device)
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=gen, device=gen.device)
    rows = (dy[:, None] + torch.arange(h, device=x.device)[None, :])[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w, device=x.device)[None, :])[:, None, None, :]
    out = padded[torch.arange(b, device=x.device)[:, None, None, None],
                 torch.arange(c, device=x.device)[None, :, None, None], rows, cols]
    flip = torch.rand(b, generator=gen, device=gen.device) < 0.5
    return torch.where(flip[:, None, None, None], out.flip(3), out)


# ---------------------------------------------------------------------------------------------
# Classifier

@dataclass
class History:
    """Per-epoch curves; logged to MLflow in one batch at the end of the phase."""
    epochs: list[dict[str, float]] = field(default_factory=list)


@torch.no_grad()
def predict_proba(model: torch.nn.Module, x: torch.Tensor, device: torch.device, batch: int = 1000) -> torch.Tensor:
    model.eval()
    out = [torch.softmax(model(x[i:i + batch].to(device, non_blocking=True)), dim=1).cpu()
           for i in range(0, len(x), batch)]
    return torch.cat(out) if out else torch.zeros(0)


def train_classifier(x: torch.Tensor, y: torch.Tensor, n_classes: int, cfg, device: torch.device,
                     val: tuple[torch.Tensor, torch.Tensor] | None = None, label: str = "classifier",
                     on_epoch: Callable[[int, dict], None] | None = None) -> tuple[SimpleCNN, History]:
    """Train a fresh SimpleCNN on uint8 images `x` with labels `y` (see ClassifierConfig).

    `on_epoch(epoch, row)` is called after each epoch with its metrics (a sweep reports and prunes there).
    """
    torch.manual_seed(cfg.seed)
    model = SimpleCNN(n_classes).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    x, y = x.to(device), y.to(device)
    n = len(x)
    steps = (n + cfg.batch_size - 1) // cfg.batch_size
    history = History()
    with progress(cfg.epochs * steps, label) as bar:
        for epoch in range(1, cfg.epochs + 1):
            model.train()
            order = torch.randperm(n, generator=gen, device=device)
            loss_sum = torch.zeros((), device=device)
            correct = torch.zeros((), device=device, dtype=torch.long)
            for i in range(steps):
                idx = order[i * cfg.batch_size:(i + 1) * cfg.batch_size]
                xb, yb = x[idx], y[idx]
                if cfg.augment:
                    xb = augment_batch(xb, gen)
                logits = model(xb)
                loss = F.cross_entropy(logits, yb)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                # Accumulate on the device: one host sync per epoch, not per step.
                loss_sum += loss.detach() * len(idx)
                correct += (logits.argmax(1) == yb).sum()
                bar.update(1)
            row = {"train/loss": loss_sum.item() / n, "train/accuracy": correct.item() / n}
            if val is not None and len(val[0]):
                pred = predict_proba(model, val[0], device).argmax(1)
                row["val/accuracy"] = (pred == val[1]).float().mean().item()
            history.epochs.append(row)
            bar.current_item = "  ".join(f"{k.split('/')[0]} {k.split('/')[1][:3]} {v:.3f}" for k, v in row.items())
            if on_epoch is not None:
                on_epoch(epoch, row)
    return model, history
