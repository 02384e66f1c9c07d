"""Volume: what drawing many synthetic images costs. The `generate` and `pseudolabel` commands of one
config at several generate.n_samples, side by side on one store (the baseline and the generator
trained once, before timing), each in its own process: wall seconds, images/s, and the process's
peak resident memory (os.wait4's ru_maxrss), against what the images themselves weigh (uint8).

    python benchmarks/bench_volume.py --preset strong-baseline --samples 1500,50000 \
        --set data.n_per_class=100 --set gan.iterations=20 --set classifier.steps=40
    python benchmarks/bench_volume.py --smoke --data-dir DIR     # seconds (tests/test_scripts.py)

The generator's and the baseline's training budgets do not change what a draw or a label costs (the
networks' shapes do), so they are cut to seconds here.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "cifar10"


def measured(args: list[str], env: dict, cwd: str) -> tuple[float, float]:
    """(wall seconds, peak RSS in MiB) of `python -m harness ARGS` in its own process."""
    t = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "harness", *args], cwd=cwd, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - t
    if proc.returncode:
        raise click.ClickException(f"harness {' '.join(args)} failed:\n{err.decode()[-2000:]}")
    return seconds, usage.ru_maxrss / 1024  # KiB on Linux


@click.command()
@click.option("--data-dir", default=str(DEFAULT_DATA), show_default=True)
@click.option("--preset", default="strong-baseline", show_default=True)
@click.option("--samples", default="1500,50000", show_default=True, help="generate.n_samples values, comma-separated.")
@click.option("--set", "overrides", multiple=True, metavar="K=V", help="Config override for every arm.")
@click.option("--smoke", is_flag=True, help="Seconds: the tiny preset, 64 and 2,000 images.")
def main(data_dir, preset, samples, overrides, smoke):
    if smoke:
        preset, samples = "tiny", "64,2000"
    counts = [int(s) for s in samples.split(",")]
    sets = [a for o in overrides for a in ("--set", o)]
    with tempfile.TemporaryDirectory() as work:
        env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{work}/mlflow.db",
               "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
        base = ["--preset", preset, "--data-dir", data_dir, *sets]
        click.echo("training the baseline and the generator once (not timed)...", err=True)
        for command in ("baseline", "generator"):
            measured([command, *base], env, work)
        rows = []
        for n in counts:
            with_n = [*base, "--set", f"generate.n_samples={n}"]
            g_s, g_rss = measured(["generate", *with_n], env, work)
            p_s, p_rss = measured(["pseudolabel", *with_n], env, work)
            rows.append((n, g_s, g_rss, p_s, p_rss))
            click.echo(f"  {n} images: generate {g_s:.1f} s, {g_rss:.0f} MiB; pseudolabel {p_s:.1f} s, {p_rss:.0f} MiB",
                       err=True)
    size = 3 * 32 * 32 if "image_size=64" not in " ".join(overrides) else 3 * 64 * 64
    click.echo(f"\npreset {preset}, {' '.join(overrides) or 'no overrides'}; each command in its own process "
               "(its start, ~6 s of imports, included)")
    click.echo("| images | generate s | pseudolabel s | images/s (both) | peak RSS generate MiB | peak RSS pseudolabel MiB "
               "| the images alone MiB |")
    click.echo("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for n, g_s, g_rss, p_s, p_rss in rows:
        click.echo(f"| {n:,} | {g_s:.1f} | {p_s:.1f} | {n / (g_s + p_s):,.0f} | {g_rss:.0f} | {p_rss:.0f} | "
                   f"{n * size / 2 ** 20:.0f} |")
    first, last = rows[0], rows[-1]
    extra = last[0] - first[0]
    click.echo(f"\nthe {extra:,} images more: {(last[1] + last[3]) - (first[1] + first[3]):.1f} s more "
               f"({extra / max((last[1] + last[3]) - (first[1] + first[3]), 1e-9):,.0f} images/s at the margin); "
               f"peak RSS +{last[2] - first[2]:.0f} MiB (generate), +{last[4] - first[4]:.0f} MiB (pseudolabel), "
               f"against {extra * size / 2 ** 20:.0f} MiB of uint8 images")


if __name__ == "__main__":
    main()
