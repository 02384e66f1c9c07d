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
    # The forward pass feeds channels_last activations; NCHW weights (a model just loaded from a
    # checkpoint) would send oneDNN down a slow mixed-layout path (~3x slower here).
    model.to(device, memory_format=torch.channels_last).eval()
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
    model = SimpleCNN(n_classes).to(device, memory_format=torch.channels_last)
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


# ---------------------------------------------------------------------------------------------
# WGAN-GP (Gulrajani et al. 2017)

def gradient_penalty(critic: torch.nn.Module, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """E[(||grad critic(x_hat)||_2 - 1)^2] on random interpolates of real and fake samples."""
    eps = torch.rand(len(real), 1, 1, 1, device=real.device)
    mix = (eps * real + (1 - eps) * fake).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(mix).sum(), mix, create_graph=True)
    return (grad.flatten(1).norm(dim=1) - 1).square().mean()


class WganGp:
    """The WGAN-GP training state and its epoch loop, so that a run can be checkpointed and resumed.

    One epoch = one pass of the critic over the real images in batches; every `critic_steps`-th
    critic step is followed by one generator step (the count carries across epochs).
    """

    def __init__(self, cfg, device: torch.device):
        from harness.models import Critic, Generator
        self.cfg, self.device = cfg, device
        torch.manual_seed(cfg.seed)
        self.generator = Generator(cfg.latent_dim, cfg.width).to(device)
        self.critic = Critic(cfg.width).to(device)
        betas = (cfg.beta1, cfg.beta2)
        self.opt_g = torch.optim.Adam(self.generator.parameters(), lr=cfg.lr, betas=betas)
        self.opt_d = torch.optim.Adam(self.critic.parameters(), lr=cfg.lr, betas=betas)
        self.gen = torch.Generator(device=device).manual_seed(cfg.seed)
        self.epoch = 0
        self.critic_iters = 0
        self.generator_iters = 0
        # Fixed noise: the sample grids of successive epochs show the same 64 latent points.
        self.fixed_noise = torch.randn(64, cfg.latent_dim, generator=torch.Generator().manual_seed(cfg.seed)).to(device)

    def _noise(self, n: int) -> torch.Tensor:
        return torch.randn(n, self.cfg.latent_dim, generator=self.gen, device=self.device)

    def train_epoch(self, real_uint8: torch.Tensor) -> dict[str, float]:
        from harness.models import from_uint8
        cfg = self.cfg
        self.generator.train()
        n_batches = len(real_uint8) // cfg.batch_size  # full batches only: the GP wants equal-size pairs
        if n_batches == 0:
            raise HarnessError(f"gan.batch_size ({cfg.batch_size}) is larger than the training set ({len(real_uint8)})")
        order = torch.randperm(len(real_uint8), generator=self.gen, device=self.device)
        sums = torch.zeros(4, device=self.device)  # critic loss, wasserstein, gp, generator loss
        g_steps = 0
        for i in range(n_batches):
            real = from_uint8(real_uint8[order[i * cfg.batch_size:(i + 1) * cfg.batch_size]])
            with torch.no_grad():
                fake = self.generator(self._noise(len(real)))
            wasserstein = self.critic(real).mean() - self.critic(fake).mean()
            gp = gradient_penalty(self.critic, real, fake)
            loss_d = -wasserstein + cfg.gp_weight * gp
            self.opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            self.opt_d.step()
            sums[:3] += torch.stack([loss_d.detach(), wasserstein.detach(), gp.detach()])
            self.critic_iters += 1
            if self.critic_iters % cfg.critic_steps == 0:
                for p in self.critic.parameters():
                    p.requires_grad_(False)  # no critic grads needed for the generator step
                loss_g = -self.critic(self.generator(self._noise(cfg.batch_size))).mean()
                self.opt_g.zero_grad(set_to_none=True)
                loss_g.backward()
                self.opt_g.step()
                for p in self.critic.parameters():
                    p.requires_grad_(True)
                sums[3] += loss_g.detach()
                g_steps += 1
                self.generator_iters += 1
        self.epoch += 1
        s = sums.tolist()  # one host sync per epoch
        row = {"gan/critic_loss": s[0] / n_batches, "gan/wasserstein": s[1] / n_batches,
               "gan/gradient_penalty": s[2] / n_batches, "gan/generator_iters": float(self.generator_iters)}
        if g_steps:
            row["gan/generator_loss"] = s[3] / g_steps
        return row

    @torch.no_grad()
    def sample(self, noise: torch.Tensor) -> torch.Tensor:
        """Generator output for `noise`, in eval mode (batch-norm running statistics), as uint8."""
        from harness.models import to_uint8
        self.generator.eval()
        out = to_uint8(self.generator(noise.to(self.device))).cpu()
        self.generator.train()
        return out

    def state_dict(self) -> dict:
        return {"generator": self.generator.state_dict(), "critic": self.critic.state_dict(),
                "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict(),
                "rng": self.gen.get_state(), "epoch": self.epoch, "critic_iters": self.critic_iters,
                "generator_iters": self.generator_iters}

    def load_state_dict(self, state: dict) -> None:
        self.generator.load_state_dict(state["generator"])
        self.critic.load_state_dict(state["critic"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        self.gen.set_state(state["rng"])
        self.epoch, self.critic_iters, self.generator_iters = state["epoch"], state["critic_iters"], state["generator_iters"]


@torch.no_grad()
def generate(generator: torch.nn.Module, n: int, latent_dim: int, seed: int, device: torch.device,
             batch: int = 500) -> torch.Tensor:
    """n uint8 images from a generator, seeded, in eval mode."""
    from harness.models import to_uint8
    generator.eval().to(device)
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(n, latent_dim, generator=g)
    return torch.cat([to_uint8(generator(noise[i:i + batch].to(device))).cpu() for i in range(0, n, batch)])
