"""`harness`: the command line. Thin: parse, load the config, call a phase, print a summary."""
from __future__ import annotations

import functools
import os
import signal
import sys
import warnings

import click

from harness.errors import HarnessError, explain, mask, scrub


class _UserError(click.ClickException):
    exit_code = 2  # bad input, like click's own usage errors

    def __init__(self, message: str):
        # Whatever a message quotes (a driver's error, a URL), no password of a store reaches the terminal.
        urls = [os.environ.get("MLFLOW_TRACKING_URI", ""), *(a for a in sys.argv if "://" in a)]
        super().__init__(scrub(message, urls))


def _one_line(e: click.UsageError) -> _UserError:
    # click's usage errors print the usage, a hint and the error on four lines; ours are one line.
    command = e.ctx.command_path if e.ctx is not None else "harness"
    return _UserError(f"{e.format_message()} (see `{command} --help`)")


class _Group(click.Group):
    def make_context(self, info_name, args, parent=None, **extra):
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except click.UsageError as e:
            raise _one_line(e) from None

    def invoke(self, ctx):
        # SIGTERM (a scheduler, `kill`) ends a run like Ctrl-C does: marked KILLED, not left RUNNING.
        # Installed for the command only and restored after, so library callers and tests keep theirs.
        previous = signal.signal(signal.SIGTERM, _terminate) if _main_thread() else None
        if previous is not None:
            previous_int, previous_alarm = signal.signal(signal.SIGINT, _interrupt), signal.getsignal(signal.SIGALRM)
            previous_hook, sys.unraisablehook = sys.unraisablehook, _unraisable(sys.unraisablehook)
        try:
            with warnings.catch_warnings():
                warnings.showwarning = _deprecation_line  # an old name's FutureWarning: one line, not four
                return super().invoke(ctx)
        except KeyboardInterrupt as e:
            # The runs ended KILLED on the way out; exit as shells and schedulers expect of a signal
            # (128 + its number), not with click's "Aborted!" and 1, which reads like a crash.
            terminated = isinstance(e, _Terminated)
            then = ("its generator continues from its last checkpoint" if terminated
                    else "a generator continues with --resume")
            item = "; a grid item goes back to the queue for the next worker" if ctx.invoked_subcommand in (
                "grid", "worker") else ""
            click.echo(f"stopped by {'SIGTERM' if terminated else 'SIGINT'}: this command's runs ended KILLED{item}; "
                       f"rerun it to reuse the finished phases ({then})", err=True)
            ctx.exit(128 + (signal.SIGTERM if terminated else signal.SIGINT))
        except HarnessError as e:
            raise _UserError(str(e)) from None
        except click.UsageError as e:
            raise _one_line(e) from None
        except click.ClickException:
            raise
        except Exception as e:
            # A full disk, a read-only file, a store that stopped answering: one line, exit 2.
            # Anything else is a bug, and its traceback is what a report needs.
            message = explain(e)
            if message is None:
                raise
            raise _UserError(message) from None
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
                sys.unraisablehook = previous_hook
                signal.setitimer(signal.ITIMER_REAL, 0)  # a deferred signal that never came due
                for signum, handler in ((signal.SIGINT, previous_int), (signal.SIGALRM, previous_alarm)):
                    if handler is not None:
                        signal.signal(signum, handler)


def _say(message: str) -> None:
    """The reporter the commands give the library (Store.say): a line on stderr, beside the progress."""
    click.echo(message, err=True)


def _deprecation_line(message, category, filename, lineno, file=None, line=None, show=warnings.showwarning):
    if issubclass(category, FutureWarning) and filename.startswith(os.path.dirname(__file__)):
        _say(f"Deprecated: {message}")
    else:
        show(message, category, filename, lineno, file, line)


def _old_name(old: str, new: str):
    """A hidden option under its name before 0.2: it works, saying the new one, until harness.REMOVED_IN."""
    def said(ctx, param, value):
        if value is not None and value is not False:  # `in (None, False)` would take --precision 0 for unset
            from harness import REMOVED_IN
            _say(f"Deprecated: {old} is now {new}; the old name works until harness {REMOVED_IN}")
        return value
    return said


def _main_thread() -> bool:
    import threading
    return threading.current_thread() is threading.main_thread()


class _Terminated(KeyboardInterrupt):
    """SIGTERM, ending runs as Ctrl-C does (KILLED), told apart for the exit code and in the run: a
    scheduler's time limit or preemption, whose interrupted generator the next worker continues."""
    signal = "SIGTERM"


# Modules in the middle of a write to the tracking store: an exception raised there can leave a
# SQLite transaction open in this process, which the run's own ending (and its heartbeat) then
# wait on until the scheduler's SIGKILL. Seen under Slurm's scancel; the signal waits 50 ms instead.
_MID_WRITE = ("sqlalchemy.", "sqlite3", "mlflow.store.", "mlflow.tracking.", "urllib3.", "requests.", "http.client")


def _deferred(frame, handler) -> bool:
    """Re-arm `handler` 50 ms later when the signal came in the middle of a store write."""
    while frame is not None:
        if frame.f_globals.get("__name__", "").startswith(_MID_WRITE):
            signal.signal(signal.SIGALRM, handler)
            signal.setitimer(signal.ITIMER_REAL, 0.05)
            return True
        frame = frame.f_back
    return False


def _unraisable(previous):
    """sys.unraisablehook while a command runs. The garbage collector runs weakref callbacks and __del__
    between any two bytecodes; a signal's exception raised inside one is printed with a traceback and
    dropped, and the command went on as if no signal had come (seen under Slurm's scancel: a cancelled
    worker finished its item). Such a signal is raised again 10 ms later, in ordinary code, silently."""
    def hook(unraisable):
        if isinstance(unraisable.exc_value, KeyboardInterrupt):
            handler = _terminate if isinstance(unraisable.exc_value, _Terminated) else _interrupt
            signal.signal(signal.SIGALRM, handler)
            signal.setitimer(signal.ITIMER_REAL, 0.01)
            return
        previous(unraisable)
    return hook


def _terminate(signum, frame):
    if not _deferred(frame, _terminate):
        raise _Terminated


def _interrupt(signum, frame):
    """Ctrl-C, deferred like SIGTERM while a store write is in flight."""
    if not _deferred(frame, _interrupt):
        raise KeyboardInterrupt


def common(fn):
    """Options every phase command takes: which config, which data, which experiment, the cache."""
    @click.option("--preset", "-p", default="reference", show_default=True, metavar="NAME|PATH",
                  help="Preset from harness/experiments/ (tiny, cpu, reference, ...; `harness config` lists them) "
                       "or a path to a .toml file.")
    @click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE",
                  help="Override one config value, e.g. --set classifier.epochs=5 (repeatable).")
    @click.option("--data-dir", envvar="HARNESS_DATA_DIR", type=click.Path(file_okay=False), default=None,
                  help="CIFAR-10 as class folders (train/<class>/*.png) or cifar-10-batches-py. "
                       "[env: HARNESS_DATA_DIR; default: download into ~/.cache/harness]")
    @click.option("--experiment", "-e", default="harness", show_default=True, help="MLflow experiment name.")
    @click.option("--no-cache", is_flag=True, help="Recompute phases even when a finished run with the same "
                  "config, data, inputs and code exists in the experiment.")
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return fn(*args, **kwargs)
    return wrapper


def _setup(preset, overrides, experiment, data_dir, no_cache, resume=False, check_kind=True, resolve=True,
           dry_run=False, phase: str | None = None):
    """The config and the context every command runs phases with, `auto` precisions resolved for
    this machine. A grid's base config need not be runnable on its own (its axes may set the kind its
    other settings need): the grid checks each cell; and it keeps `auto`, which each worker resolves.
    A dry run opens no tracking store: its context checks config, data and generators only."""
    from harness import classifiers, config, data, generators, precision, train
    from harness.context import Context
    from harness.tracking import store
    cfg = config.load(preset, overrides)
    if phase is not None:  # a single-phase command: first whether the phase runs at all
        from harness.table import PHASES
        if not PHASES[phase].runs(cfg):
            raise HarnessError(f"phase {phase} does not run under this config: it needs {PHASES[phase].needs(cfg)}")
    if check_kind:
        generators.check(cfg)
        classifiers.check_config(cfg)
    device = train.pick_device(cfg.device)
    if resolve:
        cfg = precision.resolve_config(cfg, device)
    data.check_cache_dir()
    if cfg.data.classes == ("all",):
        # The data's own class names, in the config every phase, key and record sees.
        cfg = config.apply(cfg, {"data.classes": list(data.open_source(data_dir, cfg.data).classes)})
    from harness.phases import pretrain
    cfg = pretrain.with_classes(cfg, data_dir)
    ctx = Context(None if dry_run else store.configure(experiment, _say), device, data_dir, use_cache=not no_cache,
                  resume=resume)
    if check_kind:  # the starting weights: there, readable, a state dict (a URI needs the store)
        from harness.classifiers import weights
        if not (dry_run and weights.parse(cfg.classifier.init).needs_store):
            weights.check(ctx, cfg)
    pretrain.check_data(ctx, cfg)
    notes = [generators.cost_note(cfg, device), *config.ignored(cfg, overrides), *pretrain.unused_settings(cfg, overrides)]
    for note in notes:
        if note:
            _say(f"note: {note}")
    return cfg, ctx


def _threads(n: int | None) -> None:
    if n is not None:
        import torch
        torch.set_num_threads(n)


def _data_line(cfg, ctx) -> None:
    splits = ctx.splits(cfg.data)
    click.echo(f"data: {len(splits.train_x)} train / {len(splits.val_x)} val / {len(splits.test_x)} test images "
               f"of {', '.join(splits.classes)} ({splits.source}), {cfg.data.image_size}px x {cfg.data.channels}; "
               f"device {ctx.device}", err=True)
    counts = splits.counts("train")
    if len(set(counts.values())) > 1:  # imbalanced data stays imbalanced: say how much
        click.echo("  train images per class: " + ", ".join(f"{k} {v}" for k, v in counts.items()), err=True)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="harness")
def main():
    """Does synthetic data from a generator make a small-data image classifier better?

    Each command is one phase of the study, tracked as an MLflow run (tracking store from
    MLFLOW_TRACKING_URI, default sqlite:///mlflow.db). Settings come from a preset in
    harness/experiments/ plus --set overrides; `harness config` prints them.

    \b
    harness run --preset cpu --data-dir ../shared/datasets/cifar10     the whole study
    harness baseline --preset tiny                                    one phase
    harness run --preset cpu --set generator.kind=oracle               a perfect generator: the ceiling
    """
    # MLflow's per-download progress bars would drown our own; phases download small artifacts often.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


# ---------------------------------------------------------------------------------------------
# One command per phase, from the phase table

UPSTREAM_HELP = {"generator": "Generator run to sample from", "generate": "Synthetic images to label",
                 "baseline": "Classifier that labels", "pseudolabel": "Kept synthetic images",
                 "evaluator": "Sample-quality evaluator", "pretrain": "Pretrained classifier (classifier.init=pretrain)"}


def _phase_command(name: str, help_text: str, upstream: tuple[str, ...]):
    def command(preset, overrides, data_dir, experiment, no_cache, resume=False, gan_run=None, **runs):
        runs["generator_run"] = runs.get("generator_run") or gan_run
        from harness.runner import Runner
        from harness.table import PHASES
        cfg, ctx = _setup(preset, overrides, experiment, data_dir, no_cache, resume, phase=name)
        phase = PHASES[name]
        pinned = {u: runs[f"{u}_run"] for u in upstream if runs.get(f"{u}_run")}
        runner = Runner(ctx)
        inputs = runner.resolve(name, cfg, pinned)
        phase.module.check(ctx, cfg, inputs)  # before any output: a batch too big, a missing checkpoint, ...
        if phase.reads(cfg)[2]:
            _data_line(cfg, ctx)
        result = runner.run(name, cfg, inputs)
        click.echo(phase.module.summary(result, cfg))

    for u in reversed(upstream):
        command = click.option(f"--{u}-run", f"{u}_run", default=None, metavar="RUN_ID",
                               help=f"{UPSTREAM_HELP[u]} [default: the finished {u} run of this config].")(command)
        if u == "generator":
            command = click.option("--gan-run", "gan_run", default=None, hidden=True,
                                   callback=_old_name("--gan-run", "--generator-run"))(command)
    from harness.table import PHASES  # no torch or MLflow until a command runs
    if PHASES[name].resumable:
        command = click.option("--resume", is_flag=True, help="Continue the last interrupted (KILLED/FAILED) "
                               "generator run of this config from its last checkpoint instead of starting over.")(command)
    return main.command(name=name, help=help_text)(common(command))


def _phase_commands():
    from harness.table import PHASES  # no torch or MLflow until a command runs
    for name, phase in PHASES.items():
        if phase.command:  # the evaluator runs inside the others; compare has a command of its own
            _phase_command(name, phase.help, phase.upstream + (("evaluator",) if phase.quality else ()))


_phase_commands()


@main.command()
@click.option("--preset", "-p", default="reference", show_default=True, metavar="NAME|PATH")
@click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE")
@click.option("--keys", is_flag=True, help="Instead: for each phase that runs under this config, the fingerprint "
              "of its code and the modules its cache key covers (an edit of any other module reuses its runs).")
def config(preset, overrides, keys):
    """Print the resolved config (preset + overrides) as TOML-like lines, and its hash."""
    from harness import config as cfgmod
    cfg = cfgmod.load(preset, overrides)
    if keys:
        from harness import table
        for name, fingerprint, modules in table.code_keys(cfg):
            click.echo(f"{name} {fingerprint}: {' '.join(modules)}")
        return
    for key, value in cfgmod.flat(cfg).items():
        click.echo(f"{key} = {value}")
    click.echo(f"# config hash {cfgmod.config_hash(cfg)}")


@main.command()
def kinds():
    """List every generator kind and classifier kind, built-in and installed (entry-point groups
    harness.generators, harness.classifiers): for generators whether they train, when they know their
    images' classes and what they need; for classifiers the network."""
    from harness import classifiers, generators
    click.echo("generator.kind")
    for r in generators.describe():
        click.echo(f"  {r['kind']:<16} trains: {r['trains']:<4} classes: {r['classes']}  [{r['from']}]")
        if r["needs"]:
            click.echo(f"  {'':<16} needs: {r['needs']}")
    click.echo("classifier.kind")
    for r in classifiers.describe():
        click.echo(f"  {r['kind']:<16} {r['network']}  [{r['from']}]")


@main.command()
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
    from harness.compare import page, render, runs, stats
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
    ctx = Context(store.configure(experiment, _say), train.pick_device("cpu"))
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


@main.command(name="run")
@common
@click.option("--resume", is_flag=True, help="Continue an interrupted generator phase from its last checkpoint.")
@click.option("--seeds", type=click.IntRange(min=1, max=10_000), default=None,
              help="Run N paired pipelines (seeds 0..N-1) under one seeds run, then compare them.")
@click.option("--seed-list", default=None, metavar="0,1,2", help="Like --seeds, with these seeds.")
@click.option("--share-generator", is_flag=True, help="With several seeds: train one generator (on the first seed's "
              "images) and use it for every seed. Cheaper; the report says so.")
@click.option("--share-gan", "share_gan", is_flag=True, hidden=True, callback=_old_name("--share-gan", "--share-generator"))
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
    from harness.compare import page, render
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
    cfg, ctx = _setup(preset, overrides, experiment, data_dir, no_cache, resume, dry_run=dry_run)
    if seed_values is None and cfg.seeds.count > 1:
        seed_values = list(range(cfg.seeds.count))
    if (share_generator or share_gan) and not seed_values:
        raise HarnessError("--share-generator needs --seeds or --seed-list (or seeds.count > 1)")
    # A preset's seeds.share_generator is moot for one pipeline: taken as it is, never refused.
    share_generator = share_generator or share_gan or cfg.seeds.share_generator
    if dry_run:
        from harness import generators
        from harness.table import PHASES
        for seed in seed_values or [cfg.data.seed]:
            generators.preflight(ctx, pipeline.seeded(cfg, seed))
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
    from harness import generators
    generators.preflight(ctx, cfg)  # before the data line: a bad setting is the only line printed
    _data_line(cfg, ctx)
    result = pipeline.run(ctx, cfg)
    per_class = ", ".join(f"{c} {int(result.kept[f'kept/{c}/count'])}" for c in cfg.data.classes)
    click.echo(f"\npipeline run {result.run_id}: kept {int(result.kept['kept/count'])} synthetic images ({per_class})")
    click.echo("phase seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in result.seconds.items()) + "\n")
    click.echo(pipeline.headline_words(result.headline).replace("**", "") + "\n")
    click.echo(result.table_md, nl=False)
    click.echo(f"\nreport: {page.location(ctx.store.client, result.results['compare'].source_run_id)}")


@main.command()
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
    s = store.configure(experiment, _say)
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


@main.command()
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
    spec_obj = sweepmod.load_spec(spec)
    cfg, ctx = _setup(preset, overrides, experiment, data_dir, no_cache, dry_run=dry_run)
    sweepmod.check(cfg, spec_obj)
    sweepmod.preflight(ctx, cfg, spec_obj)  # before the data line: a bad range is the only line printed
    if dry_run:
        click.echo(f"dry run: a sweep of {trials} trial(s) over {', '.join(p.field for p in spec_obj.params)} would "
                   "run; config, spec and data checked, nothing opened")
        return
    from harness import studies
    storage = storage or studies.default_storage()
    study_name = study_name or f"sweep-{cfg.preset}"
    studies.check_storage(storage)  # before the data line: a bad URL is the only line printed
    _data_line(cfg, ctx)
    result = sweepmod.run(ctx, cfg, spec_obj, trials, study_name, storage, sampler_seed=sampler_seed)
    click.echo(f"\nsweep run {result.run_id}: study {study_name!r} in {mask(storage)}")
    click.echo(f"best params {result.best_params}: {result.words}")
    click.echo(f"optuna-dashboard {mask(storage)}\n")
    click.echo(result.table_md, nl=False)
    from harness.compare import page
    click.echo(f"\nreport: {page.location(ctx.store.client, result.run_id)}")


@main.command()
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
              callback=_old_name("grid --precision", "--ci-halfwidth (precision is fp32/bf16 arithmetic)"))
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
@click.option("--dry-run", is_flag=True, help="Check the options, every cell's config, data and generator, say what "
              "the grid would hold, and stop: no study and no run is made.")
def grid(preset, overrides, data_dir, experiment, no_cache, axes, seeds, halfwidth, old_halfwidth, max_seeds, ladder,
         margin, study_name, storage, threads, plan_only, report_only, dry_run):
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
    """
    from harness import grid as gridmod
    from harness import studies
    both = [flag for flag, on in (("--plan-only", plan_only), ("--report", report_only)) if on]
    if dry_run and both or len(both) > 1:
        raise HarnessError(f"{' and '.join((['--dry-run'] if dry_run else []) + both)} contradict each other: "
                           "--dry-run checks and stops, --plan-only enqueues, --report reads a finished grid; "
                           "give one")
    halfwidth = halfwidth if halfwidth is not None else old_halfwidth
    max_seeds = gridmod.check_seeds(seeds, halfwidth, max_seeds, _say)
    from harness.compare import stats
    ladder, margin = gridmod.parse_ladder(ladder), stats.check_margin(margin)
    parsed = gridmod.parse_axes(axes)
    _threads(threads)
    cfg, ctx = _setup(preset, overrides, experiment, data_dir, no_cache, check_kind=False, resolve=False,
                      dry_run=dry_run)
    gridmod.check_generators(cfg, seeds)
    grid_cells = gridmod.cells(cfg, parsed, ladder)  # every cell's settings checked before anything is enqueued
    if not report_only:
        from harness import classifiers, generators
        from harness.classifiers import weights
        from harness.phases import pretrain
        for cell in grid_cells:  # and each cell's data, generator and weights, as `run` checks them
            one = pretrain.with_classes(cell.cfg, data_dir)
            generators.check(one)
            classifiers.check_config(one)
            if not dry_run or not weights.parse(one.classifier.init).needs_store:
                weights.check(ctx, one)
            ctx.splits(one.data)
            pretrain.check_data(ctx, one)
            try:
                generators.preflight(ctx, one)
            except HarnessError as e:
                if cell.rung is None:
                    raise
                # A ladder rung's sample count is the --oracle-ladder value, not the user's generate.n_samples.
                raise HarnessError(f"--oracle-ladder rung {cell.rung}: {e}".replace(
                    f"generate.n_samples ({cell.rung})", "the rung")) from None
    if dry_run:
        click.echo(f"dry run: {len(grid_cells)} cells x {seeds} seeds = {len(grid_cells) * seeds} items"
                   f"{f', up to {len(grid_cells) * max_seeds}' if max_seeds else ''}; every cell's config, data "
                   "and generator checked, nothing planned")
        return
    storage = storage or studies.default_storage()
    study_name = study_name or f"grid-{cfg.preset}"
    if report_only:  # reads a grid, never makes one
        study = gridmod.join_grid(study_name, storage, wait=0, say=_say)
        parent = study.user_attrs.get(studies.PARENT)
        md, _ = gridmod.report(ctx, study, parent)
        click.echo(md, nl=False)
        _report_line(ctx, parent)
        return
    study, created = gridmod.open_grid(study_name, storage)
    added, created = gridmod.planned(study, created, cfg, parsed, list(range(seeds)), halfwidth, max_seeds, _say,
                                     ladder=ladder, margin=margin)
    click.echo(f"grid {study_name!r} in {mask(storage)}: {added} new items; {gridmod.cost(study)}", err=True)
    if plan_only:
        run_id = gridmod.open_run(ctx, study, created)
    else:
        run_id, report_md = gridmod.work(ctx, study, created)
        click.echo(report_md or "", nl=False)
        _report_line(ctx, run_id if report_md else None)
    click.echo(f"grid run {run_id}: study {study_name!r}")


def _report_line(ctx, run_id: str | None) -> None:
    """The report page's place, once a grid's report has been logged on its run."""
    from harness.compare import page
    if run_id:
        click.echo(f"report: {page.location(ctx.store.client, run_id)}")


@main.command()
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
    from harness import data, grid as gridmod, studies, train
    from harness.context import Context
    from harness.tracking import store
    _threads(threads)
    storage = storage or studies.default_storage()
    study = gridmod.join_grid(study_name, storage, say=_say)
    if storage.startswith("sqlite"):  # after the grid is found: an error is then the only line
        click.echo("note: a SQLite storage serves the workers of this machine only; workers on several machines "
                   "need a server database (docs/grids.md: Many machines)", err=True)
    cfg, _, _ = gridmod.plan_of(study)
    data.check_cache_dir()
    ctx = Context(store.configure(experiment, _say), train.pick_device(cfg.device), data_dir, use_cache=not no_cache)
    run_id, report_md = gridmod.work(ctx, study, created=False)
    click.echo(report_md or "", nl=False)
    _report_line(ctx, run_id if report_md else None)
    click.echo(f"grid run {run_id}: study {study_name!r}")


def entry():
    """The `harness` console script: `main`, then, after a successful command, an immediate exit.
    Tearing down torch, MLflow and SQLAlchemy at interpreter exit takes 1.5-2 s here, paid by every
    command (and every sweep worker); all runs are ended and all files closed by then. A failing
    command exits normally, so that MLflow's exit hooks still end any run left open."""
    import logging
    import sys
    try:
        main(standalone_mode=True)
        code = 0
    except SystemExit as e:
        code = e.code
    if code not in (0, None):
        raise SystemExit(code)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (`harness config | head`)
            pass
    logging.shutdown()
    os._exit(0)
