"""Shared fixtures: an MLflow SQLite store per test (copied from one migrated template), a small
generated CIFAR-like class-folder tree, and the path of the real data when it is there."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

if os.environ.get("PYTEST_XDIST_WORKER"):
    # Two test processes on two cores: one torch thread each (and in the commands they start), or
    # their thread pools oversubscribe the cores and every test runs several times slower.
    os.environ.setdefault("OMP_NUM_THREADS", "1")

import mlflow
import numpy as np
import pytest
from click.testing import CliRunner
from mlflow.tracking import MlflowClient

REAL_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "cifar10"
TREE_CLASSES = ("airplane", "automobile", "bird", "cat")
# Each class is a noisy image around its own colour, so a classifier can learn it in a few steps.
TREE_COLOURS = {"airplane": (200, 60, 60), "automobile": (60, 200, 60), "bird": (60, 60, 200), "cat": (200, 200, 60)}


# Tests that start processes of their own (servers, browsers, workers, Slurm jobs, our scripts) take tens of seconds
# each: on two test processes they go first, so that the last minutes are not one long test alone.
# test_ui.py is not among them: headless Chromium beside the multi-process tests at the start (two workers,
# PostgreSQL, Slurm on 2 cores) twice stalled for minutes in CI on pages it renders in seconds; among the
# light tests at the end it costs at most its own ~90 s of tail.
FIRST = ("test_workers.py", "test_slurm.py", "test_faults.py", "test_cli.py", "test_pipeline.py", "test_scripts.py")


def browser() -> str:
    """A headless-capable Chromium: CI must have one (.ci/run installs Debian's); elsewhere its tests skip."""
    found = next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("CI must run the browser tests: .ci/run installs Debian's chromium")
        pytest.skip("no Chromium on this machine (apt-get install chromium); these tests need a real browser")
    return found


def pytest_collection_modifyitems(items):
    items.sort(key=lambda item: FIRST.index(item.path.name) if item.path.name in FIRST else len(FIRST))


@pytest.fixture(scope="session")
def template_db(tmp_path_factory) -> Path:
    """MLflow's schema migration takes seconds: do it once, copy the file per test."""
    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch, tmp_path_factory):
    """Every test gets its own decoded-image cache dir and working dir; no MLflow run leaks out."""
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("HARNESS_DATA_DIR", raising=False)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    monkeypatch.chdir(tmp_path)
    yield
    while mlflow.active_run():
        mlflow.end_run()


@pytest.fixture
def tracking_uri(template_db, tmp_path, monkeypatch) -> str:
    db = tmp_path / "mlflow.db"
    shutil.copy(template_db, db)
    uri = f"sqlite:///{db}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri


@pytest.fixture
def client(tracking_uri) -> MlflowClient:
    return MlflowClient(tracking_uri)


def write_tree(root: Path, n_train: int = 40, n_test: int = 12, seed: int = 0, colours: dict | None = None,
               noise: float = 40) -> Path:
    from PIL import Image
    rng = np.random.default_rng(seed)
    colours = colours or TREE_COLOURS
    for split, n in (("train", n_train), ("test", n_test)):
        for name in colours:
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(n):
                img = np.clip(rng.normal(colours[name], noise, (32, 32, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(img).save(folder / f"{name}_{i:04d}.png")
    return root


@pytest.fixture(scope="session")
def tree_template(tmp_path_factory) -> Path:
    return write_tree(tmp_path_factory.mktemp("tree") / "cifar")


@pytest.fixture
def tree(tree_template, tmp_path) -> Path:
    """A fresh copy per test, so a test may corrupt it."""
    return Path(shutil.copytree(tree_template, tmp_path / "cifar"))


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def real_data() -> Path:
    if not (REAL_DATA / "train" / "airplane").is_dir():
        pytest.skip(f"the real CIFAR-10 folder {REAL_DATA} is absent (it sits beside the repo in CI)")
    return REAL_DATA


def install_plugin(root: Path, module: str, source: str, group: str, name: str, monkeypatch) -> None:
    """A plugin distribution as pip leaves one: its module and a dist-info with the entry point."""
    root.mkdir()
    (root / f"{module}.py").write_text(source)
    info = root / f"{module}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module.replace('_', '-')}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[{group}]\n{name} = {module}\n")
    monkeypatch.syspath_prepend(str(root))


def invoke(runner, args, ok=True):
    """Run the real CLI in-process; on an unexpected exit code show what it printed."""
    from harness.cli import main
    result = runner.invoke(main, [str(a) for a in args], catch_exceptions=False)
    if ok:
        assert result.exit_code == 0, result.output
    return result
