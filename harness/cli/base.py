"""What every command shares: one-line errors with exit code 2, signals that end runs KILLED, old
option names said once, the options naming a config, and the one preflight (harness/preflight.py)."""
from __future__ import annotations

import functools
import os
import signal
import sys
import warnings

import click

from harness import signals
from harness.errors import HarnessError, explain, scrub


class UserError(click.ClickException):
    exit_code = 2  # bad input, like click's own usage errors

    def __init__(self, message: str):
        # Whatever a message quotes (a driver's error, a URL), no password of a store reaches the terminal.
        urls = [os.environ.get("MLFLOW_TRACKING_URI", ""), *(a for a in sys.argv if "://" in a)]
        super().__init__(scrub(message, urls))


def one_line(e: click.UsageError) -> UserError:
    # click's usage errors print the usage, a hint and the error on four lines; ours are one line.
    command = e.ctx.command_path if e.ctx is not None else "harness"
    return UserError(f"{e.format_message()} (see `{command} --help`)")


class Group(click.Group):
    def make_context(self, info_name, args, parent=None, **extra):
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except click.UsageError as e:
            raise one_line(e) from None

    def invoke(self, ctx):
        try:
            with signals.handled(), warnings.catch_warnings():
                warnings.showwarning = deprecation_line  # an old name's FutureWarning: one line, not four
                return super().invoke(ctx)
        except KeyboardInterrupt as e:
            # The runs ended KILLED on the way out; exit as shells and schedulers expect of a signal
            # (128 + its number), not with click's "Aborted!" and 1, which reads like a crash.
            terminated = isinstance(e, signals.Terminated)
            then = ("its generator continues from its last checkpoint" if terminated
                    else "a generator continues with --resume")
            item = "; a grid item goes back to the queue for the next worker" if ctx.invoked_subcommand in (
                "grid", "worker") else ""
            click.echo(f"stopped by {'SIGTERM' if terminated else 'SIGINT'}: this command's runs ended KILLED{item}; "
                       f"rerun it to reuse the finished phases ({then})", err=True)
            ctx.exit(128 + (signal.SIGTERM if terminated else signal.SIGINT))
        except HarnessError as e:
            raise UserError(str(e)) from None
        except click.UsageError as e:
            raise one_line(e) from None
        except click.ClickException:
            raise
        except Exception as e:
            # A full disk, a read-only file, a store that stopped answering: one line, exit 2.
            # Anything else is a bug, and its traceback is what a report needs.
            message = explain(e)
            if message is None:
                raise
            raise UserError(message) from None


def say(message: str) -> None:
    """The reporter the commands give the library (Store.say): a line on stderr, beside the progress."""
    click.echo(message, err=True)


def deprecation_line(message, category, filename, lineno, file=None, line=None, show=warnings.showwarning):
    # harness/: a FutureWarning of the harness itself (an old config name), not of a library
    if issubclass(category, FutureWarning) and filename.startswith(os.path.dirname(os.path.dirname(__file__))):
        say(f"Deprecated: {message}")
    else:
        show(message, category, filename, lineno, file, line)


def old_name(old: str, new: str):
    """A hidden option under its name before 0.2: it works, saying the new one, until harness.REMOVED_IN."""
    def said(ctx, param, value):
        if value is not None and value is not False:  # `in (None, False)` would take --precision 0 for unset
            from harness import REMOVED_IN
            say(f"Deprecated: {old} is now {new}; the old name works until harness {REMOVED_IN}")
        return value
    return said


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


def setup(preset, overrides, experiment, data_dir, no_cache, resume=False, dry_run=False, phase=None, grid=False):
    """The command's one preflight (harness/preflight.py): its config and context, checked."""
    from harness import preflight
    return preflight.prepare(preset, overrides, experiment, data_dir, no_cache, say, resume=resume, dry_run=dry_run,
                             phase=phase, grid=grid)


def set_threads(n: int | None) -> None:
    if n is not None:
        import torch
        torch.set_num_threads(n)


def data_line(cfg, ctx) -> None:
    splits = ctx.splits(cfg.data)
    click.echo(f"data: {len(splits.train_x)} train / {len(splits.val_x)} val / {len(splits.test_x)} test images "
               f"of {', '.join(splits.classes)} ({splits.source}), {cfg.data.image_size}px x {cfg.data.channels}; "
               f"device {ctx.device}", err=True)
    counts = splits.counts("train")
    if len(set(counts.values())) > 1:  # imbalanced data stays imbalanced: say how much
        click.echo("  train images per class: " + ", ".join(f"{k} {v}" for k, v in counts.items()), err=True)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
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


def report_line(ctx, run_id: str | None) -> None:
    """The report page's place, once a grid's report has been logged on its run."""
    from harness.analysis import page
    if run_id:
        click.echo(f"report: {page.location(ctx.store.client, run_id)}")
