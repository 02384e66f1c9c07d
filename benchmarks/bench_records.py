"""What MLflow-native records cost a phase: the baseline phase at the `cpu` preset's settings (the
reference classifier, 15 epochs on 3 x 1000 images), with its LoggedModel (pickle-free pt2 export)
and system metrics, and without them, in interleaved repeats against fresh stores; then the export
of one `cpu`-preset generator checkpoint, against the measured length of the generator phase.

    python benchmarks/bench_records.py [--data-dir ../shared/datasets/cifar10] [--repeats 2] [--epochs 15]
    python benchmarks/bench_records.py --smoke --data-dir DIR    # seconds: the tiny preset, 1 repeat of 1 epoch

Target: under 3% of the phase.
"""
from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path

import click

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "cifar10"


def phase_seconds(data_dir: str, epochs: int, records: bool, preset: str = "cpu") -> float:
    from harness import config, train
    from harness.context import Context
    from harness.runner import Runner
    from harness.tracking import codecs, store
    cfg = config.load(preset, [f"classifier.epochs={epochs}"])
    real_export = codecs.log_pytorch_model
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp}/mlflow.db"
        ctx = Context(store.configure("bench"), train.pick_device("auto"), data_dir, use_cache=False)
        ctx.splits(cfg.data)  # loaded before the clock starts: both arms read the same tensors
        if not records:
            codecs.log_pytorch_model = lambda *a, **k: None
        try:
            t = time.perf_counter()
            Runner(ctx).run("baseline", cfg, {}, brief=not records)
            return time.perf_counter() - t
        finally:
            codecs.log_pytorch_model = real_export


@click.command()
@click.option("--data-dir", default=str(DEFAULT_DATA), show_default=True)
@click.option("--repeats", default=2, show_default=True)
@click.option("--epochs", default=15, show_default=True, help="Classifier epochs (the cpu preset's: 15).")
@click.option("--smoke", is_flag=True, help="Seconds, to show the script still runs (tests/test_scripts.py): the tiny "
                                            "preset's classifier and GAN, 1 repeat of 1 epoch.")
def main(data_dir, repeats, epochs, smoke):
    import mlflow
    import torch

    from harness import config
    from harness.generators import gan
    from harness.tracking import codecs
    preset = "cpu"
    if smoke:
        preset, repeats, epochs = "tiny", 1, 1
    times = {True: [], False: []}
    phase_seconds(data_dir, 1, True, preset)  # warm-up: imports, the decoded-image cache, torch.export's first use
    for r in range(repeats):
        for records in (False, True):
            times[records].append(phase_seconds(data_dir, epochs, records, preset))
            print(f"repeat {r + 1}, records {'on ' if records else 'off'}: {times[records][-1]:.1f} s", flush=True)
    on, off = statistics.median(times[True]), statistics.median(times[False])
    print(f"\nbaseline phase ({epochs} epochs): with LoggedModel + system metrics {on:.1f} s, without {off:.1f} s: "
          f"+{on - off:.2f} s = {100 * (on - off) / off:+.1f}% (medians of {repeats})   (target < 3%)")
    g = config.load(preset).gan
    trainer = gan.WganGp(g, torch.device("cpu"))
    with tempfile.TemporaryDirectory() as tmp:
        mlflow.set_tracking_uri(f"sqlite:///{tmp}/mlflow.db")
        mlflow.set_experiment("bench-generator")
        with mlflow.start_run():
            secs = []
            for epoch in range(1, 4):
                t = time.perf_counter()
                codecs.log_pytorch_model(gan._Exportable(trainer.sampler), "generator", gan._example(trainer), step=epoch)
                secs.append(time.perf_counter() - t)
    n_ckpt = g.epochs // g.checkpoint_every
    per = statistics.median(secs[1:])
    print(f"generator checkpoint export (width {g.width}): first {secs[0]:.2f} s, then {per:.2f} s; {n_ckpt} checkpoints "
          f"of the {preset} preset = {secs[0] + per * (n_ckpt - 1):.1f} s of a ~{g.epochs * 5.1 / 60:.0f}-minute phase "
          f"(5.1 s per epoch, README)")


if __name__ == "__main__":
    main()
