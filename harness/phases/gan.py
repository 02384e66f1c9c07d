"""GAN phase: WGAN-GP (DCGAN generator, critic without batch norm) trained on the real training images.

Artifacts of the run:
  samples/epoch_XXXX.png                 64 samples from fixed noise, every gan.sample_every epochs and at the end
  checkpoints/generator_epoch_XXXX.pt    {"state_dict", "config", "epoch", "generator_iters"}, every
                                         gan.checkpoint_every epochs and at the end; torch.load(weights_only=True)
  checkpoints/training_state.pt          generator, critic, both optimizers, RNG: what --resume continues from
  loss_curves.png                        critic loss, Wasserstein estimate, gradient penalty, generator loss
Metrics (step = epoch): gan/critic_loss, gan/wasserstein, gan/gradient_penalty, gan/generator_loss,
gan/generator_iters; final gan/epochs, gan/seconds.
"""
from __future__ import annotations

import functools
import re
import time
from dataclasses import asdict, dataclass

import click
import mlflow
import torch

from harness import tracking, train
from harness.config import Config
from harness.data import Splits
from harness.models import Generator

CHECKPOINT = re.compile(r"checkpoints/generator_epoch_(\d+)\.pt$")


@dataclass
class GanResult:
    run_id: str  # the run holding the checkpoints (a reused or resumed-into run included)


def checkpoint_path(epoch: int) -> str:
    return f"checkpoints/generator_epoch_{epoch:04d}.pt"


def list_checkpoints(run_id: str) -> dict[int, str]:
    """epoch -> artifact path of each generator checkpoint in a gan run."""
    out = {}
    for a in mlflow.MlflowClient().list_artifacts(run_id, "checkpoints"):
        m = CHECKPOINT.search(a.path)
        if m:
            out[int(m.group(1))] = a.path
    return dict(sorted(out.items()))


@functools.lru_cache(maxsize=8)
def load_generator(run_id: str, epoch: int | None = None) -> tuple[Generator, dict]:
    """The generator of checkpoint `epoch` (None: the last) of a gan run, and its checkpoint dict.

    Memoized: a finished run's checkpoints never change, and sweep trials sample the same few
    (callers only run the generator in eval mode)."""
    from harness.errors import HarnessError
    available = list_checkpoints(run_id)
    if not available:
        raise HarnessError(f"gan run {run_id} has no generator checkpoints")
    epoch = max(available) if not epoch else epoch
    if epoch not in available:
        raise HarnessError(f"gan run {run_id} has no checkpoint for epoch {epoch}; available: "
                           f"{', '.join(map(str, available))}")
    ckpt = tracking.load_torch(run_id, available[epoch])
    g = Generator(ckpt["config"]["latent_dim"], ckpt["config"]["width"], ckpt.get("n_classes", 0))
    g.load_state_dict(ckpt["state_dict"])
    return g, ckpt


def best_checkpoint(run_id: str) -> int:
    """The checkpoint epoch with the lowest Frechet distance the gan run measured (quality.enabled)."""
    from harness.errors import HarnessError
    fd = {m.step: m.value for m in mlflow.MlflowClient().get_metric_history(run_id, "quality/fd")}
    scored = [e for e in list_checkpoints(run_id) if e in fd]
    if not scored:
        raise HarnessError(f"gan run {run_id} measured no sample quality at its checkpoints; "
                           "generate.checkpoint_epoch=-1 needs a gan run trained with quality.enabled=true")
    return min(scored, key=fd.get)


def loss_figure(history: list[dict[str, float]]):
    from harness.metrics import subplots
    keys = ["gan/critic_loss", "gan/wasserstein", "gan/gradient_penalty", "gan/generator_loss"]
    fig, axes = subplots(1, 4, figsize=(14, 3))
    for ax, key in zip(axes, keys):
        pts = [(i, row[key]) for i, row in enumerate(history, 1) if key in row]
        if pts:
            ax.plot(*zip(*pts))
        ax.set_title(key.split("/")[1])
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def checkpoint_quality(cfg: Config, sampler: torch.nn.Module, evaluator, device: torch.device) -> dict[str, float]:
    """FD, KID, precision, recall of quality.n_samples images of a checkpoint (noise seed 0)."""
    was_training = sampler.training  # the live generator trains on; the EMA copy stays in eval mode
    images, _ = train.generate(sampler, cfg.gan.latent_dim, 0, device, 0, cfg.quality.n_samples)
    sampler.train(was_training)
    return evaluator.measure(images, cfg.quality.k)


def _train(cfg: Config, splits: Splits, device: torch.device, state: dict | None, history: list,
           evaluator=None) -> None:
    """Train (or continue) the GAN inside the active run, checkpointing as configured."""
    g = cfg.gan
    trainer = train.WganGp(g, device, len(splits.classes))
    if state is not None:
        trainer.load_state_dict(state)
    real, labels = splits.train_x.to(device), splits.train_y.to(device)
    pending: list[dict] = []  # epochs not yet sent to MLflow: flushed at each checkpoint
    start = time.perf_counter()

    def checkpoint():
        tracking.log_history_rows(pending, first_step=trainer.epoch - len(pending) + 1)
        pending.clear()
        if evaluator is not None:
            # Per checkpoint, on the gan run: a sweep or a reader can pick the epoch by sample quality.
            tracking.log_history_rows([checkpoint_quality(cfg, trainer.sampler, evaluator, device)], trainer.epoch)
        # The sampling generator (the EMA copy when gan.ema > 0) is what later phases use.
        tracking.log_torch({"state_dict": {k: v.cpu() for k, v in trainer.sampler.state_dict().items()},
                            "config": asdict(g), "epoch": trainer.epoch, "generator_iters": trainer.generator_iters,
                            "n_classes": trainer.n_classes, "classes": list(splits.classes)},
                           checkpoint_path(trainer.epoch))
        tracking.log_torch(trainer.state_dict() | {"history": history}, "checkpoints/training_state.pt")

    with train.progress(g.epochs - trainer.epoch, "gan") as bar:
        while trainer.epoch < g.epochs:
            row = trainer.train_epoch(real, labels)
            history.append(row)
            pending.append(row)
            e = trainer.epoch
            if e % g.sample_every == 0 or e == g.epochs:
                tracking.log_image_grid(trainer.sample(trainer.fixed_noise, trainer.fixed_labels), f"samples/epoch_{e:04d}.png")
            if e % g.checkpoint_every == 0 or e == g.epochs:
                checkpoint()
            bar.current_item = f"W {row['gan/wasserstein']:.3f}  G iters {trainer.generator_iters}"
            bar.update(1)
    seconds = time.perf_counter() - start
    mlflow.log_metrics({"gan/epochs": trainer.epoch, "gan/seconds": seconds,
                        "gan/generator_iters_total": trainer.generator_iters})
    tracking.log_figure(loss_figure(history), "loss_curves.png")
    levers = [f"{g.conditional}-conditional" if g.conditional != "none" else "",
              "spectral norm" if g.spectral_norm else "", f"DiffAugment {g.diffaugment}" if g.diffaugment else "",
              f"EMA {g.ema}" if g.ema else ""]
    kind = ("WGAN-GP" if g.loss == "wgan-gp" else "hinge loss") + "".join(f", {x}" for x in levers if x)
    tracking.describe(f"**gan**: {kind}, DCGAN width {g.width}, {trainer.epoch} epochs = {trainer.generator_iters} "
                      f"generator iterations ({g.critic_steps} critic steps each), {seconds:.0f} s this session. "
                      f"Final Wasserstein estimate {history[-1]['gan/wasserstein']:.3f}.\n\n"
                      f"Samples from fixed noise: `samples/epoch_{trainer.epoch:04d}.png`; loss curves: `loss_curves.png`.")


def run(cfg: Config, splits: Splits, device: torch.device, key: str, use_cache: bool = True,
        resume: bool = False, evaluator=None) -> GanResult:
    """`evaluator` (quality.Evaluator): measure sample quality at every checkpoint."""
    interrupted = None
    if resume and not (use_cache and tracking.find_finished(key)):
        candidates = tracking.find_runs(key, statuses=("KILLED", "FAILED"), max_results=5)
        interrupted = next((r for r in candidates
                            if any(a.path == "checkpoints/training_state.pt"
                                   for a in mlflow.MlflowClient().list_artifacts(r.info.run_id, "checkpoints"))), None)
        if interrupted is None:
            click.echo("gan: no interrupted run with a checkpoint for this config; training from scratch", err=True)
    tags = {"harness.resumed_from": interrupted.info.run_id} if interrupted else None
    with tracking.phase_run("gan", cfg, key=key, use_cache=use_cache, tags=tags) as pr:
        if pr.hit:
            return GanResult(pr.source_id)
        state, history = None, []
        if interrupted is not None:
            old = interrupted.info.run_id
            state = tracking.load_torch(old, "checkpoints/training_state.pt")
            history = state.pop("history")
            # Carry the interrupted run's record over, so this run alone tells the whole story.
            tracking.log_history_rows(history, first_step=1)
            for epoch, path in list_checkpoints(old).items():
                mlflow.log_artifact(tracking.download(old, path), "checkpoints")
            for a in mlflow.MlflowClient().list_artifacts(old, "samples"):
                mlflow.log_artifact(tracking.download(old, a.path), "samples")
            click.echo(f"gan: resuming run {old} from epoch {state['epoch']}", err=True)
        _train(cfg, splits, device, state, history, evaluator)
        return GanResult(pr.run_id)
