"""Write a folder of class images with a diffusers text-to-image pipeline, for `generator.kind=folder`.

The harness can run a pipeline itself (generator.kind=text2image); this script is the other way: make
the images once, anywhere (a GPU box, a notebook), look at them, then judge the folder like any
outside tool's. It writes OUT/<class>/<class>_NNNNN.png, image i of a class drawn from seed
(--seed, class, i), so a rerun with a larger --per-class adds images and keeps the first ones.

    python examples/text2image_folder.py --model stable-diffusion-v1-5/stable-diffusion-v1-5 \\
        --classes airplane,automobile,bird --per-class 500 --out generated/
    harness grid --preset strong-baseline --data-dir ../shared/datasets/cifar10 \\
        --axis generator.kind=folder,oracle --axis data.n_per_class=100,300 --seeds 5 \\
        --set generator.folder=generated/ --set pseudolabel.mode=filter
"""
from __future__ import annotations

import argparse
import warnings
import zlib
from pathlib import Path

import torch
from diffusers import AutoPipelineForText2Image
from tqdm import tqdm  # comes with diffusers


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="hub id or a local pipeline folder")
    ap.add_argument("--classes", required=True, help="comma-separated class names (the folder names)")
    ap.add_argument("--per-class", type=int, default=500)
    ap.add_argument("--out", required=True)
    ap.add_argument("--prompt", default="a photo of a {class}")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--guidance", type=float, default=7.5)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--size", type=int, default=0, help="pixels per side (default: the model's own)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with warnings.catch_warnings():  # diffusers >= 0.42 prefers dtype=, which older releases ignore
        warnings.filterwarnings("ignore", message=".*torch_dtype.*", category=FutureWarning)
        pipe = AutoPipelineForText2Image.from_pretrained(
            args.model, torch_dtype=torch.float16 if device == "cuda" else torch.float32).to(device)
    pipe.set_progress_bar_config(disable=True)
    size = {"height": args.size, "width": args.size} if args.size else {}
    for name in args.classes.split(","):
        folder = Path(args.out) / name
        folder.mkdir(parents=True, exist_ok=True)
        todo = [i for i in range(args.per_class) if not (folder / f"{name}_{i:05d}.png").exists()]
        for start in tqdm(range(0, len(todo), args.batch_size), desc=name, unit="batch"):
            batch = todo[start:start + args.batch_size]
            seeds = [torch.Generator().manual_seed(args.seed * 1_000_003 + zlib.crc32(name.encode()) + i) for i in batch]
            images = pipe([args.prompt.replace("{class}", name)] * len(batch), num_inference_steps=args.steps,
                          guidance_scale=args.guidance, generator=seeds, **size).images
            for i, image in zip(batch, images):
                image.save(folder / f"{name}_{i:05d}.png")
        print(f"{folder}: {args.per_class} images")


if __name__ == "__main__":
    main()
