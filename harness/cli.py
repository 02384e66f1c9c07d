"""`harness`: the command line. Thin: parse, load the config, call a phase, print a summary."""
from __future__ import annotations

import functools

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


def _setup(preset, overrides, experiment):
    from harness import config, tracking, train
    cfg = config.load(preset, overrides)
    device = train.pick_device(cfg.device)
    tracking.configure(experiment)
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
    """


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
def baseline(preset, overrides, data_dir, experiment):
    """Train SimpleCNN on the real images only; log metrics, report, confusion matrix, weights."""
    from harness import data
    from harness.phases import baseline as phase
    cfg, device = _setup(preset, overrides, experiment)
    splits = data.load_splits(cfg.data, data_dir)
    click.echo(f"data: {len(splits.train_x)} train / {len(splits.val_x)} val / {len(splits.test_x)} test images "
               f"of {', '.join(splits.classes)} ({splits.source}); device {device}", err=True)
    result = phase.run(cfg, splits, device)
    _summary(f"baseline run {result.run_id}", result.metrics, splits.classes)
