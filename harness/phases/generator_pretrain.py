"""Generator pretrain phase (a generator kind that pretrains: gan.init=pretrain): the study's generator
trained first, from scratch, on classes disjoint from the study's ([pretrain]: pretrain.classes, by default
every other class of the data, from pretrain.data_dir where given; the same draw and refusals as the
classifier's pretrain phase), seeded by pretrain.seed, so that one run serves every seed and data size
of a study; the generator phase then adapts it to data.classes ("Transferring GANs", Wang et al. 2018).
Logged as a generator run (checkpoints, samples, curves: harness/generators/trained.py).
"""
from __future__ import annotations

from harness import generators
from harness.context import PhaseResult
from harness.errors import HarnessError
from harness.phases import before, keyed_on, pretrain  # noqa: F401 (the protocol's defaults)


def _own(ctx, cfg):
    """(the config it trains under, its splits)."""
    kind = generators.get(cfg.generator.kind)
    own = kind.pretraining(cfg, pretrain.data_config(cfg))
    return own, ctx.splits(own.data, cfg.pretrain.data_dir or None)


def check(ctx, cfg, inputs) -> None:
    own, splits = _own(ctx, cfg)
    batch = generators.get(cfg.generator.kind).settings(own).batch_size
    if batch > len(splits.train_x):
        raise HarnessError(f"the generator's pretraining has {len(splits.train_x)} images (pretrain.classes "
                           f"{', '.join(cfg.pretrain.classes)}), fewer than its batch ({batch})")


def compute(ctx, cfg, inputs) -> PhaseResult:
    own, splits = _own(ctx, cfg)
    generators.get(cfg.generator.kind).fit(ctx, own, splits)
    return PhaseResult("")


def load(ctx, cfg, run) -> PhaseResult:
    return PhaseResult(run.info.run_id, dict(run.data.metrics))


def summary(result: PhaseResult, cfg) -> str:
    return (f"generator_pretrain run {result.run_id}: the generator trained on {', '.join(cfg.pretrain.classes)} "
            "(the generator phase adapts it to data.classes)")
