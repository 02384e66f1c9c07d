"""Many workers, one study: cold sweep workers that train the baseline and the GAN once between them,
one MLflow parent per study, a worker killed with SIGKILL mid-trial and restarted, and no password
anywhere. Each test runs on SQLite, and on PostgreSQL behind a real MLflow tracking server where
HARNESS_TEST_POSTGRES names one (`.ci/run` starts both)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
import warnings
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient

from test_faults import _free_port, _stop

CLASSES = ["--set", "data.classes=airplane,automobile,bird"]
SPEC = '[space."pseudolabel.threshold"]\ntype = "float"\nlow = 0.0\nhigh = 0.5\n[pruner]\ntype = "none"\n'
POSTGRES = os.environ.get("HARNESS_TEST_POSTGRES")  # postgresql+psycopg://user:password@127.0.0.1:port (no database)


def _rest(server, path: str, body: dict, user: tuple[str, str]) -> dict:
    import base64
    import json
    import urllib.request
    request = urllib.request.Request(f"{server.url}{path}", data=json.dumps(body).encode(), method="POST", headers={
        "Content-Type": "application/json",
        "Authorization": "Basic " + base64.b64encode(f"{user[0]}:{user[1]}".encode()).decode()})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read() or b"{}")


def add_user(server, name: str) -> tuple[str, str]:
    """A new user of the authenticated server (not an admin), with a random password."""
    import secrets
    password = "pw-" + secrets.token_hex(12)
    _rest(server, "/api/2.0/mlflow/users/create", {"username": name, "password": password}, server.admin)
    return name, password


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """An MLflow tracking server on loopback over PostgreSQL, artifacts proxied, with MLflow's own
    authentication (`--app-name basic-auth`: an admin, users who read every experiment and write the
    ones they create or are granted); None without PostgreSQL."""
    if not POSTGRES:
        yield None
        return
    import secrets
    import urllib.request
    from types import SimpleNamespace
    root = tmp_path_factory.mktemp("server")
    port = _free_port()
    admin = ("admin", "adm-" + secrets.token_hex(12))
    import psycopg  # the users' database, new each session: an old one would hold another admin password
    users_db = f"mlflow_auth_{secrets.token_hex(4)}"
    runs_db = f"mlflow_runs_{secrets.token_hex(4)}"  # its own: two test processes' servers never share tables
    with psycopg.connect(POSTGRES.replace("postgresql+psycopg://", "postgresql://") + "/postgres",
                         autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {users_db}")
        conn.execute(f"CREATE DATABASE {runs_db}")
    (root / "auth.ini").write_text(f"[mlflow]\ndefault_permission = READ\ndatabase_uri = {POSTGRES}/{users_db}\n"
                                   f"admin_username = {admin[0]}\nadmin_password = {admin[1]}\nauthorization_function "
                                   "= mlflow.server.auth:authenticate_request_basic_auth\n"
                                   # Without it every request pays a PBKDF2 password check: two workers'
                                   # heartbeats and logs then saturated 2 cores and the runs stalled.
                                   "auth_cache_ttl_seconds = 60\n")
    env = dict(os.environ, MLFLOW_AUTH_CONFIG_PATH=str(root / "auth.ini"),
               MLFLOW_FLASK_SERVER_SECRET_KEY=secrets.token_hex(16))
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--app-name", "basic-auth",
                             "--backend-store-uri", f"{POSTGRES}/{runs_db}", "--artifacts-destination",
                             str(root / "artifacts"), "--host", "127.0.0.1", "--port", str(port), "--workers", "2"],
                            cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=open(root / "server.log", "w"),
                            start_new_session=True)
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
    server = SimpleNamespace(url=f"http://127.0.0.1:{port}", admin=admin)
    try:
        server.worker = add_user(server, "worker")  # what the workers log in as
        yield server
    finally:
        _stop(proc)


# The tests on PostgreSQL share one test process (xdist group), and so one MLflow server: starting it costs ~15 s.
ON_POSTGRES = pytest.mark.xdist_group("postgres")


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=ON_POSTGRES)])
def backend(request, tmp_path, template_db, monkeypatch):
    """(tracking URI, Optuna storage URL, experiment name) on one backend, fresh for the test; the
    server's user and password are in the environment, where MLflow reads them."""
    if request.param == "postgresql":
        if not POSTGRES:
            pytest.skip("HARNESS_TEST_POSTGRES is not set (.ci/run starts PostgreSQL and sets it)")
        # Asked for here only: the SQLite cases start no server (and may run on another test process).
        mlflow_server = request.getfixturevalue("mlflow_server")
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", mlflow_server.worker[0])
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", mlflow_server.worker[1])
        monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # the secrets check reads hundreds
        return mlflow_server.url, f"{POSTGRES}/optuna", f"harness-{uuid.uuid4().hex[:8]}"
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
    workers = [subprocess.Popen(_sweep(tree, tmp_path, storage, experiment, study, 4, i), env=env, cwd=tmp_path,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(2)]
    outs = [w.communicate(timeout=900)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outs[0][-2000:] + outs[1][-2000:]
    client = MlflowClient(tracking)
    for phase in ("baseline", "generator"):  # started together, cold: one trained it, the other waited and reused
        computed = [r for r in _runs(client, experiment, phase) if "harness.reused_from" not in r.data.tags]
        assert len(computed) == 1, phase
    loaded = optuna.load_study(study_name=study, storage=storage)
    done = [t for t in loaded.get_trials(states=(optuna.trial.TrialState.COMPLETE,))]
    assert len(done) == 4
    (parent,) = _runs(client, experiment, "sweep")  # one study, one parent
    trial_runs = _runs(client, experiment, "trial")
    assert {r.data.tags["mlflow.parentRunId"] for r in trial_runs} == {parent.info.run_id}
    every = client.search_runs([parent.info.experiment_id], max_results=1000)
    assert len({_pid(r) for r in every}) == 2  # both worked (which of them ran trials is the scheduler's call)
    assert not [r for r in client.search_runs([parent.info.experiment_id], "attributes.status = 'RUNNING'")]
    if "@" in storage:  # PostgreSQL: the password is in the URL every worker was given, the server's in their env
        _secrets_nowhere(client, experiment, _passwords(storage), *outs)


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
    # The killed worker's trial, failed when its heartbeat went stale, then retried; a trial that failed by
    # itself (the study goes on without it) has its reason recorded, which the test's warnings show.
    killed = sorted(int(client.get_run(r).data.tags["harness.trial"]) for r, phase in orphans.items() if phase == "trial")
    failed = by_state[optuna.trial.TrialState.FAIL]
    said = [ln for out in (victim.stdout.read(), *outs) for ln in out.splitlines() if ln.startswith("sweep trial")]
    assert [t.number for t in failed if "error" not in t.user_attrs] == killed, (
        [(t.number, t.params, t.system_attrs, t.user_attrs) for t in failed], said)
    for t in failed:
        if "error" in t.user_attrs:
            warnings.warn(f"sweep trial {t.number} failed by itself: {t.user_attrs['error']}")
    assert not any(t.user_attrs.get("harness.surplus") for t in loaded.trials if t.state != optuna.trial.TrialState.PRUNED)
    exp = client.get_experiment_by_name(experiment).experiment_id
    assert client.search_runs([exp], "attributes.status = 'RUNNING'") == []  # nothing left RUNNING
    for run_id in orphans:  # each marked FAILED, with the reason, by the command that found it dead
        run = client.get_run(run_id)
        assert run.info.status == "FAILED" and "harness.died" in run.data.tags, (orphans[run_id], run.data.tags)


def _secrets_nowhere(client, experiment, secrets, *outputs):
    """No tag, param or description of any run, no text artifact, and no printed line holds a password
    (the storage's, in its URL; the tracking server's, in MLFLOW_TRACKING_PASSWORD)."""
    assert secrets and all(secrets)
    exp = client.get_experiment_by_name(experiment).experiment_id
    texts = (".json", ".md", ".txt", ".yaml", ".yml", ".csv", "MLmodel")
    for run in client.search_runs([exp], max_results=5000):
        for where in (run.data.tags, run.data.params):
            leaks = [k for k, v in where.items() if any(s in str(v) for s in secrets)]
            assert not leaks, (run.info.run_id, leaks)
        folders = [""]
        while folders:
            for art in client.list_artifacts(run.info.run_id, folders.pop() or None):
                if art.is_dir:
                    folders.append(art.path)
                elif art.path.endswith(texts) and (art.file_size or 0) < 1_000_000:
                    with tempfile.TemporaryDirectory() as tmp:  # through the client: the server proxies artifacts
                        text = Path(client.download_artifacts(run.info.run_id, art.path, tmp)).read_text(errors="replace")
                    assert not any(s in text for s in secrets), (run.info.run_id, art.path)
    assert not any(s in out for s in secrets for out in outputs)


def _passwords(storage: str) -> list[str]:
    from urllib.parse import urlsplit
    return [urlsplit(storage).password, os.environ["MLFLOW_TRACKING_PASSWORD"]]


def test_a_grid_is_pulled_by_two_workers_each_item_once(backend, tree, tmp_path):
    tracking, storage, experiment = backend
    study = f"grid-{uuid.uuid4().hex[:6]}"
    env = _env(tracking, tmp_path)
    base = ["--data-dir", str(tree), "--experiment", experiment, "--storage", storage, "--study", study]
    plan = subprocess.run([sys.executable, "-m", "harness", "grid", "--preset", "tiny", *CLASSES, *base,
                           "--axis", "data.n_per_class=10,20", "--seeds", "2", "--precision", "0.001", "--max-seeds", "3",
                           "--plan-only"],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert plan.returncode == 0 and "4 new items" in plan.stderr and "up to 6" in plan.stderr, plan.stderr[-2000:]
    workers = [subprocess.Popen([sys.executable, "-m", "harness", "worker", *base], env=env, cwd=tmp_path,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outs = [w.communicate(timeout=900)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outs[0][-2000:] + outs[1][-2000:]
    loaded = optuna.load_study(study_name=study, storage=storage)
    done = loaded.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    # A precision no spread meets: after the first round each cell gets its third seed, enqueued by
    # whichever worker finished last (or both: then a copy is pruned), unless its two deltas were equal.
    first = {(t.user_attrs["cell"], t.user_attrs["seed"]): t.value for t in done}
    want = [(f"data.n_per_class={n}", s) for n in (10, 20)
            for s in (0, 1, 2) if s < 2 or first[(f"data.n_per_class={n}", 0)] != first[(f"data.n_per_class={n}", 1)]]
    assert sorted((t.user_attrs["cell"], t.user_attrs["seed"]) for t in done) == want  # each item once
    client = MlflowClient(tracking)
    pipes = _runs(client, experiment, "pipeline")
    assert len(pipes) == len(want) and {t.user_attrs["pipeline_run"] for t in done} == {p.info.run_id for p in pipes}
    (parent,) = _runs(client, experiment, "grid")
    assert {p.data.tags["mlflow.parentRunId"] for p in pipes} == {parent.info.run_id}
    assert any("grid.md" == a.path for a in client.list_artifacts(parent.info.run_id))
    assert not client.search_runs([parent.info.experiment_id], "attributes.status = 'RUNNING'")
    if "@" in storage:
        _secrets_nowhere(client, experiment, _passwords(storage), plan.stdout, plan.stderr, *outs)


def test_a_password_in_a_url_is_never_printed(runner, tree, tmp_path, monkeypatch):
    from conftest import invoke
    secret = "s3cret-Pa55word"
    out = invoke(runner, ["sweep", "--preset", "tiny", "--data-dir", tree, *CLASSES, "--storage",
                          f"postgresql+psycopg://harness:{secret}@127.0.0.1:1/optuna"], ok=False)
    assert out.exit_code == 2 and "***" in out.stderr and secret not in out.output
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://harness:{secret}@127.0.0.1:9")
    out = invoke(runner, ["baseline", "--preset", "tiny", "--data-dir", tree, *CLASSES], ok=False)
    assert out.exit_code == 2 and "harness:***@127.0.0.1:9" in out.stderr and secret not in out.output


@ON_POSTGRES
def test_an_authenticated_server_refuses_in_one_line(mlflow_server, runner, tree, monkeypatch):
    # A wrong password, and a user who may read but not write the experiment: one line naming the
    # server and the user, never the password; exit 2, no traceback, no run opened.
    if not POSTGRES:
        pytest.skip("HARNESS_TEST_POSTGRES is not set (.ci/run starts PostgreSQL and the authenticated server)")
    from conftest import invoke
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
    user, password = add_user(mlflow_server, f"reader-{uuid.uuid4().hex[:6]}")
    experiment = f"locked-{uuid.uuid4().hex[:6]}"
    _rest(mlflow_server, "/api/2.0/mlflow/experiments/create", {"name": experiment}, mlflow_server.admin)
    args = ["baseline", "--preset", "tiny", "--data-dir", tree, *CLASSES, "--experiment", experiment]
    for given, says in ((password[::-1], f"refused user {user!r}: wrong user name or password"),
                        (password, f"denies user {user!r} permission to write to experiment {experiment!r}")):
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", user)
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", given)
        out = invoke(runner, args, ok=False)
        lines = out.output.strip().splitlines()
        assert out.exit_code == 2 and len(lines) == 1 and "Traceback" not in out.output, out.output
        assert lines[0].startswith(f"Error: the MLflow tracking server {mlflow_server.url} ") and says in lines[0]
        assert given not in out.output and password not in out.output
        print(lines[0])
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME")
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD")
    out = invoke(runner, args, ok=False)
    assert out.exit_code == 2 and "asks for a login: set MLFLOW_TRACKING_USERNAME" in out.output, out.output
    admin = MlflowClient(mlflow_server.url)
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", mlflow_server.admin[0])
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", mlflow_server.admin[1])
    exp = admin.get_experiment_by_name(experiment).experiment_id
    assert admin.search_runs([exp]) == []  # nothing opened, nothing left FAILED
