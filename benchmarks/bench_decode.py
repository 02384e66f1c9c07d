"""Decoding a class-folder tree: every class of the training split of a folder (CIFAR-10: 50,000
PNGs), first into an empty decoded-image cache, then again from the cache, through the same
`load_splits` a phase calls.

    python benchmarks/bench_decode.py [--data-dir ../shared/datasets/cifar10] [--image-size 32]
    python benchmarks/bench_decode.py --smoke --data-dir DIR    # seconds: 10 training images per class

Target: 50,000 images in under a minute the first time, seconds the second.
"""
from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import click

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "cifar10"


@click.command()
@click.option("--data-dir", default=str(DEFAULT_DATA), show_default=True)
@click.option("--image-size", default=32, show_default=True)
@click.option("--smoke", is_flag=True, help="Seconds, to show the script still runs (tests/test_scripts.py): "
                                            "10 training images per class (and every test image).")
def main(data_dir, image_size, smoke):
    with tempfile.TemporaryDirectory() as cache:
        os.environ["HARNESS_CACHE_DIR"] = cache
        from harness import config, data
        cfg = config.load("tiny", ["data.classes=all", f"data.n_per_class={10 if smoke else 'all'}",
                                   "data.val_per_class=0", f"data.image_size={image_size}"]).data
        for attempt in ("first (decode)", "second (cache)"):
            t = time.perf_counter()
            s = data.load_splits(cfg, data_dir)
            n = len(s.train_x) + len(s.test_x)
            print(f"{attempt}: {n} images of {len(s.classes)} classes at {image_size}px in "
                  f"{time.perf_counter() - t:.1f} s  ({os.cpu_count()} cores)")


if __name__ == "__main__":
    main()
