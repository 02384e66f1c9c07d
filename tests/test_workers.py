"""Many workers, one study: cold sweep workers that train the baseline and the GAN once between them,
one MLflow parent per study, a worker killed with SIGKILL mid-trial and restarted, and no password
anywhere. Each test runs on SQLite, and on PostgreSQL behind a real MLflow tracking server where
HARNESS_TEST_POSTGRES names one (`.ci/run` starts both)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient

from test_faults import _free_port, _stop

CLASSES = ["--set", "data.classes=airplane,automobile,bird"]
SPEC = '[space."pseudolabel.threshold"]\ntype = "float"\nlow = 0.0\nhigh = 0.5\n[pruner]\ntype = "none"\n'
POSTGRES = os.environ.get("HARNESS_TEST_POSTGRES")  # postgresql+psycopg://user:password@127.0.0.1:port (no database)


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """An MLflow tracking server on loopback over PostgreSQL, artifacts proxied; None without PostgreSQL."""
    if not POSTGRES:
        yield None
        return
    import urllib.request
    root = tmp_path_factory.mktemp("server")
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"{POSTGRES}/mlflow",
                             "--artifacts-destination", str(root / "artifacts"), "--host", "127.0.0.1",
                             "--port", str(port), "--workers", "2"], cwd=root, stdout=subprocess.DEVNULL,
                            stderr=open(root / "server.log", "w"), start_new_session=True)
    deadline = time.time() + 180
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                break
        except OSError:
            if time.time() > deadline or proc.poll() is not None:
                _stop(proc)
                pytest.fail(f"the MLflow server over PostgreSQL did not start: {(root / 'server.log').read_text()[-2000:]}")
            time.sleep(0.5)
    yield f"http://127.0.0.1:{port}"
    _stop(proc)


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request, tmp_path, template_db, mlflow_server):
    """(tracking URI, Optuna storage URL, experiment name) on one backend, fresh for the test."""
    if request.param == "postgresql":
        if not POSTGRES:
            pytest.skip("HARNESS_TEST_POSTGRES is not set (.ci/run starts PostgreSQL and sets it)")
        return mlflow_server, f"{POSTGRES}/optuna", f"harness-{uuid.uuid4().hex[:8]}"
    import shutil
    shutil.copy(template_db, tmp_path / "mlflow.db")
    return f"sqlite:///{tmp_path / 'mlflow.db'}", f"sqlite:///{tmp_path / 'optuna.db'}", "harness"


def _env(tracking: str, tmp_path: Path) -> dict:
    env = dict(os.environ, MLFLOW_TRACKING_URI=tracking, HARNESS_CACHE_DIR=str(tmp_path / "cache"),
               HARNESS_HEARTBEAT_SECONDS="1")
    env.pop("MLFLOW_RUN_ID", None)
    return env


def _sweep(tree, tmp_path, storage, experiment, study, trials, seed):
    spec = tmp_path / "spec.toml"
    spec.write_text(SPEC)
    return [sys.executable, "-m", "harness", "sweep", "--preset", "tiny", "--data-dir", str(tree), *CLASSES,
            "--spec", str(spec), "--study", study, "--storage", storage, "--trials", str(trials),
            "--experiment", experiment, "--sampler-seed", str(seed)]


def _runs(client, experiment, phase):
    exp = client.get_experiment_by_name(experiment).experiment_id
    return client.search_runs([exp], f"tags.`harness.phase` = '{phase}'", max_results=1000)


def _pid(run) -> str:
    return run.data.tags.get("harness.owner", "::").rsplit(":", 2)[1]


def test_two_cold_sweep_workers_train_the_shared_phases_once(backend, tree, tmp_path):
    tracking, storage, experiment = backend
    study = f"cold-{uuid.uuid4().hex[:6]}"
    env = _env(tracking, tmp_path)
    workers = [subprocess.Popen(_sweep(tree, tmp_path, storage, experiment, study, 6, i), env=env, cwd=tmp_path,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(2)]
    outs = [w.communicate(timeout=900)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outs[0][-2000:] + outs[1][-2000:]
    client = MlflowClient(tracking)
    for phase in ("baseline", "generator"):  # started together, cold: one trained it, the other waited and reused
        computed = [r for r in _runs(client, experiment, phase) if "harness.reused_from" not in r.data.tags]
        assert len(computed) == 1, phase
    loaded = optuna.load_study(study_name=study, storage=storage)
    done = [t for t in loaded.get_trials(states=(optuna.trial.TrialState.COMPLETE,))]
    assert len(done) == 6
    (parent,) = _runs(client, experiment, "sweep")  # one study, one parent
    trial_runs = _runs(client, experiment, "trial")
    assert {r.data.tags["mlflow.parentRunId"] for r in trial_runs} == {parent.info.run_id}
    every = client.search_runs([parent.info.experiment_id], max_results=1000)
    assert len({_pid(r) for r in every}) == 2  # both worked (which of them ran trials is the scheduler's call)
    assert not [r for r in client.search_runs([parent.info.experiment_id], "attributes.status = 'RUNNING'")]
    if "@" in storage:  # PostgreSQL: the password is in the URL every worker was given
        from urllib.parse import urlsplit
        _secrets_nowhere(client, experiment, urlsplit(storage).password, *outs)


def test_a_sigkilled_sweep_worker_loses_no_trial(backend, tree, tmp_path):
    tracking, storage, experiment = backend
    study = f"kill-{uuid.uuid4().hex[:6]}"
    env = _env(tracking, tmp_path)
    start = lambda seed: subprocess.Popen(_sweep(tree, tmp_path, storage, experiment, study, 8, seed), env=env,  # noqa: E731
                                          cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    victim, other = start(0), start(1)
    client = MlflowClient(tracking)
    deadline = time.time() + 900
    while True:  # a trial of the victim's, in the middle of its training
        exp = client.get_experiment_by_name(experiment)
        mine = [r for r in client.search_runs([exp.experiment_id], "tags.`harness.phase` = 'synthetic' and "
                                              "attributes.status = 'RUNNING'")] if exp else []
        if any(_pid(r) == str(victim.pid) for r in mine):
            break
        assert victim.poll() is None and time.time() < deadline, victim.communicate()[0][-2000:]
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=60)
    # What the victim left RUNNING, read after the kill: the synthetic run seen above may have ended
    # between that search and the signal (a tiny phase lasts well under a second), so this, not that
    # run, is what must be reaped. The study's one `sweep` parent is not the victim's alone, though
    # it may have opened it: the other workers joined it, and the last to leave ends it FINISHED.
    orphans = {r.info.run_id: r.data.tags["harness.phase"] for r in client.search_runs(
        [exp.experiment_id], "attributes.status = 'RUNNING'", max_results=1000)
        if _pid(r) == str(victim.pid) and r.data.tags.get("harness.phase") != "sweep"}
    assert "trial" in orphans.values()
    time.sleep(5)
    restarted = start(2)
    outs = [p.communicate(timeout=900)[0] for p in (other, restarted)]
    assert [other.returncode, restarted.returncode] == [0, 0], outs[0][-2000:] + outs[1][-2000:]
    loaded = optuna.load_study(study_name=study, storage=storage)
    by_state = {s: [t for t in loaded.trials if t.state == s] for s in optuna.trial.TrialState}
    assert len(by_state[optuna.trial.TrialState.COMPLETE]) == 8
    failed = by_state[optuna.trial.TrialState.FAIL]
    assert len(failed) == 1  # the killed worker's trial, failed when its heartbeat went stale, then retried
    assert not any(t.user_attrs.get("harness.surplus") for t in loaded.trials if t.state != optuna.trial.TrialState.PRUNED)
    exp = client.get_experiment_by_name(experiment).experiment_id
    assert client.search_runs([exp], "attributes.status = 'RUNNING'") == []  # nothing left RUNNING
    for run_id in orphans:  # each marked FAILED, with the reason, by the command that found it dead
        run = client.get_run(run_id)
        assert run.info.status == "FAILED" and "harness.died" in run.data.tags, (orphans[run_id], run.data.tags)


def _secrets_nowhere(client, experiment, secret, *outputs):
    """No tag, param or description of any run, and no printed line, holds the password."""
    assert secret
    exp = client.get_experiment_by_name(experiment).experiment_id
    for run in client.search_runs([exp], max_results=5000):
        for where in (run.data.tags, run.data.params):
            leaks = [k for k, v in where.items() if secret in str(v)]
            assert not leaks, (run.info.run_id, leaks)
    assert not any(secret in out for out in outputs)


def test_a_grid_is_pulled_by_two_workers_each_item_once(backend, tree, tmp_path):
    tracking, storage, experiment = backend
    study = f"grid-{uuid.uuid4().hex[:6]}"
    env = _env(tracking, tmp_path)
    base = ["--data-dir", str(tree), "--experiment", experiment, "--storage", storage, "--study", study]
    plan = subprocess.run([sys.executable, "-m", "harness", "grid", "--preset", "tiny", *CLASSES, *base,
                           "--axis", "data.n_per_class=10,20", "--seeds", "2", "--plan-only"],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert plan.returncode == 0 and "4 new items" in plan.stderr, plan.stderr[-2000:]
    workers = [subprocess.Popen([sys.executable, "-m", "harness", "worker", *base], env=env, cwd=tmp_path,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outs = [w.communicate(timeout=900)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outs[0][-2000:] + outs[1][-2000:]
    loaded = optuna.load_study(study_name=study, storage=storage)
    done = loaded.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert sorted((t.user_attrs["cell"], t.user_attrs["seed"]) for t in done) == \
        [(f"data.n_per_class={n}", s) for n in (10, 20) for s in (0, 1)]  # each item once
    client = MlflowClient(tracking)
    pipes = _runs(client, experiment, "pipeline")
    assert len(pipes) == 4 and {t.user_attrs["pipeline_run"] for t in done} == {p.info.run_id for p in pipes}
    (parent,) = _runs(client, experiment, "grid")
    assert {p.data.tags["mlflow.parentRunId"] for p in pipes} == {parent.info.run_id}
    assert any("grid.md" == a.path for a in client.list_artifacts(parent.info.run_id))
    assert not client.search_runs([parent.info.experiment_id], "attributes.status = 'RUNNING'")
    if "@" in storage:
        from urllib.parse import urlsplit
        _secrets_nowhere(client, experiment, urlsplit(storage).password, plan.stdout, plan.stderr, *outs)


def test_a_password_in_a_url_is_never_printed(runner, tree, tmp_path, monkeypatch):
    from conftest import invoke
    secret = "s3cret-Pa55word"
    out = invoke(runner, ["sweep", "--preset", "tiny", "--data-dir", tree, *CLASSES, "--storage",
                          f"postgresql+psycopg://harness:{secret}@127.0.0.1:1/optuna"], ok=False)
    assert out.exit_code == 2 and "***" in out.stderr and secret not in out.output
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://harness:{secret}@127.0.0.1:9")
    out = invoke(runner, ["baseline", "--preset", "tiny", "--data-dir", tree, *CLASSES], ok=False)
    assert out.exit_code == 2 and "harness:***@127.0.0.1:9" in out.stderr and secret not in out.output
