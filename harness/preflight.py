"""One preflight per command that runs phases: the config made from what the user typed, the context
it runs in, and every check that can refuse it before a run opens, each made once (a grid's: once per
cell). Nothing here opens a run or trains; a refusal is one HarnessError line.

    cfg, ctx = preflight.prepare(preset, overrides, experiment, data_dir, no_cache, say)  # + kinds, weights, data
    preflight.generator(ctx, cfg, seeds)   # the generator against each seed's data draw (commands that generate)
    preflight.cell(ctx, cell.cfg, data_dir, rung)  # a grid cell, all of the above
"""
from __future__ import annotations

from typing import Callable, Sequence

from harness import classifiers, config, data, generators, precision, train
from harness.classifiers import weights
from harness.config import Config
from harness.context import Context
from harness.errors import HarnessError
from harness.phases import pretrain
from harness.pipeline import seeded
from harness.table import PHASES


def prepare(preset: str, overrides: Sequence[str], experiment: str, data_dir: str | None, no_cache: bool,
            say: Callable[[str], None], resume: bool = False, dry_run: bool = False, phase: str | None = None,
            grid: bool = False) -> tuple[Config, Context]:
    """The config and the context a command runs phases with, checked. `phase`: a single-phase command,
    refused first when the phase does not run under the config. `grid`: a grid's base config, which
    need not run on its own (its axes may set the kind its other settings need: `cell` checks each
    cell) and keeps `auto` precisions, which each worker resolves for its machine. A dry run opens no
    tracking store. Settings that nothing under the config reads are said as `note:` lines."""
    from harness.tracking import store
    cfg = config.load(preset, overrides)
    if phase is not None and not PHASES[phase].runs(cfg):
        raise HarnessError(f"phase {phase} does not run under this config: it needs {PHASES[phase].needs(cfg)}")
    if not grid:
        kinds(cfg)
    device = train.pick_device(cfg.device)
    if not grid:
        cfg = precision.resolve_config(cfg, device)
    data.check_cache_dir()
    if cfg.data.classes == ("all",):
        # The data's own class names, in the config every phase, key and record sees.
        cfg = config.apply(cfg, {"data.classes": list(data.open_source(data_dir, cfg.data).classes)})
    cfg = pretrain.with_classes(cfg, data_dir)
    ctx = Context(None if dry_run else store.configure(experiment, say), device, data_dir, use_cache=not no_cache,
                  resume=resume)
    if not grid:
        inputs(ctx, cfg, dry_run)
    else:
        pretrain.check_data(ctx, cfg)
    for note in (generators.cost_note(cfg, device), *config.ignored(cfg, overrides),
                 *pretrain.unused_settings(cfg, overrides)):
        if note:
            say(f"note: {note}")
    return cfg, ctx


def kinds(cfg: Config) -> None:
    """The generator's and the classifier's settings for this config (a hub network is built once)."""
    generators.check(cfg)
    classifiers.check_config(cfg)


def inputs(ctx: Context, cfg: Config, dry_run: bool = False) -> None:
    """What the phases read from outside the config: the starting weights (there, readable, finite; a
    URI needs the store, which a dry run does not open) and the pretrain phase's data."""
    if not (dry_run and weights.parse(cfg.classifier.init).needs_store):
        weights.check(ctx, cfg)
    generators.check_init(ctx, cfg, dry_run)
    pretrain.check_data(ctx, cfg)


def generator(ctx: Context, cfg: Config, seeds: Sequence[int] | None = None) -> None:
    """The generator kind against the data draw of each seed (an oracle's pool of unused images, a
    folder's classes), `cfg` as it is without `seeds`."""
    for one in [seeded(cfg, s) for s in seeds] if seeds else [cfg]:
        generators.preflight(ctx, one)


def cell(ctx: Context, cfg: Config, data_dir: str | None, rung: int | None = None, dry_run: bool = False) -> Config:
    """A grid cell's config, checked as `run` checks its own (kinds, weights, data, generator); returns it
    with pretrain.classes filled in. `rung`: the cell is an oracle-ladder rung of that many images."""
    one = pretrain.with_classes(cfg, data_dir)
    kinds(one)
    inputs(ctx, one, dry_run)
    ctx.splits(one.data)
    try:
        generator(ctx, one)
    except HarnessError as e:
        if rung is None:
            raise
        # A ladder rung's sample count is the --oracle-ladder value, not the user's generate.n_samples.
        raise HarnessError(f"--oracle-ladder rung {rung}: {e}".replace(f"generate.n_samples ({rung})", "the rung")) from None
    return one
