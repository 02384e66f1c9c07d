"""`harness`: the command line. Thin: parse, load the config, call a phase, print a summary."""
from __future__ import annotations

import functools
import os
import signal

import click

from harness.errors import HarnessError


class _UserError(click.ClickException):
    exit_code = 2  # bad input, like click's own usage errors


class _Group(click.Group):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except HarnessError as e:
            raise _UserError(str(e)) from None


def common(fn):
    """Options every phase command takes: which config, which data, which experiment."""
    @click.option("--preset", "-p", default="reference", show_default=True, metavar="NAME|PATH",
                  help="Preset from experiments/ (tiny, cpu, reference) or a path to a .toml file.")
    @click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE",
                  help="Override one config value, e.g. --set classifier.epochs=5 (repeatable).")
    @click.option("--data-dir", envvar="HARNESS_DATA_DIR", type=click.Path(file_okay=False), default=None,
                  help="CIFAR-10 as class folders (train/<class>/*.png) or cifar-10-batches-py. "
                       "[env: HARNESS_DATA_DIR; default: download into ~/.cache/harness]")
    @click.option("--experiment", "-e", default="harness", show_default=True, help="MLflow experiment name.")
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return fn(*args, **kwargs)
    return wrapper


def cache_options(fn):
    @click.option("--no-cache", is_flag=True, help="Recompute phases even when a finished run with the same "
                  "config, inputs and code exists in the experiment.")
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return fn(*args, **kwargs)
    return wrapper


def _setup(preset, overrides, experiment, trains_gan: bool = False):
    from harness import config, tracking, train
    cfg = config.load(preset, overrides)
    device = train.pick_device(cfg.device)
    tracking.configure(experiment)
    if trains_gan and device.type == "cpu" and cfg.gan.width * cfg.gan.epochs > 20000:
        click.echo(f"note: preset {cfg.preset!r} trains a GPU-sized GAN (width {cfg.gan.width}, {cfg.gan.epochs} epochs); "
                   "on this CPU its gan phase takes many hours. --preset cpu is sized for a CPU.", err=True)
    return cfg, device


def _summary(title: str, metrics: dict[str, float], classes) -> None:
    click.echo(f"\n{title}")
    click.echo(f"  accuracy     {metrics['test/accuracy']:.4f}")
    click.echo(f"  F1 weighted  {metrics['test/f1_weighted']:.4f}")
    click.echo(f"  F1 macro     {metrics['test/f1_macro']:.4f}")
    for name in classes:
        click.echo(f"  {name:<12} P {metrics[f'test/{name}/precision']:.4f}  R {metrics[f'test/{name}/recall']:.4f}"
                   f"  F1 {metrics[f'test/{name}/f1']:.4f}")


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="harness")
def main():
    """Does synthetic data from a GAN make a small-data image classifier better?

    Each command is one phase of the study, tracked as an MLflow run (tracking store from
    MLFLOW_TRACKING_URI, default sqlite:///mlflow.db). Settings come from a preset in
    experiments/ plus --set overrides; `harness config` prints them.

    \b
    harness run --preset cpu --data-dir ../shared/datasets/cifar10     the whole study
    harness baseline --preset tiny                                    one phase
    """
    # MLflow's per-download progress bars would drown our own; phases download small artifacts often.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # SIGTERM (a scheduler, `kill`) ends a run like Ctrl-C does: marked KILLED, not left RUNNING.
    signal.signal(signal.SIGTERM, _terminate)


def _terminate(signum, frame):
    raise KeyboardInterrupt


@main.command()
@click.option("--preset", "-p", default="reference", show_default=True, metavar="NAME|PATH")
@click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE")
def config(preset, overrides):
    """Print the resolved config (preset + overrides) as TOML-like lines, and its hash."""
    from harness import config as cfgmod
    cfg = cfgmod.load(preset, overrides)
    for key, value in cfgmod.flat(cfg).items():
        click.echo(f"{key} = {value}")
    click.echo(f"# config hash {cfgmod.config_hash(cfg)}")


@main.command()
@common
@cache_options
def baseline(preset, overrides, data_dir, experiment, no_cache):
    """Train SimpleCNN on the real images only; log metrics, report, confusion matrix, weights."""
    from harness import pipeline  # torch + mlflow: imported only when needed, so --help is instant
    from harness.phases import baseline as phase
    cfg, device = _setup(preset, overrides, experiment)
    splits = _load_data(cfg, data_dir, device)
    result = phase.run(cfg, splits, device, key=pipeline.phase_key("baseline", cfg), use_cache=not no_cache)
    _summary(f"baseline run {result.run_id}", result.metrics, splits.classes)


def _pinned(**runs) -> dict[str, str]:
    """Upstream runs the user named: they stand in for those phases in the cache key."""
    return {phase: f"run:{run_id}" for phase, run_id in runs.items() if run_id}


def _load_data(cfg, data_dir, device):
    from harness import data
    splits = data.load_splits(cfg.data, data_dir)
    click.echo(f"data: {len(splits.train_x)} train / {len(splits.val_x)} val / {len(splits.test_x)} test images "
               f"of {', '.join(splits.classes)} ({splits.source}); device {device}", err=True)
    return splits


@main.command()
@common
@cache_options
@click.option("--resume", is_flag=True, help="Continue the last interrupted (KILLED/FAILED) gan run of this "
              "config from its last checkpoint instead of starting over.")
def gan(preset, overrides, data_dir, experiment, no_cache, resume):
    """Train WGAN-GP on the real training images; log losses, sample grids, checkpoints."""
    from harness import pipeline
    from harness.phases import gan as phase
    cfg, device = _setup(preset, overrides, experiment, trains_gan=True)
    splits = _load_data(cfg, data_dir, device)
    ev = pipeline.evaluator_for(cfg, splits, device, not no_cache, data_dir)
    result = phase.run(cfg, splits, device, key=pipeline.phase_key("gan", cfg), use_cache=not no_cache, resume=resume,
                       evaluator=ev)
    click.echo(f"gan run {result.run_id}: checkpoints at epochs "
               f"{', '.join(map(str, phase.list_checkpoints(result.run_id)))}")


@main.command()
@common
@cache_options
@click.option("--gan-run", default=None, metavar="RUN_ID", help="Gan run to sample from [default: the finished "
              "gan run of this config].")
def generate(preset, overrides, data_dir, experiment, no_cache, gan_run):
    """Sample generate.n_samples images from a gan checkpoint into synthetic.npz."""
    from harness import pipeline
    from harness.phases import generate as phase
    cfg, device = _setup(preset, overrides, experiment)
    pinned = _pinned(gan=gan_run)
    gan_run = pipeline.upstream_run("gan", cfg, gan_run, "gan")
    splits = _load_data(cfg, data_dir, device) if cfg.quality.enabled else None
    ev = pipeline.evaluator_for(cfg, splits, device, not no_cache, data_dir) if splits is not None else None
    result = phase.run(cfg, gan_run, device, key=pipeline.phase_key("generate", cfg, pinned), use_cache=not no_cache,
                       evaluator=ev, splits=splits)
    click.echo(f"generate run {result.run_id}: {len(result.images)} images from gan run {gan_run}")


@main.command()
@common
@cache_options
@click.option("--baseline-run", default=None, metavar="RUN_ID", help="Classifier that labels [default: the finished "
              "baseline run of this config].")
@click.option("--generate-run", default=None, metavar="RUN_ID", help="Synthetic images to label [default: the "
              "finished generate run of this config].")
def pseudolabel(preset, overrides, data_dir, experiment, no_cache, baseline_run, generate_run):
    """Label synthetic images with the baseline; keep those with confidence >= pseudolabel.threshold."""
    from harness import pipeline
    from harness import tracking
    from harness.phases import pseudolabel as phase
    cfg, device = _setup(preset, overrides, experiment)
    pinned = _pinned(baseline=baseline_run, generate=generate_run)
    baseline_run = pipeline.upstream_run("baseline", cfg, baseline_run, "baseline")
    generate_run = pipeline.upstream_run("generate", cfg, generate_run, "generate")
    import torch
    synthetic = tracking.load_npz(generate_run, "synthetic.npz")
    images = torch.from_numpy(synthetic["images"])
    result = phase.run(cfg, baseline_run, images, cfg.data.classes, device,
                       key=pipeline.phase_key("pseudolabel", cfg, pinned), use_cache=not no_cache,
                       extra_params={"pseudolabel.generate_run": generate_run},
                       generated=torch.from_numpy(synthetic["labels"]) if "labels" in synthetic else None)
    per_class = ", ".join(f"{c} {int(result.metrics[f'kept/{c}/count'])}" for c in cfg.data.classes)
    click.echo(f"pseudolabel run {result.run_id}: kept {int(result.metrics['kept/count'])} of {len(images)} ({per_class})")


@main.command()
@common
@cache_options
@click.option("--pseudolabel-run", default=None, metavar="RUN_ID", help="Kept synthetic images [default: the "
              "finished pseudolabel run of this config].")
def augment(preset, overrides, data_dir, experiment, no_cache, pseudolabel_run):
    """Retrain SimpleCNN from scratch on real + kept synthetic images; log it like the baseline."""
    from harness import pipeline
    from harness import tracking
    from harness.phases import augment as phase
    import torch
    cfg, device = _setup(preset, overrides, experiment)
    pinned = _pinned(pseudolabel=pseudolabel_run)
    pseudolabel_run = pipeline.upstream_run("pseudolabel", cfg, pseudolabel_run, "pseudolabel")
    splits = _load_data(cfg, data_dir, device)
    kept = {k: torch.from_numpy(v) for k, v in tracking.load_npz(pseudolabel_run, "kept.npz").items()}
    result = phase.run(cfg, splits, kept["images"], kept["labels"], device,
                       key=pipeline.phase_key("augmented", cfg, pipeline.kept_fixed(
                           pinned, kept["images"], kept["labels"], kept.get("soft"))),
                       use_cache=not no_cache, soft=kept.get("soft"),
                       extra_params={"augmented.pseudolabel_run": pseudolabel_run})
    _summary(f"augmented run {result.run_id} ({len(kept['labels'])} synthetic images)", result.metrics, splits.classes)


@main.command()
@click.option("--parent", default=None, metavar="RUN_ID", help="A pipeline run (one pair) or a multi-seed study run.")
@click.option("--baseline", "baseline_id", default=None, metavar="RUN_ID", help="Baseline run (with --augmented).")
@click.option("--augmented", "augmented_id", default=None, metavar="RUN_ID", help="Augmented run (with --baseline).")
@click.option("--filter", "filter_string", default=None, metavar="MLFLOW_FILTER",
              help="Pool every finished pipeline of --experiment matching this MLflow filter, "
                   "e.g. \"params.preset = 'cpu'\".")
@click.option("--experiment", "-e", default="harness", show_default=True,
              help="Experiment to search (with --filter) and to log the compare run in.")
def compare(parent, baseline_id, augmented_id, filter_string, experiment):
    """Augmented vs baseline: deltas, per-arm mean ± std over seeds, paired t-test, Wilcoxon,
    McNemar per pair, and a verdict. Logs a compare run with comparison.md / .json / .png.

    \b
    harness compare --parent STUDY_OR_PIPELINE_RUN_ID
    harness compare --baseline RUN_ID --augmented RUN_ID
    harness compare --filter "params.preset = 'cpu'"
    """
    from harness import compare as cmp, config as cfgmod, tracking
    from harness.phases import compare as phase
    chosen = [bool(parent), bool(baseline_id or augmented_id), filter_string is not None]
    if sum(chosen) != 1 or (chosen[1] and not (baseline_id and augmented_id)):
        raise HarnessError("give exactly one of: --parent RUN_ID; --baseline RUN_ID --augmented RUN_ID; --filter EXPR")
    tracking.configure(experiment)
    pairs = cmp.pairs_for(parent, baseline_id, augmented_id, experiment, filter_string)
    report = cmp.seed_report(pairs)
    for w in report.warnings:
        click.echo(f"warning: {w}", err=True)
    cfg = cfgmod.Config(preset=pairs[0].baseline.data.tags.get("harness.preset", "unknown"))
    if report.n == 1:
        base, aug = pairs[0].baseline, pairs[0].augmented
        single = phase.run(cfg, base.data.metrics, aug.data.metrics, cmp.classes_of(base), use_cache=False,
                           extra_params={"compare.baseline_run": base.info.run_id,
                                         "compare.augmented_run": aug.info.run_id})
        click.echo(f"compare run {single.run_id}: baseline {base.info.run_id} vs augmented {aug.info.run_id}\n")
        _, b, c, p = report.mcnemar[0]
        click.echo(f"McNemar: baseline-only correct {b}, augmented-only correct {c}, p = {p:.3g}; "
                   f"verdict: {report.verdict()}\n")
        click.echo(single.table_md, nl=False)
        return
    run_id = phase.run_report(cfg, report)
    click.echo(f"compare run {run_id}: {report.n} pairs\n")
    click.echo(report.markdown(), nl=False)


@main.command(name="run")
@common
@cache_options
@click.option("--resume", is_flag=True, help="Continue an interrupted gan phase from its last checkpoint.")
@click.option("--seeds", type=click.IntRange(min=1), default=None,
              help="Run N paired pipelines (seeds 0..N-1) under one study run, then compare them.")
@click.option("--seed-list", default=None, metavar="0,1,2", help="Like --seeds, with these seeds.")
@click.option("--share-gan", is_flag=True, help="With several seeds: train one GAN (on the first seed's images) "
              "and use it for every seed. Cheaper; the report says so.")
def run_(preset, overrides, data_dir, experiment, no_cache, resume, seeds, seed_list, share_gan):
    """The whole study as nested runs under one parent: baseline, gan, generate, pseudolabel,
    augmented, compare. Finished phases with the same config and code are reused.

    With --seeds N / --seed-list, N paired pipelines run under one study run and the comparator
    tells a real delta from seed noise (mean ± std, 95% CI, paired t, Wilcoxon, McNemar).
    """
    from harness import pipeline
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
    cfg, device = _setup(preset, overrides, experiment, trains_gan=True)
    if seed_values is None and cfg.study.seeds > 1:
        seed_values = list(range(cfg.study.seeds))
    share_gan = share_gan or cfg.study.share_gan
    if share_gan and not seed_values:
        raise HarnessError("--share-gan needs --seeds or --seed-list (or study.seeds > 1)")
    if seed_values:
        study_id, results, report, _ = pipeline.run_seeds(cfg, seed_values, data_dir, device, use_cache=not no_cache,
                                                          resume=resume, share_gan=share_gan)
        click.echo(f"\nstudy run {study_id}: {len(results)} pipelines")
        click.echo(report.markdown(), nl=False)
        return
    splits = _load_data(cfg, data_dir, device)
    result = pipeline.run(cfg, splits, device, use_cache=not no_cache, resume=resume)
    per_class = ", ".join(f"{c} {int(result.kept[f'kept/{c}/count'])}" for c in cfg.data.classes)
    click.echo(f"\npipeline run {result.run_id}: kept {int(result.kept['kept/count'])} synthetic images ({per_class})")
    click.echo("phase seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in result.seconds.items()) + "\n")
    click.echo(result.table_md, nl=False)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind; 127.0.0.1 keeps it private.")
@click.option("--port", default=5000, show_default=True, type=click.IntRange(1, 65535))
@click.option("--experiment", "-e", default="harness", show_default=True, help="Experiment whose runs table to open.")
def ui(host, port, experiment):
    """Start the MLflow UI on the harness's tracking store (MLFLOW_TRACKING_URI, default
    sqlite:///mlflow.db) and print the address of the experiment's runs table."""
    import subprocess
    import sys
    from harness import tracking
    exp_id = tracking.configure(experiment)
    uri = tracking.tracking_uri()
    if not uri.startswith(("sqlite:", "postgresql", "mysql", "mssql")) and "://" in uri:
        raise HarnessError(f"{uri} is a tracking server already: open it in a browser instead")
    click.echo(f"MLflow UI over {uri}\nruns table: http://{host}:{port}/#/experiments/{exp_id}/runs\n(Ctrl-C stops it)")
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri, "--host", host, "--port", str(port)]
    try:
        raise SystemExit(subprocess.call(cmd))
    except KeyboardInterrupt:
        raise SystemExit(0)


@main.command()
@common
@cache_options
@click.option("--trials", "-n", type=click.IntRange(min=1), default=20, show_default=True,
              help="Finished (complete or pruned) trials the study should hold; reruns resume up to this.")
@click.option("--study", "study_name", default=None, help="Optuna study name [default: sweep-<preset>].")
@click.option("--storage", default=None, metavar="URL", help="Optuna RDB URL shared by all workers "
              "[default: sqlite optuna.db beside the tracking database].")
@click.option("--spec", type=click.Path(dir_okay=False), default=None, help="Search space TOML "
              "[default: experiments/sweep.toml].")
@click.option("--sampler-seed", default=0, show_default=True, help="TPE seed; give parallel workers different seeds.")
def sweep(preset, overrides, data_dir, experiment, no_cache, trials, study_name, storage, spec, sampler_seed):
    """Optuna study over the augmentation knobs (GAN checkpoint, sample count, threshold, ...),
    maximizing the augmented model's validation accuracy; each trial is a nested MLflow run.
    Several processes with the same --study and --storage share the work."""
    from harness import sweep as sweepmod
    spec_obj = sweepmod.load_spec(spec)
    cfg, device = _setup(preset, overrides, experiment, trains_gan=True)
    storage = storage or sweepmod.default_storage()
    study_name = study_name or f"sweep-{cfg.preset}"
    splits = _load_data(cfg, data_dir, device)
    result = sweepmod.run(cfg, spec_obj, trials, study_name, storage, splits, device, use_cache=not no_cache,
                          sampler_seed=sampler_seed)
    click.echo(f"\nsweep run {result.run_id}: study {study_name!r} in {storage}")
    click.echo(f"best params {result.best_params}: validation {100 * result.best_value:.2f}%, "
               f"test {100 * result.best_test['test/accuracy']:.2f}% vs baseline "
               f"{100 * result.baseline['test/accuracy']:.2f}%")
    click.echo(f"optuna-dashboard {storage}\n")
    click.echo(result.table_md, nl=False)


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
