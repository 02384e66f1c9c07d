"""The GAN family (`generator.kind = "gan"`, configured by [gan]): WGAN-GP with a DCGAN generator
and a critic without batch norm (the reference), plus hinge/spectral norm, class conditioning,
DiffAugment and a generator EMA.

Trained through the loop every trained kind shares (harness/generators/trained.py), which writes
its artifacts:
  images/ (key gan/samples, step = epoch) 64 samples from fixed noise, every gan.sample_every epochs and at
                                         the end: the run page shows them with a step slider
  checkpoints/generator_epoch_XXXX.pt    {"state_dict", "config", "epoch", "generator_iters", "n_classes",
                                         "classes", "channels", "image_size"} of the sampling generator
  checkpoints/training_state_{0,1}.pt    generator, critic, both optimizers, RNG, curves: what --resume continues from
  loss_curves.png                        critic loss, Wasserstein estimate, gradient penalty, generator loss
Metrics (step = epoch): gan/critic_loss, gan/wasserstein, gan/gradient_penalty, gan/generator_loss,
gan/generator_iters; final gan/epochs, gan/seconds, gan/generator_iters_total; with quality.enabled
quality/* per checkpoint.
"""
from __future__ import annotations

import math
import sys
from dataclasses import asdict, dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from harness import precision, progress
from harness.config import PRECISIONS, SEED_MAX, setting
from harness.errors import HarnessError
from harness.generators import stream, trained
from harness.generators.trained import best_checkpoint, checkpoints, resumable  # noqa: F401 (the kind protocol)
from harness.generators.dcgan import Generator
from harness.generators.gan_transfer import (init_digest, init_needs_store, pretraining, pretrains,  # noqa: F401
                                              starting)  # (the kind protocol: where training starts, gan.init)

@dataclass(frozen=True)
class GanConfig:
    OPTIONAL: ClassVar[bool] = False  # in every config's hash, as since the first version (the reference study's GAN)
    epochs: int = setting(2500, gt=0)  # passes of the critic over the real set; 3000 images / 64 / 5 = ~9.4 generator iters each
    iterations: int = setting(0, ge=0)  # > 0: train for exactly this many generator iterations instead (gan.epochs is then unused), so that data sizes get one GAN budget
    width: int = setting(64, gt=0)  # DCGAN base channel count
    latent_dim: int = setting(128, gt=0)  # size of the noise vector
    batch_size: int = setting(64, gt=0)  # images per critic step
    lr: float = setting(1e-4, gt=0.0)  # Adam learning rate, generator and critic (Gulrajani et al. 2017)
    beta1: float = setting(0.0, ge=0.0, lt=1.0, why="an Adam beta")  # Adam beta1 (Gulrajani et al. 2017)
    beta2: float = setting(0.9, ge=0.0, lt=1.0, why="an Adam beta")  # Adam beta2 (Gulrajani et al. 2017)
    critic_steps: int = setting(5, gt=0)  # critic updates per generator update
    gp_weight: float = setting(10.0, ge=0.0)  # gradient-penalty weight lambda
    gp_fraction: float = setting(1.0, ge=0.0, le=1.0)  # share of each batch the gradient penalty is computed on (cheaper below 1)
    loss: str = setting("wgan-gp", choices=("wgan-gp", "hinge"))  # wgan-gp (the reference) | hinge (with spectral_norm: SNGAN, Miyato et al. 2018)
    spectral_norm: bool = False  # spectral normalization on every critic layer
    lr_d: float = setting(0.0, ge=0.0)  # critic learning rate; 0 = gan.lr (two-timescale: e.g. lr 1e-4, lr_d 4e-4)
    conditional: str = setting("none", choices=("none", "projection", "acgan"))  # none | projection (Miyato & Koyama 2018) | acgan (AC-WGAN-GP auxiliary classifier)
    ac_weight: float = setting(1.0, ge=0.0)  # acgan: weight of the auxiliary classification loss
    diffaugment: str = ""  # DiffAugment policy on real and fake critic inputs, e.g. color,translation,cutout
    # The three below: equal training in eager mode (tests/test_generators.py); on the cpu preset here
    # channels_last alone 1.16x, all three 1.29x generator iterations/s (benchmarks/bench_gan.py).
    one_pass: bool = setting(True, unhashed=True)  # the critic scores real and fake images as one batch (one forward and backward, not two)
    channels_last: bool = setting(True, unhashed=True)  # both networks and their inputs in channels-last memory layout
    fused_adam: bool = setting(True, unhashed=True)  # Adam's fused implementation (one kernel per step over all parameters)
    compile: bool = False  # torch.compile the generator (and the critic when gp_weight = 0); costs compile time up front; on CUDA with CUDA graphs (mode reduce-overhead)
    precision: str = setting("auto", choices=PRECISIONS, precision=True)  # fp32 | bf16: the training step's forward passes under bf16 autocast (weights, optimizer state and the EMA stay fp32) | auto: bf16 where the device has bf16 units (docs/precision.md: the same FD within the seed-to-seed spread)
    ema: float = setting(0.0, ge=0.0, lt=1.0)  # > 0: sample from an exponential moving average of the generator weights (e.g. 0.999)
    sample_every: int = setting(100, gt=0)  # epochs between sample grids
    checkpoint_every: int = setting(250, gt=0)  # epochs between generator checkpoints
    seed: int = setting(0, ge=0, le=SEED_MAX, seed=True)  # weight init, noise and batch order
    # Where training starts (Wang et al., "Transferring GANs", ECCV 2018; Mo et al., "Freeze the Discriminator", 2020).
    init: str = setting("scratch", unhashed=True, added=True)  # scratch | pretrain (a generator_pretrain phase: this GAN trained first on classes disjoint from the study's, [pretrain]; one run for every seed and data size) | a training-state or generator checkpoint file | runs:/RUN_ID (a generator run's newest training state); the key covers the weights' content, not this name. Class embeddings are made anew for classes the weights were not trained on
    freeze_d: int = setting(0, ge=0, added=True)  # > 0: the critic's first N blocks stay frozen while adapting from gan.init (Freeze-D); 0: every layer trains
    pretrain_iterations: int = setting(0, ge=0, added=True)  # gan.init=pretrain: generator iterations of the pretraining; 0: gan.iterations (or gan.epochs over the pretraining images)

    def check(self) -> None:
        """The section's own rules, checked with its ranges whenever a config is made (config/rules.py)."""
        from harness.diffaugment import POLICIES
        unknown = [p for p in self.diffaugment.split(",") if p and p not in POLICIES]
        if unknown:
            raise HarnessError(f"gan.diffaugment: unknown policy {', '.join(unknown)}; choose from {', '.join(POLICIES)}")
        if self.freeze_d and self.init == "scratch":
            raise HarnessError(f"gan.freeze_d={self.freeze_d} freezes critic layers that were never trained: it needs "
                               "gan.init=pretrain, a checkpoint file or a runs:/ URI")


CONFIG = GanConfig  # the kind's own section, [gan] (harness/config/schema.py gathers it)


TRAINS = True
SECTIONS = ("gan",)
DATA = ()
CLASSES = "with gan.conditional=projection or acgan"
NEEDS = "a generator phase: trains on the training images ([gan])"
PREFIX, STEPS = "gan", "generator_iters"  # metric names: gan/samples, gan/generator_iters_total


def knows_classes(cfg) -> bool:
    return cfg.gan.conditional != "none"


PRETRAIN_UNREAD = ("gan.init", "gan.freeze_d", "gan.seed")  # the pretraining's seed is pretrain.seed: one for every seed


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

    def __init__(self, cfg, device: torch.device, n_classes: int = 0, channels: int = 3, image_size: int = 32):
        import copy

        from harness.generators.dcgan import Critic, Generator
        self.cfg, self.device = cfg, device
        conditional = cfg.conditional != "none"
        self.n_classes = n_classes if conditional else 0
        torch.manual_seed(cfg.seed)
        self.generator = Generator(cfg.latent_dim, cfg.width, self.n_classes, channels, image_size).to(device)
        self.critic = Critic(cfg.width, self.n_classes, cfg.conditional, cfg.spectral_norm, channels, image_size).to(device)
        self.ema = copy.deepcopy(self.generator).eval().requires_grad_(False) if cfg.ema > 0 else None
        if cfg.channels_last:
            self.generator.to(memory_format=torch.channels_last)
            self.critic.to(memory_format=torch.channels_last)
        betas = (cfg.beta1, cfg.beta2)
        # fused: one kernel over all parameters per step (CPU and CUDA) instead of a loop over tensors.
        fused = {"fused": True} if cfg.fused_adam else {}
        self.opt_g = torch.optim.Adam(self.generator.parameters(), lr=cfg.lr, betas=betas, **fused)
        self.opt_d = torch.optim.Adam(self.critic.parameters(), lr=cfg.lr_d or cfg.lr, betas=betas, **fused)
        if cfg.compile:
            # In place (nn.Module.compile), so state dicts and checkpoints keep their keys. The
            # gradient penalty differentiates the critic twice, which compiled graphs do not support:
            # there the critic stays eager. On CUDA, reduce-overhead records each fixed-shape step
            # as a CUDA graph: DCGAN-size kernels are launch-bound, one replay replaces dozens of
            # launches (not measured: no GPU was lent while this was written).
            mode = "reduce-overhead" if device.type == "cuda" else None
            self.generator.compile(mode=mode)
            if cfg.gp_weight == 0:
                self.critic.compile(mode=mode)
        self.gen = torch.Generator(device=device).manual_seed(cfg.seed)
        self.learning = list(self.critic.parameters())  # the critic's weights that train (start_from freezes some)
        self.epoch = 0
        self.critic_iters = 0
        self.generator_iters = 0
        # Fixed noise: the sample grids of successive epochs show the same 64 latent points
        # (and, conditional, the classes in turn).
        self.fixed_noise = torch.randn(64, cfg.latent_dim, generator=torch.Generator().manual_seed(cfg.seed)).to(device)
        self.fixed_labels = (torch.arange(64, device=device) % self.n_classes) if self.n_classes else None

    def start_from(self, state: dict, classes, where: str) -> str:
        """gan.init's weights into this state (harness/generators/gan_transfer.py); what was done, in words."""
        from harness.generators import gan_transfer
        return gan_transfer.start_from(self, state, classes, where)

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

    def _layout(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.cfg.channels_last else x

    def _critic_pass(self, real: torch.Tensor, fake: torch.Tensor, y: torch.Tensor | None, n_gp: int):
        """((score, logits) of real, (score, logits) of fake, gradient penalty or 0). With gan.one_pass
        the critic scores real and fake as one batch: one forward and one backward instead of two, on
        larger matrix products. The critic has no batch norm, so each sample's score is the same
        either way, and the random draws come in the same order. The penalty keeps its own pass:
        joined to the batch, its double backward would run over every sample, not the interpolates
        only (measured: +40% FLOPs). With spectral_norm, its power iteration then runs once per
        critic step instead of once per call."""
        cfg = self.cfg
        if cfg.one_pass:
            from harness.diffaugment import diff_augment
            both = torch.cat([diff_augment(real, cfg.diffaugment, self.gen), diff_augment(fake, cfg.diffaugment, self.gen)])
            out = self.critic(both, torch.cat([y, y]) if y is not None else None)
            score, logits = out if isinstance(out, tuple) else (out, None)
            b = len(real)
            real_out = (score[:b], None if logits is None else logits[:b])
            fake_out = (score[b:], None if logits is None else logits[b:])
        else:
            real_out, fake_out = self._critic(real, y), self._critic(fake, y)
        gp = torch.zeros((), device=self.device)
        if cfg.gp_weight > 0:
            gp = gradient_penalty(self.critic, real[:n_gp], fake[:n_gp], y[:n_gp] if y is not None else None, self.gen)
        return real_out, fake_out, gp

    def train_epoch(self, real_uint8: torch.Tensor, labels: torch.Tensor | None = None,
                    max_generator_iters: int = 0) -> dict[str, float]:
        """One pass of the critic over the real images; with `max_generator_iters`, the pass stops as
        soon as the generator reaches that many iterations in all (a last, partial epoch)."""
        from harness.data.images import from_uint8
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
        # bf16 autocast covers the forward passes; backward runs in the dtypes they chose, and the
        # losses summed below are fp32.
        amp = precision.autocast(precision.resolve(cfg.precision, self.device), self.device)
        for i in range(n_batches):
            idx = order[i * cfg.batch_size:(i + 1) * cfg.batch_size]
            real = self._layout(from_uint8(real_uint8[idx]))
            y = labels[idx] if self.n_classes else None  # fakes of the real batch's classes: balanced, GP pairs match
            with torch.no_grad(), amp:
                fake = self.generator(self._noise(len(real)), y)
            with amp:
                (real_score, real_logits), (fake_score, fake_logits), gp = self._critic_pass(real, fake, y, n_gp)
            real_score, fake_score = real_score.float(), fake_score.float()
            wasserstein = real_score.mean() - fake_score.mean()
            if cfg.loss == "hinge":
                loss_d = F.relu(1 - real_score).mean() + F.relu(1 + fake_score).mean()
            else:
                loss_d = -wasserstein
            if cfg.gp_weight > 0:
                loss_d = loss_d + cfg.gp_weight * gp.float()
            acc = torch.zeros((), device=self.device)
            if real_logits is not None:
                real_logits, fake_logits = real_logits.float(), fake_logits.float()
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
                with amp:
                    score, logits = self._critic(self.generator(self._noise(cfg.batch_size), y), y)
                loss_g = -score.float().mean()
                if logits is not None:
                    loss_g = loss_g + cfg.ac_weight * F.cross_entropy(logits.float(), y)
                self.opt_g.zero_grad(set_to_none=True)
                loss_g.backward()
                self.opt_g.step()
                for p in self.learning:  # frozen layers (gan.freeze_d) stay frozen
                    p.requires_grad_(True)
                if self.ema is not None:
                    self._update_ema()
                sums[3] += loss_g.detach()
                g_steps += 1
                self.generator_iters += 1
                if max_generator_iters and self.generator_iters >= max_generator_iters:
                    n_batches = i + 1  # the means below are over the batches this epoch ran
                    break
        self.epoch += 1
        s = sums.tolist()  # one host sync per epoch
        if not all(map(math.isfinite, s)):
            raise HarnessError(f"GAN training diverged at epoch {self.epoch}: a loss is not finite (critic "
                               f"{s[0] / n_batches}, generator {s[3] / max(g_steps, 1)}); lower gan.lr ({cfg.lr}) "
                               f"or gan.lr_d ({cfg.lr_d or cfg.lr})")
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
        from harness.data.images import to_uint8
        g = self.sampler
        g.eval()
        out = to_uint8(g(noise.to(self.device), labels)).cpu()
        self.generator.train()
        return out

    # The Trainer protocol of harness/generators/trained.py.
    @property
    def steps(self) -> int:
        return self.generator_iters

    def preview(self) -> torch.Tensor:
        return self.sample(self.fixed_noise, self.fixed_labels)

    def quality_images(self, n: int) -> torch.Tensor:
        """n images of noise seed 0, for the sample quality of a checkpoint."""
        net = self.sampler
        was_training = net.training  # the live generator trains on; the EMA copy stays in eval mode
        images, _ = generate(net, self.cfg.latent_dim, 0, self.device, 0, n)
        net.train(was_training)
        return images

    def checkpoint(self) -> dict:
        return {"state_dict": {k: v.cpu() for k, v in self.sampler.state_dict().items()}, "config": asdict(self.cfg),
                "epoch": self.epoch, "generator_iters": self.generator_iters, "n_classes": self.n_classes,
                "channels": self.generator.channels, "image_size": self.generator.image_size}

    def exportable(self) -> tuple[torch.nn.Module, torch.Tensor]:
        return _Exportable(self.sampler), _example(self)

    def progress(self, row: dict) -> str:
        return f"W {row['gan/wasserstein']:.3f}  G iters {self.generator_iters}"

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


@torch.no_grad()
def generate(generator: torch.nn.Module, latent_dim: int, seed: int, device: torch.device, start: int, stop: int,
             batch: int = 512) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Images start..stop-1 of a generator's seeded stream (see stream.noise), uint8, in eval mode, and
    their classes when the generator is conditional (else None). Memory: the uint8 images, filled in
    place, and one batch's noise and activations, whatever the count (generate.n_samples=50,000 is
    146 MiB of 32-px images, and a list of batches joined at the end would hold them twice)."""
    from harness.data.images import to_uint8
    generator.eval().to(device)
    n_classes = getattr(generator, "n_classes", 0)
    y = stream.balanced_labels(start, stop, n_classes) if n_classes else None
    out = torch.empty(max(stop - start, 0), generator.channels, generator.image_size, generator.image_size,
                      dtype=torch.uint8)
    with progress.shown(stop - start, "generate", unit="images") as bar:
        for i in range(start, stop, batch):
            j = min(i + batch, stop)
            labels = None if y is None else y[i - start:j - start].to(device)
            out[i - start:j - start] = to_uint8(generator(stream.noise(seed, i, j, latent_dim).to(device), labels)).cpu()
            bar.update(j - i)
    return out, y


# ---------------------------------------------------------------------------------------------
# Checkpoints

def load_generator(memo, run_id: str, epoch: int | None = None) -> tuple[Generator, dict]:
    """The generator of checkpoint `epoch` (None: the last) of a generator run, and its checkpoint dict."""
    return trained.load_checkpoint(memo, run_id, epoch, lambda ckpt: Generator(
        ckpt["config"]["latent_dim"], ckpt["config"]["width"], ckpt.get("n_classes", 0), ckpt.get("channels", 3),
        ckpt.get("image_size", 32)))


class _Exportable(torch.nn.Module):
    """The generator with one input tensor, as MLflow's pickle-free format wants: z, and for a
    class-conditional generator the class index in an extra last column."""

    def __init__(self, generator: Generator):
        super().__init__()
        self.generator = generator

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if self.generator.n_classes:
            return self.generator(z[:, :-1], z[:, -1].long())
        return self.generator(z)


def _example(trainer) -> torch.Tensor:
    z = trainer.fixed_noise[:2].cpu()
    return torch.cat([z, torch.arange(2.0)[:, None]], 1) if trainer.n_classes else z


def preflight(ctx, cfg, source: str | None = None) -> None:
    trained.preflight(ctx, cfg, cfg.gan, "gan", source)


def sampler(ctx, cfg, run_id: str) -> stream.Sampler:
    epoch = cfg.generate.checkpoint_epoch
    if epoch == -1:
        epoch = best_checkpoint(run_id)
    generator, ckpt = load_generator(ctx.memo, run_id, epoch or None)
    latent, seed = ckpt["config"]["latent_dim"], cfg.generate.seed
    return stream.Sampler(("gan", run_id, ckpt["epoch"], seed),
                          lambda start, stop: generate(generator, latent, seed, ctx.device, start, stop),
                          ckpt["epoch"], f"the epoch-{ckpt['epoch']} generator of run `{run_id}`")


# ---------------------------------------------------------------------------------------------
# Fitting, inside the generator phase's run (harness/generators/trained.py)

def settings(cfg):
    return cfg.gan


def trainer(cfg, device: torch.device, n_classes: int, channels: int, image_size: int) -> WganGp:
    return WganGp(cfg.gan, device, n_classes, channels, image_size)


def steps_per_epoch(n_real: int, g) -> int:
    return max(1, (n_real // g.batch_size) // g.critic_steps)


def fit(ctx, cfg, splits, resume_from: str | None = None, evaluator=None, start=None) -> None:
    """Train (or continue `resume_from`) the GAN inside the active run, checkpointing as configured;
    `start` = (state, where): gan.init's weights (`starting`)."""
    trained.fit(ctx, cfg, splits, sys.modules[__name__], resume_from, evaluator, start)


def curves_figure(history: list[dict[str, float]]):
    from harness.figures import subplots, tight
    keys = ["gan/critic_loss", "gan/wasserstein", "gan/gradient_penalty", "gan/generator_loss"]
    fig, axes = subplots(1, 4, figsize=(14, 3))
    for ax, key in zip(axes, keys):
        pts = [(i, row[key]) for i, row in enumerate(history, 1) if key in row]
        if pts:
            ax.plot(*zip(*pts))
        ax.set_title(key.split("/")[1])
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    tight(fig)
    return fig


def summary(cfg, trainer: WganGp, history: list[dict], seconds: float) -> str:
    g = cfg.gan
    return (f"**generator**: {name(cfg)}, DCGAN width {g.width}, {trainer.epoch} epochs = {trainer.generator_iters} "
             f"generator iterations ({g.critic_steps} critic steps each, {_arithmetic(g.precision)}), {seconds:.0f} s this session. "
             f"Final Wasserstein estimate {history[-1]['gan/wasserstein']:.3f}.\n\n"
             f"Samples from fixed noise: the image series `gan/samples` (a step per {g.sample_every} epochs); "
             "loss curves: `loss_curves.png`.")


def _arithmetic(setting: str) -> str:
    return "forward passes in bf16 autocast" if setting == "bf16" else "fp32"


def cost_note(cfg, device) -> str | None:
    g = cfg.gan
    n_train = cfg.data.n_per_class * len(cfg.data.classes)
    iters = g.iterations or g.epochs * max(n_train // g.batch_size, 1) // g.critic_steps
    # A step costs ~width^2: the cpu preset (width 32, ~1900 iterations) is ~2e6 and 20 minutes here.
    if device.type == "cpu" and g.width ** 2 * iters > 1e7:
        return (f"preset {cfg.preset!r} trains a GPU-sized GAN (width {g.width}, ~{iters} generator iterations); on "
                "this CPU its generator phase takes many hours. --preset cpu is sized for a CPU.")
    return None


def in_words(cfg) -> str:
    """The GAN and its budget, for a pipeline's description."""
    g = cfg.gan
    budget = f"{g.iterations} generator iterations" if g.iterations else f"{g.epochs} epochs"
    return f"{name(cfg)} for {budget}"


def name(cfg) -> str:
    """The GAN in words, for descriptions."""
    g = cfg.gan
    levers = [f"{g.conditional}-conditional" if g.conditional != "none" else "",
              "spectral norm" if g.spectral_norm else "", f"DiffAugment {g.diffaugment}" if g.diffaugment else "",
              f"EMA {g.ema}" if g.ema else ""]
    return ("WGAN-GP" if g.loss == "wgan-gp" else "hinge-loss GAN") + "".join(f", {x}" for x in levers if x)
