"""Training throughput of the harness classifier loop, side by side with two alternatives.

  harness     harness.train.train_classifier (uint8 tensors on the device, batched augmentation)
  bare        the plainest PyTorch loop over the same tensors and model (default NCHW memory format)
  dataloader  torchvision-style Dataset of PIL images + transforms + DataLoader(num_workers=2)

Each variant trains one epoch per round over the same 3000 images; rounds alternate the variants
so that machine noise hits them alike; the median round counts. Also prints achieved GFLOP/s
against the machine's measured matrix-multiply peak in the precision each variant runs: float32,
and bfloat16 where the machine has bf16 units (then `harness bf16` runs too: classifier.precision=bf16).

    python benchmarks/bench_classifier.py [--data-dir ../shared/datasets/cifar10] [--rounds 3] \
        [--kinds simplecnn,resnet18,airbench] [--images 3000]
    python benchmarks/bench_classifier.py --smoke --data-dir DIR    # seconds: simplecnn, 96 images, 1 round

--kinds: a row per classifier kind (simplecnn, resnet18, airbench, torchvision:NAME, timm:NAME), the
same network in each variant of a row, all in the machine's native arithmetic (bf16 autocast where it
has bf16 units: then `harness fp32` runs too); the dataloader variant runs for simplecnn only.
Targets (2-core CPU): harness >= 0.95x bare for every kind, >= 1.5x dataloader.
"""
from __future__ import annotations

import dataclasses
import statistics
import time
from pathlib import Path

import click
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torch.utils.flop_counter import FlopCounterMode
from torchvision import transforms

from harness import classifiers, config, data, train
from harness.classifiers.net import CIFAR_MEAN, CIFAR_STD
from harness.classifiers.simplecnn import SimpleCNN

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "cifar10"


def bare_epoch(x, y, cfg, device):
    torch.manual_seed(cfg.seed)
    model = PlainCNN(3).to(device) if cfg.kind == "simplecnn" else _plain(classifiers.build(cfg, 3, 3, 32)).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    model.train()
    for idx in torch.randperm(len(x), device=device).split(cfg.batch_size):
        xb, yb = x[idx], y[idx]
        if cfg.augmentation == "crop-flip":
            xb = train.augment_batch(xb, torch.Generator(device=device).manual_seed(0))
        loss = F.cross_entropy(model(xb), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


class PILDataset(Dataset):
    """What a torchvision user writes: PIL images, per-image transforms."""

    def __init__(self, x, y, augment):
        self.images = [Image.fromarray(img) for img in x.permute(0, 2, 3, 1).numpy()]
        self.y = y
        steps = [transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip()] if augment else []
        self.transform = transforms.Compose(steps + [transforms.ToTensor(), transforms.Normalize(CIFAR_MEAN, CIFAR_STD)])

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.transform(self.images[i]), self.y[i]


class NormalizedCNN(SimpleCNN):
    """SimpleCNN for inputs the DataLoader already normalized."""

    def forward(self, x):
        return self.head(self.features(x))


class PlainCNN(SimpleCNN):
    """SimpleCNN as a plain loop would run it: NCHW, no memory-format choice."""

    def forward(self, x):
        return self.head(self.features((x.float() - self.mean) / self.std))


def _plain(model):
    """A kind's network as a plain loop runs it: NCHW input, no memory-format choice, one forward."""
    class Plain(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = model

        def forward(self, x):
            return self.inner.head(torch.flatten(self.inner.backbone((x.float() - self.inner.normalize.mean)
                                                                     / self.inner.normalize.std), 1))
    return Plain()


def dataloader_epoch(loader, cfg, device):
    torch.manual_seed(cfg.seed)
    model = NormalizedCNN(3).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    model.train()
    for xb, yb in loader:
        loss = F.cross_entropy(model(xb.to(device)), yb.to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def matmul_peak(device, n=2048, reps=10, dtype=torch.float32) -> float:
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    best = float("inf")
    for _ in range(reps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best / 1e9


def peaks(device, n: int = 2048) -> dict[str, float | None]:
    """The machine's matmul peak in each precision (GFLOP/s); bf16 None where it has no bf16 units:
    an emulated figure would be no peak of anything. A smoke run passes a small n: seconds, not a peak."""
    from harness import precision
    return {"fp32": matmul_peak(device, n), "bf16": matmul_peak(device, n, dtype=torch.bfloat16)
            if precision.native_bf16(device)[0] else None, "n": n}


def peaks_line(device, peak: dict) -> str:
    from harness import precision
    native, what = precision.native_bf16(device)
    line = f"matmul peak ({peak['n']}^2, same threads): float32 {peak['fp32']:.1f} GFLOP/s"
    if native:
        return line + f", bfloat16 {peak['bf16']:.1f} GFLOP/s ({peak['bf16'] / peak['fp32']:.1f}x; {what})"
    return line + f"; no native bf16 on this machine ({what}): bf16 variants not run"


def train_flops_per_image(device, cfg, batch=64) -> float:
    model = classifiers.build(cfg, 3, 3, 32).to(device)
    x = torch.randint(0, 255, (batch, 3, 32, 32), dtype=torch.uint8, device=device)
    y = torch.zeros(batch, dtype=torch.long, device=device)
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(model(x), y).backward()
    return counter.get_total_flops() / batch


def bare_native(x, y, cfg, device, dtype):
    """The bare loop in the machine's native arithmetic, as a user would write it: the whole forward
    under bf16 autocast where the machine has bf16 units."""
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == "bf16"):
        bare_epoch(x, y, cfg, device)


def timed(variants: dict, rounds: int, device) -> dict[str, list[float]]:
    """Rounds alternate the variants so that machine noise hits them alike; one warm-up each first."""
    for fn in variants.values():  # allocator, worker start, first-call overheads
        fn()
    times = {k: [] for k in variants}
    for _ in range(rounds):
        for name, fn in variants.items():
            if device.type == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - t)
    return times


@click.command()
@click.option("--data-dir", default=str(DEFAULT_DATA), show_default=True)
@click.option("--rounds", default=3, show_default=True, help="Timed epochs per variant.")
@click.option("--augment/--no-augment", default=False, show_default=True, help="Random crop + flip in every variant.")
@click.option("--kinds", "--kind", default="simplecnn,resnet18,airbench", show_default=True,
              help="classifier.kind of each row, comma-separated (any kind: torchvision:NAME, timm:NAME too).")
@click.option("--width", default=0, show_default=True, help="classifier.width (0: each kind's own).")
@click.option("--images", default=3000, show_default=True, help="Training images per epoch (the first N).")
@click.option("--smoke", is_flag=True, help="Seconds, to show the script still runs (tests/test_scripts.py): simplecnn, "
                                            "the tiny preset's images (at most 96), 1 round, a 256^2 matmul peak.")
def main(data_dir, rounds, augment, kinds, width, images, smoke):
    from harness import precision
    device = train.pick_device("auto")
    native = precision.resolve("auto", device)
    if smoke:
        kinds, rounds, images = "simplecnn", 1, min(images, 96)
    if Path(data_dir).is_dir():
        # The default draw is 1000 per class; a smoke run's folder may hold a few dozen.
        s = data.load_splits(config.load("tiny").data if smoke else config.Config().data, data_dir)
        x, y, source = s.train_x[:images], s.train_y[:images], "CIFAR-10, 3 classes"
    else:
        x = torch.randint(0, 256, (images, 3, 32, 32), dtype=torch.uint8)
        y = torch.arange(images) % 3
        source = "random uint8 images (no data dir)"
    n = len(x)
    xd, yd = x.to(device), y.to(device)
    peak = peaks(device, 256 if smoke else 2048)
    print(f"device {device}, torch threads {torch.get_num_threads()}, {n} images ({source}), 32 px, batch 64, "
          f"augment {augment}, {rounds} rounds; native arithmetic: {native}")
    print(f"\n{'kind':<12}{'loop':<16}{'images/s':>10}{'MFLOP/img':>11}{'GFLOP/s':>9}{'% of peak':>11}   epoch times (s)")
    ratios = {}
    for kind in kinds.split(","):
        base = dataclasses.replace(config.Config().classifier, epochs=1, kind=kind, width=width,
                                   augmentation="crop-flip" if augment else "none")
        cfg = dataclasses.replace(base, precision=native)
        variants = {f"harness {native}": lambda cfg=cfg: train.train_classifier(xd, yd, 3, cfg, device, label=kind),
                    f"bare {native}": lambda cfg=cfg: bare_native(xd, yd, cfg, device, native)}
        if native != "fp32":
            fp32 = dataclasses.replace(base, precision="fp32")
            variants["harness fp32"] = lambda: train.train_classifier(xd, yd, 3, fp32, device, label=kind)
        if kind == "simplecnn":
            loader = DataLoader(PILDataset(x, y, augment), batch_size=base.batch_size, shuffle=True, num_workers=2)
            variants["dataloader fp32"] = lambda: dataloader_epoch(loader, base, device)
        times = timed(variants, rounds, device)
        rate = {k: n / statistics.median(v) for k, v in times.items()}
        flops = train_flops_per_image(device, cfg)
        for name in variants:
            own = peak["bf16" if "bf16" in name else "fp32"]  # each against the peak of the arithmetic it runs
            print(f"{kind:<12}{name:<16}{rate[name]:>10.0f}{flops / 1e6:>11.1f}{rate[name] * flops / 1e9:>9.1f}"
                  f"{rate[name] * flops / 1e9 / own:>11.1%}   " + " ".join(f"{t:.2f}" for t in times[name]))
        ratios[kind] = {"bare": rate[f"harness {native}"] / rate[f"bare {native}"]}
        if "dataloader fp32" in rate:
            ratios[kind]["dataloader"] = rate[f"harness {native}"] / rate["dataloader fp32"]
        if "harness fp32" in rate:
            ratios[kind]["fp32"] = rate[f"harness {native}"] / rate["harness fp32"]
    print(f"\nFLOPs: forward + backward per training image (FlopCounterMode); {peaks_line(device, peak)}")
    for kind, r in ratios.items():
        line = f"{kind:<12} harness / bare = {r['bare']:.2f}x (target >= 0.95)"
        if "dataloader" in r:
            line += f"; harness / dataloader = {r['dataloader']:.2f}x (target >= 1.5)"
        if "fp32" in r:
            line += f"; harness {native} / harness fp32 = {r['fp32']:.2f}x"
        print(line)


if __name__ == "__main__":
    main()
