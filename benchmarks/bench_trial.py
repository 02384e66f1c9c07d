"""A sweep trial's overhead beyond the augmented model's own training: per trial, its wall time
(Optuna's start to complete), the seconds inside `train_classifier` (the synthetic arm's training,
validation included), the seconds inside MLflow client calls, and the rest (opening runs,
generation, labelling, the cache lookups), on the `cpu` preset's settings.

    python benchmarks/bench_trial.py [--data-dir ../shared/datasets/cifar10] [--trials 6] [--gan-epochs 25]
    python benchmarks/bench_trial.py --smoke --data-dir DIR    # seconds: the tiny preset, 2 trials

The sweep runs in this process on a fresh SQLite store, with the default search space
(harness/experiments/sweep.toml: checkpoint, sample count 500-10,000, threshold) and no pruner, so that every
trial trains its full epochs. The GAN is the cpu preset's network cut to `--gan-epochs`: a trial
samples from its checkpoints and never trains it, so what a trial costs does not depend on how long
the GAN trained (the first trial is apart: it waits for the baseline and the GAN).

Target (issue 17): the overhead a small fraction of the trial.
"""
from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path

import click

from bench_gan import CallTimer

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "cifar10"
SPEC = Path(__file__).resolve().parents[1] / "harness" / "experiments" / "sweep.toml"


@click.command()
@click.option("--data-dir", default=str(DEFAULT_DATA), show_default=True)
@click.option("--trials", default=6, show_default=True)
@click.option("--gan-epochs", default=25, show_default=True, help="The cpu preset's 200, cut (see above).")
@click.option("--preset", default="cpu", show_default=True)
@click.option("--smoke", is_flag=True, help="Seconds, to show the script still runs (tests/test_scripts.py): the tiny "
                                            "preset and its 2-epoch GAN, 2 trials (the second is the one measured).")
def main(data_dir, trials, gan_epochs, preset, smoke):
    if smoke:
        preset, trials, gan_epochs = "tiny", 2, 2
    tmp = tempfile.mkdtemp(prefix="bench-trial-")
    os.environ.update(MLFLOW_TRACKING_URI=f"sqlite:///{tmp}/mlflow.db", HARNESS_CACHE_DIR=os.environ.get(
        "HARNESS_CACHE_DIR", str(Path.home() / ".cache" / "harness")))
    os.environ.pop("MLFLOW_RUN_ID", None)
    spec = Path(tmp) / "spec.toml"
    spec.write_text(SPEC.read_text().replace('type = "median"', 'type = "none"'))
    import mlflow
    import optuna

    from harness import cli, train
    clock = CallTimer()  # training first: MLflow calls made while training count as training
    clock.wrap(train, "train_classifier", "training")
    for name in dir(mlflow.MlflowClient):
        if not name.startswith("_") and callable(getattr(mlflow.MlflowClient, name)):
            clock.wrap(mlflow.MlflowClient, name, "mlflow")
    storage = f"sqlite:///{tmp}/optuna.db"
    args = ["sweep", "--preset", preset, "--data-dir", data_dir, "--trials", str(trials), "--study", "bench",
            "--storage", storage, "--spec", str(spec), "--set", f"gan.epochs={gan_epochs}"]
    t = time.perf_counter()
    try:
        cli.main(args, standalone_mode=False)
    finally:
        os.chdir(tmp)
    total = time.perf_counter() - t
    study = optuna.load_study(study_name="bench", storage=storage)
    rows = []
    for tr in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)):
        a, b = tr.datetime_start.timestamp(), tr.datetime_complete.timestamp()
        wall, training, logging = b - a, clock.within("training", a, b), clock.within("mlflow", a, b)
        rows.append((tr.number, wall, training, logging, wall - training - logging, tr.params))
    print(f"\nsweep of {trials} trials, preset {preset} (gan.epochs={gan_epochs}), {total:.0f} s in all\n")
    print("| trial | wall s | training s | MLflow s | other s | overhead share | params |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for n, wall, training, logging, other, params in rows:
        print(f"| {n} | {wall:.1f} | {training:.1f} | {logging:.2f} | {other:.2f} | "
              f"{100 * (wall - training) / wall:.1f}% | {params} |")
    later = rows[1:]  # the first trial also waited for the baseline and the GAN
    if later:
        over = [r[1] - r[2] for r in later]
        share = [100 * (r[1] - r[2]) / r[1] for r in later]
        print(f"\ntrials 2-{len(rows)}: overhead median {statistics.median(over):.2f} s "
              f"(MLflow {statistics.median(r[3] for r in later):.2f} s, other {statistics.median(r[4] for r in later):.2f} s), "
              f"{statistics.median(share):.1f}% of the trial (max {max(share):.1f}%)")


if __name__ == "__main__":
    main()
