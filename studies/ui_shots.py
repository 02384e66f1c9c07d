"""Pictures of a grid in the MLflow UI, as a user sees them in a browser: the runs table through the
grid's saved view (its pipelines grouped by cell: the baseline in percent, the images' effect in points),
the chart view of the images' effect per cell, and one pipeline's run page. Serves the study's store with
`mlflow server` and renders each page in headless Chromium; a page is saved only once it has drawn
(the chart's bars, the table's columns, the run's description are in the page): a screenshot of a
loading spinner fails the script instead.

    python studies/ui_shots.py STUDY WORK_DIR OUT_DIR [--experiment NAME]   # OUT_DIR/runs-table.png, ...
    python studies/ui_shots.py --smoke OUT_DIR                              # a tiny grid of its own, ~2 min

WORK_DIR holds the study's mlflow.db and optuna.db (studies/grid.sh). The page is opened under a
hostname other than localhost (mapped to 127.0.0.1 in the browser): MLflow opens its Assistant panel
on localhost pages, over a third of the screen, and no setting closes it.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import click

HOST = "mlflowui"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def chromium(browser: str, url: str, window: str, budget_ms: int, *action: str, tries: int = 3) -> str:
    """Headless Chromium sometimes never finishes its virtual time (a CI run waited 240 s on a page that
    loads in seconds): a browser past its wall-clock allowance is killed with its children and started
    again on a fresh profile."""
    for _ in range(tries):
        with tempfile.TemporaryDirectory() as profile:
            proc = subprocess.Popen([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                                     f"--host-resolver-rules=MAP {HOST} 127.0.0.1", f"--user-data-dir={profile}",
                                     f"--window-size={window}", f"--virtual-time-budget={budget_ms}", *action, url],
                                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                    start_new_session=True)
            try:
                out = proc.communicate(timeout=90 + budget_ms / 1000)[0]
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
                proc.communicate()
                continue
            if proc.returncode:
                raise click.ClickException(f"Chromium exited {proc.returncode} on {url}")
            return out
    raise click.ClickException(f"headless Chromium hung {tries} times on {url}: no picture saved")


def shoot(browser: str, url: str, out: Path, window: str, budget_ms: int, drawn: tuple[str, ...], tries: int = 3) -> None:
    """The page saved as `out` once its DOM holds every string of `drawn`, given more time each try;
    a page that never draws them is an error, not a picture."""
    for attempt in range(1, tries + 1):
        budget = budget_ms * attempt
        page = chromium(browser, url, window, budget, "--dump-dom")
        missing = [d for d in drawn if d not in page]
        if not missing:
            chromium(browser, url, window, budget, f"--screenshot={out}")
            return
        time.sleep(3)  # a loaded server answers late: give it time before the next, longer try
    raise click.ClickException(f"{url} had not drawn {missing} after {tries} tries (last {budget} ms of virtual "
                               "time): no picture saved")


def tiny_grid(work: Path) -> str:
    """A grid of two cells and one seed each on a generated image tree: what --smoke photographs."""
    import numpy as np
    from PIL import Image
    rng = np.random.default_rng(0)
    for split, n in (("train", 40), ("test", 15)):
        for c in ("airplane", "automobile", "bird"):
            (work / "tree" / split / c).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(work / "tree" / split / c / f"{i}.png")
    env = dict(os.environ, MLFLOW_TRACKING_URI=f"sqlite:///{work / 'mlflow.db'}")
    subprocess.run([sys.executable, "-m", "harness", "grid", "--preset", "tiny", "--data-dir", str(work / "tree"),
                    "--set", "data.classes=airplane,automobile,bird", "--axis", "data.n_per_class=10,20", "--seeds", "1",
                    "--study", "smoke", "--storage", f"sqlite:///{work / 'optuna.db'}", "--experiment", "smoke",
                    "--threads", "1"], check=True, env=env, cwd=work, stdout=subprocess.DEVNULL)
    return "smoke"


@click.command()
@click.argument("args", nargs=-1)
@click.option("--experiment", default=None, help="The study's MLflow experiment [default: STUDY].")
@click.option("--window", default="1600,900", show_default=True)
@click.option("--budget-ms", default=30000, show_default=True, help="Virtual time each page gets to render (first try).")
@click.option("--smoke", is_flag=True, help="Photograph a tiny grid made in a temporary folder: ARGS is OUT_DIR.")
def main(args, experiment, window, budget_ms, smoke):
    """STUDY WORK_DIR OUT_DIR (or --smoke OUT_DIR)."""
    import optuna

    from harness import grid
    from harness.tracking import store
    if smoke:
        if len(args) != 1:
            raise click.UsageError("--smoke takes OUT_DIR")
        work = Path(tempfile.mkdtemp(prefix="ui-shots-"))
        study, out = tiny_grid(work), Path(args[0])
    else:
        if len(args) != 3:
            raise click.UsageError("give STUDY WORK_DIR OUT_DIR")
        study, work, out = args[0], Path(args[1]).resolve(), Path(args[2])
    out.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{work / 'mlflow.db'}"
    os.environ["MLFLOW_TRACKING_URI"] = uri
    s = store.configure(experiment or study, print)
    grid.save_views(s, optuna.load_study(study_name=study, storage=f"sqlite:///{work / 'optuna.db'}"))
    keys = grid.view_keys(study)
    pipelines = s.client.search_runs([s.experiment_id], f"tags.`harness.grid` = '{study}' AND "
                                     "tags.`harness.phase` = 'pipeline' AND attributes.status = 'FINISHED'",
                                     order_by=["attributes.start_time DESC"], max_results=1)  # the newest: today's code
    if not pipelines:
        raise click.ClickException(f"grid {study!r} has no finished pipeline to photograph")
    browser = next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)
    if browser is None:
        raise click.ClickException("no Chromium on this machine (apt-get install chromium)")
    port = free_port()
    env = dict(os.environ, MLFLOW_SERVER_ALLOWED_HOSTS=f"{HOST}:{port},localhost:{port},127.0.0.1:{port}",
               MLFLOW_SERVER_CORS_ALLOWED_ORIGINS=f"http://{HOST}:{port}")
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri, "--host",
                               "127.0.0.1", "--port", str(port)], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    lead = "images/points" if "images/points" in pipelines[0].data.metrics else "delta/points"
    try:
        deadline = time.time() + 120
        while True:
            try:
                if urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).read() == b"OK":
                    break
            except OSError:
                if time.time() > deadline:
                    raise click.ClickException("mlflow server did not come up in 120 s") from None
                time.sleep(0.5)
        base = f"http://{HOST}:{port}/#/experiments/{s.experiment_id}"
        shots = [(f"{base}/runs?viewStateShareKey={keys['table']}&compareRunsMode=TABLE", "runs-table.png",
                  (lead, "baseline/percent", "Group:")),
                 (f"{base}/runs?viewStateShareKey={keys['chart']}&compareRunsMode=CHART", "runs-chart.png",
                  ('class="trace bars"', 'class="point"')),  # plotly's bars: the chart has drawn its data
                 (f"{base}/runs/{pipelines[0].info.run_id}", "pipeline-run.png", ("effect", "Child runs"))]
        for url, name, drawn in shots:
            shoot(browser, url, out / name, window, budget_ms, drawn)
            print(out / name)
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
