"""A linear probe against training every weight, end to end as a user runs them: `harness run` with
classifier.mode=probe and with classifier.mode=train, from the same starting weights (a file), each
on a fresh store; the baseline's and the synthetic arm's wall times (their MLflow runs) side by side.

    python benchmarks/bench_probe.py [--data-dir ../shared/datasets/cifar10] [--kind resnet18] [--width 0]
        [--set classifier.epochs=15]
    python benchmarks/bench_probe.py --smoke --data-dir DIR    # seconds: simplecnn, the tiny preset, 1 epoch, 24 oracle images

The starting weights are the kind's random initialisation saved to a file: a probe's cost does not
depend on what the weights know, and no weights can be downloaded here. The generator is the oracle
(1,500 held-out real images), so that no generator training is in either arm's time; the reference
preset at 1000 images per class otherwise. Target: probe (baseline + synthetic) < 1/10 of train.
"""
from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import click
import torch
from mlflow import MlflowClient

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "cifar10"
ROOT = Path(__file__).resolve().parents[1]


def arm_seconds(uri: str) -> dict[str, float]:
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("harness").experiment_id
    runs = [r for r in client.search_runs([exp]) if r.data.tags.get("harness.phase") in ("baseline", "synthetic")]
    return {r.data.tags["harness.phase"]: (r.info.end_time - r.info.start_time) / 1000 for r in runs}


@click.command()
@click.option("--data-dir", default=str(DEFAULT_DATA), show_default=True)
@click.option("--kind", default="resnet18", show_default=True)
@click.option("--width", default=0, show_default=True, help="classifier.width (0: the kind's own).")
@click.option("--set", "overrides", multiple=True, metavar="K=V", help="Config override for both modes.")
@click.option("--smoke", is_flag=True, help="Seconds, to show the script still runs (tests/test_scripts.py): simplecnn "
                                            "on the tiny preset, 1 epoch per arm, 24 oracle images.")
def main(data_dir, kind, width, overrides, smoke):
    from harness import classifiers, config
    preset = "reference"
    if smoke:
        # The oracle draws unused real images: a few dozen folders hold fewer than tiny's 64.
        preset, kind, width = "tiny", "simplecnn", 0
        overrides = (*overrides, "classifier.epochs=1", "generate.n_samples=24")
    with tempfile.TemporaryDirectory() as tmp:
        cfg = dataclasses.replace(config.Config().classifier, kind=kind, width=width)
        weights = Path(tmp) / "start.pt"
        torch.save(classifiers.build(cfg, 3, 3, 32).state_dict(), weights)
        env = {**os.environ, "HARNESS_CACHE_DIR": f"{tmp}/cache", "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
        sets = ["--set", f"classifier.kind={kind}", "--set", f"classifier.width={width}", "--set",
                f"classifier.init={weights}", "--set", "generator.kind=oracle", *sum((["--set", o] for o in overrides), [])]
        seconds = {}
        for mode in ("probe", "train"):
            uri = f"sqlite:///{tmp}/{mode}.db"
            args = ["run", "--preset", preset, "--data-dir", data_dir, *sets, "--set", f"classifier.mode={mode}"]
            proc = subprocess.run([sys.executable, "-m", "harness", *args], cwd=tmp, capture_output=True, text=True,
                                  env={**env, "MLFLOW_TRACKING_URI": uri})
            if proc.returncode != 0:
                raise click.ClickException(f"harness {' '.join(args)} failed:\n{proc.stderr[-2000:]}")
            seconds[mode] = arm_seconds(uri)
            print(f"{mode:<6} baseline {seconds[mode]['baseline']:7.1f} s   synthetic {seconds[mode]['synthetic']:7.1f} s",
                  flush=True)
    total = {m: sum(s.values()) for m, s in seconds.items()}
    print(f"\n{kind} (width {width or 'its own'}), {preset} preset{' with ' + ' '.join(overrides) if overrides else ''}, "
          f"oracle images, "
          f"{torch.get_num_threads()} threads: baseline + synthetic {total['probe']:.1f} s probed, "
          f"{total['train']:.1f} s trained: probe / train = {total['probe'] / total['train']:.3f} (target < 0.1)")


if __name__ == "__main__":
    main()
