"""Diffusion speed against the machine, side by side in one run: training steps/s of the harness's
diffusion step (harness.generators.diffusion.Denoiser.train_epoch, with its flips, label dropout,
warm-up schedule and EMA) against a plain loop written as in diffusers' train_unconditional.py
example (UNet forward, MSE on the noise, backward, AdamW step, LR scheduler step) on the same
UNet, batch and data; the FLOPs of a step (torch.utils.flop_counter) and the share of this
machine's measured matmul peak each reaches; then DDIM sampling in images/s per number of steps.

Each variant runs in a fresh process; rounds cycle through the variants so that machine noise hits
all alike; the median round counts.

    python benchmarks/bench_diffusion.py [--data-dir ../shared/datasets/cifar10] [--preset cpu] \
        [--steps 20] [--rounds 3] [--sample-steps 10,50]
    python benchmarks/bench_diffusion.py --smoke --data-dir DIR    # seconds: see --help

Target: harness / plain >= 1.0.
"""
from __future__ import annotations

import dataclasses
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


def plain_steps(x, y, d, n_classes, device, steps: int) -> None:
    """The diffusers example's loop, plainly (class labels passed, as the same UNet needs them)."""
    from diffusers import DDPMScheduler
    from diffusers.optimization import get_scheduler

    from harness.generators.diffusion import unet
    from harness.data.images import from_uint8
    torch.manual_seed(0)
    model = unet(d, n_classes, x.shape[1], x.shape[-1]).to(device)
    noise_scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule=d.beta_schedule, prediction_type="epsilon")
    optimizer = torch.optim.AdamW(model.parameters(), lr=d.lr, betas=(0.95, 0.999), weight_decay=1e-6, eps=1e-8)
    lr_scheduler = get_scheduler("cosine", optimizer=optimizer, num_warmup_steps=d.warmup, num_training_steps=10 ** 6)
    model.train()
    done = 0
    while done < steps:
        order = torch.randperm(len(x), device=device)
        for i in range(len(x) // d.batch_size):
            idx = order[i * d.batch_size:(i + 1) * d.batch_size]
            clean = from_uint8(x[idx])
            noise = torch.randn(clean.shape, device=device)
            timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (len(clean),), device=device).long()
            noisy = noise_scheduler.add_noise(clean, noise, timesteps)
            pred = model(noisy, timesteps, class_labels=y[idx]).sample
            loss = torch.nn.functional.mse_loss(pred.float(), noise.float())
            loss.backward()
            optimizer.step()
            lr_scheduler.step()
            optimizer.zero_grad()
            done += 1
            if done >= steps:
                return


def measure(spec: dict) -> dict:
    """One variant in this process: {"rate": steps/s (or images/s when sampling), "flops": per step}."""
    from torch.utils.flop_counter import FlopCounterMode

    from harness import config, train
    from harness.generators import diffusion
    device = train.pick_device("auto")
    x, y = torch.load(spec["data"])
    x, y = x.to(device), y.to(device)
    d = dataclasses.replace(config.load(spec["preset"], spec["overrides"]).diffusion, precision="fp32")
    n_classes = int(y.max()) + 1

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    if spec["variant"].startswith("ddim"):
        steps = int(spec["variant"].split()[1])
        net = diffusion.unet(d, n_classes, x.shape[1], x.shape[-1]).to(device)
        diffusion.denoise(net, d, torch.randn(8, *x.shape[1:]), torch.arange(8) % n_classes, 2, 0.0, device)  # warm-up
        n = spec["images"]
        t = time.perf_counter()
        diffusion.denoise(net, d, torch.randn(n, *x.shape[1:]), torch.arange(n) % n_classes, steps, d.guidance, device)
        sync()
        return {"rate": n / (time.perf_counter() - t), "flops": float("nan")}
    if spec["variant"] == "plain":
        def run(n):
            plain_steps(x, y, d, n_classes, device, n)
    else:
        trainer = diffusion.Denoiser(d, device, n_classes, x.shape[1], x.shape[-1])

        def run(n):
            # An epoch is cut at max_steps: the steps counted are the ones asked for.
            target = trainer.steps + n
            while trainer.steps < target:
                trainer.train_epoch(x, y, max_steps=target)
    run(2)  # warm-up: allocator, oneDNN primitives
    sync()
    t = time.perf_counter()
    run(spec["steps"])
    sync()
    rate = spec["steps"] / (time.perf_counter() - t)
    counter = FlopCounterMode(display=False)
    with counter:
        run(1)
    return {"rate": rate, "flops": counter.get_total_flops(), "threads": torch.get_num_threads()}


def run_variant(name: str, spec: dict) -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE.parent), str(HERE)]))
    out = subprocess.run([sys.executable, str(HERE / "bench_diffusion.py"), "--child", json.dumps({**spec, "variant": name})],
                         env=env, capture_output=True, text=True, cwd=HERE.parent)
    if out.returncode != 0:
        return {"error": (out.stderr.strip().splitlines() or ["?"])[-1][:200]}
    return json.loads(out.stdout.strip().splitlines()[-1])


@click.command()
@click.option("--data-dir", default=str(DEFAULT_DATA), show_default=True)
@click.option("--preset", default="cpu", show_default=True, help="Whose [diffusion] settings: cpu, tiny, strong, ...")
@click.option("--steps", default=20, show_default=True, help="Timed training steps per variant and round (after 2 warm-up steps).")
@click.option("--rounds", default=3, show_default=True)
@click.option("--sample-steps", default="10,50", show_default=True, help="DDIM step counts to time sampling at.")
@click.option("--images", default=64, show_default=True, help="Images per sampling measurement.")
@click.option("--set", "overrides", multiple=True, metavar="diffusion.KEY=VALUE", help="Settings besides the preset's.")
@click.option("--smoke", is_flag=True, help="Seconds, to show the script still runs (tests/test_scripts.py): the tiny "
                                            "preset, 2 steps, 1 round, 4 images sampled in 2 DDIM steps.")
@click.option("--child", default=None, hidden=True)
def main(data_dir, preset, steps, rounds, sample_steps, images, overrides, smoke, child):
    if child is not None:  # one variant, in the fresh process run_variant started
        print(json.dumps(measure(json.loads(child))))
        return
    from harness import config, data, train
    from bench_classifier import peaks, peaks_line
    if smoke:
        preset, steps, rounds, sample_steps, images = "tiny", 2, 1, "2", 4
    cfg = config.load(preset, ["data.classes=airplane,automobile,bird", *overrides])
    splits = data.load_splits(cfg.data, data_dir)
    device = train.pick_device("auto")
    d = cfg.diffusion
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "x.pt")
        torch.save((splits.train_x, splits.train_y), path)
        spec = {"data": path, "preset": preset, "steps": steps, "images": images, "overrides": list(overrides)}
        names = ["harness", "plain"] + [f"ddim {s}" for s in sample_steps.split(",")]
        results: dict[str, list[dict]] = {n: [] for n in names}
        for r in range(rounds):
            for n in names:
                results[n].append(run_variant(n, spec))
                print(f"round {r + 1}/{rounds} {n}: {results[n][-1]}", file=sys.stderr)
    peak = peaks(device, 256 if smoke else 2048)
    print(f"diffusion preset {preset!r}: UNet width {d.width}, {d.layers_per_block} ResNet blocks a level, attention "
          f"{d.attention}, batch {d.batch_size}, {tuple(splits.train_x.shape[1:])} images, fp32, "
          f"{torch.get_num_threads()} threads on {device}")
    print(peaks_line(device, peak) + "\n")
    rate = {n: statistics.median(r["rate"] for r in rs if "rate" in r) if any("rate" in r for r in rs) else None
            for n, rs in results.items()}
    print(f"{'variant':<12}{'steps/s':>9}{'vs plain':>9}{'GFLOP/step':>12}{'GFLOP/s':>9}{'% peak':>8}")
    for n in ("harness", "plain"):
        if rate[n] is None:
            print(f"{n:<12} failed: {results[n][-1].get('error')}")
            continue
        flops = results[n][-1]["flops"]
        gflops = flops * rate[n] / 1e9
        print(f"{n:<12}{rate[n]:>9.2f}{rate[n] / rate['plain']:>8.2f}x{flops / 1e9:>12.1f}{gflops:>9.1f}"
              f"{100 * gflops / peak['fp32']:>7.1f}%")
    print("\nDDIM sampling (guidance as the preset sets it):")
    for n in names[2:]:
        print(f"  {n.split()[1]:>4} steps: {rate[n]:.2f} images/s" if rate[n] else f"  {n}: failed {results[n][-1]}")


if __name__ == "__main__":
    main()
