"""GAN speed against the machine: generator iterations/s of the harness loop, of a bare PyTorch loop
of the same networks, of each speed-up, and of the code before them (a git worktree), side by
side in one run; the FLOPs of a generator iteration (torch.utils.flop_counter) and the share of a
measured float32 matmul peak each variant reaches; then the share of the gan phase's wall time
spent in MLflow calls.

  before        the harness loop of another checkout (--before PATH, e.g. a worktree at the start commit)
  harness       harness.generators.gan.WganGp.train_epoch with the preset's settings (one_pass,
                channels_last and fused_adam on by default)
  plain         the same with those three off
  bare          the textbook WGAN-GP loop written inline, same Generator/Critic, same batch and steps
  one_pass, channels_last, fused_adam    the plain loop with that one gan.* field on
  compile       the harness loop with gan.compile (on CUDA: CUDA graphs, mode reduce-overhead)
  bf16          the harness loop with gan.precision=bf16; its share of peak is against the machine's
                bfloat16 matmul peak; on a machine without bf16 units (emulated, slower) it is not run
  critic step   the harness critic step alone (critic_steps set so high that no generator step runs)

Each variant runs in a fresh process (its own threads, caches and compiled code); rounds cycle
through the variants so that machine noise hits all alike; the median round counts. Compile time
is the first epoch's extra seconds, reported apart.

    python benchmarks/bench_gan.py [--data-dir ../shared/datasets/cifar10] [--preset cpu] [--epochs 1] \
        [--rounds 3] [--before /tmp/before] [--variants harness,bare,...] [--phase-epochs 10]
    python benchmarks/bench_gan.py --smoke --data-dir DIR [--before .]   # seconds: see --help

Targets: harness >= 1.5x before, critic step >= 50% of the matmul peak; MLflow <= 3% of the phase.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click
import torch

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "cifar10"
HERE = Path(__file__).resolve().parent
FP32 = {"precision": "fp32"}  # every variant but bf16 in float32, whatever `auto` would pick here
OFF = {"one_pass": False, "channels_last": False, "fused_adam": False, **FP32}
SPEEDUPS = {"harness": FP32, "plain": OFF, "one_pass": {**OFF, "one_pass": True},
            "channels_last": {**OFF, "channels_last": True}, "fused_adam": {**OFF, "fused_adam": True},
            "compile": {"compile": True, **FP32}, "critic step": FP32, "bf16": {"precision": "bf16"},
            # The other checkout in the same arithmetic as the variant it is read against (its `auto`
            # would be bf16 on a machine with bf16 units, against harness's fp32).
            "before": FP32, "before bf16": {"precision": "bf16"}}


def bare_epochs(x, cfg, device, epochs):
    """Gulrajani et al.'s loop, plainly: returns generator iterations done."""
    from harness.data.images import from_uint8
    from harness.generators.dcgan import Critic, Generator
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


class _Global:
    """FlopCounterMode's per-module breakdown (ModuleTracker) hooks into autograd, which breaks the
    gradient penalty's autograd.grad on a leaf; the totals do not need it."""
    parents = ("Global",)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def measure(spec: dict) -> dict:
    """One variant in this process: {"rate": generator (or critic) iterations/s, "first": seconds of
    the first epoch beyond a steady one, "flops": per iteration}."""
    from torch.utils.flop_counter import FlopCounterMode

    from harness import config, train
    from harness.generators import gan as gan_kind
    device = train.pick_device("auto")
    x = torch.load(spec["data"]).to(device)
    g = dataclasses.replace(config.load(spec["preset"]).gan, **spec["fields"])
    critic_only = spec["variant"] == "critic step"
    if critic_only:
        g = dataclasses.replace(g, critic_steps=10 ** 9)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    if spec["variant"] == "bare":
        def epochs(n, data=x):
            return bare_epochs(data, g, device, n)
    else:
        trainer = gan_kind.WganGp(g, device)

        def epochs(n, data=x):
            before = trainer.critic_iters if critic_only else trainer.generator_iters
            for _ in range(n):
                trainer.train_epoch(data)
            return (trainer.critic_iters if critic_only else trainer.generator_iters) - before
    t = time.perf_counter()
    epochs(1)  # warm-up: allocator, oneDNN primitives, and for compile the compilation
    sync()
    first = time.perf_counter() - t
    t = time.perf_counter()
    done = epochs(spec["epochs"])
    sync()
    steady = (time.perf_counter() - t) / spec["epochs"]
    # FLOPs of a few steps (exact, from the ops' shapes), per iteration.
    small = x[:2 * g.critic_steps * g.batch_size] if not critic_only else x[:4 * g.batch_size]
    counter = FlopCounterMode(display=False)
    counter.mod_tracker = _Global()
    with counter:
        n_small = epochs(1, small)
    return {"rate": done / (steady * spec["epochs"]), "first": first - steady,
            "flops": counter.get_total_flops() / max(n_small, 1), "threads": torch.get_num_threads()}


def run_variant(name: str, spec: dict, tree: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tree), str(HERE)]))
    out = subprocess.run([sys.executable, str(HERE / "bench_gan.py"), "--child", json.dumps({**spec, "variant": name})],
                         env=env, capture_output=True, text=True, cwd=tree)
    if out.returncode != 0:
        return {"error": (out.stderr.strip().splitlines() or ["?"])[-1][:200]}
    return json.loads(out.stdout.strip().splitlines()[-1])


class CallTimer:
    """Wraps MLflow entry points (fluent API and client) and the harness helpers that only exist
    to log, summing their wall time; spans by category for whoever needs when (bench_trial)."""

    def __init__(self):
        self.seconds = 0.0
        self.calls = 0
        self.depth = 0
        self.spans: list[tuple[str, float, float]] = []

    def wrap(self, owner, name, category: str = "mlflow"):
        fn = getattr(owner, name)

        @functools.wraps(fn)
        def timed(*args, **kwargs):
            if self.depth:  # nested calls count once, in the outermost one's category
                return fn(*args, **kwargs)
            self.depth += 1
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                elapsed, now = time.perf_counter() - t, time.time()
                self.seconds += elapsed
                self.calls += 1
                self.depth -= 1
                self.spans.append((category, now - elapsed, now))
        setattr(owner, name, timed)

    def within(self, category: str, start: float, stop: float) -> float:
        """Seconds of `category` calls between two unix times."""
        return sum(max(0.0, min(b, stop) - max(a, start)) for c, a, b in self.spans if c == category)


@click.command()
@click.option("--data-dir", default=str(DEFAULT_DATA), show_default=True)
@click.option("--preset", default="cpu", show_default=True, help="Whose gan settings: cpu, tiny, strong, ...")
@click.option("--epochs", default=1, show_default=True, help="Timed epochs per variant and round (after one warm-up epoch).")
@click.option("--rounds", default=3, show_default=True)
@click.option("--before", type=click.Path(file_okay=False), default=None,
              help="Another checkout of the repository (git worktree add /tmp/before <commit>): its loop is timed too.")
@click.option("--variants", default="harness,plain,bare,one_pass,channels_last,fused_adam,bf16,critic step", show_default=True)
@click.option("--phase-epochs", default=10, show_default=True, help="Epochs of the timed gan phase (0: skip it).")
@click.option("--smoke", is_flag=True, help="Seconds, to show the script still runs (tests/test_scripts.py): the tiny "
                                            "preset, variants harness and bare, 1 epoch, 1 round, a 1-epoch phase.")
@click.option("--child", default=None, hidden=True)
def main(data_dir, preset, epochs, rounds, before, variants, phase_epochs, smoke, child):
    if child is not None:  # one variant, in the fresh process run_variant started
        print(json.dumps(measure(json.loads(child))))
        return
    from harness import config, data, precision, train
    from bench_classifier import peaks, peaks_line
    if smoke:
        preset, epochs, rounds, variants, phase_epochs = "tiny", 1, 1, "harness,bare", 1
    device = train.pick_device("auto")
    cfg = config.load(preset, [f"gan.epochs={phase_epochs or 1}", "gan.sample_every=5", "gan.checkpoint_every=5"])
    if Path(data_dir).is_dir():
        splits = data.load_splits(cfg.data, data_dir)
        source = f"CIFAR-10, {len(splits.classes)} classes x {cfg.data.n_per_class}"
    else:
        x = torch.randint(0, 256, (3000, 3, 32, 32), dtype=torch.uint8)
        splits = data.Splits(cfg.data.classes, x, torch.arange(3000) % 3, x[:0], x[:0].long(), x[:0], x[:0].long(), "random")
        source = "random uint8 images (no data dir)"
    g = cfg.gan
    names = [v.strip() for v in variants.split(",") if v.strip()]
    names += (["before"] + (["before bf16"] if "bf16" in names else [])) if before else []
    if "bf16" in names and not precision.native_bf16(device)[0]:
        names = [n for n in names if n not in ("bf16", "before bf16")]  # emulated: no result (peaks_line says why)
    repo = HERE.parent
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "x.pt"
        torch.save(splits.train_x, path)
        spec = {"data": str(path), "preset": preset, "epochs": epochs}
        results = {n: [] for n in names}
        for _ in range(rounds):
            for n in names:
                tree = Path(before) if n.startswith("before") else repo
                results[n].append(run_variant(n, {**spec, "fields": SPEEDUPS.get(n, {})}, tree))
    peak = peaks(device, 256 if smoke else 2048)
    print(f"device {device}, {results[names[0]][0].get('threads', '?')} torch threads, {len(splits.train_x)} images ({source}), "
          f"preset {preset}: width {g.width}, batch {g.batch_size}, {g.critic_steps} critic steps per generator step, "
          f"loss {g.loss}, gp_weight {g.gp_weight}; {epochs} timed epoch(s) x {rounds} rounds per variant")
    print(peaks_line(device, peak) + "\n")
    print(f"{'variant':<15}{'iters/s':>9}{'vs harness':>11}{'GFLOP/iter':>11}{'GFLOP/s':>9}{'% peak':>8}{'1st epoch +s':>13}   rounds")
    base = None
    for n in names:
        ok = [r for r in results[n] if "error" in r] == []
        if not ok:
            print(f"{n:<15}  failed: {next(r['error'] for r in results[n] if 'error' in r)}")
            continue
        rate = statistics.median(r["rate"] for r in results[n])
        flops = statistics.median(r["flops"] for r in results[n])
        first = statistics.median(r["first"] for r in results[n])
        base = rate if n == "harness" else base
        unit = "critic steps/s" if n == "critic step" else ""
        rel = f"{rate / base:.2f}x" if base and n not in ("critic step",) else "-"
        own = peak["bf16" if "bf16" in n else "fp32"]  # the peak of the arithmetic the variant runs
        print(f"{n:<15}{rate:>9.3f}{rel:>11}{flops / 1e9:>11.2f}{rate * flops / 1e9:>9.1f}{rate * flops / 1e9 / own:>8.1%}"
              f"{first:>13.1f}   " + " ".join(f"{r['rate']:.3f}" for r in results[n]) + (f"  ({unit})" if unit else ""))
    if before and base and all("error" not in r for r in results["before"]):
        b = statistics.median(r["rate"] for r in results["before"])
        print(f"\nharness / before = {base / b:.2f}x   (target >= 1.5)")
        if "before bf16" in results and all("error" not in r for r in results["before bf16"] + results["bf16"]):
            ratio = statistics.median(r["rate"] for r in results["bf16"]) / statistics.median(
                r["rate"] for r in results["before bf16"])
            print(f"bf16 / before bf16 = {ratio:.2f}x   (the arithmetic `auto` picks on this machine)")
    if not phase_epochs:
        return
    run_phase(cfg, splits, device, phase_epochs)


def run_phase(cfg, splits, device, phase_epochs):
    """The whole gan phase against a throwaway store, every MLflow call timed."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from harness.context import Context
    from harness.runner import Runner
    from harness.tracking import store
    timer = CallTimer()
    for name in ("start_run", "end_run", "log_params", "log_metrics", "log_metric", "set_tag", "set_tags",
                 "log_artifact", "log_artifacts", "log_text", "log_image", "log_figure", "log_dict"):
        timer.wrap(mlflow, name)
    for name in ("log_batch", "search_runs", "list_artifacts", "get_experiment_by_name", "create_experiment"):
        timer.wrap(MlflowClient, name)
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp}/mlflow.db"
        # configure() migrates the new store: not timed
        ctx = Context(store.configure("bench"), device, use_cache=False, loaded_splits={(cfg.data, None): splits})
        timer.seconds, timer.calls = 0.0, 0
        t = time.perf_counter()
        Runner(ctx).run("generator", cfg, {})
        wall = time.perf_counter() - t
    share = timer.seconds / wall
    print(f"\ngenerator phase: {phase_epochs} epochs in {wall:.1f} s; MLflow calls {timer.calls}, {timer.seconds:.2f} s "
          f"= {share:.1%} of the phase   (target <= 3%)")


if __name__ == "__main__":
    main()
