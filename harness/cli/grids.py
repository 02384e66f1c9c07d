"""Many pipelines over Optuna storages shared by workers: `sweep`, `grid` and `worker`."""
from __future__ import annotations

import click

from harness.cli.base import common, data_line, old_name, report_line, say, set_threads, setup
from harness.errors import HarnessError, mask


@click.command()
@common
@click.option("--trials", "-n", type=click.IntRange(min=1), default=20, show_default=True,
              help="Finished (complete or pruned) trials the study should hold; reruns resume up to this.")
@click.option("--study", "study_name", default=None, help="Optuna study name [default: sweep-<preset>].")
@click.option("--storage", default=None, metavar="URL", help="Optuna RDB URL shared by all workers "
              "[default: sqlite optuna.db beside the tracking database].")
@click.option("--spec", type=click.Path(dir_okay=False), default=None, help="Search space TOML "
              "[default: harness/experiments/sweep.toml].")
@click.option("--sampler-seed", default=0, show_default=True, help="TPE seed; give parallel workers different seeds.")
@click.option("--dry-run", is_flag=True, help="Check the config, the spec's every end and the data, and stop.")
def sweep(preset, overrides, data_dir, experiment, no_cache, trials, study_name, storage, spec, sampler_seed, dry_run):
    """Optuna study over the augmentation knobs (GAN checkpoint, sample count, threshold, ...),
    maximizing the images' effect on validation accuracy: the synthetic arm minus its control (the same
    recipe and slot count with the real training images), so that a knob that only adds steps cannot
    win (control.enabled=false: the synthetic arm alone); each trial is a nested MLflow run.
    Several processes with the same --study and --storage share the work."""
    from harness import sweep as sweepmod
    spec_obj = sweepmod.space.load_spec(spec)
    cfg, ctx = setup(preset, overrides, experiment, data_dir, no_cache, dry_run=dry_run)
    sweepmod.check(ctx, cfg, spec_obj)  # before the data line: a bad range is the only line printed
    if dry_run:
        click.echo(f"dry run: a sweep of {trials} trial(s) over {', '.join(p.field for p in spec_obj.params)} would "
                   "run; config, spec and data checked, nothing opened")
        return
    from harness import optuna_storage
    storage = storage or optuna_storage.default_storage()
    study_name = study_name or f"sweep-{cfg.preset}"
    optuna_storage.check_storage(storage)  # before the data line: a bad URL is the only line printed
    data_line(cfg, ctx)
    result = sweepmod.run(ctx, cfg, spec_obj, trials, study_name, storage, sampler_seed=sampler_seed)
    click.echo(f"\nsweep run {result.run_id}: study {study_name!r} in {mask(storage)}")
    click.echo(f"best params {result.best_params}: {result.words}")
    click.echo(f"optuna-dashboard {mask(storage)}\n")
    click.echo(result.table_md, nl=False)
    from harness.analysis import page
    click.echo(f"\nreport: {page.location(ctx.store.client, result.run_id)}")


@click.command()
@common
@click.option("--axis", "axes", multiple=True, metavar="KEY=V1,V2,...",
              help="A config key and its values; the grid is the cross product of the axes (repeatable). Keys "
                   "that vary together are one axis, joined by '+': --axis classifier.init+classifier.mode="
                   "scratch+train,pretrain+train,pretrain+probe.")
@click.option("--seeds", type=click.IntRange(min=1, max=10_000), default=5, show_default=True,
              help="Paired seeds 0..N-1 per cell; a larger N later grows the grid.")
@click.option("--ci-halfwidth", "halfwidth", type=float, default=None, metavar="POINTS",
              help="Seeds until each cell's 95% CI half-width of the accuracy delta is at most this many points: "
                   "a cell whose first --seeds are too spread out gets the seeds its spread says it needs, up to "
                   "--max-seeds (Stein's two-stage rule; it reads the spread only, never the delta or a p-value, "
                   "so it does not inflate false positives the way stopping on significance does).")
@click.option("--precision", "old_halfwidth", type=float, default=None, hidden=True,
              callback=old_name("grid --precision", "--ci-halfwidth (precision is fp32/bf16 arithmetic)"))
@click.option("--max-seeds", type=click.IntRange(min=2, max=10_000), default=None,
              help="With --ci-halfwidth: the most seeds a cell gets, at least --seeds [default: 20].")
@click.option("--oracle-ladder", "ladder", default=None, metavar="N1,N2,...",
              help="Oracle cells (real held-out images) at these image counts beside the axes' cells, per data "
                   "size: the curve that prices every generator cell in real images (\"1,500 gan images = 210 "
                   "real images [80, 390]\"). They share the baselines of their size. A rung 0 is the replay "
                   "control (generator.kind=replay: the training images themselves through the same recipe), where "
                   "the curve starts: without it the curve starts at (0, 0), as if the recipe alone did nothing.")
@click.option("--margin", type=float, default=None, metavar="POINTS",
              help="Equivalence margin: a cell whose 90% CI of the delta lies inside ±POINTS is 'equivalent' "
                   "(two one-sided tests), one that is neither that nor significant 'inconclusive' [default: 1.0].")
@click.option("--study", "study_name", envvar="HARNESS_STUDY", default=None, help="Optuna study holding the items "
              "[env HARNESS_STUDY; default: grid-<preset>].")
@click.option("--storage", envvar="HARNESS_STORAGE", default=None, metavar="URL", help="Optuna RDB URL shared by "
              "all workers [env HARNESS_STORAGE; default: sqlite optuna.db beside the tracking database].")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="CPU threads for torch in this process "
              "[default: torch's, one per core]; with several workers on one machine, cores / workers.")
@click.option("--plan-only", is_flag=True, help="Enqueue the items and leave them to `harness worker` processes.")
@click.option("--report", "report_only", is_flag=True, help="Print and log the report of the finished items; run none.")
@click.option("--confirm", "screen_name", default=None, metavar="SCREEN_STUDY|GRID_JSON",
              help="Confirm a finished screening grid (few seeds over many cells) of the same storage, or one exported "
                   "as its grid.json (studies/export_grid.py; its storage may be gone): this grid holds "
                   "its --top cells with the largest mean images' effect, its config and oracle ladder, on --seeds new "
                   "seeds that start past every seed the screen ran (a screening seed chose the cells, so it never "
                   "tests them), with new generators; Holm is over the confirmed cells. No --preset, --set or --axis: "
                   "they are the screen's.")
@click.option("--top", type=click.IntRange(min=1), default=3, show_default=True,
              help="With --confirm: how many of the screen's cells to confirm.")
@click.option("--dry-run", is_flag=True, help="Check the options, every cell's config, data and generator, say what "
              "the grid would hold, and stop: no study and no run is made.")
def grid(preset, overrides, data_dir, experiment, no_cache, axes, seeds, halfwidth, old_halfwidth, max_seeds, ladder,
         margin, study_name, storage, threads, plan_only, report_only, dry_run, screen_name, top):
    """A grid of paired seeds per cell: every combination of the --axis values, each cell N seeds
    of pipelines (baseline, control, synthetic arm). Items live in an Optuna storage: this command
    enqueues those it lacks and works on them; `harness worker --study NAME --storage URL` on any
    machine helps. The report (per cell: mean ± std of each arm, the images' effect, synthetic minus
    control, with its 95% CI, t-test p, Holm-adjusted p and verdict, and the recipe's effect beside it)
    is logged on the grid run when the last item finishes.

    A cell whose generator trains gets K generators (--set seeds.generators=K, at most --seeds; default min(seeds, 3)):
    seed s uses generator s mod K, so the spread holds the generator's own variance too, and the report
    splits it between generators and seeds and gives an interval for a new generator.

    \b
    harness grid --preset cpu --axis data.n_per_class=100,300,1000 --axis generator.kind=gan,oracle --seeds 5
    harness grid --preset strong-baseline --axis data.n_per_class=100,300 --seeds 5 --ci-halfwidth 1.0 --max-seeds 15
    harness grid --preset strong-baseline --axis classifier.init+classifier.mode=scratch+train,pretrain+probe
    harness grid --preset strong-baseline --axis gan.init=scratch,pretrain --seeds 3 --study screen   # screen...
    harness grid --confirm screen --top 2 --seeds 5 --ci-halfwidth 1.0 --max-seeds 15 --study confirm  # ...confirm
    """
    from harness import grid as gridmod
    from harness import optuna_storage
    screen = None
    if screen_name is not None and report_only:
        # The confirm command again with --report (as any grid is read): its own plan names its screen.
        if study_name in (None, screen_name):
            raise HarnessError("--confirm with --report reads the confirmation: name it with --study")
        screen_name = None
    if screen_name is not None:
        from click.core import ParameterSource
        given = [flag for flag, name in (("--preset", "preset"), ("--set", "overrides"), ("--axis", "axes"))
                 if click.get_current_context().get_parameter_source(name) != ParameterSource.DEFAULT]
        if given:
            raise HarnessError(f"--confirm takes its config and cells from the screen {screen_name!r}: drop "
                               f"{', '.join(given)}")
        storage = storage or optuna_storage.default_storage()
        from pathlib import Path
        if screen_name.endswith(".json") and Path(screen_name).is_file():  # an exported screen (its grid.json)
            base, axes_of_screen, first_seed, screen = gridmod.screened_export(screen_name, top)
        else:
            base, axes_of_screen, first_seed, screen = gridmod.screened(
                gridmod.join_grid(screen_name, storage, wait=0, say=say), top)
        if study_name in (None, screen_name):
            raise HarnessError("--confirm needs a --study name of its own for the confirmation (not the screen's)")
        held = base  # the screen's plan: preset name (its budget curve) and every setting
        from harness import config as cfgmod
        flat = cfgmod.flat(held)
        preset = flat.pop("preset")
        try:  # only what the screen set beyond its preset: every field as --set would call the other kinds' "ignored"
            own = cfgmod.flat(cfgmod.load(preset))
        except HarnessError:
            own = {}  # the screen's preset file is not on this machine: every setting as the screen held it
        overrides = tuple(f"{k}={v}" for k, v in flat.items() if k != "device" and own.get(k) != v)
        axes = tuple(f"{k}={','.join(v)}" for k, v in axes_of_screen)
        ladder = ladder or ",".join(map(str, screen["ladder"])) or None
    both = [flag for flag, on in (("--plan-only", plan_only), ("--report", report_only)) if on]
    if dry_run and both or len(both) > 1:
        raise HarnessError(f"{' and '.join((['--dry-run'] if dry_run else []) + both)} contradict each other: "
                           "--dry-run checks and stops, --plan-only enqueues, --report reads a finished grid; "
                           "give one")
    halfwidth = halfwidth if halfwidth is not None else old_halfwidth
    max_seeds = gridmod.check_seeds(seeds, halfwidth, max_seeds, say)
    from harness.analysis import stats
    ladder, margin = gridmod.parse_ladder(ladder), stats.check_margin(margin)
    parsed = gridmod.parse_axes(axes)
    set_threads(threads)
    cfg, ctx = setup(preset, overrides, experiment, data_dir, no_cache, dry_run=dry_run, grid=True)
    gridmod.check_generators(cfg, seeds)
    grid_cells = gridmod.cells(cfg, parsed, ladder)  # every cell's settings checked before anything is enqueued
    if not report_only:
        from harness import preflight
        for c in grid_cells:  # and each cell's data, generator and weights, as `run` checks them
            preflight.cell(ctx, c.cfg, data_dir, c.rung, dry_run)
    if dry_run:
        click.echo(f"dry run: {len(grid_cells)} cells x {seeds} seeds = {len(grid_cells) * seeds} items"
                   f"{f', up to {len(grid_cells) * max_seeds}' if max_seeds else ''}; every cell's config, data "
                   "and generator checked, nothing planned")
        return
    storage = storage or optuna_storage.default_storage()
    study_name = study_name or f"grid-{cfg.preset}"
    if report_only:  # reads a grid, never makes one
        study = gridmod.join_grid(study_name, storage, wait=0, say=say)
        parent = study.user_attrs.get(optuna_storage.PARENT)
        md, _ = gridmod.report(ctx, study, parent)
        click.echo(md, nl=False)
        report_line(ctx, parent)
        return
    study, created = gridmod.open_grid(study_name, storage)
    first = 0 if screen is None else first_seed
    added, created = gridmod.planned(study, created, cfg, parsed, list(range(first, first + seeds)), halfwidth,
                                     max_seeds, say, ladder=ladder, margin=margin, screen=screen)
    click.echo(f"grid {study_name!r} in {mask(storage)}: {added} new items; {gridmod.cost(study)}", err=True)
    if plan_only:
        run_id = gridmod.open_run(ctx, study, created)
    else:
        run_id, report_md = gridmod.work(ctx, study, created)
        click.echo(report_md or "", nl=False)
        report_line(ctx, run_id if report_md else None)
    click.echo(f"grid run {run_id}: study {study_name!r}")


@click.command()
@click.option("--study", "study_name", envvar="HARNESS_STUDY", required=True, help="The grid's Optuna study "
              "[env HARNESS_STUDY].")
@click.option("--storage", envvar="HARNESS_STORAGE", default=None, metavar="URL", help="Its Optuna RDB URL "
              "[env HARNESS_STORAGE, which keeps a password out of the process list; default: sqlite optuna.db "
              "beside the tracking database].")
@click.option("--data-dir", envvar="HARNESS_DATA_DIR", type=click.Path(file_okay=False), default=None,
              help="This machine's copy of the data (the cache keys check it is the same images).")
@click.option("--experiment", "-e", default="harness", show_default=True, help="MLflow experiment name.")
@click.option("--no-cache", is_flag=True, help="Recompute phases even when a finished run with the same key exists.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="CPU threads for torch in this process "
              "[default: one per core]. Workers sharing a machine each want cores / workers: two processes of "
              "2 threads on 2 cores run slower together than one alone.")
def worker(study_name, storage, data_dir, experiment, no_cache, threads):
    """Pull (cell, seed) items of a grid from its Optuna storage and run them until none is left;
    start as many as you like, on any machine that reaches the storage and the tracking store."""
    from harness import data, grid as gridmod, optuna_storage, train
    from harness.context import Context
    from harness.tracking import store
    set_threads(threads)
    storage = storage or optuna_storage.default_storage()
    study = gridmod.join_grid(study_name, storage, say=say)
    if storage.startswith("sqlite"):  # after the grid is found: an error is then the only line
        click.echo("note: a SQLite storage serves the workers of this machine only; workers on several machines "
                   "need a server database (docs/grids.md: Many machines)", err=True)
    cfg, _, _ = gridmod.plan_of(study)
    data.check_cache_dir()
    ctx = Context(store.configure(experiment, say), train.pick_device(cfg.device), data_dir, use_cache=not no_cache)
    run_id, report_md = gridmod.work(ctx, study, created=False)
    click.echo(report_md or "", nl=False)
    report_line(ctx, run_id if report_md else None)
    click.echo(f"grid run {run_id}: study {study_name!r}")
