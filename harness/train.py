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


def train_classifier(x: torch.Tensor, y: torch.Tensor, n_classes: int, cfg, device: torch.device,
                     val: tuple[torch.Tensor, torch.Tensor] | None = None, label: str = "classifier",
                     on_epoch: Callable[[int, dict], None] | None = None,
                     synthetic: tuple[torch.Tensor, torch.Tensor, torch.Tensor | None] | None = None
                     ) -> tuple[SimpleCNN, History]:
    """Train a fresh SimpleCNN on real uint8 images `x` with labels `y` (see ClassifierConfig), plus
    `synthetic` = (images, hard labels, soft targets or None) mixed in as the config says.

    `on_epoch(epoch, row)` is called after each epoch with its metrics (a sweep reports and prunes there).
    """
    torch.manual_seed(cfg.seed)
    model = SimpleCNN(n_classes).to(device, memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    n_real = len(x)
    xs, ys, soft = synthetic if synthetic is not None else (x[:0], y[:0], None)
    n_syn = len(xs)
    x, y = torch.cat([x, xs]).to(device), torch.cat([y, ys]).to(device)
    # Per-sample targets and weights only when something differs from plain cross-entropy, so that
    # the baseline's arithmetic is exactly the reference's.
    weighted = n_syn > 0 and (soft is not None or cfg.synthetic_weight != 1.0)
    if weighted:
        targets = F.one_hot(y, n_classes).float()
        if soft is not None:
            targets[n_real:] = soft.to(device).float()
        weights = torch.ones(len(x), device=device)
        weights[n_real:] = cfg.synthetic_weight
    streams: dict = {}
    bs = cfg.batch_size
    mixed = [n_syn > 0 and e <= cfg.epochs - cfg.real_only_epochs for e in range(1, cfg.epochs + 1)]
    total_steps = sum((n_real + n_syn + bs - 1) // bs if m and cfg.synthetic_share == 0 and cfg.budget == "epochs"
                      else (n_real + bs - 1) // bs for m in mixed)
    history = History()
    with progress(total_steps, label) as bar:
        for epoch in range(1, cfg.epochs + 1):
            model.train()
            batches = _epoch_batches(epoch, n_real, n_syn, cfg, gen, device, streams)
            seen = sum(len(b) for b in batches)
            loss_sum = torch.zeros((), device=device)
            correct = torch.zeros((), device=device, dtype=torch.long)
            for idx in batches:
                xb, yb = x[idx], y[idx]
                if cfg.augment:
                    xb = augment_batch(xb, gen)
                logits = model(xb)
                if weighted:
                    per_sample = -(targets[idx] * F.log_softmax(logits, 1)).sum(1)
                    w = weights[idx]
                    loss = (w * per_sample).sum() / w.sum().clamp_min(1e-12)
                else:
                    loss = F.cross_entropy(logits, yb)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                # Accumulate on the device: one host sync per epoch, not per step.
                loss_sum += loss.detach() * len(idx)
                correct += (logits.argmax(1) == yb).sum()
                bar.update(1)
            row = {"train/loss": loss_sum.item() / seen, "train/accuracy": correct.item() / seen}
            if val is not None and len(val[0]):
                pred = predict_proba(model, val[0], device).argmax(1)
                row["val/accuracy"] = (pred == val[1]).float().mean().item()
            history.epochs.append(row)
            bar.current_item = "  ".join(f"{k.split('/')[0]} {k.split('/')[1][:3]} {v:.3f}" for k, v in row.items())
            if on_epoch is not None:
                on_epoch(epoch, row)
    return model, history


# ---------------------------------------------------------------------------------------------
# WGAN-GP (Gulrajani et al. 2017)

def gradient_penalty(critic: torch.nn.Module, real: torch.Tensor, fake: torch.Tensor,
                     y: torch.Tensor | None = None, gen: torch.Generator | None = None) -> torch.Tensor:
    """E[(||grad critic(x_hat)||_2 - 1)^2] on random interpolates of real and fake samples (of the
    same class `y` when the critic is conditional)."""
    eps = torch.rand(len(real), 1, 1, 1, device=real.device, generator=gen)
    mix = (eps * real + (1 - eps) * fake).requires_grad_(True)
    out = critic(mix, y)
    score = out[0] if isinstance(out, tuple) else out
    (grad,) = torch.autograd.grad(score.sum(), mix, create_graph=True)
    return (grad.flatten(1).norm(dim=1) - 1).square().mean()


class WganGp:
    """The GAN training state and its epoch loop, so that a run can be checkpointed and resumed.

    The reference is WGAN-GP; GanConfig adds the hinge loss with a spectral-norm critic, a gradient
    penalty on part of the batch, class conditioning (projection or AC), DiffAugment and a generator EMA.
    One epoch = one pass of the critic over the real images in batches; every `critic_steps`-th
    critic step is followed by one generator step (the count carries across epochs).
    """

    def __init__(self, cfg, device: torch.device, n_classes: int = 0):
        import copy

        from harness.models import Critic, Generator
        self.cfg, self.device = cfg, device
        conditional = cfg.conditional != "none"
        self.n_classes = n_classes if conditional else 0
        torch.manual_seed(cfg.seed)
        self.generator = Generator(cfg.latent_dim, cfg.width, self.n_classes).to(device)
        self.critic = Critic(cfg.width, self.n_classes, cfg.conditional, cfg.spectral_norm).to(device)
        self.ema = copy.deepcopy(self.generator).eval().requires_grad_(False) if cfg.ema > 0 else None
        betas = (cfg.beta1, cfg.beta2)
        self.opt_g = torch.optim.Adam(self.generator.parameters(), lr=cfg.lr, betas=betas)
        self.opt_d = torch.optim.Adam(self.critic.parameters(), lr=cfg.lr_d or cfg.lr, betas=betas)
        self.gen = torch.Generator(device=device).manual_seed(cfg.seed)
        self.epoch = 0
        self.critic_iters = 0
        self.generator_iters = 0
        # Fixed noise: the sample grids of successive epochs show the same 64 latent points
        # (and, conditional, the classes in turn).
        self.fixed_noise = torch.randn(64, cfg.latent_dim, generator=torch.Generator().manual_seed(cfg.seed)).to(device)
        self.fixed_labels = (torch.arange(64, device=device) % self.n_classes) if self.n_classes else None

    @property
    def sampler(self) -> torch.nn.Module:
        """The generator that samples: the EMA copy when there is one."""
        return self.ema if self.ema is not None else self.generator

    def _noise(self, n: int) -> torch.Tensor:
        return torch.randn(n, self.cfg.latent_dim, generator=self.gen, device=self.device)

    def _critic(self, x: torch.Tensor, y: torch.Tensor | None):
        """(score, class logits or None) of the critic on DiffAugmented inputs."""
        from harness.diffaugment import diff_augment
        out = self.critic(diff_augment(x, self.cfg.diffaugment, self.gen), y)
        return out if isinstance(out, tuple) else (out, None)

    def train_epoch(self, real_uint8: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, float]:
        from harness.models import from_uint8
        cfg = self.cfg
        self.generator.train()
        n_batches = len(real_uint8) // cfg.batch_size  # full batches only: the GP wants equal-size pairs
        if n_batches == 0:
            raise HarnessError(f"gan.batch_size ({cfg.batch_size}) is larger than the training set ({len(real_uint8)})")
        if self.n_classes and labels is None:
            raise HarnessError("a class-conditional GAN needs the labels of the real images")
        order = torch.randperm(len(real_uint8), generator=self.gen, device=self.device)
        sums = torch.zeros(5, device=self.device)  # critic loss, wasserstein, gp, generator loss, aux accuracy
        g_steps = 0
        n_gp = max(1, round(cfg.gp_fraction * cfg.batch_size))
        for i in range(n_batches):
            idx = order[i * cfg.batch_size:(i + 1) * cfg.batch_size]
            real = from_uint8(real_uint8[idx])
            y = labels[idx] if self.n_classes else None  # fakes of the real batch's classes: balanced, GP pairs match
            with torch.no_grad():
                fake = self.generator(self._noise(len(real)), y)
            real_score, real_logits = self._critic(real, y)
            fake_score, fake_logits = self._critic(fake, y)
            wasserstein = real_score.mean() - fake_score.mean()
            if cfg.loss == "hinge":
                loss_d = F.relu(1 - real_score).mean() + F.relu(1 + fake_score).mean()
            else:
                loss_d = -wasserstein
            gp = torch.zeros((), device=self.device)
            if cfg.gp_weight > 0:
                gp = gradient_penalty(self.critic, real[:n_gp], fake[:n_gp], y[:n_gp] if y is not None else None, self.gen)
                loss_d = loss_d + cfg.gp_weight * gp
            acc = torch.zeros((), device=self.device)
            if real_logits is not None:
                loss_d = loss_d + cfg.ac_weight * (F.cross_entropy(real_logits, y) + F.cross_entropy(fake_logits, y))
                acc = (real_logits.argmax(1) == y).float().mean()
            self.opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            self.opt_d.step()
            sums[:3] += torch.stack([loss_d.detach(), wasserstein.detach(), gp.detach()])
            sums[4] += acc.detach()
            self.critic_iters += 1
            if self.critic_iters % cfg.critic_steps == 0:
                for p in self.critic.parameters():
                    p.requires_grad_(False)  # no critic grads needed for the generator step
                score, logits = self._critic(self.generator(self._noise(cfg.batch_size), y), y)
                loss_g = -score.mean()
                if logits is not None:
                    loss_g = loss_g + cfg.ac_weight * F.cross_entropy(logits, y)
                self.opt_g.zero_grad(set_to_none=True)
                loss_g.backward()
                self.opt_g.step()
                for p in self.critic.parameters():
                    p.requires_grad_(True)
                if self.ema is not None:
                    self._update_ema()
                sums[3] += loss_g.detach()
                g_steps += 1
                self.generator_iters += 1
        self.epoch += 1
        s = sums.tolist()  # one host sync per epoch
        row = {"gan/critic_loss": s[0] / n_batches, "gan/wasserstein": s[1] / n_batches,
               "gan/gradient_penalty": s[2] / n_batches, "gan/generator_iters": float(self.generator_iters)}
        if g_steps:
            row["gan/generator_loss"] = s[3] / g_steps
        if cfg.conditional == "acgan":
            row["gan/aux_accuracy"] = s[4] / n_batches
        return row

    @torch.no_grad()
    def _update_ema(self) -> None:
        decay = self.cfg.ema
        for e, p in zip(self.ema.parameters(), self.generator.parameters()):
            e.lerp_(p, 1 - decay)
        for e, b in zip(self.ema.buffers(), self.generator.buffers()):
            e.copy_(b)  # batch-norm statistics: the live generator's

    @torch.no_grad()
    def sample(self, noise: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Sampler output for `noise` (and class `labels`), in eval mode (batch-norm running statistics), as uint8."""
        from harness.models import to_uint8
        g = self.sampler
        g.eval()
        out = to_uint8(g(noise.to(self.device), labels)).cpu()
        self.generator.train()
        return out

    def state_dict(self) -> dict:
        state = {"generator": self.generator.state_dict(), "critic": self.critic.state_dict(),
                 "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict(),
                 "rng": self.gen.get_state(), "epoch": self.epoch, "critic_iters": self.critic_iters,
                 "generator_iters": self.generator_iters}
        if self.ema is not None:
            state["ema"] = self.ema.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.generator.load_state_dict(state["generator"])
        self.critic.load_state_dict(state["critic"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])
        self.gen.set_state(state["rng"])
        self.epoch, self.critic_iters, self.generator_iters = state["epoch"], state["critic_iters"], state["generator_iters"]


NOISE_CHUNK = 256  # images per independently seeded block of noise


def noise(seed: int, start: int, stop: int, latent_dim: int) -> torch.Tensor:
    """The latent vectors of images start..stop-1 of noise seed `seed`.

    Each block of NOISE_CHUNK rows has its own generator, so image i's noise does not depend on how
    many images were asked for: the first 500 of 10000 images are the 500 images, and a sweep
    can serve every sample count from one pool, extending it block by block.
    """
    import numpy as np
    blocks = []
    for chunk in range(start // NOISE_CHUNK, (stop + NOISE_CHUNK - 1) // NOISE_CHUNK):
        g = torch.Generator().manual_seed(int(np.random.SeedSequence([seed, chunk]).generate_state(1)[0]))
        blocks.append(torch.randn(NOISE_CHUNK, latent_dim, generator=g))
    if not blocks:
        return torch.zeros(0, latent_dim)
    offset = (start // NOISE_CHUNK) * NOISE_CHUNK
    return torch.cat(blocks)[start - offset:stop - offset]


def stream_labels(start: int, stop: int, n_classes: int) -> torch.Tensor:
    """Class of image i of a conditional generator's stream: i mod n_classes (balanced in any prefix)."""
    return torch.arange(start, stop) % n_classes


@torch.no_grad()
def generate(generator: torch.nn.Module, latent_dim: int, seed: int, device: torch.device, start: int, stop: int,
             batch: int = 512) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Images start..stop-1 of a generator's seeded stream (see `noise`), uint8, in eval mode, and
    their classes when the generator is conditional (else None)."""
    from harness.models import to_uint8
    generator.eval().to(device)
    z = noise(seed, start, stop, latent_dim)
    n_classes = getattr(generator, "n_classes", 0)
    y = stream_labels(start, stop, n_classes) if n_classes else None
    out = [to_uint8(generator(z[i:i + batch].to(device), None if y is None else y[i:i + batch].to(device))).cpu()
           for i in range(0, len(z), batch)]
    return (torch.cat(out) if out else torch.zeros(0, 3, 32, 32, dtype=torch.uint8)), y
