"""Generator kinds behind one protocol, chosen by `generator.kind`. A new kind = one module here +
one line in KINDS.

A kind is a module with:
  TRAINS: bool              whether it is fitted in a `generator` phase run (and has checkpoints)
  SECTIONS: tuple[str]      config sections that configure it, besides `generator`
  DATA: tuple[str]          splits it draws from when it does not train (train, pool): its key covers them
  knows_classes(cfg) -> bool  whether its images come with their class (else the baseline labels them)
  preflight(ctx, cfg, source)  optional: checks against the data (and the generator run `source`, when
                            known), before any run opens
  sampler(ctx, cfg, source) -> stream.Sampler
                            source: the generator run id when TRAINS, else the data splits
and, when TRAINS:
  fit(ctx, cfg, splits, resume_from, evaluator)  train inside the active run, checkpointing
  resumable(store, run_id) -> bool               an interrupted run that fit can continue
  checkpoints(run_id) -> list[int]               the epochs a sampler can draw from

The controls every study needs go through the same generate -> pseudolabel -> synthetic path:
`oracle` (unused real training images: the ceiling), `mixup` (pairs of real images blended) and
`noise` (per-class Gaussians: the floor).
"""
from __future__ import annotations

from harness.errors import HarnessError
from harness.generators import gan, mixup, noise, oracle

KINDS = {"gan": gan, "oracle": oracle, "mixup": mixup, "noise": noise}


def get(kind: str):
    try:
        return KINDS[kind]
    except KeyError:
        raise HarnessError(f"generator.kind must be one of {', '.join(KINDS)}, got {kind!r}") from None


def module_name(kind: str) -> str:
    return get(kind).__name__


def check(cfg) -> None:
    """Settings that only make sense for some kinds; checked before any run opens."""
    kind = get(cfg.generator.kind)
    if cfg.pseudolabel.mode != "label" and not kind.knows_classes(cfg):
        raise HarnessError(f"pseudolabel.mode={cfg.pseudolabel.mode} needs a generator that knows its images' "
                           f"classes (generator.kind=oracle or noise, or gan with gan.conditional=projection "
                           f"or acgan); generator.kind={cfg.generator.kind} does not")
    if cfg.generate.checkpoint_epoch and not kind.TRAINS:
        raise HarnessError(f"generate.checkpoint_epoch={cfg.generate.checkpoint_epoch} needs a generator with "
                           f"checkpoints; generator.kind={cfg.generator.kind} does not train")


def preflight(ctx, cfg, source: str | None = None) -> None:
    """The kind's checks against the data (e.g. enough unused images) and the generator run it will
    sample (`source`, when known), before any run opens."""
    kind = get(cfg.generator.kind)
    if hasattr(kind, "preflight"):
        kind.preflight(ctx, cfg, source)
