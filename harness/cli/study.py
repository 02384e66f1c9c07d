"""The study's commands: `run` (a pipeline, or paired seeds), `compare` (any runs), `ui` (the MLflow UI)."""
from __future__ import annotations

import click

from harness.cli.base import common, data_line, old_name, say, setup
from harness.errors import HarnessError


@click.command()
@click.option("--parent", default=None, metavar="RUN_ID", help="A pipeline run (one pair) or a seeds run (paired seeds).")
@click.option("--baseline", "baseline_id", default=None, metavar="RUN_ID", help="Baseline run (with --synthetic).")
@click.option("--synthetic", "synthetic_id", default=None, metavar="RUN_ID", help="Synthetic-arm run (with --baseline).")
@click.option("--control", "control_id", default=None, metavar="RUN_ID", help="Its control run (with --baseline and "
              "--synthetic): the images' effect is then synthetic minus control.")
@click.option("--filter", "filter_string", default=None, metavar="MLFLOW_FILTER",
              help="Pool every finished pipeline of --experiment matching this MLflow filter, "
                   "e.g. \"params.preset = 'cpu'\".")
@click.option("--experiment", "-e", default="harness", show_default=True,
              help="Experiment to search (with --filter) and to log the compare run in.")
@click.option("--margin", type=float, default=None, metavar="POINTS",
              help="Equivalence margin of the verdict (two one-sided tests on the 90% CI) [default: 1.0].")
def compare(parent, baseline_id, synthetic_id, control_id, filter_string, experiment, margin):
    """The images' effect: synthetic arm vs its control (the same recipe with the real training images
    in the synthetic slot), with the recipe's own effect (control vs baseline) beside it; per-arm mean
    ± std over seeds, paired t-test, Wilcoxon, McNemar per pair, and a verdict of four: significant gain,
    significant loss, equivalent within ±margin, or inconclusive. Runs without a control (older ones,
    or control.enabled=false) are compared with the baseline and said to be "recipe not controlled";
    the two kinds are never pooled. Logs a compare run with comparison.md / .json / .png.

    \b
    harness compare --parent STUDY_OR_PIPELINE_RUN_ID
    harness compare --baseline RUN_ID --synthetic RUN_ID [--control RUN_ID]
    harness compare --filter "params.preset = 'cpu'"
    """
    from harness import train
    from harness.analysis import page, render, runs, stats
    from harness.context import Context
    from harness.phases import compare as phase
    from harness.tracking import store
    margin = stats.check_margin(margin) or stats.MARGIN
    chosen = [bool(parent), bool(baseline_id or synthetic_id), filter_string is not None]
    if sum(chosen) != 1 or (chosen[1] and not (baseline_id and synthetic_id)):
        raise HarnessError("give exactly one of: --parent RUN_ID; --baseline RUN_ID --synthetic RUN_ID; --filter EXPR")
    if control_id and not chosen[1]:
        raise HarnessError("--control goes with --baseline and --synthetic (a --parent or --filter finds its pipelines' "
                           "control runs itself)")
    ctx = Context(store.configure(experiment, say), train.pick_device("cpu"))
    pairs = runs.pairs_for(ctx.store.client, parent, baseline_id, synthetic_id, experiment, filter_string, control_id)
    report = stats.seed_report(ctx.store.client, pairs, margin=margin)
    for w in report.warnings:
        click.echo(f"warning: {w}", err=True)
    if report.n == 1:
        base, syn, control = pairs[0].baseline, pairs[0].synthetic, pairs[0].control
        # A compare run of its own, holding only what it compared: no config of a run that never ran.
        with store.phase_run(ctx.store, "compare", {"upstream.baseline": base.info.run_id,
                                                    "upstream.synthetic": syn.info.run_id,
                                                    **({"upstream.control": control.info.run_id} if control else {})}) as pr:
            table_md, _ = phase.log_pair(base.data.metrics, syn.data.metrics, runs.classes_of(base),
                                         control.data.metrics if control else None)
        click.echo(f"compare run {pr.run_id}: baseline {base.info.run_id} vs synthetic {syn.info.run_id}"
                   f"{f' vs control {control.info.run_id}' if control else ''}\n")
        _, b, c, p = report.mcnemar[0]
        click.echo(f"McNemar on {report.effect}: {report.reference}-only correct {b}, synthetic-only correct {c}, "
                   f"p = {p:.3g}; verdict: {report.verdict()}\n")
        click.echo(table_md, nl=False)
        click.echo(f"\nreport: {page.location(ctx.store.client, pr.run_id)}")
        return
    run_id = phase.run_report(ctx, report)
    click.echo(f"compare run {run_id}: {report.n} pairs\n")
    click.echo(render.report_markdown(report), nl=False)
    click.echo(f"\nreport: {page.location(ctx.store.client, run_id)}")


@click.command(name="run")
@common
@click.option("--resume", is_flag=True, help="Continue an interrupted generator phase from its last checkpoint.")
@click.option("--seeds", type=click.IntRange(min=1, max=10_000), default=None,
              help="Run N paired pipelines (seeds 0..N-1) under one seeds run, then compare them.")
@click.option("--seed-list", default=None, metavar="0,1,2", help="Like --seeds, with these seeds.")
@click.option("--share-generator", is_flag=True, help="With several seeds: train one generator (on the first seed's "
              "images) and use it for every seed. Cheaper; the report says so.")
@click.option("--share-gan", "share_gan", is_flag=True, hidden=True, callback=old_name("--share-gan", "--share-generator"))
@click.option("--dry-run", is_flag=True, help="Check the config, the data and the generator, say what would run, "
              "and stop: no run is opened, nothing is trained.")
def run_(preset, overrides, data_dir, experiment, no_cache, resume, seeds, seed_list, share_generator, share_gan,
         dry_run):
    """The whole study as nested runs under one parent: baseline, generator (kinds that train),
    generate, pseudolabel, control (the synthetic arm's recipe with the real training images in the
    slot; control.enabled=false leaves it out), synthetic, compare. The headline is the images' effect,
    synthetic minus control; the recipe's (control minus baseline) and synthetic minus baseline follow.
    Finished phases with the same config, data, inputs and code are reused.

    With --seeds N / --seed-list, N paired pipelines run under one seeds run and the comparator
    tells a real delta from seed noise (mean ± std, 95% CI, paired t, Wilcoxon, McNemar).
    """
    from harness import pipeline
    from harness.analysis import page, render
    if seeds and seed_list:
        raise HarnessError("give --seeds N or --seed-list a,b,c, not both")
    seed_values = None
    if seed_list:
        try:
            seed_values = [int(v) for v in seed_list.split(",") if v.strip()]
        except ValueError:
            raise HarnessError(f"--seed-list takes comma-separated integers, got {seed_list!r}") from None
        if len(set(seed_values)) != len(seed_values) or not seed_values:
            raise HarnessError(f"--seed-list needs distinct seeds, got {seed_list!r}")
    elif seeds:
        seed_values = list(range(seeds))
    cfg, ctx = setup(preset, overrides, experiment, data_dir, no_cache, resume, dry_run=dry_run)
    if seed_values is None and cfg.seeds.count > 1:
        seed_values = list(range(cfg.seeds.count))
    if (share_generator or share_gan) and not seed_values:
        raise HarnessError("--share-generator needs --seeds or --seed-list (or seeds.count > 1)")
    # A preset's seeds.share_generator is moot for one pipeline: taken as it is, never refused.
    share_generator = share_generator or share_gan or cfg.seeds.share_generator
    from harness import preflight
    preflight.generator(ctx, cfg, seed_values)  # before the data line: a bad setting is the only line printed
    if dry_run:
        from harness.table import PHASES
        phases = [name for name, phase in PHASES.items() if phase.runs(cfg)]
        click.echo(f"dry run: {len(seed_values or [0])} pipeline(s) of {', '.join(phases)} would run; "
                   "config, data and generator checked, nothing opened")
        return
    if seed_values:
        parent_id, results, report, compare_id = pipeline.run_seeds(ctx, cfg, seed_values,
                                                                    share_generator=share_generator)
        click.echo(f"\nseeds run {parent_id}: {len(results)} pipelines")
        click.echo(render.report_markdown(report), nl=False)
        click.echo(f"\nreport: {page.location(ctx.store.client, compare_id)}")
        return
    data_line(cfg, ctx)
    result = pipeline.run(ctx, cfg)
    per_class = ", ".join(f"{c} {int(result.kept[f'kept/{c}/count'])}" for c in cfg.data.classes)
    click.echo(f"\npipeline run {result.run_id}: kept {int(result.kept['kept/count'])} synthetic images ({per_class})")
    click.echo("phase seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in result.seconds.items()) + "\n")
    click.echo(pipeline.headline_words(result.headline, cfg).replace("**", "") + "\n")
    click.echo(result.table_md, nl=False)
    click.echo(f"\nreport: {page.location(ctx.store.client, result.results['compare'].source_run_id)}")


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind; 127.0.0.1 keeps it private.")
@click.option("--port", default=5000, show_default=True, type=click.IntRange(1, 65535))
@click.option("--experiment", "-e", default="harness", show_default=True, help="Experiment whose runs table to open.")
def ui(host, port, experiment):
    """Start the MLflow UI on the harness's tracking store (MLFLOW_TRACKING_URI, default
    sqlite:///mlflow.db) and print the address of the experiment's runs table, and of each grid's two
    views of it (its pipelines grouped by cell with the headline columns, and the delta per cell as a chart)."""
    import subprocess
    import sys
    from harness.tracking import store
    s = store.configure(experiment, say)
    exp_id, uri = s.experiment_id, store.tracking_uri()
    if not uri.startswith(("sqlite:", "postgresql", "mysql", "mssql")) and "://" in uri:
        raise HarnessError(f"{uri} is a tracking server already: open it in a browser instead")
    from harness import grid as gridmod
    views = "".join(f"\ngrid view {v}" for v in gridmod.view_urls(s.client, exp_id, f"http://{host}:{port}"))
    click.echo(f"MLflow UI over {uri}\nruns table: http://{host}:{port}/#/experiments/{exp_id}/runs{views}\n(Ctrl-C stops it)")
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri, "--host", host, "--port", str(port)]
    try:
        raise SystemExit(subprocess.call(cmd))
    except KeyboardInterrupt:
        raise SystemExit(0)
