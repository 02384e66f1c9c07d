"""Sweep reuse speed-up: the same 20-trial tiny-preset sweep with reuse (baseline and GAN trained
once per study, phases cached by key) and with --no-cache (every trial retrains every phase), side
by side, each against a fresh tracking store and Optuna storage with the same sampler seed.

    python benchmarks/bench_sweep.py [--data-dir ../shared/datasets/cifar10] [--trials 20]

Target: reuse >= 4x faster.
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


def sweep_seconds(trials: int, data_dir: str, no_cache: bool) -> tuple[float, str]:
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, MLFLOW_TRACKING_URI=f"sqlite:///{tmp}/mlflow.db")
        # Migrate the store first: schema creation is not part of either sweep.
        subprocess.run([sys.executable, "-c", "import mlflow; mlflow.MlflowClient().search_experiments()"],
                       env=env, cwd=tmp, check=True, capture_output=True)
        cmd = [sys.executable, "-m", "harness", "sweep", "--preset", "tiny", "--trials", str(trials),
               "--study", "bench", "--data-dir", data_dir] + (["--no-cache"] if no_cache else [])
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
def main(data_dir, trials):
    print(f"{trials}-trial sweep, tiny preset, default spec (experiments/sweep.toml), sampler seed 0")
    reuse, best_r = sweep_seconds(trials, data_dir, no_cache=False)
    print(f"with reuse   {reuse:8.1f} s   {best_r}")
    fresh, best_f = sweep_seconds(trials, data_dir, no_cache=True)
    print(f"--no-cache   {fresh:8.1f} s   {best_f}")
    print(f"reuse speed-up = {fresh / reuse:.2f}x   (target >= 4)")


if __name__ == "__main__":
    main()
