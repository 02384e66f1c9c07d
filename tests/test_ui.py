"""The MLflow UI as a user sees it: `harness ui` serves a tiny pipeline's store, and headless
Chromium renders the runs table, the pipeline run's page, the generator's image series with its step
slider, the Models tab and a reused run that leads to its source."""
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from chromium import BrowserGone, Chromium
from conftest import browser as _browser, invoke


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pages(browser: str, pages: dict, profile: Path, timeout: float = 240, tries: int = 2) -> dict[str, str]:
    """Every page's HTML once it holds its words (tests/chromium.py: one browser, a window each, read by the
    wall clock). A browser that stops answering is started again on a fresh profile; after `tries` the
    test is skipped: the browser, not the harness, is what failed, and nothing about the pages was seen."""
    for attempt in range(tries):
        try:
            # Every host but the UI's fails at once: the UI's fetches to the internet (absent here) would
            # otherwise wait for DNS.
            with Chromium(browser, profile.with_name(f"{profile.name}-{attempt}"),
                          extra=("--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",)) as chromium:
                return chromium.wait_for(pages, timeout)
        except BrowserGone as e:
            why = e
    pytest.skip(f"headless Chromium stopped answering {tries} times ({why}); the UI was not checked")


def test_ui_shows_runs_metrics_and_samples(runner, client, tree, tracking_uri, tmp_path):
    browser = _browser()
    args = ["run", "--preset", "tiny", "--data-dir", tree, "--set", "data.classes=airplane,automobile,bird"]
    invoke(runner, args)
    invoke(runner, args)  # the second pipeline reuses every phase
    exp = client.get_experiment_by_name("harness")
    parent, _ = client.search_runs([exp.experiment_id], "tags.`harness.phase` = 'pipeline'",
                                   order_by=["attributes.start_time ASC"])
    gan, reused = client.search_runs([exp.experiment_id], "tags.`harness.phase` = 'generator'",
                                     order_by=["attributes.start_time ASC"])

    port = _free_port()
    env = dict(os.environ, MLFLOW_TRACKING_URI=tracking_uri)
    server = subprocess.Popen([sys.executable, "-m", "harness", "ui", "--port", str(port)], cwd=tmp_path, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.time() + 90
        while True:
            try:
                if urllib.request.urlopen(f"{base}/health", timeout=2).read() == b"OK":
                    break
            except OSError:
                pass
            assert server.poll() is None, server.stdout.read()
            assert time.time() < deadline, "mlflow server did not come up in 90 s"
            time.sleep(0.5)
        exp_url = f"{base}/#/experiments/{exp.experiment_id}"

        # The five pages load at once, each in a window of one browser, each read once it shows what is
        # asserted below (or after 4 minutes, as it then stands).
        ml = "?workflowType=machine_learning"  # the UI's classic-ML view, whatever the browser's last choice
        got = _pages(browser, {
            "runs": (f"{exp_url}/runs", ("pipeline seed=0",)),
            "run": (f"{exp_url}/runs/{parent.info.run_id}", ("Child runs", ">compare<", ">baseline<",
                                                              "control/test_accuracy", "effect: ")),
            "charts": (f"{exp_url}/runs/{gan.info.run_id}/model-metrics{ml}", ("gan/samples", 'role="slider"')),
            "models": (f"{exp_url}/models{ml}", (">generator<", ">baseline<", ">synthetic<")),
            "reused": (f"{exp_url}/runs/{reused.info.run_id}{ml}", ("Reused", f"run {gan.info.run_id}"))},
            tmp_path / "profile")
        runs_page, run_page, charts, models, page = (got[k] for k in ("runs", "run", "charts", "models", "reused"))
        assert "pipeline seed=0" in runs_page

        text = " ".join(run_page.split())
        assert "Child runs" in text
        for name in ("baseline", "generator", "generate", "pseudolabel", "control", "synthetic", "compare"):
            assert f">{name}<" in run_page.replace(" ", ""), name
        assert "baseline/test_accuracy" in run_page and "delta/accuracy" in run_page
        assert "images/accuracy" in run_page and "control/test_accuracy" in run_page
        assert "effect: " in run_page and "Control" in run_page  # the Markdown description: the images' effect first

        # The generator's sample grids: one image chart, gan/samples, with a step slider.
        assert "gan/samples" in charts and 'role="slider"' in charts
        # The Models tab lists the logged classifiers and generator checkpoints.
        assert ">generator<" in models and ">baseline<" in models and ">synthetic<" in models
        # A reused run says where its outputs are, first thing on its page.
        assert "Reused" in page and f"run {gan.info.run_id}" in page
    finally:
        os.killpg(server.pid, 15)
        out = server.communicate(timeout=30)[0]
    # What `harness ui` told the user: the runs table's address.
    assert f"runs table: http://127.0.0.1:{port}/#/experiments/{exp.experiment_id}/runs" in out


@pytest.mark.scripts  # studies/ui_shots.py's smoke mode (100 s): CI's second step, with the other scripts
def test_ui_shots_photograph_a_grid_only_once_its_chart_has_drawn(tmp_path):
    # studies/ui_shots.py on a tiny grid of its own: the runs table (baseline in percent, the images'
    # effect in points), the chart (plotly's bars in the page before the picture is taken) and a run page.
    _browser()
    out = tmp_path / "shots"
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, str(root / "studies" / "ui_shots.py"), "--smoke", str(out)],
                          capture_output=True, text=True, timeout=540)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    from PIL import Image
    for name in ("runs-table.png", "runs-chart.png", "pipeline-run.png"):
        with Image.open(out / name) as img:
            assert img.size == (1600, 900), name
            assert len(img.convert("RGB").getcolors(1 << 20) or ()) > 50, name  # a drawn page, not a blank one
