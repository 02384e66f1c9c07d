"""Tracking-store calls per phase of `harness run`, cold and fully cached, for source trees side by
side; and wall times: the cold run on SQLite, the cached rerun on SQLite and against a local
`mlflow server` (where every call is an HTTP round trip).

    python benchmarks/bench_store_calls.py --tree before=/tmp/before --tree after=. [--preset tiny] [--repeats 3]
    python benchmarks/bench_store_calls.py --smoke --data-dir DIR --tree this=.   # seconds: tiny, 1 repeat

A call is one method of the client's tracking store (SqlAlchemyStore on SQLite, RestStore against a
server) or artifact repository, counted where the client calls it (a store method calling another
counts once), in a child process per command, and attributed to the phase the runner (`Runner.run`; `pipeline.execute` in older
trees) was running ("pipeline": the parent run and what happens outside any phase). Heartbeats are left out
(HARNESS_HEARTBEAT_SECONDS=3600): they are per 30 s, not per phase. Wall times come from plain
`python -m harness run` processes, interleaved across trees, the median of --repeats.
"""
from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import click

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "cifar10"

CHILD = r"""
import collections, json, sys, threading
from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
from mlflow.store.tracking.rest_store import RestStore
from mlflow.store.artifact.local_artifact_repo import LocalArtifactRepository
from mlflow.store.artifact.http_artifact_repo import HttpArtifactRepository
counts, phase, depth = collections.Counter(), ["pipeline"], threading.local()

import inspect
def wrap(cls, kind):
    for name in dir(cls):  # inherited methods too: search_runs is the abstract store's
        fn = inspect.getattr_static(cls, name)
        if name.startswith("_") or not inspect.isfunction(fn):
            continue
        def counted(*a, __fn=fn, __name=name, **k):
            outer = getattr(depth, "n", 0) == 0
            if outer:
                counts[f"{phase[0]}|{kind}|{__name}"] += 1
            depth.n = getattr(depth, "n", 0) + 1
            try:
                return __fn(*a, **k)
            finally:
                depth.n -= 1
        setattr(cls, name, counted)

for cls, kind in ((SqlAlchemyStore, "tracking"), (RestStore, "tracking"), (LocalArtifactRepository, "artifacts"),
                  (HttpArtifactRepository, "artifacts")):
    wrap(cls, kind)
from harness import pipeline
if hasattr(pipeline, "execute"):  # a tree from before the runner: the function that ran a phase
    owner, attr = pipeline, "execute"
else:  # (asked this way round: an editable install would import harness.runner from another tree)
    from harness.runner import Runner as owner
    attr = "run"
real = getattr(owner, attr)
def execute(first, name, *a, **k):
    before, phase[0] = phase[0], name
    try:
        return real(first, name, *a, **k)
    finally:
        phase[0] = before
setattr(owner, attr, execute)
from harness.cli import main
out = sys.argv[1]
try:
    main(sys.argv[2:], standalone_mode=False)
finally:
    open(out, "w").write(json.dumps(counts))
"""


def _env(tree: Path, uri: str, cache: str) -> dict:
    env = dict(os.environ, PYTHONPATH=str(tree.resolve()), MLFLOW_TRACKING_URI=uri, HARNESS_CACHE_DIR=cache,
               HARNESS_HEARTBEAT_SECONDS="3600", MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false")
    env.pop("MLFLOW_RUN_ID", None)
    return env


def counted(tree: Path, args: list[str], uri: str, cache: str, cwd: str) -> dict[str, int]:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        out = f.name
    proc = subprocess.run([sys.executable, "-c", CHILD, out, "run", *args], cwd=cwd, capture_output=True, text=True,
                          env=_env(tree, uri, cache))
    if proc.returncode != 0:
        raise click.ClickException(f"{tree}: harness run failed:\n{proc.stderr[-2000:]}")
    return json.loads(Path(out).read_text())


def timed(tree: Path, args: list[str], uri: str, cache: str, cwd: str) -> float:
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "harness", "run", *args], cwd=cwd, capture_output=True, text=True,
                          env=_env(tree, uri, cache))
    if proc.returncode != 0:
        raise click.ClickException(f"{tree}: harness run failed:\n{proc.stderr[-2000:]}")
    return time.perf_counter() - t


def per_phase(counts: dict[str, int]) -> dict[str, int]:
    out: dict[str, int] = {}
    for key, n in counts.items():
        phase = key.split("|")[0]
        out[phase] = out.get(phase, 0) + n
    return out


def _server(root: Path) -> tuple[subprocess.Popen, str]:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri",
                             f"sqlite:///{root / 'server.db'}", "--artifacts-destination", str(root / "artifacts"),
                             "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2):
                return proc, url
        except OSError:
            if time.time() > deadline or proc.poll() is not None:
                os.killpg(proc.pid, 9)
                raise click.ClickException("the local mlflow server did not start")
            time.sleep(0.5)


@click.command()
@click.option("--tree", "trees", multiple=True, required=True, metavar="NAME=PATH")
@click.option("--preset", default="tiny", show_default=True)
@click.option("--data-dir", default=str(DEFAULT_DATA), show_default=True)
@click.option("--repeats", default=3, show_default=True)
@click.option("--set", "overrides", multiple=True, default=("data.classes=airplane,automobile,bird",),
              show_default=True)
@click.option("--smoke", is_flag=True, help="Seconds, to show the script still runs (tests/test_scripts.py): the tiny "
                                            "preset, 1 repeat.")
def main(trees, preset, data_dir, repeats, overrides, smoke):
    if smoke:
        preset, repeats = "tiny", 1
    arms = [(t.split("=", 1)[0], Path(t.split("=", 1)[1])) for t in trees]
    args = ["--preset", preset, "--data-dir", data_dir, *[a for o in overrides for a in ("--set", o)]]
    work = Path(tempfile.mkdtemp(prefix="bench-store-"))
    cache = str(work / "cache")
    # Decode the images once, outside every measurement.
    timed(arms[0][1], args, f"sqlite:///{work / 'warm.db'}", cache, str(work))
    table = {}
    for name, tree in arms:
        uri = f"sqlite:///{work / f'count-{name}.db'}"
        table[name] = {"cold": counted(tree, args, uri, cache, str(work)),
                       "cached": counted(tree, args, uri, cache, str(work))}
    times: dict[tuple[str, str], list[float]] = {}
    server, url = _server(work)
    try:
        for r in range(repeats):
            for name, tree in arms:  # interleaved: this machine's speed drifts
                uri = f"sqlite:///{work / f'time-{name}-{r}.db'}"
                times.setdefault((name, "cold sqlite"), []).append(timed(tree, args, uri, cache, str(work)))
                times.setdefault((name, "cached sqlite"), []).append(timed(tree, args, uri, cache, str(work)))
                server_args = [*args, "--experiment", f"{name}-{r}"]
                if r == 0:
                    timed(tree, server_args, url, cache, str(work))  # cold, to be reused
                else:
                    server_args = [*args, "--experiment", f"{name}-0"]
                times.setdefault((name, "cached server"), []).append(timed(tree, server_args, url, cache, str(work)))
    finally:
        os.killpg(server.pid, 9)  # the server and its uvicorn and job-runner children
    from harness.table import PHASES
    order = ["pipeline", *PHASES]  # the table's order: a new phase (the control) sorts where it runs
    phases = sorted({p for arm in table.values() for run in arm.values() for p in per_phase(run)},
                    key=lambda p: order.index(p) if p in order else len(order))
    click.echo(f"harness run {' '.join(args)}\n")
    click.echo("store calls per phase (tracking + artifacts), cold | cached:")
    click.echo("| phase | " + " | ".join(f"{n} cold | {n} cached" for n, _ in arms) + " |")
    click.echo("| --- |" + " ---: | ---: |" * len(arms))
    for p in phases + ["total"]:
        cells = []
        for n, _ in arms:
            for kind in ("cold", "cached"):
                counts = per_phase(table[n][kind])
                cells.append(str(sum(counts.values()) if p == "total" else counts.get(p, 0)))
        click.echo(f"| {p} | " + " | ".join(cells) + " |")
    click.echo(f"\nwall time, median of {repeats} (best):")
    for what in ("cold sqlite", "cached sqlite", "cached server"):
        first = statistics.median(times[(arms[0][0], what)])
        line = [f"{n} {statistics.median(times[(n, what)]):.2f} s ({min(times[(n, what)]):.2f})" for n, _ in arms]
        ratios = [f"{n}/{arms[0][0]} {statistics.median(times[(n, what)]) / first:.2f}x" for n, _ in arms[1:]]
        click.echo(f"  {what}: {'; '.join(line)}" + (f"; {', '.join(ratios)}" if ratios else ""))
    detail = work / "calls.json"
    detail.write_text(json.dumps(table, indent=1))
    click.echo(f"\nper-method counts: {detail}")


if __name__ == "__main__":
    main()
