"""One command per phase of the table (harness/table.py), and the two that describe: `config`, `kinds`."""
from __future__ import annotations

import click

from harness.cli.base import common, data_line, old_name, setup


UPSTREAM_HELP = {"generator": "Generator run to sample from", "generate": "Synthetic images to label",
                 "baseline": "Classifier that labels", "pseudolabel": "Kept synthetic images",
                 "evaluator": "Sample-quality evaluator", "pretrain": "Pretrained classifier (classifier.init=pretrain)",
                 "synthetic_stage": "First stage under classifier.synthetic_use=pretrain (trained on the kept images alone)",
                 "control_stage": "First stage of the control under classifier.synthetic_use=pretrain",
                 "generator_pretrain": "The generator's pretraining on other classes (gan.init=pretrain)"}


def _phase_command(name: str, help_text: str, upstream: tuple[str, ...]):
    def command(preset, overrides, data_dir, experiment, no_cache, resume=False, gan_run=None, **runs):
        runs["generator_run"] = runs.get("generator_run") or gan_run
        from harness.runner import Runner
        from harness.table import PHASES
        cfg, ctx = setup(preset, overrides, experiment, data_dir, no_cache, resume, phase=name)
        phase = PHASES[name]
        pinned = {u: runs[f"{u}_run"] for u in upstream if runs.get(f"{u}_run")}
        runner = Runner(ctx)
        inputs = runner.finished_inputs(name, cfg, pinned)
        phase.module.check(ctx, cfg, inputs)  # before any output: a batch too big, a missing checkpoint, ...
        if phase.reads(cfg)[2]:
            data_line(cfg, ctx)
        result = runner.run(name, cfg, inputs)
        click.echo(phase.module.summary(result, cfg))

    for u in reversed(upstream):
        command = click.option(f"--{u}-run", f"{u}_run", default=None, metavar="RUN_ID",
                               help=f"{UPSTREAM_HELP[u]} [default: the finished {u} run of this config].")(command)
        if u == "generator":
            command = click.option("--gan-run", "gan_run", default=None, hidden=True,
                                   callback=old_name("--gan-run", "--generator-run"))(command)
    from harness.table import PHASES  # no torch or MLflow until a command runs
    if PHASES[name].resumable:
        command = click.option("--resume", is_flag=True, help="Continue the last interrupted (KILLED/FAILED) "
                               "generator run of this config from its last checkpoint instead of starting over.")(command)
    return click.command(name=name, help=help_text)(common(command))


def phase_commands() -> list[click.Command]:
    """One command per phase of the table that has one (the evaluator runs inside the others; compare
    has a command of its own, harness/cli/study.py)."""
    from harness.table import PHASES  # the phase modules load when a command runs (harness/phases/__init__.py)
    return [_phase_command(name, phase.help, phase.upstream + (("evaluator",) if phase.quality else ()))
            for name, phase in PHASES.items() if phase.command]


@click.command()
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


@click.command()
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
