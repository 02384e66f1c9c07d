"""Wall time of a whole `harness run` as a user pays it, for one or more source trees side by side:
a cold run on a fresh tracking store, then the same command again (every phase reused).

    python benchmarks/bench_run.py --tree before=/tmp/before --tree after=. [--preset tiny] [--repeats 5]
        [--cached-repeats 1] [--set gan.epochs=25]
    python benchmarks/bench_run.py --tree this=. --arm fp32="classifier.precision=fp32 quality.precision=fp32" \
        --arm auto="classifier.precision=auto gan.precision=auto quality.precision=auto" --preset cpu \
        --repeats 1 --cached-repeats 0
    python benchmarks/bench_run.py --tree now=. --tree before=/tmp/before --preset cpu --command generator \
        --repeats 2 --cached-repeats 0        # one phase alone (its own command), e.g. the GAN's training
    python benchmarks/bench_run.py --smoke --data-dir DIR --tree a=. --tree b=.   # seconds: 1 repeat, tiny

Arms are source trees (--tree), or settings on the first tree (--arm NAME="K=V K=V": the same code
under other config overrides, e.g. fp32 against auto precision).

Each tree runs as `python -m harness` with that tree first on PYTHONPATH, in interleaved repeats
(this shared machine's speed drifts between minutes), against a fresh store each repeat and one
decoded-image cache warmed beforehand, so that decoding PNGs is in no arm. Prints the median and
best seconds of each arm and the ratios to the first tree.
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


def timed(tree: Path, args: list[str], env: dict, cwd: str) -> float:
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "harness", *args], cwd=cwd, capture_output=True, text=True,
                          env={**env, "PYTHONPATH": str(tree.resolve())})
    if proc.returncode != 0:
        raise click.ClickException(f"{tree}: harness {' '.join(args)} failed:\n{proc.stderr[-2000:]}")
    return time.perf_counter() - t


@click.command()
@click.option("--tree", "trees", multiple=True, required=True, metavar="NAME=PATH",
              help="A source tree holding the harness package (repeatable; the first is the reference).")
@click.option("--data-dir", default=str(DEFAULT_DATA), show_default=True)
@click.option("--preset", default="tiny", show_default=True)
@click.option("--repeats", default=5, show_default=True)
@click.option("--set", "overrides", multiple=True, metavar="K=V", help="Config override for every arm.")
@click.option("--cached-repeats", default=1, show_default=True,
              help="Cached reruns after each cold run (for presets whose cold run takes minutes; 0: none).")
@click.option("--arm", "arm_specs", multiple=True, metavar='NAME="K=V K=V"',
              help="An arm of the first tree under these overrides (repeatable); replaces the tree arms.")
@click.option("--command", default="run", show_default=True,
              help="The harness command to time: `run` (the whole study) or one phase's command (e.g. generator).")
@click.option("--smoke", is_flag=True, help="Seconds, to show the script still runs (tests/test_scripts.py): the tiny "
                                            "preset, 1 repeat, 1 cached rerun.")
def main(trees, data_dir, preset, repeats, overrides, cached_repeats, arm_specs, command, smoke):
    if smoke:
        preset, repeats, cached_repeats = "tiny", 1, 1
    tree_paths = dict(t.split("=", 1) for t in trees)
    sets = sum((["--set", o] for o in overrides), [])
    args = [command, "--preset", preset, "--data-dir", data_dir, *sets]
    if arm_specs:
        first = next(iter(tree_paths.values()))
        arms = {}
        for spec in arm_specs:
            name, _, items = spec.partition("=")
            arms[name] = (first, sum((["--set", i] for i in items.split()), []))
    else:
        arms = {name: (path, []) for name, path in tree_paths.items()}
    cache = tempfile.mkdtemp(prefix="bench-run-cache-")
    env = {**os.environ, "HARNESS_CACHE_DIR": cache, "PYTHONUNBUFFERED": "1"}
    env.pop("MLFLOW_RUN_ID", None)
    with tempfile.TemporaryDirectory() as warm:  # decode the PNGs once, outside every timing: a 1-epoch baseline
        timed(Path(next(iter(tree_paths.values()))), ["baseline", "--preset", preset, "--data-dir", data_dir, *sets,
                                                "--set", "classifier.epochs=1", "--set", "classifier.real_only_epochs=0"],
              {**env, "MLFLOW_TRACKING_URI": f"sqlite:///{warm}/m.db"}, warm)
    cold = {name: [] for name in arms}
    cached = {name: [] for name in arms}
    for r in range(repeats):
        for name, (tree, extra) in arms.items():
            with tempfile.TemporaryDirectory() as tmp:
                run_env = {**env, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp}/mlflow.db"}
                cold[name].append(timed(Path(tree), args + extra, run_env, tmp))
                cached[name] += [timed(Path(tree), args + extra, run_env, tmp) for _ in range(cached_repeats)]
        print(f"repeat {r + 1}: " + "  ".join(f"{n} cold {cold[n][-1]:.1f} s, cached "
                                              f"{', '.join(f'{c:.1f}' for c in cached[n][-cached_repeats:])} s"
                                              for n in arms), flush=True)
    ref = next(iter(arms))
    print(f"\n`harness {' '.join(args)}`, {repeats} interleaved repeats, seconds (median / best)")
    for name in arms:
        line = (f"{name:<10} cold {statistics.median(cold[name]):6.1f} / {min(cold[name]):6.1f}   "
                f"ratio to {ref} (medians): cold {statistics.median(cold[name]) / statistics.median(cold[ref]):.2f}x")
        if cached_repeats:
            line += (f"; cached {statistics.median(cached[name]):6.1f} / {min(cached[name]):6.1f}, "
                     f"{statistics.median(cached[name]) / statistics.median(cached[ref]):.2f}x")
        print(line + ("   " + " ".join(arms[name][1][1::2]) if arms[name][1] else ""))


if __name__ == "__main__":
    main()
