"""Wall time of a grid pulled by 1 worker vs 2 workers on this machine, side by side.

    python benchmarks/bench_workers.py [--data-dir ../shared/datasets/cifar10] [--seeds 4] [--repeats 2]
    python benchmarks/bench_workers.py --smoke --data-dir DIR    # seconds: 1 cell, 1 seed, 1 repeat

The grid: `--preset tiny`, 2 cells (`data.n_per_class=20,40`) x `--seeds` seeds. One arm plans it
and lets `harness grid` work alone; the other starts one `harness worker` beside it. Each repeat uses
fresh tracking and Optuna stores (SQLite) and one decoded-image cache warmed beforehand, arms
interleaved (this shared machine's speed drifts between minutes). A third arm gives each of the two
workers half the cores (`--threads`): torch starts one thread per core in every process, and two
processes that each think they own the machine slow each other down. On 2 cores expect at most 2x.
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


def grid_once(data_dir: str, seeds: int, workers: int, env: dict, cache: str, threads: int | None,
              sizes: str = "20,40") -> float:
    with tempfile.TemporaryDirectory() as tmp:
        run_env = {**env, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp}/mlflow.db", "HARNESS_CACHE_DIR": cache}
        base = ["--data-dir", data_dir, "--study", "bench", "--storage", f"sqlite:///{tmp}/optuna.db",
                *(["--threads", str(threads)] if threads else [])]
        harness = [sys.executable, "-m", "harness"]
        plan = [*harness, "grid", "--preset", "tiny", "--axis", f"data.n_per_class={sizes}", "--seeds", str(seeds), *base]
        t = time.perf_counter()
        procs = [subprocess.Popen(plan, cwd=tmp, env=run_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)]
        time.sleep(1.0)  # the planner creates the study and its run; the helpers join them
        procs += [subprocess.Popen([*harness, "worker", *base], cwd=tmp, env=run_env, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True) for _ in range(workers - 1)]
        outs = [p.communicate() for p in procs]
        seconds = time.perf_counter() - t
        if any(p.returncode for p in procs):
            raise click.ClickException("a worker failed:\n" + "\n".join(o[1][-1500:] for o in outs))
        return seconds


@click.command()
@click.option("--data-dir", default=str(DEFAULT_DATA), show_default=True)
@click.option("--seeds", default=4, show_default=True)
@click.option("--repeats", default=2, show_default=True)
@click.option("--smoke", is_flag=True, help="Seconds, to show the script still runs (tests/test_scripts.py): 1 cell "
                                            "(20 per class), 1 seed, 1 repeat; the second worker finds the queue empty.")
def main(data_dir, seeds, repeats, smoke):
    sizes = "20,40"
    if smoke:
        seeds, repeats, sizes = 1, 1, "20"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("MLFLOW_RUN_ID", None)
    cache = tempfile.mkdtemp(prefix="bench-workers-cache-")
    with tempfile.TemporaryDirectory() as warm:  # decode the PNGs once, outside every timing
        subprocess.run([sys.executable, "-m", "harness", "baseline", "--preset", "tiny", "--data-dir", data_dir],
                       cwd=warm, env={**env, "MLFLOW_TRACKING_URI": f"sqlite:///{warm}/m.db", "HARNESS_CACHE_DIR": cache},
                       check=True, capture_output=True)
    cores = os.cpu_count() or 1
    arms = {"1 worker": (1, None), "2 workers": (2, None), f"2 workers x --threads {max(1, cores // 2)}": (2, max(1, cores // 2))}
    times = {name: [] for name in arms}
    for r in range(repeats):
        for name, (n, threads) in arms.items():
            times[name].append(grid_once(data_dir, seeds, n, env, cache, threads, sizes))
        print(f"repeat {r + 1}: " + ", ".join(f"{name} {t[-1]:.1f} s" for name, t in times.items()), flush=True)
    one = statistics.median(times["1 worker"])
    cells = len(sizes.split(","))
    print(f"\n{cells}-cell ({sizes} per class) x {seeds}-seed tiny grid ({cells * seeds} pipelines), {repeats} "
          f"interleaved repeats, {cores} cores; "
          "seconds median / best, speed-up over 1 worker (medians):")
    for name, t in times.items():
        print(f"  {name:<28} {statistics.median(t):6.1f} / {min(t):6.1f}   {one / statistics.median(t):.2f}x")


if __name__ == "__main__":
    main()
