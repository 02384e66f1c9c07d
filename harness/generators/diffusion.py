"""`generator.kind = "diffusion"`: a small class-conditional denoising diffusion model trained from
scratch on the training images, configured by [diffusion], on diffusers (pip install -e
'.[diffusion]'): a UNet2DModel with a class embedding (and a "no class" index that label dropout
trains, for classifier-free guidance), DDPM noise in training (1000 steps, epsilon or v
prediction), AdamW with a linear warm-up, random flips and an EMA of the weights; DDIM sampling.

Trained through the loop every trained kind shares (harness/generators/trained.py), so checkpoints,
the two training-state slots, --resume, the take-over of a dead worker's run, LoggedModels, quality
per checkpoint and `generate.checkpoint_epoch = -1` work as for the GAN. Artifacts: those of that
loop, with the series `diffusion/samples` (fixed noise, diffusion.quality_steps DDIM steps, no
guidance) and loss_curves.png. Metrics (step = epoch): diffusion/loss, diffusion/lr,
diffusion/steps; final diffusion/epochs, diffusion/seconds, diffusion/steps_total.

Generate-time settings, `diffusion.sample_steps` and `diffusion.guidance`, are keyed with the
generate phase, not the generator: another number of DDIM steps samples the same trained model.
Images are drawn in seeded blocks (generators/stream.py): image i does not depend on how many are
asked for, and the classes are balanced in any prefix.
"""
from __future__ import annotations

import copy
import math
import sys
from dataclasses import asdict, dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from harness import precision
from harness.config import PRECISIONS, SEED_MAX, setting
from harness.errors import HarnessError
from harness.generators import stream, trained
from harness.generators.trained import best_checkpoint, checkpoints, resumable  # noqa: F401 (the kind protocol)

@dataclass(frozen=True)
class DiffusionConfig:
    """generator.kind = diffusion: a class-conditional denoising diffusion model (diffusers' UNet2DModel)
    trained from scratch on the training images (pip install -e '.[diffusion]')."""
    OPTIONAL: ClassVar[bool] = True  # read by its kind only: out of the whole-config hash while at its defaults
    iterations: int = setting(4000, ge=0)  # optimizer steps (the budget, the same for every data size); 0 = diffusion.epochs
    epochs: int = setting(100, gt=0)  # passes over the training images, when iterations = 0
    width: int = setting(64, gt=0)  # channels of the UNet's first level (then 2x, 2x; 64 px adds a level)
    layers_per_block: int = setting(2, gt=0)  # ResNet blocks per UNet level
    attention: bool = True  # self-attention at 16 px
    batch_size: int = setting(64, gt=0)
    lr: float = setting(2e-4, gt=0.0)  # AdamW, after a linear warm-up
    warmup: int = setting(200, ge=0)  # steps of linear learning-rate warm-up
    weight_decay: float = setting(0.0, ge=0.0)
    beta_schedule: str = setting("linear", choices=("linear", "squaredcos_cap_v2"))  # linear | squaredcos_cap_v2 (DDPMScheduler, 1000 steps)
    prediction: str = setting("epsilon", choices=("epsilon", "v_prediction"))  # epsilon | v_prediction: what the UNet learns to predict
    label_dropout: float = setting(0.1, ge=0.0, lt=1.0)  # share of training images shown without their class (classifier-free guidance)
    guidance: float = setting(0.0, ge=0.0)  # classifier-free guidance at sampling: cond + guidance * (cond - uncond); 0 = plain conditional
    sample_steps: int = setting(50, gt=0)  # DDIM steps per image at generate time
    flip: bool = True  # random horizontal flips of the training images
    ema: float = setting(0.999, ge=0.0, lt=1.0)  # exponential moving average of the weights, which sampling uses (0 = the live weights)
    precision: str = setting("auto", choices=PRECISIONS, precision=True)  # fp32 | bf16 (the training forward pass under autocast) | auto: bf16 where the device has bf16 units
    sample_every: int = setting(10, gt=0)  # epochs between sample grids
    checkpoint_every: int = setting(10, gt=0)  # epochs between checkpoints
    seed: int = setting(0, ge=0, le=SEED_MAX, seed=True)  # weight init, noise, timesteps, batch order

    def check(self) -> None:
        """The section's own rules, checked with its ranges whenever a config is made (config/rules.py)."""
        if self.guidance > 0 and self.label_dropout == 0:
            raise HarnessError(f"diffusion.guidance={self.guidance} needs a model that also learned without its "
                               "class: set diffusion.label_dropout > 0 (e.g. 0.1)")


CONFIG = DiffusionConfig  # the kind's own section, [diffusion] (harness/config/schema.py gathers it)


TRAINS = True
SECTIONS = ("diffusion",)
SAMPLING = ("diffusion.sample_steps", "diffusion.guidance")  # read at generate time only
DATA = ()
CLASSES = "always (class-conditional)"
NEEDS = "diffusers (pip install -e '.[diffusion]'); a generator phase: trains on the training images ([diffusion])"
PREFIX, STEPS = "diffusion", "steps"
TRAIN_TIMESTEPS = 1000
QUALITY_STEPS = 25  # DDIM steps of the training-time previews and per-checkpoint quality: fixed, so that a
# checkpoint's FD compares with another's and the generator's key needs no generate-time setting


def knows_classes(cfg) -> bool:
    return True


def _diffusers():
    try:
        import diffusers
    except ImportError as e:
        raise HarnessError(f"generator.kind=diffusion needs diffusers ({e.name} is not installed): "
                           "pip install -e '.[diffusion]'") from None
    return diffusers


def _levels(image_size: int) -> int:
    return 4 if image_size >= 64 else 3


def check(cfg) -> None:
    d, size = cfg.diffusion, cfg.data.image_size
    _diffusers()
    if d.width % 8:
        raise HarnessError(f"diffusion.width must be a multiple of 8 (the UNet's group norm), got {d.width}")
    if size % 2 ** (_levels(size) - 1):
        raise HarnessError(f"generator.kind=diffusion needs data.image_size divisible by {2 ** (_levels(size) - 1)} "
                           f"(the UNet halves it {_levels(size) - 1} times), got {size}")


def unet(d, n_classes: int, channels: int, image_size: int):
    """The UNet: `width`, 2x, 2x channels (and 2x again at 64 px and up), self-attention at 16 px,
    and a class embedding of n_classes + 1 entries (the last: no class)."""
    diffusers = _diffusers()
    widths = [d.width] + [2 * d.width] * (_levels(image_size) - 1)
    sizes = [image_size // 2 ** i for i in range(len(widths))]
    down = tuple("AttnDownBlock2D" if d.attention and s == 16 else "DownBlock2D" for s in sizes)
    up = tuple(b.replace("Down", "Up") for b in reversed(down))
    return diffusers.UNet2DModel(sample_size=image_size, in_channels=channels, out_channels=channels,
                                 layers_per_block=d.layers_per_block, block_out_channels=tuple(widths),
                                 down_block_types=down, up_block_types=up, num_class_embeds=n_classes + 1,
                                 norm_num_groups=32 if d.width % 32 == 0 else 8, attention_head_dim=8)


def _noise_schedule(d):
    return _diffusers().DDPMScheduler(num_train_timesteps=TRAIN_TIMESTEPS, beta_schedule=d.beta_schedule,
                                      prediction_type=d.prediction)


@torch.no_grad()
def denoise(net, d, noise: torch.Tensor, labels: torch.Tensor, steps: int, guidance: float,
            device: torch.device, batch: int = 128) -> torch.Tensor:
    """DDIM (eta 0: no noise after the first) from `noise` to uint8 images of classes `labels`, in
    fixed batches. With `guidance` > 0 each step also runs the model without the class and moves
    away from that: cond + guidance * (cond - uncond)."""
    from harness.data.images import to_uint8
    schedule = _diffusers().DDIMScheduler.from_config(_noise_schedule(d).config)
    schedule.set_timesteps(steps)
    net.eval()
    null = net.config.num_class_embeds - 1
    out = []
    for i in range(0, len(noise), batch):
        x, y = noise[i:i + batch].to(device), labels[i:i + batch].to(device)
        for t in schedule.timesteps:
            if guidance > 0:
                both = net(torch.cat([x, x]), t, class_labels=torch.cat([y, torch.full_like(y, null)])).sample
                cond, uncond = both.chunk(2)
                pred = cond + guidance * (cond - uncond)
            else:
                pred = net(x, t, class_labels=y).sample
            x = schedule.step(pred, t, x, eta=0.0).prev_sample
        out.append(to_uint8(x).cpu())
    return torch.cat(out) if out else torch.zeros(0, *noise.shape[1:], dtype=torch.uint8)


def generate(net, d, seed: int, device: torch.device, start: int, stop: int, steps: int,
             guidance: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Images start..stop-1 of a model's seeded stream and their (balanced) classes: each block of
    stream.BLOCK images from its own noise, sampled whole, so image i is the same in any request."""
    n_classes = net.config.num_class_embeds - 1
    shape = (net.config.in_channels, net.config.sample_size, net.config.sample_size)

    def block(b: int) -> torch.Tensor:
        noise = torch.randn(stream.BLOCK, *shape, generator=torch.Generator().manual_seed(stream.block_seed(seed, b)))
        labels = stream.balanced_labels(b * stream.BLOCK, (b + 1) * stream.BLOCK, n_classes)
        return denoise(net, d, noise, labels, steps, guidance, device)

    images = stream.from_blocks(start, stop, block, torch.zeros(0, *shape, dtype=torch.uint8))
    return images, stream.balanced_labels(start, stop, n_classes)


class Denoiser:
    """The diffusion model's training state and its epoch loop (the Trainer of harness/generators/trained.py).
    One epoch = one pass over the real images in batches of diffusion.batch_size; one step = one
    optimizer step."""

    def __init__(self, d, device: torch.device, n_classes: int, channels: int = 3, image_size: int = 32):
        self.d, self.device, self.n_classes = d, device, n_classes
        torch.manual_seed(d.seed)
        self.unet = unet(d, n_classes, channels, image_size).to(device)
        self.ema = copy.deepcopy(self.unet).eval().requires_grad_(False) if d.ema > 0 else None
        self.noise_schedule = _noise_schedule(d)
        # fused: one kernel per step over all parameters (CPU and CUDA), as the GAN's gan.fused_adam.
        self.opt = torch.optim.AdamW(self.unet.parameters(), lr=d.lr, weight_decay=d.weight_decay, fused=True)
        # Linear warm-up, then constant: a schedule of the step count alone, restored with it on resume.
        self.lr_schedule = torch.optim.lr_scheduler.LambdaLR(self.opt, lambda step: min(1.0, (step + 1) / max(1, d.warmup)))
        self.gen = torch.Generator(device=device).manual_seed(d.seed)
        self.epoch, self.steps = 0, 0
        fixed = torch.Generator().manual_seed(d.seed)
        self.fixed_noise = torch.randn(64, channels, image_size, image_size, generator=fixed)
        self.fixed_labels = torch.arange(64) % max(n_classes, 1)

    @property
    def sampler(self) -> torch.nn.Module:
        return self.ema if self.ema is not None else self.unet

    def train_epoch(self, real_uint8: torch.Tensor, labels: torch.Tensor, max_steps: int = 0) -> dict[str, float]:
        from harness.data.images import from_uint8
        d, device = self.d, self.device
        self.unet.train()
        n_batches = len(real_uint8) // d.batch_size  # full batches: every step sees batch_size images
        if n_batches == 0:
            raise HarnessError(f"diffusion.batch_size ({d.batch_size}) is larger than the training set ({len(real_uint8)})")
        order = torch.randperm(len(real_uint8), generator=self.gen, device=device)
        total = torch.zeros((), device=device)
        amp = precision.autocast(precision.resolve(d.precision, device), device)
        for i in range(n_batches):
            idx = order[i * d.batch_size:(i + 1) * d.batch_size]
            x = from_uint8(real_uint8[idx])
            if d.flip:
                flip = torch.rand(len(x), generator=self.gen, device=device) < 0.5
                x = torch.where(flip[:, None, None, None], x.flip(-1), x)
            y = labels[idx].clone()
            y[torch.rand(len(y), generator=self.gen, device=device) < d.label_dropout] = self.n_classes  # no class
            noise = torch.randn(x.shape, generator=self.gen, device=device)
            t = torch.randint(0, TRAIN_TIMESTEPS, (len(x),), generator=self.gen, device=device)
            noisy = self.noise_schedule.add_noise(x, noise, t)
            target = noise if d.prediction == "epsilon" else self.noise_schedule.get_velocity(x, noise, t)
            with amp:
                pred = self.unet(noisy, t, class_labels=y).sample
            loss = F.mse_loss(pred.float(), target)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            self.lr_schedule.step()
            if self.ema is not None:
                self._update_ema()
            total += loss.detach()
            self.steps += 1
            if max_steps and self.steps >= max_steps:
                n_batches = i + 1
                break
        self.epoch += 1
        mean = total.item() / n_batches  # one host sync per epoch
        if not math.isfinite(mean):
            raise HarnessError(f"diffusion training diverged at epoch {self.epoch}: the loss is not finite; lower "
                               f"diffusion.lr ({d.lr})")
        return {"diffusion/loss": mean, "diffusion/lr": self.lr_schedule.get_last_lr()[0],
                "diffusion/steps": float(self.steps)}

    @torch.no_grad()
    def _update_ema(self) -> None:
        # diffusers' EMAModel schedule: the decay grows as (1 + step) / (10 + step) up to diffusion.ema, so
        # that a short budget's average is not mostly the random initial weights. One foreach kernel over
        # all tensors, not a Python loop of ~200 small lerps.
        decay = min(self.d.ema, (1 + self.steps) / (10 + self.steps))
        torch._foreach_lerp_(list(self.ema.parameters()), list(self.unet.parameters()), 1 - decay)

    # The rest of the Trainer protocol.
    def preview(self) -> torch.Tensor:
        out = denoise(self.sampler, self.d, self.fixed_noise, self.fixed_labels, QUALITY_STEPS, 0.0, self.device)
        self.unet.train()
        return out

    def quality_images(self, n: int) -> torch.Tensor:
        images, _ = generate(self.sampler, self.d, 0, self.device, 0, n, QUALITY_STEPS, 0.0)
        self.unet.train()
        return images

    def checkpoint(self) -> dict:
        net = self.sampler
        return {"state_dict": {k: v.cpu() for k, v in net.state_dict().items()}, "config": asdict(self.d),
                "epoch": self.epoch, "steps": self.steps, "n_classes": self.n_classes,
                "channels": net.config.in_channels, "image_size": net.config.sample_size}

    def exportable(self) -> tuple[torch.nn.Module, torch.Tensor]:
        net = self.sampler
        c, s = net.config.in_channels, net.config.sample_size
        example = torch.cat([self.fixed_noise[:2].flatten(1), torch.tensor([[500.0, 0.0], [10.0, 1.0]])], 1)
        return _Exportable(net, c, s), example

    def progress(self, row: dict) -> str:
        return f"loss {row['diffusion/loss']:.4f}  steps {self.steps}"

    def state_dict(self) -> dict:
        state = {"unet": self.unet.state_dict(), "opt": self.opt.state_dict(),
                 "lr_schedule": self.lr_schedule.state_dict(), "rng": self.gen.get_state(), "epoch": self.epoch,
                 "steps": self.steps}
        if self.ema is not None:
            state["ema"] = self.ema.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.unet.load_state_dict(state["unet"])
        self.opt.load_state_dict(state["opt"])
        self.lr_schedule.load_state_dict(state["lr_schedule"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])
        self.gen.set_state(state["rng"])
        self.epoch, self.steps = state["epoch"], state["steps"]


class _Exportable(torch.nn.Module):
    """The denoiser with one input tensor, as MLflow's pickle-free format wants: each row is a noisy
    image (flattened), then its timestep, then its class (the last index: none); the output is the
    model's prediction (noise or v, diffusion.prediction)."""

    def __init__(self, net, channels: int, size: int):
        super().__init__()
        self.net, self.channels, self.size = net, channels, size

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = z[:, :-2].reshape(len(z), self.channels, self.size, self.size)
        return self.net(x, z[:, -2], class_labels=z[:, -1].long()).sample


# ---------------------------------------------------------------------------------------------
# The kind protocol

def load_model(memo, run_id: str, epoch: int | None = None):
    """The sampling UNet of checkpoint `epoch` (None: the last) of a generator run, and its checkpoint dict."""
    return trained.load_checkpoint(memo, run_id, epoch, lambda ckpt: unet(
        DiffusionConfig(**ckpt["config"]), ckpt["n_classes"], ckpt["channels"], ckpt["image_size"]))


def preflight(ctx, cfg, source: str | None = None) -> None:
    trained.preflight(ctx, cfg, cfg.diffusion, "diffusion", source)


def sampler(ctx, cfg, run_id: str) -> stream.Sampler:
    epoch = cfg.generate.checkpoint_epoch
    if epoch == -1:
        epoch = best_checkpoint(run_id)
    net, ckpt = load_model(ctx.memo, run_id, epoch or None)
    net.to(ctx.device)
    d, seed = cfg.diffusion, cfg.generate.seed
    return stream.Sampler(("diffusion", run_id, ckpt["epoch"], seed, d.sample_steps, d.guidance),
                          lambda start, stop: generate(net, d, seed, ctx.device, start, stop, d.sample_steps, d.guidance),
                          ckpt["epoch"], f"the epoch-{ckpt['epoch']} diffusion model of run `{run_id}` "
                                         f"({d.sample_steps} DDIM steps, guidance {d.guidance:g})")


def settings(cfg):
    return cfg.diffusion


def trainer(cfg, device: torch.device, n_classes: int, channels: int, image_size: int) -> Denoiser:
    return Denoiser(cfg.diffusion, device, n_classes, channels, image_size)


def steps_per_epoch(n_real: int, d) -> int:
    return max(1, n_real // d.batch_size)


def fit(ctx, cfg, splits, resume_from: str | None = None, evaluator=None) -> None:
    """Train (or continue `resume_from`) the diffusion model inside the active run."""
    trained.fit(ctx, cfg, splits, sys.modules[__name__], resume_from, evaluator)


def curves_figure(history: list[dict[str, float]]):
    from harness.figures import subplots, tight
    fig, axes = subplots(1, 2, figsize=(9, 3))
    for ax, key in zip(axes, ("diffusion/loss", "diffusion/lr")):
        ax.plot(range(1, len(history) + 1), [row[key] for row in history])
        ax.set_title(key.split("/")[1])
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    tight(fig)
    return fig


def in_words(cfg) -> str:
    d = cfg.diffusion
    budget = f"{d.iterations} steps" if d.iterations else f"{d.epochs} epochs"
    return f"a class-conditional diffusion model (UNet width {d.width}) trained for {budget}"


def summary(cfg, trainer: Denoiser, history: list[dict], seconds: float) -> str:
    d = cfg.diffusion
    params = sum(p.numel() for p in trainer.unet.parameters())
    return (f"**generator**: class-conditional diffusion model, UNet2DModel width {d.width} ({params / 1e6:.2f} M "
            f"parameters), {d.prediction} prediction, {d.beta_schedule} betas, label dropout {d.label_dropout}, "
            f"EMA {d.ema}; {trainer.epoch} epochs = {trainer.steps} steps of {d.batch_size} "
            f"({'bf16 autocast' if precision.resolve(d.precision, trainer.device) == 'bf16' else 'fp32'}), "
            f"{seconds:.0f} s this session. Final loss {history[-1]['diffusion/loss']:.4f}.\n\n"
            f"Samples from fixed noise ({QUALITY_STEPS} DDIM steps): the image series `diffusion/samples`; "
            "curves: `loss_curves.png`.")


def cost_note(cfg, device) -> str | None:
    d = cfg.diffusion
    n_train = cfg.data.n_per_class * len(cfg.data.classes)
    steps = d.iterations or d.epochs * max(n_train // d.batch_size, 1)
    # A step costs ~ width^2 x batch: the cpu preset's budget (width 32, batch 64) is ~2e8 and ~20 minutes here.
    if device.type == "cpu" and d.width ** 2 * d.batch_size * steps > 1e9:
        return (f"preset {cfg.preset!r} trains a GPU-sized diffusion model (width {d.width}, {steps} steps of "
                f"{d.batch_size}); on this CPU its generator phase takes many hours")
    return None
