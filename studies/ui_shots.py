"""Pictures of a grid in the MLflow UI, as a user sees them in a browser: the runs table through the
grid's saved view (its pipelines grouped by cell, the headline columns) and the chart view of the delta
per cell. Serves the study's store with `mlflow server` and renders each page in headless Chromium.

    python studies/ui_shots.py STUDY WORK_DIR OUT_DIR [--experiment NAME]

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
import optuna

HOST = "mlflowui"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def shoot(browser: str, url: str, out: Path, window: str, budget_ms: int) -> None:
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                        f"--host-resolver-rules=MAP {HOST} 127.0.0.1", f"--user-data-dir={profile}",
                        f"--window-size={window}", f"--virtual-time-budget={budget_ms}", f"--screenshot={out}", url],
                       check=True, capture_output=True, timeout=300)


@click.command()
@click.argument("study")
@click.argument("work_dir", type=click.Path(exists=True, file_okay=False))
@click.argument("out_dir", type=click.Path(file_okay=False))
@click.option("--experiment", default=None, help="The study's MLflow experiment [default: STUDY].")
@click.option("--window", default="1600,900", show_default=True)
@click.option("--budget-ms", default=30000, show_default=True, help="Virtual time each page gets to render.")
def main(study, work_dir, out_dir, experiment, window, budget_ms):
    from harness import grid
    from harness.tracking import store
    work, out = Path(work_dir).resolve(), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{work / 'mlflow.db'}"
    os.environ["MLFLOW_TRACKING_URI"] = uri
    s = store.configure(experiment or study, print)
    grid.save_views(s, optuna.load_study(study_name=study, storage=f"sqlite:///{work / 'optuna.db'}"))
    keys = grid.view_keys(study)
    browser = next(shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b))
    port = free_port()
    env = dict(os.environ, MLFLOW_SERVER_ALLOWED_HOSTS=f"{HOST}:{port},localhost:{port},127.0.0.1:{port}",
               MLFLOW_SERVER_CORS_ALLOWED_ORIGINS=f"http://{HOST}:{port}")
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri, "--host",
                               "127.0.0.1", "--port", str(port)], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 120
        while True:
            try:
                if urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).read() == b"OK":
                    break
            except OSError:
                assert time.time() < deadline, "mlflow server did not come up in 120 s"
                time.sleep(0.5)
        page = f"http://{HOST}:{port}/#/experiments/{s.experiment_id}/runs?viewStateShareKey="
        shoot(browser, page + f"{keys['table']}&compareRunsMode=TABLE", out / f"{study}.runs-table.png", window, budget_ms)
        shoot(browser, page + f"{keys['chart']}&compareRunsMode=CHART", out / f"{study}.runs-chart.png", window, budget_ms)
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)
    print(f"{out / f'{study}.runs-table.png'}\n{out / f'{study}.runs-chart.png'}")


if __name__ == "__main__":
    main()
