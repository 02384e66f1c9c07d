"""Sweep reuse speed-up: the same 20-trial tiny-preset sweep with reuse (baseline and GAN trained
once per study, generation and labelling incremental, synthetic-arm runs cached by their kept images)
and with --no-cache (every trial retrains every phase), each against a fresh tracking store and
Optuna storage with the same sampler seed, in interleaved repeats.

    python benchmarks/bench_sweep.py [--data-dir ../shared/datasets/cifar10] [--trials 20] [--repeats 3] [--set K=V ...]
    python benchmarks/bench_sweep.py --smoke --data-dir DIR    # seconds: 1 trial, 1 sweep per arm

Target: reuse >= 4x faster. Prints the ratio of the fastest runs (noise on a shared machine only
ever adds time) and of the medians, and the synthetic images the trials generated and labelled
with and without reuse: the part of a trial that reuse saves only where sample counts overlap.
Measured on this 2-core CPU: 3.45x best-of-5, 3.53x of medians (see docs/benchmarks.md).
"""
from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "cifar10"


def sweep_seconds(trials: int, data_dir: str, no_cache: bool, overrides: list[str]) -> tuple[float, str, dict]:
    """Wall seconds of one sweep process on a fresh store, its best-params line, and the trials' params."""
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, MLFLOW_TRACKING_URI=f"sqlite:///{tmp}/mlflow.db")
        # Migrate the store first: schema creation is not part of either sweep.
        subprocess.run([sys.executable, "-c", "import mlflow; mlflow.MlflowClient().search_experiments()"],
                       env=env, cwd=tmp, check=True, capture_output=True)
        cmd = [sys.executable, "-m", "harness", "sweep", "--preset", "tiny", "--trials", str(trials),
               "--study", "bench", "--data-dir", data_dir] + [a for o in overrides for a in ("--set", o)] + \
            (["--no-cache"] if no_cache else [])
        t = time.perf_counter()
        out = subprocess.run(cmd, env=env, cwd=tmp, capture_output=True, text=True)
        seconds = time.perf_counter() - t
        if out.returncode != 0:
            raise SystemExit(out.stdout[-2000:] + out.stderr[-2000:])
        best = next((line for line in out.stdout.splitlines() if line.startswith("best params")), "")
        import optuna
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.load_study(study_name="bench", storage=f"sqlite:///{tmp}/optuna.db")
        return seconds, best, [t.params for t in study.trials]


def images_handled(params: list[dict], reuse: bool) -> int:
    """Synthetic images the trials generated and labelled: with reuse, each checkpoint's stream up to
    its largest sample count (every count is a prefix of it); without, every trial's own images."""
    n = [(p.get("generate.checkpoint_epoch"), p["generate.n_samples"]) for p in params if "generate.n_samples" in p]
    if not reuse:
        return sum(k for _, k in n)
    return sum(max(k for c2, k in n if c2 == c) for c in {c for c, _ in n})


@click.command()
@click.option("--data-dir", default=str(DEFAULT_DATA), show_default=True)
@click.option("--trials", default=20, show_default=True)
@click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE",
              help="Config override for both arms (repeatable), e.g. a costlier GAN: --set gan.epochs=20.")
@click.option("--repeats", default=3, show_default=True,
              help="Sweeps per arm, interleaved (AB BA AB): shared machines drift by 20-30% between minutes.")
@click.option("--smoke", is_flag=True, help="Seconds, to show the script still runs (tests/test_scripts.py): 1 trial, "
                                            "1 sweep per arm.")
def main(data_dir, trials, overrides, repeats, smoke):
    if smoke:
        trials, repeats = 1, 1
    what = f"tiny preset{''.join(' --set ' + o for o in overrides)}"
    print(f"{trials}-trial sweep, {what}, default spec (harness/experiments/sweep.toml), sampler seed 0, "
          f"{repeats} sweep(s) per arm, interleaved", flush=True)
    times: dict[bool, list[float]] = {False: [], True: []}
    best: dict[bool, str] = {}
    params: list[dict] = []
    for r in range(repeats):
        for no_cache in ((False, True) if r % 2 == 0 else (True, False)):
            seconds, best[no_cache], params = sweep_seconds(trials, data_dir, no_cache, list(overrides))
            times[no_cache].append(seconds)
            print(f"    {'--no-cache' if no_cache else 'with reuse'}: {seconds:6.1f} s", flush=True)
    reuse, fresh = times[False], times[True]
    print(f"with reuse {min(reuse):6.1f} s (median {statistics.median(reuse):.1f})   "
          f"--no-cache {min(fresh):6.1f} s (median {statistics.median(fresh):.1f})   "
          f"reuse speed-up = {min(fresh) / min(reuse):.2f}x best-of-{repeats} "
          f"({statistics.median(fresh) / statistics.median(reuse):.2f}x of medians)   (target >= 4)")
    a, b = images_handled(params, True), images_handled(params, False)
    print(f"synthetic images generated + labelled by the trials: with reuse {a}, --no-cache {b} ({b / a:.2f}x)")
    print(f"    reuse:    {best[False]}\n    no-cache: {best[True]}")


if __name__ == "__main__":
    main()
