"""MLflow plumbing: the tracking store, phase runs (nested under a parent when there is one), tags
that say what produced a result, and batched logging (one call per phase, not per step: each
MLflow call costs ~10 ms on SQLite).
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
import os
import platform
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import mlflow
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from harness import __version__
from harness.config import Config, config_hash, flat
from harness.errors import HarnessError

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"  # MLflow's own default since 3.x
PACKAGE_DIR = Path(__file__).resolve().parent


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def configure(experiment: str) -> str:
    """Point MLflow at the tracking store, check it answers, and return the experiment id.

    Checked before any training starts, so an unreachable store costs seconds, not a lost run.
    """
    global _experiment_id
    uri = tracking_uri()
    if uri.startswith(("http://", "https://")):
        # MLflow retries a dead server for minutes by default; fail fast and say so instead.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    mlflow.set_tracking_uri(uri)
    try:
        client = MlflowClient(uri)
        if os.environ.get("MLFLOW_RUN_ID"):
            # Under `mlflow run`, the run it started becomes our top-level run, so we must log to
            # its experiment (choose it with `mlflow run --experiment-name`).
            exp_id = client.get_run(os.environ["MLFLOW_RUN_ID"]).info.experiment_id
            mlflow.set_experiment(experiment_id=exp_id)
            _experiment_id = exp_id
            return exp_id
        exp = client.get_experiment_by_name(experiment)
        if exp is None:
            try:
                # The UI opens classic-ML experiments in the runs table, not the GenAI view.
                exp_id = client.create_experiment(experiment, tags={"mlflow.experimentKind": "custom_model_development"})
            except Exception:
                exp = client.get_experiment_by_name(experiment)  # another worker created it just now
                if exp is None:
                    raise
                exp_id = exp.experiment_id
        else:
            if exp.lifecycle_stage == "deleted":
                raise HarnessError(f"experiment {experiment!r} is deleted in {uri}; restore it or pick another --experiment")
            exp_id = exp.experiment_id
    except HarnessError:
        raise
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise HarnessError(f"cannot reach the MLflow tracking store {uri!r} ({first[:300]}); "
                           "check MLFLOW_TRACKING_URI") from None
    mlflow.set_experiment(experiment_id=exp_id)
    _experiment_id = exp_id
    return exp_id


# ---------------------------------------------------------------------------------------------
# What produced a result

@functools.lru_cache(maxsize=None)
def code_version() -> str:
    """Hash of the package source: unlike a git commit, it also changes with uncommitted edits.
    Read once per process: it names the code that was imported, even if files change meanwhile."""
    h = hashlib.sha256()
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        h.update(path.relative_to(PACKAGE_DIR).as_posix().encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:12]


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PACKAGE_DIR, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def provenance_tags() -> dict[str, str]:
    return dict(_provenance())


@functools.lru_cache(maxsize=1)
def _provenance() -> dict[str, str]:
    # Once per process, like code_version(): a sweep opens hundreds of runs, and `git rev-parse`
    # per run cost more than the run itself.
    import numpy
    import sklearn
    import torch
    import torchvision
    tags = {"harness.code_version": code_version(), "harness.version": __version__,
            "harness.versions.python": platform.python_version(), "harness.versions.torch": torch.__version__,
            "harness.versions.torchvision": torchvision.__version__, "harness.versions.mlflow": mlflow.__version__,
            "harness.versions.numpy": numpy.__version__, "harness.versions.sklearn": sklearn.__version__}
    commit = git_commit()
    if commit:
        tags["mlflow.source.git.commit"] = commit
    return tags


# ---------------------------------------------------------------------------------------------
# Runs

_experiment_id: str | None = None
NOTE = "mlflow.note.content"  # the run description the MLflow UI shows, in Markdown


def describe(markdown: str) -> None:
    """The active run's description: what the phase did and its headline figures."""
    mlflow.set_tag(NOTE, markdown)


def experiment_id() -> str:
    if _experiment_id is None:
        raise RuntimeError("tracking.configure() must run first")
    return _experiment_id


def find_runs(key: str, statuses=("FINISHED",), max_results: int = 1):
    """Most recent runs of this experiment that *computed* the phase with cache key `key`."""
    runs = MlflowClient().search_runs([experiment_id()], f"tags.`harness.cache_key` = '{key}'",
                                      order_by=["attributes.start_time DESC"], max_results=50)
    return [r for r in runs if r.info.status in statuses][:max_results]


def find_finished(key: str):
    runs = find_runs(key)
    return runs[0] if runs else None


@dataclass
class PhaseRun:
    run: mlflow.ActiveRun
    hit: object | None  # the FINISHED run reused instead of computing, if any

    @property
    def run_id(self) -> str:
        return self.run.info.run_id

    @property
    def source_id(self) -> str:
        """The run that holds this phase's artifacts: the reused one, or this one."""
        return self.hit.info.run_id if self.hit is not None else self.run.info.run_id


@contextlib.contextmanager
def phase_run(phase: str, cfg: Config, run_name: str | None = None, extra_params: dict | None = None,
              tags: dict | None = None, key: str | None = None, use_cache: bool = True):
    """One MLflow run for one phase, nested under the active run if there is one.

    With a cache `key`, a FINISHED run of the experiment with that key is reused: the new run is
    tagged `harness.reused_from` and copies its metrics, and `.hit` tells the phase to load the
    artifacts from there instead of computing. The run ends FINISHED on success, KILLED on Ctrl-C /
    SIGTERM and FAILED on any other error, never left RUNNING.
    """
    hit = find_finished(key) if key and use_cache else None
    all_tags = {"harness.phase": phase, "harness.config_hash": config_hash(cfg), "harness.preset": cfg.preset,
                **provenance_tags(), **(tags or {})}
    if key:
        all_tags["harness.cache_hit" if hit else "harness.cache_key"] = key
    if hit:
        all_tags["harness.reused_from"] = hit.info.run_id
    run = mlflow.start_run(run_name=run_name or phase, nested=mlflow.active_run() is not None,
                           tags={k: str(v) for k, v in all_tags.items()})
    try:
        # One write for params (+ a reused run's metrics and description): a sweep opens runs
        # every trial, and every MLflow call is a SQLite transaction.
        log_batch(params={**flat(cfg), **(extra_params or {})}, metrics=hit.data.metrics if hit else None,
                  tags={NOTE: f"Reused: identical config, inputs and code as run `{hit.info.run_id}`, whose "
                              f"artifacts this phase used.\n\n{hit.data.tags.get(NOTE, '')}"} if hit else None)
        yield PhaseRun(run, hit)
    except BaseException as e:
        # Ctrl-C, SIGTERM and an Optuna pruning decision stop a run on purpose: KILLED, not FAILED.
        stopped = isinstance(e, KeyboardInterrupt) or type(e).__name__ == "TrialPruned"
        if type(e).__name__ == "TrialPruned":
            mlflow.set_tag("harness.pruned", "true")
        mlflow.end_run("KILLED" if stopped else "FAILED")
        raise
    else:
        mlflow.end_run("FINISHED")


def log_batch(params: dict | None = None, metrics: dict | None = None, tags: dict | None = None,
              run_id: str | None = None) -> None:
    """Params, metrics and tags of the active run in one call, which MLflow splits at its limits."""
    run_id = run_id or mlflow.active_run().info.run_id
    now = int(time.time() * 1000)
    params = [Param(k, str(v)) for k, v in (params or {}).items()]
    metrics = [Metric(k, float(v), now, 0) for k, v in (metrics or {}).items()]
    tags = [RunTag(k, str(v)) for k, v in (tags or {}).items()]
    MlflowClient().log_batch(run_id, metrics=metrics, params=params, tags=tags, synchronous=True)


def log_history(epochs: list[dict[str, float]], run_id: str | None = None) -> None:
    """Per-epoch curves (step = epoch) in as few calls as MLflow allows (1000 metrics per batch)."""
    log_history_rows(epochs, 1, run_id)


def log_history_rows(rows: list[dict[str, float]], first_step: int, run_id: str | None = None) -> None:
    if not rows:
        return
    run_id = run_id or mlflow.active_run().info.run_id
    now = int(time.time() * 1000)
    metrics = [Metric(key, float(value), now, step)
               for step, row in enumerate(rows, first_step) for key, value in row.items()]
    MlflowClient().log_batch(run_id, metrics=metrics, synchronous=True)  # split at 1000 by MLflow


def log_figure(fig, path: str) -> None:
    import matplotlib.pyplot as plt
    mlflow.log_figure(fig, path)
    plt.close(fig)


def log_torch(obj, path: str) -> None:
    """torch.save an object (a state dict + the config that made it) as an artifact."""
    import torch
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / Path(path).name
        torch.save(obj, target)
        parent = str(Path(path).parent)
        mlflow.log_artifact(str(target), artifact_path=None if parent == "." else parent)


def download(run_id: str, path: str) -> str:
    return mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path, dst_path=tempfile.mkdtemp(prefix="harness-"))


def load_torch(run_id: str, path: str):
    import torch
    return torch.load(download(run_id, path), map_location="cpu", weights_only=True)


def log_npz(path: str, **arrays) -> None:
    import numpy as np
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / Path(path).name
        # Uncompressed: GAN samples barely compress (2.3x) and zlib costs ~0.3 s per 1000 images,
        # which dominated a reused sweep trial.
        np.savez(target, **arrays)
        parent = str(Path(path).parent)
        mlflow.log_artifact(str(target), artifact_path=None if parent == "." else parent)


def load_npz(run_id: str, path: str) -> dict:
    import numpy as np
    with np.load(download(run_id, path)) as f:
        return {k: f[k] for k in f.files}


def log_image_grid(images_uint8, path: str, nrow: int = 8) -> None:
    """A grid of uint8 [N, 3, H, W] images as a PNG artifact."""
    from torchvision.utils import make_grid
    if len(images_uint8) == 0:
        return
    grid = make_grid(images_uint8, nrow=nrow, padding=2, pad_value=255)
    mlflow.log_image(grid.permute(1, 2, 0).numpy(), path)


def csv_text(header: list[str], rows) -> str:
    buf = io.StringIO()
    buf.write(",".join(header) + "\n")
    for row in rows:
        buf.write(",".join(str(v) for v in row) + "\n")
    return buf.getvalue()


def log_json(obj, path: str) -> None:
    mlflow.log_text(json.dumps(obj, indent=2, sort_keys=True), path)
