"""Wall time per 1,000 images of generator.kind=text2image, side by side with the pipeline called bare.

  harness   the text2image kind's sampler: per-image seeded generators, whole batches aligned on the
            stream, images brought to data.image_size (img2img: real training images as the start)
  bare      the same pipeline called with one prompt list and one generator per batch, output kept
            at the model's resolution: what a user's own loop costs

The model is the tests' tiny random Stable Diffusion pipeline (tests/tiny_diffusers.py: UNet and VAE
of 4-8 channels at 32 px, a 2-layer CLIP), since no weights can be downloaded here: the figure is
the harness's and diffusers' per-image overhead, not a real model's compute. Scale a real model
by its own per-image time (a 512 px SD 1.5 image at 30 steps is seconds on a GPU, minutes on a CPU).

    python benchmarks/bench_text2image.py [--images 64] [--steps 2] [--batch-size 8] [--rounds 3]
    python benchmarks/bench_text2image.py --smoke    # seconds: 4 images, 2 steps, batches of 2, 1 round
"""
from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import click
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


@click.command()
@click.option("--images", default=64, show_default=True, help="images per variant and round")
@click.option("--steps", default=2, show_default=True, help="denoising steps")
@click.option("--batch-size", default=8, show_default=True)
@click.option("--rounds", default=3, show_default=True, help="interleaved rounds; the median counts")
@click.option("--smoke", is_flag=True, help="Seconds, to show the script still runs (tests/test_scripts.py): 4 images, "
                                            "2 steps (img2img at strength 0.5 needs 2 for one), batches of 2, 1 round.")
def main(images, steps, batch_size, rounds, smoke):
    import tiny_diffusers
    if smoke:
        images, steps, batch_size, rounds = 4, 2, 2, 1

    from harness import config
    from harness.context import Context
    from harness.generators import text2image
    torch.set_num_threads(torch.get_num_threads())
    with tempfile.TemporaryDirectory() as tmp:
        model = tiny_diffusers.build(Path(tmp) / "t2i")
        g = torch.Generator().manual_seed(0)
        classes = ("airplane", "automobile", "bird")
        train_y = torch.arange(300) % 3
        train_x = torch.randint(0, 256, (300, 3, 32, 32), generator=g, dtype=torch.uint8)

        class Splits:
            def __init__(self):
                self.classes, self.train_x, self.train_y = classes, train_x, train_y

            def digest(self, split):
                return "bench"

        def harness_variant(mode):
            cfg = config.load("tiny", ["generator.kind=text2image", f"text2image.model={model}",
                                       f"text2image.steps={steps}", f"text2image.batch_size={batch_size}",
                                       f"text2image.mode={mode}"])
            ctx = Context(None, torch.device("cpu"))
            sampler = text2image.sampler(ctx, cfg, Splits())  # loads the pipeline: not timed
            return lambda: sampler.draw(0, images)

        def bare_variant(mode):
            cfg = config.load("tiny", ["generator.kind=text2image", f"text2image.model={model}", f"text2image.mode={mode}"])
            pipe = text2image.pipeline(Context(None, torch.device("cpu")), cfg)
            start = torch.nn.functional.interpolate(train_x[:batch_size].float() / 255, size=(32, 32))

            def run():
                for b in range(0, images, batch_size):
                    args = {"prompt": [f"a photo of a {classes[i % 3]}" for i in range(b, b + batch_size)],
                            "num_inference_steps": steps, "generator": torch.Generator().manual_seed(b),
                            "output_type": "np"}
                    if mode == "img2img":
                        args.update(image=start, strength=0.5)
                    with torch.inference_mode():
                        pipe(**args)
            return run

        variants = {f"{who} {mode}": make(mode) for mode in ("txt2img", "img2img")
                    for who, make in (("harness", harness_variant), ("bare", bare_variant))}
        times = {name: [] for name in variants}
        for _ in range(rounds):
            for name, fn in variants.items():
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
    print(f"tiny text2image pipeline, {images} images/round, {steps} steps, batch {batch_size}, "
          f"{torch.get_num_threads()} threads, median of {rounds} rounds")
    print(f"{'variant':<18} {'s / 1000 images':>16} {'images/s':>9} {'vs bare':>8}")
    for name, ts in times.items():
        med = statistics.median(ts)
        bare = statistics.median(times["bare " + name.split()[1]])
        print(f"{name:<18} {med / images * 1000:>16.1f} {images / med:>9.1f} {bare / med:>7.2f}x")


if __name__ == "__main__":
    main()
