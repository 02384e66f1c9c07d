"""`generator.kind = "text2image"`: a pretrained text-to-image pipeline from `diffusers` (Stable
Diffusion and the rest of what AutoPipelineForText2Image loads), configured by [text2image]; needs
`pip install -e '.[diffusion]'`.

  txt2img  image i: the prompt of class i mod C (`text2image.prompt` with {class}, or the class's
           entry in `text2image.prompts`), drawn from noise seeded by (generate.seed, i)
  img2img  the same, but starting from a real training image of the class, noised to
           `text2image.strength` (Real Guidance, He et al. 2023; DA-Fusion, Trabucco et al. 2024:
           strength 0.5, guidance 7.5, "a photo of a {class}"); which training image seeds image i
           is drawn from (generate.seed, i) and recorded (`img2img_sources.json`, `img2img_pairs.png`)
Images are computed in whole batches of text2image.batch_size aligned on the stream, each with its
own seeded generator, so n images are a prefix of n + 1 and two runs give the same images. They are
drawn at the model's resolution and brought to data.image_size like the real data.

The key covers the [text2image] section, the model and the revision it resolved to: the commit of a
hub snapshot, or for a local folder the digest of its weight files. The run logs the prompts it used
(`prompts.json`). A model that is not on disk is downloaded into the Hugging Face cache (HF_HOME)
unless HF_HUB_OFFLINE=1; without a network, one line says where it must be.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from harness.config import setting
from harness.errors import HarnessError
from harness.generators import stream

@dataclass(frozen=True)
class Text2ImageConfig:
    """generator.kind = text2image: a pretrained diffusers pipeline (pip install -e '.[diffusion]')."""
    OPTIONAL: ClassVar[bool] = True
    SWEEP: ClassVar[bool] = True  # sampled per trial (no generator phase)
    model: str = ""  # a hub id (e.g. stable-diffusion-v1-5/stable-diffusion-v1-5) or a local folder written by save_pretrained
    revision: str = "main"  # hub branch, tag or commit; the key covers the commit it resolves to
    prompt: str = "a photo of a {class}"  # template; {class} is the class name
    prompts: tuple[tuple[str, str], ...] = ()  # per-class prompts that replace the template: a [text2image.prompts] table, or --set text2image.prompts="bird=a small bird;airplane=a jet"
    negative_prompt: str = ""
    steps: int = setting(30, gt=0)  # denoising steps
    guidance: float = setting(7.5, ge=0.0, why="1 or less: no classifier-free guidance")  # classifier-free guidance scale (1 = none)
    batch_size: int = setting(8, gt=0)  # images per pipeline call (part of the key: batches are computed whole)
    dtype: str = setting("fp32", choices=("fp32", "fp16", "bf16"))  # fp32 | fp16 (CUDA only) | bf16
    mode: str = setting("txt2img", choices=("txt2img", "img2img"))  # txt2img | img2img: start from a real training image of the class (DA-Fusion, Real Guidance)
    strength: float = setting(0.5, gt=0.0, le=1.0)  # img2img: how far from the real image (0 = unchanged, 1 = pure noise)
    resolution: int = 0  # pixels per side the pipeline draws at; 0 = the model's own (512 for SD 1.5); brought to data.image_size after

    def check(self) -> None:
        """The section's own rules, checked with its ranges whenever a config is made (config/rules.py)."""
        if self.resolution < 0 or self.resolution % 8:
            raise HarnessError(f"text2image.resolution must be 0 (the model's own) or a positive multiple of 8, "
                               f"got {self.resolution}")
        # diffusers' img2img denoises int(steps x strength) steps and fails deep inside on none.
        if self.mode == "img2img" and int(self.steps * self.strength) < 1:
            raise HarnessError(f"text2image.steps={self.steps} x text2image.strength={self.strength:g} leaves no denoising "
                               f"step in img2img mode (the pipeline runs int(steps x strength) of them): raise "
                               f"text2image.steps to at least {math.ceil(1 / self.strength)} or the strength")


CONFIG = Text2ImageConfig  # the kind's own section, [text2image] (harness/config/schema.py gathers it)


TRAINS = False
SECTIONS = ("text2image",)
CLASSES = "always (a prompt per class)"
NEEDS = "pip install -e '.[diffusion]'; text2image.model: a hub id or a local pipeline folder"
WEIGHTS = (".safetensors", ".bin", ".ckpt", ".pt", ".pth", ".onnx", ".msgpack")
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def DATA(cfg) -> tuple[str, ...]:  # noqa: N802 (the protocol's name)
    return ("train",) if cfg.text2image.mode == "img2img" else ()


def knows_classes(cfg) -> bool:
    return True


def prompt(cfg, name: str) -> str:
    t = cfg.text2image
    return dict(t.prompts).get(name) or t.prompt.replace("{class}", name.replace("_", " "))


def _diffusers():
    try:
        import diffusers
        import transformers  # noqa: F401 (the text encoders)
    except ImportError as e:
        raise HarnessError(f"generator.kind=text2image needs diffusers and transformers ({e.name} is not installed): "
                           "pip install -e '.[diffusion]'") from None
    return diffusers


def check(cfg) -> None:
    t = cfg.text2image
    if not t.model:
        raise HarnessError("generator.kind=text2image needs text2image.model: a hub id (e.g. "
                           "stable-diffusion-v1-5/stable-diffusion-v1-5) or a folder written by a pipeline's save_pretrained")
    _diffusers()
    classes = cfg.data.classes
    if classes != ("all",):
        unknown = [k for k, _ in t.prompts if k not in classes]
        if unknown:
            raise HarnessError(f"text2image.prompts names {', '.join(unknown)}, not in data.classes ({', '.join(classes)})")
        if "{class}" not in t.prompt and not all(c in dict(t.prompts) for c in classes):
            raise HarnessError(f"text2image.prompt {t.prompt!r} has no {{class}}: every class would get the same prompt; "
                               "put {class} in it or give each class its own in text2image.prompts")


# ---------------------------------------------------------------------------------------------
# Where the model is, and what revision it is

def _local(cfg) -> Path | None:
    path = Path(cfg.text2image.model).expanduser()
    return path if path.is_dir() else None


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def resolve(ctx, cfg) -> tuple[Path, str]:
    """(the model's folder on disk, the revision it resolved to), once per process."""
    t = cfg.text2image
    key = ("text2image.resolve", t.model, t.revision)
    if key in ctx.memo.generators:
        return ctx.memo.generators[key]
    local = _local(cfg)
    if local is not None:
        if not (local / "model_index.json").is_file():
            raise HarnessError(f"text2image.model {local} is a folder without model_index.json: not a diffusers "
                               "pipeline (write one with pipeline.save_pretrained(folder))")
        found = (local, f"sha256:{_weights_digest(local)}")
    else:
        found = _from_hub(t.model, t.revision)
    return ctx.memo.remember(ctx.memo.generators, key, found)


def _from_hub(model: str, revision: str) -> tuple[Path, str]:
    diffusers = _diffusers()
    from huggingface_hub import constants
    try:
        with _quiet():
            folder = diffusers.DiffusionPipeline.download(model, revision=revision, local_files_only=True)
    except Exception:  # not in the cache (or only part of it): fetch it, where there is a network
        if _offline():
            raise HarnessError(f"text2image.model {model} (revision {revision}) is not in the Hugging Face cache "
                               f"{constants.HF_HUB_CACHE} and HF_HUB_OFFLINE is set; download it there on a machine with "
                               f"a network (hf download {model}) or set text2image.model to a local pipeline folder") from None
        try:
            with _quiet():  # diffusers' own "Couldn't connect to the Hub" lines: the error below says it once
                folder = diffusers.DiffusionPipeline.download(model, revision=revision)
        except Exception as e:
            first = _reason(e)
            raise HarnessError(f"text2image.model {model} (revision {revision}) is not on disk and cannot be downloaded "
                               f"({first}); put it in the Hugging Face cache {constants.HF_HUB_CACHE} (hf download "
                               f"{model}) or set text2image.model to a local pipeline folder") from None
    folder = Path(folder)
    return folder, folder.name  # snapshots/<commit>


def _reason(e: BaseException) -> str:
    """An error's first line, without diffusers' pointer to a stack trace the user is not shown, and
    with the first line of its cause (the network error) when it has one."""
    first = (str(e).strip().splitlines() or [type(e).__name__])[0]
    first = re.sub(r"\s*Please check out the root cause in the stacktrace above\.?", "", first).strip()
    cause = e.__cause__ or e.__context__
    if cause is not None and str(cause).strip():
        first = f"{first}: {str(cause).strip().splitlines()[0][:200]}"
    return first


def _weights_digest(folder: Path) -> str:
    """The digest of a local pipeline's weight files (and configs), cached by their names, sizes and
    modification times: hashing a 4 GB model costs seconds that every command would pay."""
    from harness.data import cache_dir
    files = sorted(p for p in folder.rglob("*") if p.is_file() and (p.suffix in WEIGHTS or p.suffix == ".json"))
    listing = "\n".join(f"{p.relative_to(folder)}:{(st := p.stat()).st_size}:{st.st_mtime_ns}" for p in files)
    index = cache_dir() / "models" / (hashlib.sha256(f"{folder.resolve()}|{listing}".encode()).hexdigest()[:24] + ".txt")
    if index.is_file():
        return index.read_text().strip()
    h = hashlib.sha256()
    for p in files:
        h.update(p.relative_to(folder).as_posix().encode() + b"\0")
        with p.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                h.update(chunk)
    digest = h.hexdigest()[:16]
    with contextlib.suppress(OSError):  # an unwritable cache only costs the next command the hash
        index.parent.mkdir(parents=True, exist_ok=True)
        index.write_text(digest)
    return digest


def preflight(ctx, cfg, source=None) -> None:
    """Before any run opens: diffusers is there, the model is on disk (or fetched), the dtype runs here."""
    check(cfg)
    if cfg.text2image.dtype == "fp16" and ctx.device.type != "cuda":
        raise HarnessError(f"text2image.dtype=fp16 needs CUDA (the device is {ctx.device}); use fp32, or bf16 on a CPU "
                           "with bf16 units")
    resolve(ctx, cfg)
    if cfg.text2image.mode == "img2img":
        counts = ctx.splits(cfg.data).counts("train")
        empty = [c for c, n in counts.items() if n == 0]
        if empty:
            raise HarnessError(f"text2image.mode=img2img starts from real training images, and class {empty[0]} has none")


def identity(ctx, cfg) -> str:
    return f"text2image:{cfg.text2image.model}@{resolve(ctx, cfg)[1]}"


# ---------------------------------------------------------------------------------------------
# The pipeline and its stream

@contextlib.contextmanager
def _quiet():
    """diffusers' and transformers' loading bars and notices, off for this block only."""
    import diffusers.utils.logging as dlog
    try:
        import transformers.utils.logging as tlog
    except ImportError:
        tlog = None
    saved = [(dlog, dlog.get_verbosity(), dlog.is_progress_bar_enabled())]
    if tlog is not None:
        saved.append((tlog, tlog.get_verbosity(), tlog.is_progress_bar_enabled()))
    for log, _, _ in saved:
        log.set_verbosity_error()
        log.disable_progress_bar()
    try:
        yield
    finally:
        for log, level, bar in saved:
            log.set_verbosity(level)
            if bar:
                log.enable_progress_bar()


def pipeline(ctx, cfg):
    """The loaded pipeline for this config, once per process (ctx.memo)."""
    t = cfg.text2image
    folder, revision = resolve(ctx, cfg)
    key = ("text2image.pipeline", str(folder), revision, t.dtype, t.mode, str(ctx.device))
    if key in ctx.memo.generators:
        return ctx.memo.generators[key]
    diffusers = _diffusers()
    auto = diffusers.AutoPipelineForImage2Image if t.mode == "img2img" else diffusers.AutoPipelineForText2Image
    index = json.loads((folder / "model_index.json").read_text())
    # A safety checker blanks images it flags, at random for a classifier's purpose: the study
    # judges images, and a user who wants one filters their folder (generator.kind=folder).
    extra = {"safety_checker": None, "requires_safety_checker": False} if "safety_checker" in index else {}
    try:
        with _quiet(), warnings.catch_warnings():
            # diffusers >= 0.42 renames torch_dtype to dtype, which older releases ignore: keep the
            # name every supported release reads, without its deprecation notice.
            warnings.filterwarnings("ignore", message=".*torch_dtype.*", category=FutureWarning)
            pipe = auto.from_pretrained(folder, torch_dtype=DTYPES[t.dtype], local_files_only=True, **extra)
    except Exception as e:
        first = (str(e).splitlines() or [type(e).__name__])[0]
        raise HarnessError(f"text2image.model {t.model} cannot be loaded as a {t.mode} pipeline: {first}") from None
    pipe = pipe.to(ctx.device)
    pipe.set_progress_bar_config(disable=True)
    return ctx.memo.remember(ctx.memo.generators, key, pipe)


def _side(pipe, cfg) -> int:
    """Pixels per side to draw at: text2image.resolution, else the model's own."""
    if cfg.text2image.resolution:
        return cfg.text2image.resolution
    net = getattr(pipe, "unet", None) or getattr(pipe, "transformer", None)
    size = getattr(getattr(net, "config", None), "sample_size", None) or getattr(pipe, "default_sample_size", None)
    if not size:
        raise HarnessError(f"text2image.model {cfg.text2image.model} does not say its resolution; set text2image.resolution")
    return int(size * pipe.vae_scale_factor)


def image_seed(seed: int, i: int) -> int:
    return int(np.random.SeedSequence([seed, i, 0x7E27]).generate_state(1)[0])


def sources(cfg, splits, start: int, stop: int) -> np.ndarray:
    """img2img: the training image (index into the train split) that seeds each image start..stop-1."""
    n_classes = len(splits.classes)
    by_class = [np.flatnonzero(splits.train_y.numpy() == c) for c in range(n_classes)]
    out = []
    for i in range(start, stop):
        pool = by_class[i % n_classes]
        out.append(pool[np.random.default_rng([cfg.generate.seed, i, 0x5EED]).integers(len(pool))])
    return np.asarray(out, np.int64)


def sampler(ctx, cfg, splits) -> stream.Sampler:
    from harness.data.images import fit
    t = cfg.text2image
    pipe = pipeline(ctx, cfg)
    revision = resolve(ctx, cfg)[1]
    classes = splits.classes
    texts = [prompt(cfg, c) for c in classes]
    side = _side(pipe, cfg)
    bs, seed = t.batch_size, cfg.generate.seed

    def block(b: int) -> torch.Tensor:
        idx = range(b * bs, (b + 1) * bs)
        y = stream.balanced_labels(idx.start, idx.stop, len(classes))
        args = {"prompt": [texts[c] for c in y], "num_inference_steps": t.steps, "guidance_scale": t.guidance,
                "generator": [torch.Generator().manual_seed(image_seed(seed, i)) for i in idx], "output_type": "np"}
        if t.negative_prompt:
            args["negative_prompt"] = [t.negative_prompt] * bs
        if t.mode == "img2img":
            real = splits.train_x[torch.from_numpy(sources(cfg, splits, idx.start, idx.stop))].float() / 255
            if real.shape[1] == 1:
                real = real.expand(-1, 3, -1, -1)
            args["image"] = torch.nn.functional.interpolate(real, size=(side, side), mode="bicubic", antialias=True,
                                                            align_corners=False).clamp(0, 1)
            args["strength"] = t.strength
        else:
            args["height"] = args["width"] = side
        with torch.inference_mode():
            out = pipe(**args).images  # float [B, H, W, 3] in [0, 1]
        pixels = (np.asarray(out, np.float32) * 255).round().clip(0, 255).astype(np.uint8)
        return torch.from_numpy(fit(pixels, cfg.data.image_size, cfg.data.channels)).permute(0, 3, 1, 2).contiguous()

    def draw(start: int, stop: int):
        from harness import progress
        todo = list(stream.blocks(start, stop, bs))
        rows = []
        with progress.bar(len(todo), f"text2image {t.mode} ({stop - start} images)", iterable=todo,
                          unit="batches") as bar:
            for b in bar:
                rows.append(block(b))
        empty = torch.zeros(0, cfg.data.channels, cfg.data.image_size, cfg.data.image_size, dtype=torch.uint8)
        offset = (start // bs) * bs
        images = torch.cat(rows)[start - offset:stop - offset] if rows else empty
        return images, stream.balanced_labels(start, stop, len(classes))

    def record(images: torch.Tensor, labels: torch.Tensor | None) -> None:
        from harness.tracking import codecs
        codecs.log_json({"model": t.model, "revision": revision, "mode": t.mode,
                         "prompts": dict(zip(classes, texts)), "negative_prompt": t.negative_prompt}, "prompts.json")
        if t.mode == "img2img" and len(images):
            src = sources(cfg, splits, 0, len(images))
            codecs.log_json({"train_index": src.tolist(), "class": [classes[c] for c in labels.tolist()]},
                            "img2img_sources.json")
            n = min(16, len(images))
            pairs = torch.stack([torch.stack([splits.train_x[src[i]], images[i]]) for i in range(n)]).flatten(0, 1)
            codecs.log_image_grid(pairs, "img2img_pairs.png", nrow=8)

    what = f"{t.model} ({t.mode}, {t.steps} steps, guidance {t.guidance}" + \
           (f", strength {t.strength} from the {len(splits.train_x)} real training images)" if t.mode == "img2img" else ")")
    identity = ("text2image", revision, t, seed, cfg.data.image_size, cfg.data.channels) + ((splits.digest("train"),) if t.mode == "img2img" else ())
    return stream.Sampler(identity, draw, 0, what, record=record)
