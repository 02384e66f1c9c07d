"""Faults of the machine and the store, survived: a process killed with SIGKILL and resumed, a torn
checkpoint passed over, a tracking server that goes away mid-GAN and comes back, a full disk, a
cache folder that vanishes, and the liveness rules behind them."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from conftest import invoke

CLASSES = ["--set", "data.classes=airplane,automobile,bird"]
# Long enough that the process is still training when its epoch-40 checkpoint is seen and it is killed;
# every epoch past that is trained again by the resumed run, so no longer.
LONG_GAN = ["--set", "gan.epochs=80", "--set", "gan.checkpoint_every=20", "--set", "gan.sample_every=1000"]
# Every trained kind goes through one loop (harness/generators/trained.py): each is killed and resumed.
# (settings, its curve, the checkpoint it is killed after): a diffusion epoch costs ~10 GAN epochs here.
LONG = {"gan": (LONG_GAN, "gan/wasserstein", 40),
        "diffusion": (["--set", "generator.kind=diffusion", "--set", "diffusion.epochs=40", "--set",
                       "diffusion.checkpoint_every=10", "--set", "diffusion.sample_every=1000"], "diffusion/loss", 20)}


def _env(uri: str, tmp_path: Path, **extra) -> dict:
    env = dict(os.environ, MLFLOW_TRACKING_URI=uri, HARNESS_CACHE_DIR=str(tmp_path / "cache"), **extra)
    env.pop("MLFLOW_RUN_ID", None)
    return env


def _wait_for_checkpoint(client, proc, epoch: int, phase: str = "generator", timeout: float = 1800) -> str:
    """The generator run's id once checkpoint `epoch` is written; a bound turns a hung process into a
    failure that says so."""
    deadline = time.time() + timeout
    want = f"checkpoints/generator_epoch_{epoch:04d}.pt"
    while True:
        exp = client.get_experiment_by_name("harness")
        runs = client.search_runs([exp.experiment_id], f"tags.`harness.phase` = '{phase}'") if exp else []
        for run in runs:
            if want in {a.path for a in client.list_artifacts(run.info.run_id, "checkpoints")}:
                return run.info.run_id
        assert proc.poll() is None, proc.communicate()[0]
        if time.time() > deadline:
            proc.kill()
            pytest.fail(f"no epoch-{epoch} checkpoint within {timeout} s")
        time.sleep(0.2)


def _artifact_file(client, run_id: str, path: str) -> Path:
    uri = client.get_run(run_id).info.artifact_uri
    return Path(uri.removeprefix("file://")) / path


@pytest.mark.parametrize("kind", list(LONG))
def test_sigkill_then_resume_continues_from_the_last_checkpoint(runner, client, tree, tracking_uri, tmp_path, kind):
    long, curve, kill_at = LONG[kind]
    epochs = int(next(a for a in long if ".epochs=" in a).split("=")[1])
    args = ["--preset", "tiny", "--data-dir", str(tree), *CLASSES, *long]
    proc = subprocess.Popen([sys.executable, "-m", "harness", "run", *args], cwd=tmp_path,
                            env=_env(tracking_uri, tmp_path), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    dead = _wait_for_checkpoint(client, proc, kill_at)
    proc.send_signal(signal.SIGKILL)  # what the OOM killer does: no handler runs, nothing is ended
    proc.wait(timeout=60)
    exp = client.get_experiment_by_name("harness").experiment_id
    assert {r.data.tags["harness.phase"] for r in client.search_runs([exp], "attributes.status = 'RUNNING'")} == \
        {"pipeline", "generator"}
    epochs_logged = len(client.get_metric_history(dead, curve))

    result = invoke(runner, ["run", "--resume", *args])
    assert "whose process died were still RUNNING; marked FAILED" in result.stderr
    assert client.search_runs([exp], "attributes.status = 'RUNNING'") == []  # nothing RUNNING is left
    died = client.get_run(dead)
    assert died.info.status == "FAILED" and "is gone" in died.data.tags["harness.died"]
    assert died.data.tags["mlflow.note.content"].startswith("**Died**")
    resumed = client.search_runs([exp], f"tags.`harness.resumed_from` = '{dead}'")
    assert len(resumed) == 1 and resumed[0].info.status == "FINISHED"
    history = client.get_metric_history(resumed[0].info.run_id, curve)
    assert sorted(m.step for m in history) == list(range(1, epochs + 1))  # carried over from its checkpoint, none twice
    assert epochs_logged >= kill_at  # the epochs up to the last checkpoint had reached the store before the kill
    pipelines = client.search_runs([exp], "tags.`harness.phase` = 'pipeline'")
    assert sorted(p.info.status for p in pipelines) == ["FAILED", "FINISHED"]
    baselines = client.search_runs([exp], "tags.`harness.phase` = 'baseline'")
    assert len([b for b in baselines if "harness.reused_from" not in b.data.tags]) == 1  # trained once


def _gan_killed_after(client, tracking_uri, tmp_path, args, epoch: int) -> str:
    """`harness generator` SIGKILLed once its checkpoint of `epoch` is in the store; its run id."""
    proc = subprocess.Popen([sys.executable, "-m", "harness", "generator", *args], cwd=tmp_path,
                            env=_env(tracking_uri, tmp_path), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    dead = _wait_for_checkpoint(client, proc, epoch)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    return dead


def test_a_torn_training_state_is_named_and_the_older_one_resumes(runner, client, tree, tracking_uri, tmp_path):
    args = ["--preset", "tiny", "--data-dir", str(tree), *CLASSES, *LONG_GAN]
    dead = _gan_killed_after(client, tracking_uri, tmp_path, args, 40)
    import torch
    states = {}
    for slot in ("checkpoints/training_state_0.pt", "checkpoints/training_state_1.pt"):
        states[slot] = torch.load(_artifact_file(client, dead, slot), weights_only=True)["epoch"]
    newest = max(states, key=states.get)
    older_epoch = min(states.values())
    path = _artifact_file(client, dead, newest)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])  # what a full disk or a killed upload leaves

    result = invoke(runner, ["generator", "--resume", *args])
    assert f"{newest} of run {dead} is unreadable" in result.stderr
    assert f"resuming run {dead} from epoch {older_epoch}" in result.stderr
    exp = client.get_experiment_by_name("harness").experiment_id
    (resumed,) = client.search_runs([exp], f"tags.`harness.resumed_from` = '{dead}'")
    steps = sorted(m.step for m in client.get_metric_history(resumed.info.run_id, "gan/wasserstein"))
    assert steps == list(range(1, 81))
    kept = {a.path for a in client.list_artifacts(resumed.info.run_id, "checkpoints")}
    assert f"checkpoints/generator_epoch_{older_epoch:04d}.pt" in kept


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_server(tmp_path: Path, port: int) -> subprocess.Popen:
    """An MLflow tracking server on loopback (SQLite behind it, artifacts proxied), up within 120 s."""
    import urllib.request
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
           "--artifacts-destination", str(tmp_path / "server-artifacts"), "--host", "127.0.0.1", "--port", str(port),
           "--workers", "1"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                if r.status == 200:
                    return proc
        except OSError:
            time.sleep(0.5)
    _stop(proc)
    pytest.fail("the MLflow server did not answer within 120 s")


def _stop(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGKILL)  # the server and its workers, all at once: a crashed server
    proc.wait(timeout=30)


def test_a_tracking_server_that_goes_away_mid_gan(tree, tmp_path):
    from mlflow.tracking import MlflowClient
    port = _free_port()
    uri = f"http://127.0.0.1:{port}"
    server = _start_server(tmp_path, port)
    try:
        client = MlflowClient(uri)
        args = ["--preset", "tiny", "--data-dir", str(tree), *CLASSES, "--set", "gan.epochs=20000",
                "--set", "gan.checkpoint_every=20", "--set", "gan.sample_every=100000"]
        env = _env(uri, tmp_path, HARNESS_HEARTBEAT_SECONDS="1")
        proc = subprocess.Popen([sys.executable, "-m", "harness", "generator", *args], cwd=tmp_path, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        run_id = _wait_for_checkpoint(client, proc, 20)
        _stop(server)
        stopped = time.time()
        out, err = proc.communicate(timeout=120)  # bounded: heartbeat loss (2 s) + one request timeout
        took = time.time() - stopped
        assert proc.returncode == 2, err[-2000:]
        assert "Traceback" not in err
        last = err.strip().splitlines()[-1]
        assert last.startswith("Error: the MLflow tracking store") and "stopped answering" in last, err[-2000:]
        assert took < 60

        server = _start_server(tmp_path, port)  # the store is back: the dead run is marked, then resumed
        log = tmp_path / "resume.log"
        with open(log, "w") as f:
            proc = subprocess.Popen([sys.executable, "-m", "harness", "generator", "--resume", *args], cwd=tmp_path,
                                    env=env, stdout=subprocess.DEVNULL, stderr=f)
        deadline = time.time() + 600
        while f"resuming run {run_id} from epoch" not in log.read_text():
            assert proc.poll() is None and time.time() < deadline, log.read_text()[-2000:]
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
        died = client.get_run(run_id)
        assert died.info.status == "FAILED" and "is gone" in died.data.tags["harness.died"]
        exp = client.get_experiment_by_name("harness").experiment_id
        (resumed,) = client.search_runs([exp], f"tags.`harness.resumed_from` = '{run_id}'")
        assert resumed.info.status == "KILLED"
        assert client.search_runs([exp], "attributes.status = 'RUNNING'") == []
    finally:
        if server.poll() is None:
            _stop(server)


def _mount_full_disk(where: Path, size_kb: int):
    """A real small file system for artifacts, where root may mount one; None elsewhere."""
    where.mkdir()
    if os.geteuid() != 0 or not shutil.which("mount"):
        return None
    ok = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(where)],
                        capture_output=True).returncode == 0
    return where if ok else None


def test_a_full_disk_fails_the_run_with_the_reason(runner, client, tree, tmp_path, monkeypatch):
    disk = _mount_full_disk(tmp_path / "disk", 256)
    try:
        if disk is None:  # no tmpfs here: the artifact store raises what a full disk raises
            import errno

            from mlflow.store.artifact.local_artifact_repo import LocalArtifactRepository
            real = LocalArtifactRepository.log_artifact

            def full(self, local_file, artifact_path=None):
                if os.path.getsize(local_file) > 200_000:
                    raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "disk" / "x"))
                return real(self, local_file, artifact_path)
            monkeypatch.setattr(LocalArtifactRepository, "log_artifact", full)
        exp = client.create_experiment("full", artifact_location=(tmp_path / "disk").as_uri())
        result = invoke(runner, ["baseline", "--preset", "tiny", "--data-dir", tree, *CLASSES, "--experiment", "full"],
                        ok=False)
        assert result.exit_code == 2 and "Traceback" not in result.output
        last = result.stderr.strip().splitlines()[-1]
        assert last.startswith("Error: no space left on the device while writing") and str(tmp_path / "disk") in last
        (run,) = client.search_runs([exp])
        assert run.info.status == "FAILED"
        assert run.data.tags["mlflow.note.content"].startswith("**Failed**: no space left on the device")
    finally:
        if disk is not None:
            subprocess.run(["umount", str(disk)], check=False)


def test_a_full_cache_disk_is_named_and_leaves_no_partial_file(runner, client, tree, tmp_path, monkeypatch):
    # 256 KB: two decoded class folders of the tree (123 KB each) fit, the third does not.
    disk = _mount_full_disk(tmp_path / "cachedisk", 256)
    try:
        if disk is None:  # no tmpfs here: np.save writes part of the file, then hits what a full disk raises
            import errno

            import numpy as np
            real = np.save

            def full(file, arr, *a, **k):
                if len(list((tmp_path / "cachedisk").rglob("*.npy"))) >= 2:
                    Path(file).write_bytes(b"\0" * 4096)
                    raise OSError(errno.ENOSPC, "No space left on device")
                return real(file, arr, *a, **k)
            monkeypatch.setattr(np, "save", full)
        monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cachedisk"))
        result = invoke(runner, ["baseline", "--preset", "tiny", "--data-dir", tree, *CLASSES], ok=False)
        assert result.exit_code == 2 and "Traceback" not in result.output, result.output
        last = result.stderr.strip().splitlines()[-1]
        assert last == (f"Error: cannot write the decoded-image cache {tmp_path / 'cachedisk' / 'decoded'} (no space "
                        "left on the device); free some space or set HARNESS_CACHE_DIR to a writable folder"), last
        assert not list((tmp_path / "cachedisk").rglob("*.tmp.npy"))  # the partial file is gone, not filling the disk
        assert len(list((tmp_path / "cachedisk").rglob("*.npy"))) == 2
    finally:
        if disk is not None:
            subprocess.run(["umount", str(disk)], check=False)


def test_a_cache_folder_that_vanishes_between_phases(runner, client, tree, tmp_path, monkeypatch):
    from harness.runner import Runner
    cache = tmp_path / "cache"
    real = Runner.run

    def vanishing(self, name, cfg, inputs, *a, **k):
        result = real(self, name, cfg, inputs, *a, **k)
        shutil.rmtree(cache, ignore_errors=True)  # after every phase: the next one finds no cache folder
        return result
    monkeypatch.setattr(Runner, "run", vanishing)
    invoke(runner, ["run", "--preset", "tiny", "--data-dir", tree, *CLASSES, "--set", "quality.enabled=true"])
    assert not cache.exists()
    monkeypatch.setattr(Runner, "run", real)
    invoke(runner, ["generator", "--preset", "tiny", "--data-dir", tree, *CLASSES, "--set", "gan.epochs=3"])
    assert any((cache / "decoded").iterdir())  # decoded again, into a folder made again


def _run(tags: dict, status: str = "RUNNING", start: float | None = None):
    return SimpleNamespace(info=SimpleNamespace(status=status, start_time=int(1000 * (start or time.time())),
                                                run_id="r"), data=SimpleNamespace(tags=tags))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the boot-time drift is Linux's (/proc/stat btime)")
def test_a_moved_wall_clock_leaves_a_live_owner_alive(monkeypatch):
    """A VM's clock sync moved the kernel's boot time (and with it psutil's create_time) by 109 s
    within minutes: a waiting worker took its live peer for dead and took over its generator."""
    import psutil._pslinux
    from harness.tracking import liveness
    me = liveness.owner()
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        theirs = f"{socket.gethostname()}:{child.pid}:{liveness._started(child.pid)}"
        booted = psutil._pslinux.boot_time()
        monkeypatch.setattr(psutil._pslinux, "boot_time", lambda: booted + 109)
        assert liveness.why_dead(_run({liveness.OWNER: me})) is None
        assert liveness.why_dead(_run({liveness.OWNER: theirs})) is None
    finally:
        child.kill()
        child.wait()
    assert "is gone" in liveness.why_dead(_run({liveness.OWNER: theirs}))


def test_liveness_rules(monkeypatch):
    from harness.tracking import liveness
    monkeypatch.setenv("HARNESS_HEARTBEAT_SECONDS", "10")
    me = liveness.owner()
    host = socket.gethostname()
    now = time.time()
    assert liveness.why_dead(_run({liveness.OWNER: me})) is None  # this very process
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    assert "is gone" in liveness.why_dead(_run({liveness.OWNER: f"{host}:{gone.pid}:123"}))
    # A pid of this host that now belongs to another process (a different start time) is not the owner.
    assert "is gone" in liveness.why_dead(_run({liveness.OWNER: f"{host}:{os.getpid()}:1"}))
    far = {liveness.OWNER: "elsewhere:42:1"}
    assert liveness.why_dead(_run({**far, liveness.HEARTBEAT: f"{now - 30:.0f}"})) is None  # within 4 x 10 s
    assert "no heartbeat" in liveness.why_dead(_run({**far, liveness.HEARTBEAT: f"{now - 50:.0f}"}))
    assert liveness.why_dead(_run({**far}, start=now - 100)) is not None  # never beat: judged by its start
    assert liveness.why_dead(_run({})) is None  # not a harness run: left to its owner
    assert liveness.why_dead(_run({liveness.OWNER: f"{host}:1:1"}, status="FINISHED")) is None


def test_a_live_process_keeps_its_heartbeat_fresh(client, tracking_uri, monkeypatch):
    monkeypatch.setenv("HARNESS_HEARTBEAT_SECONDS", "0.2")
    from harness.tracking import liveness, store
    s = store.configure("harness")
    with store.phase_run(s, "probe", {}) as pr:
        first = float(client.get_run(pr.run_id).data.tags[liveness.HEARTBEAT])
        time.sleep(2.5)
        later = client.get_run(pr.run_id).data.tags[liveness.HEARTBEAT]
        assert float(later) > first
        assert client.get_run(pr.run_id).data.tags[liveness.OWNER] == liveness.owner()
        assert liveness.reap(client, s.experiment_id) == []  # alive: never reaped
    assert client.get_run(pr.run_id).info.status == "FINISHED"


def test_a_run_joined_after_its_opener_exited_is_not_reaped_while_joined(client, tracking_uri):
    # A --plan-only grid opens the grid run and exits; workers join it later. A command run meanwhile
    # once marked it FAILED under the workers, its owner being the planning process.
    from harness.tracking import liveness, store
    s = store.configure("harness")
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    run = client.create_run(s.experiment_id, tags={liveness.OWNER: f"{socket.gethostname()}:{gone.stdout.strip()}:1"})
    with store.phase_run(s, "grid", {}, join=run.info.run_id):
        assert liveness.reap(client, s.experiment_id) == []
        assert client.get_run(run.info.run_id).info.status == "RUNNING"
    assert client.get_run(run.info.run_id).info.status == "FINISHED"


def test_every_phase_reads_the_data_dir_it_was_given(runner, client, tree, tmp_path, monkeypatch):
    # With quality on, the evaluator reads data too; it once fell back to torchvision's download, which
    # with a network would have trained it on another copy of the data. No phase may download here.
    import harness.data.named

    def no_download(*a, **k):
        raise AssertionError("a phase tried to download a data set although --data-dir was given")
    monkeypatch.setattr(harness.data.named, "open_named", no_download)
    quality = ["--set", "quality.enabled=true", "--set", "quality.evaluator_epochs=1"]
    invoke(runner, ["run", "--preset", "tiny", "--data-dir", tree, *CLASSES, *quality])
    spec = tmp_path / "spec.toml"
    spec.write_text('[space."pseudolabel.threshold"]\ntype = "float"\nlow = 0.0\nhigh = 0.5\n[pruner]\ntype = "none"\n')
    invoke(runner, ["sweep", "--preset", "tiny", "--data-dir", tree, *CLASSES, *quality, "--spec", spec, "--trials", "2"])
    exp = client.get_experiment_by_name("harness").experiment_id
    assert len(client.search_runs([exp], "tags.`harness.phase` = 'evaluator'")) >= 1


@pytest.mark.parametrize("found", ["at open", "at the phase"])
def test_a_dead_workers_gan_is_taken_over_without_resume(runner, client, tree, tracking_uri, tmp_path, monkeypatch,
                                                         found):
    # Nobody chose to stop a SIGKILLed generator: the next worker of the same key continues it from its
    # last checkpoint, --resume or not (a KILLED run, stopped on purpose, waits for --resume). A command
    # marks dead runs FAILED when it opens the store; a worker that opened it earlier finds the dead
    # run RUNNING when it reaches the phase, and must continue it all the same.
    args = ["--preset", "tiny", "--data-dir", str(tree), *CLASSES, *LONG_GAN]
    dead = _gan_killed_after(client, tracking_uri, tmp_path, args, 20)
    if found == "at the phase":
        from harness.tracking import liveness
        monkeypatch.setattr(liveness, "reap", lambda *a, **k: [])
    result = invoke(runner, ["generator", *args])
    assert f"resuming run {dead} from epoch" in result.stderr
    exp = client.get_experiment_by_name("harness").experiment_id
    (resumed,) = client.search_runs([exp], f"tags.`harness.resumed_from` = '{dead}'")
    assert resumed.info.status == "FINISHED" and client.get_run(dead).info.status == "FAILED"
