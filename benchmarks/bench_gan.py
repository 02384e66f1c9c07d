"""WGAN-GP speed: the harness loop vs a bare PyTorch loop of the same networks, side by side, and
the share of the gan phase's wall time spent in MLflow calls.

  harness  harness.generators.gan.WganGp.train_epoch (what the generator phase runs)
  bare     the textbook WGAN-GP loop written inline, same Generator/Critic, same batch and steps

Rounds alternate the two loops so that machine noise hits both alike; the median round counts.
Then the whole generator phase (pipeline.execute of `generator`) runs once against a throwaway SQLite store with
every MLflow call timed.

    python benchmarks/bench_gan.py [--data-dir ../shared/datasets/cifar10] [--width 32] [--epochs 2] [--rounds 3]

Targets: harness >= 0.9x bare; MLflow <= 3% of the phase's wall time.
"""
from __future__ import annotations

import functools
import os
import statistics
import tempfile
import time
from pathlib import Path

import click
import mlflow
import torch
from mlflow.tracking import MlflowClient

from harness import config, data, pipeline, train
from harness.context import Context
from harness.generators import gan as gan_kind
from harness.models import Critic, Generator, from_uint8

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "cifar10"


def bare_epochs(x, cfg, device, epochs):
    """Gulrajani et al.'s loop, plainly: returns generator iterations done."""
    torch.manual_seed(0)
    G, D = Generator(cfg.latent_dim, cfg.width).to(device), Critic(cfg.width).to(device)
    opt_g = torch.optim.Adam(G.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))
    opt_d = torch.optim.Adam(D.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))
    step = iters = 0
    for _ in range(epochs):
        perm = torch.randperm(len(x), device=device)
        for i in range(len(x) // cfg.batch_size):
            real = from_uint8(x[perm[i * cfg.batch_size:(i + 1) * cfg.batch_size]])
            fake = G(torch.randn(len(real), cfg.latent_dim, device=device)).detach()
            eps = torch.rand(len(real), 1, 1, 1, device=device)
            mix = (eps * real + (1 - eps) * fake).requires_grad_(True)
            grad = torch.autograd.grad(D(mix).sum(), mix, create_graph=True)[0]
            gp = ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()
            loss_d = D(fake).mean() - D(real).mean() + cfg.gp_weight * gp
            opt_d.zero_grad()
            loss_d.backward()
            opt_d.step()
            step += 1
            if step % cfg.critic_steps == 0:
                loss_g = -D(G(torch.randn(cfg.batch_size, cfg.latent_dim, device=device))).mean()
                opt_g.zero_grad()
                loss_g.backward()
                opt_g.step()
                iters += 1
    return iters


def harness_epochs(x, cfg, device, epochs):
    trainer = gan_kind.WganGp(cfg, device)
    for _ in range(epochs):
        trainer.train_epoch(x)
    return trainer.generator_iters


class CallTimer:
    """Wraps MLflow entry points (fluent API and client) and the harness helpers that only exist
    to log, summing their wall time."""

    def __init__(self):
        self.seconds = 0.0
        self.calls = 0
        self.depth = 0

    def wrap(self, owner, name):
        fn = getattr(owner, name)

        @functools.wraps(fn)
        def timed(*args, **kwargs):
            if self.depth:  # nested MLflow calls count once
                return fn(*args, **kwargs)
            self.depth += 1
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - t
                self.calls += 1
                self.depth -= 1
        setattr(owner, name, timed)


@click.command()
@click.option("--data-dir", default=str(DEFAULT_DATA), show_default=True)
@click.option("--width", default=32, show_default=True, help="DCGAN width (the cpu preset's).")
@click.option("--epochs", default=2, show_default=True, help="Epochs per timed round.")
@click.option("--rounds", default=3, show_default=True)
@click.option("--phase-epochs", default=10, show_default=True, help="Epochs of the timed gan phase.")
def main(data_dir, width, epochs, rounds, phase_epochs):
    device = train.pick_device("auto")
    cfg = config.load("cpu", [f"gan.width={width}", f"gan.epochs={phase_epochs}", "gan.sample_every=5",
                              "gan.checkpoint_every=5"])
    if Path(data_dir).is_dir():
        splits = data.load_splits(cfg.data, data_dir)
        source = "CIFAR-10, 3 classes x 1000"
    else:
        x = torch.randint(0, 256, (3000, 3, 32, 32), dtype=torch.uint8)
        splits = data.Splits(cfg.data.classes, x, torch.arange(3000) % 3, x[:0], x[:0].long(), x[:0], x[:0].long(), "random")
        source = "random uint8 images (no data dir)"
    x = splits.train_x.to(device)
    g = cfg.gan
    print(f"device {device}, torch threads {torch.get_num_threads()}, {len(x)} images ({source}), width {g.width}, "
          f"batch {g.batch_size}, {g.critic_steps} critic steps per generator step, {epochs} epochs x {rounds} rounds")
    variants = {"harness": harness_epochs, "bare": bare_epochs}
    for fn in variants.values():
        fn(x[:10 * g.batch_size], g, device, 1)  # warm-up
    rates = {k: [] for k in variants}
    for _ in range(rounds):
        for name, fn in variants.items():
            if device.type == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            iters = fn(x, g, device, epochs)
            if device.type == "cuda":
                torch.cuda.synchronize()
            rates[name].append(iters / (time.perf_counter() - t))
    med = {k: statistics.median(v) for k, v in rates.items()}
    print(f"\n{'loop':<10}{'gen iters/s':>12}   rounds")
    for name in variants:
        print(f"{name:<10}{med[name]:>12.3f}   " + " ".join(f"{r:.3f}" for r in rates[name]))
    print(f"harness / bare = {med['harness'] / med['bare']:.2f}x   (target >= 0.9)")

    # The whole gan phase against a throwaway store, every MLflow call timed.
    timer = CallTimer()
    for name in ("start_run", "end_run", "log_params", "log_metrics", "log_metric", "set_tag", "set_tags",
                 "log_artifact", "log_artifacts", "log_text", "log_image", "log_figure", "log_dict"):
        timer.wrap(mlflow, name)
    for name in ("log_batch", "search_runs", "list_artifacts", "get_experiment_by_name", "create_experiment"):
        timer.wrap(MlflowClient, name)
    from harness.tracking import store
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp}/mlflow.db"
        # configure() migrates the new store: not timed
        ctx = Context(store.configure("bench"), device, use_cache=False, loaded_splits={cfg.data: splits})
        timer.seconds, timer.calls = 0.0, 0
        t = time.perf_counter()
        pipeline.execute(ctx, "generator", cfg, {})
        wall = time.perf_counter() - t
    share = timer.seconds / wall
    print(f"\ngenerator phase: {phase_epochs} epochs in {wall:.1f} s; MLflow calls {timer.calls}, {timer.seconds:.2f} s "
          f"= {share:.1%} of the phase   (target <= 3%)")


if __name__ == "__main__":
    main()
