"""Sweep reuse speed-up: the same 20-trial tiny-preset sweep with reuse (baseline and GAN trained
once per study, phases cached by key) and with --no-cache (every trial retrains every phase), side
by side, each against a fresh tracking store and Optuna storage with the same sampler seed.

    python benchmarks/bench_sweep.py [--data-dir ../shared/datasets/cifar10] [--trials 20] [--gan-epochs 2,10]

Target: reuse >= 4x faster.

Each --gan-epochs value is one side-by-side pair. The tiny preset's GAN trains 2 epochs (0.8 s), so
the checkpoint knob has two values and what reuse saves per trial is small next to the costs both
arms pay once per process (imports, data, the study's own baseline and GAN, the best trial's test
evaluation: ~15 s). A 10-epoch tiny GAN gives the knob ten checkpoints, but at width 8 on 60 images
it adds only ~0.8 s per --no-cache trial. Measured on an idle 2-core CPU: 2.59x (2 epochs) and
2.77x (10 epochs), under the target.
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


def sweep_seconds(trials: int, data_dir: str, no_cache: bool, gan_epochs: int) -> tuple[float, str]:
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, MLFLOW_TRACKING_URI=f"sqlite:///{tmp}/mlflow.db")
        # Migrate the store first: schema creation is not part of either sweep.
        subprocess.run([sys.executable, "-c", "import mlflow; mlflow.MlflowClient().search_experiments()"],
                       env=env, cwd=tmp, check=True, capture_output=True)
        cmd = [sys.executable, "-m", "harness", "sweep", "--preset", "tiny", "--trials", str(trials),
               "--study", "bench", "--data-dir", data_dir, "--set", f"gan.epochs={gan_epochs}"] + (["--no-cache"] if no_cache else [])
        t = time.perf_counter()
        out = subprocess.run(cmd, env=env, cwd=tmp, capture_output=True, text=True)
        seconds = time.perf_counter() - t
        if out.returncode != 0:
            raise SystemExit(out.stdout[-2000:] + out.stderr[-2000:])
        best = next((line for line in out.stdout.splitlines() if line.startswith("best params")), "")
        return seconds, best


@click.command()
@click.option("--data-dir", default=str(DEFAULT_DATA), show_default=True)
@click.option("--trials", default=20, show_default=True)
@click.option("--gan-epochs", default="2,10", show_default=True, help="Comma-separated: one pair per value.")
def main(data_dir, trials, gan_epochs):
    print(f"{trials}-trial sweep, tiny preset, default spec (experiments/sweep.toml), sampler seed 0")
    for epochs in (int(e) for e in gan_epochs.split(",")):
        reuse, best_r = sweep_seconds(trials, data_dir, no_cache=False, gan_epochs=epochs)
        fresh, best_f = sweep_seconds(trials, data_dir, no_cache=True, gan_epochs=epochs)
        print(f"gan.epochs={epochs:<3} with reuse {reuse:7.1f} s   --no-cache {fresh:7.1f} s   "
              f"reuse speed-up = {fresh / reuse:.2f}x   (target >= 4)")
        print(f"    reuse:    {best_r}\n    no-cache: {best_f}")


if __name__ == "__main__":
    main()
