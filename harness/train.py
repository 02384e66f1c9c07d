"""The classifier's training loop on in-memory tensors. Device-agnostic, seeded.

The data set is small (a few thousand 32x32 images = a few MB), so it lives on the device as
uint8 and every batch is sliced, augmented and normalized there: no DataLoader, no PIL, no
per-image Python work in the loop (the airbench recipe).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Callable

import torch
import torch.nn.functional as F

from harness import classifiers, precision, progress
from harness.errors import HarnessError


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


def augment(xb: torch.Tensor, yb: torch.Tensor, kind: str, gen: torch.Generator, n_classes: int,
            ops: dict) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A batch under classifier.augmentation: images (uint8, or float in 0..255 for the mixing kinds)
    and soft targets [B, C] where labels mix (mixup, cutmix), else None. Every kind but none starts
    from crop+flip, the standard recipe each of them is reported on top of. `ops` holds the
    torchvision transforms, built once per training."""
    if kind == "none":
        return xb, None
    xb = augment_batch(xb, gen)
    if kind == "crop-flip":
        return xb, None
    from torchvision.transforms import v2
    if kind in ("trivialaugment", "randaugment"):
        # torchvision draws one op per call, so a call on the batch would give every image the same
        # op: one call per image, on uint8 tensors on the device (no PIL).
        op = ops.setdefault(kind, v2.TrivialAugmentWide() if kind == "trivialaugment" else v2.RandAugment())
        return torch.stack([op(img) for img in xb]), None
    mix = ops.setdefault(kind, {"mixup": v2.MixUp, "cutmix": v2.CutMix}[kind](num_classes=n_classes, alpha=1.0))
    return mix(xb.float(), yb)


# ---------------------------------------------------------------------------------------------
# Classifier

@dataclass
class History:
    """Per-epoch curves; logged to MLflow in one batch at the end of the phase."""
    epochs: list[dict[str, float]] = field(default_factory=list)


@torch.no_grad()
def predict_proba(model: torch.nn.Module, x: torch.Tensor, device: torch.device, batch: int | None = None) -> torch.Tensor:
    # The forward pass feeds channels_last activations; NCHW weights (a model just loaded from a
    # checkpoint) would send oneDNN down a slow mixed-layout path (~3x slower here).
    model.to(device, memory_format=torch.channels_last).eval()
    # On CPU, batches of ~128 keep activations in cache: 2x the throughput of 1000 here.
    batch = batch or (128 if device.type == "cpu" else 1000)
    out = [torch.softmax(model(x[i:i + batch].to(device, non_blocking=True)), dim=1).cpu()
           for i in range(0, len(x), batch)]
    return torch.cat(out) if out else torch.zeros(0)


class _Stream:
    """Indices 0..n-1 in successive random permutations, taken k at a time across epoch boundaries."""

    def __init__(self, n: int, gen: torch.Generator, device: torch.device):
        self.n, self.gen, self.device = n, gen, device
        self.buf = torch.zeros(0, dtype=torch.long, device=device)

    def take(self, k: int) -> torch.Tensor:
        while len(self.buf) < k:
            self.buf = torch.cat([self.buf, torch.randperm(self.n, generator=self.gen, device=self.device)])
        out, self.buf = self.buf[:k], self.buf[k:]
        return out


def _epoch_batches(epoch: int, n_real: int, n_syn: int, cfg, gen: torch.Generator, device: torch.device,
                   streams: dict) -> list[torch.Tensor]:
    """Index batches of one epoch into cat(real, synthetic) under classifier.budget / synthetic_share /
    real_only_epochs. Without synthetic images this is a plain shuffled pass over the real ones."""
    bs = cfg.batch_size
    steps_real = (n_real + bs - 1) // bs
    if n_syn == 0 or epoch > cfg.epochs - cfg.real_only_epochs:
        order = torch.randperm(n_real, generator=gen, device=device)
        return [order[i * bs:(i + 1) * bs] for i in range(steps_real)]
    if cfg.synthetic_share > 0:
        # Every step: a batch of real images (one pass over them per epoch, as the baseline) plus
        # synthetic ones on top, so that they make up `synthetic_share` of the batch.
        extra = max(1, round(bs * cfg.synthetic_share / (1 - cfg.synthetic_share)))
        syn = streams.setdefault("syn", _Stream(n_syn, gen, device))
        order = torch.randperm(n_real, generator=gen, device=device)
        return [torch.cat([order[i * bs:(i + 1) * bs], n_real + syn.take(extra)]) for i in range(steps_real)]
    n = n_real + n_syn
    if cfg.budget == "steps":
        # The baseline's number of steps, drawn from a stream over real + synthetic.
        both = streams.setdefault("both", _Stream(n, gen, device))
        return [both.take(bs) for _ in range(steps_real)]
    order = torch.randperm(n, generator=gen, device=device)
    return [order[i * bs:(i + 1) * bs] for i in range((n + bs - 1) // bs)]


def in_epochs(cfg, n_real: int):
    """The classifier config with `steps` turned into epochs for `n_real` real images.

    A fixed number of epochs gives a small training set few steps: at 100 images per class, 40
    epochs are 200 steps against 1880 at 1000 per class, and the small-data baseline is then
    undertrained rather than data-starved. `steps` keeps the step count (and the real-only share
    of the epochs) alike across data sizes, to within one epoch's steps."""
    if not cfg.steps:
        return cfg
    per_epoch = (n_real + cfg.batch_size - 1) // cfg.batch_size
    epochs = max(1, round(cfg.steps / per_epoch))
    return replace(cfg, epochs=epochs, steps=0, real_only_epochs=round(cfg.real_only_epochs * epochs / cfg.epochs))


def _optimizer(model: torch.nn.Module, cfg, total_steps: int):
    """The optimizer and, unless the schedule is constant, a scheduler stepped once per batch. With
    classifier.backbone_lr below 1, the backbone learns at that share of the head's rate (fine-tuning)."""
    params, max_lr = model.parameters(), cfg.lr
    if cfg.backbone_lr != 1.0:
        head = {id(p) for p in classifiers.head_of(model).parameters()}
        params = [{"params": [p for p in model.parameters() if id(p) not in head], "lr": cfg.lr * cfg.backbone_lr},
                  {"params": [p for p in model.parameters() if id(p) in head], "lr": cfg.lr}]
        max_lr = [cfg.lr * cfg.backbone_lr, cfg.lr]
    if cfg.optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, nesterov=True, weight_decay=cfg.weight_decay)
    else:
        opt = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.schedule == "onecycle":
        # Momentum cycling assumes SGD's momentum or Adam's beta1; both have one.
        return opt, torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=max_lr, total_steps=max(total_steps, 1), pct_start=0.25)
    if cfg.schedule == "cosine":
        return opt, torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(total_steps, 1))
    return opt, None


def train_classifier(x: torch.Tensor, y: torch.Tensor, n_classes: int, cfg, device: torch.device,
                     val: tuple[torch.Tensor, torch.Tensor] | None = None, label: str = "classifier",
                     on_epoch: Callable[[int, dict], None] | None = None,
                     synthetic: tuple[torch.Tensor, torch.Tensor, torch.Tensor | None] | None = None,
                     start: tuple[dict, str] | None = None, section=None,
                     soft_x: torch.Tensor | None = None) -> tuple[torch.nn.Module, History]:
    """Train a fresh network of classifier.kind on real uint8 images `x` with labels `y` (see ClassifierConfig), plus
    `synthetic` = (images, hard labels, soft targets or None) mixed in as the config says.

    `on_epoch(epoch, row)` is called after each epoch with its metrics (a sweep reports and prunes there).
    `start` = (state dict, its digest): the starting weights (classifier.init); classifier.mode
    `probe` trains the head alone on the frozen backbone's cached features, `probe-then-train` does
    so for the first half of the epochs and then trains every weight. `section`: a plugin kind's own
    config section (classifiers.build). `soft_x`: soft targets of `x`'s own images (a stage that trains
    on soft-labelled synthetic images alone).
    """
    # Under `steps` a small set runs many short epochs; validating each would cost more than the
    # training, so validation keeps the nominal epochs' cadence (and always runs on the last one).
    nominal, cfg = cfg.epochs, in_epochs(cfg, len(x))
    val_every = max(1, math.ceil(cfg.epochs / nominal))
    torch.manual_seed(cfg.seed)
    model = classifiers.build(cfg, n_classes, x.shape[1], x.shape[-1], section).to(device, memory_format=torch.channels_last)
    classifiers.fit_data(cfg, model, x)
    if start is not None:
        from harness.classifiers import weights
        weights.apply(model, start[0], cfg.init)
    probe_epochs = {"probe": cfg.epochs, "probe-then-train": cfg.epochs // 2}.get(cfg.mode, 0)
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    n_real = len(x)
    xs, ys, soft = synthetic if synthetic is not None else (x[:0], y[:0], None)
    n_syn = len(xs)
    if probe_epochs:
        from harness.classifiers import probe
        feats = torch.cat([probe.features(model, x, start[1], device), probe.features(model, xs, start[1], device)])
        val_feats = probe.features(model, val[0], start[1], device) if val is not None and len(val[0]) else None
        frozen = [p for p in model.parameters() if p.requires_grad]
        head = set(map(id, classifiers.head_of(model).parameters()))
    x, y = torch.cat([x, xs]).to(device), torch.cat([y, ys]).to(device)
    # Per-sample targets and weights only when something differs from plain cross-entropy, so that
    # the baseline's arithmetic is exactly the reference's.
    weighted = n_syn > 0 and (soft is not None or cfg.synthetic_weight != 1.0) or soft_x is not None
    if weighted:
        targets = F.one_hot(y, n_classes).float()
        if soft_x is not None:
            targets[:n_real] = soft_x.to(device).float()
        if soft is not None:
            targets[n_real:] = soft.to(device).float()
        sample_weights = torch.ones(len(x), device=device)
        sample_weights[n_real:] = cfg.synthetic_weight
    streams: dict = {}
    ops: dict = {}  # the augmentation's torchvision transforms, built on first use
    bs = cfg.batch_size
    mixed = [n_syn > 0 and e <= cfg.epochs - cfg.real_only_epochs for e in range(1, cfg.epochs + 1)]
    total_steps = sum((n_real + n_syn + bs - 1) // bs if m and cfg.synthetic_share == 0 and cfg.budget == "epochs"
                      else (n_real + bs - 1) // bs for m in mixed)
    opt, sched = _optimizer(model, cfg, total_steps)
    amp = precision.autocast(precision.resolve(cfg.precision, device), device)
    history = History()
    with progress.bar(total_steps, label, item_show_func=lambda s: s) as bar:
        for epoch in range(1, cfg.epochs + 1):
            probing = epoch <= probe_epochs
            if probe_epochs:  # the backbone learns only once the probe stage is over
                for p in frozen:
                    p.requires_grad_(not probing or id(p) in head)
            model.train()
            batches = _epoch_batches(epoch, n_real, n_syn, cfg, gen, device, streams)
            seen = sum(len(b) for b in batches)
            loss_sum = torch.zeros((), device=device)
            correct = torch.zeros((), device=device, dtype=torch.long)
            for idx in batches:
                xb, yb = x[idx], y[idx]
                if probing:  # the frozen backbone's features, computed once
                    hidden, mixed_targets = feats[idx], None
                else:
                    xb, mixed_targets = augment(xb, yb, cfg.augmentation, gen, n_classes, ops)
                    with amp:
                        hidden = model.embed(xb)
                # The last layer, the loss and its sums in fp32: bf16 logits (8 bits of mantissa)
                # cost test accuracy here (docs/precision.md); the convolutions carry the speed-up.
                logits = model.classify(hidden.float())
                if weighted or mixed_targets is not None:
                    soft_b = mixed_targets if mixed_targets is not None else targets[idx]
                    per_sample = -(soft_b * F.log_softmax(logits, 1)).sum(1)
                    w = sample_weights[idx] if weighted else torch.ones_like(per_sample)
                    loss = (w * per_sample).sum() / w.sum().clamp_min(1e-12)
                else:
                    loss = F.cross_entropy(logits, yb)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if sched is not None:
                    sched.step()
                # Accumulate on the device: one host sync per epoch, not per step.
                loss_sum += loss.detach() * len(idx)
                correct += (logits.argmax(1) == yb).sum()
                bar.update(1)
            row = {"train/loss": loss_sum.item() / seen, "train/accuracy": correct.item() / seen}
            if not math.isfinite(row["train/loss"]):
                # A diverged model must not end FINISHED: it would become a cache entry that later
                # runs reuse. Failing here ends the run FAILED, with the setting to look at.
                raise HarnessError(f"{label} training diverged at epoch {epoch}: the loss is {row['train/loss']}; "
                                   f"lower classifier.lr ({cfg.lr})")
            if val is not None and len(val[0]) and (epoch % val_every == 0 or epoch == cfg.epochs):
                if probing:
                    model.eval()
                    with torch.no_grad():
                        pred = model.classify(val_feats).argmax(1).cpu()
                else:
                    pred = predict_proba(model, val[0], device).argmax(1)
                row["val/accuracy"] = (pred == val[1]).float().mean().item()
            history.epochs.append(row)
            bar.current_item = "  ".join(f"{k.split('/')[0]} {k.split('/')[1][:3]} {v:.3f}" for k, v in row.items())
            if on_epoch is not None:
                on_epoch(epoch, row)
    return model, history
