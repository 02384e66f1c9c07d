"""deploy/slurm under a real Slurm: an array of `harness worker` tasks works a grid, each item once,
and a task cancelled (SIGTERM) in the middle of its GAN leaves that GAN to be continued from its
checkpoint, not restarted. Runs where HARNESS_TEST_SLURM names a slurm.conf (`.ci/run` starts a
one-node Slurm on loopback with `.ci/slurm up`)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient

ROOT = Path(__file__).resolve().parents[1]
SLURM_CONF = os.environ.get("HARNESS_TEST_SLURM")
CLASSES = ["--set", "data.classes=airplane,automobile,bird"]
LONG_GAN = ["--set", "gan.epochs=100", "--set", "gan.checkpoint_every=20", "--set", "gan.sample_every=1000"]

pytestmark = [pytest.mark.skipif(not SLURM_CONF, reason="HARNESS_TEST_SLURM is not set (.ci/run starts a one-node "
                                 "Slurm and sets it)"),
              pytest.mark.xdist_group("slurm")]  # one test process: one array job fills the node's two CPUs


def _squeue(env, job: str) -> list[str]:
    out = subprocess.run(["squeue", "-h", "-j", job, "-o", "%i %T"], env=env, capture_output=True, text=True)
    return out.stdout.split("\n") if out.returncode == 0 and out.stdout.strip() else []


def _release(env, task: str) -> None:
    """Set a requeued task's earliest start to now once Slurm has it pending again (bounded: the
    hold ends by itself within ~2 minutes)."""
    left_running, end = False, time.time() + 150
    while time.time() < end:
        state = subprocess.run(["squeue", "-h", "-j", task, "-o", "%T"], env=env, capture_output=True,
                               text=True).stdout
        if "PENDING" in state:
            subprocess.run(["scontrol", "update", f"JobId={task}", "StartTime=now"], env=env, timeout=60)
            return
        if "RUNNING" in state and left_running:
            return  # started again without a hold
        left_running = left_running or "RUNNING" not in state
        time.sleep(0.2)


@pytest.mark.parametrize("stop", ["scancel", "requeue"])
def test_an_array_job_works_a_grid_and_a_stopped_task_leaves_its_gan_to_the_next(stop, tree, tmp_path, template_db):
    # scancel: the other task takes the item up; `scontrol requeue` (what a preemption does to a job
    # submitted with --requeue, as deploy/slurm's is): the task starts again, and whichever worker is
    # free first continues the GAN.
    shutil.copy(template_db, tmp_path / "mlflow.db")
    tracking, storage, study = f"sqlite:///{tmp_path / 'mlflow.db'}", f"sqlite:///{tmp_path / 'optuna.db'}", "slurm"
    env = dict(os.environ, SLURM_CONF=SLURM_CONF, MLFLOW_TRACKING_URI=tracking, HARNESS_STORAGE=storage,
               HARNESS_STUDY=study, HARNESS_DATA_DIR=str(tree), HARNESS_CACHE_DIR=str(tmp_path / "cache"),
               HARNESS_HEARTBEAT_SECONDS="1", PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    env.pop("MLFLOW_RUN_ID", None)
    plan = subprocess.run([sys.executable, "-m", "harness", "grid", "--preset", "tiny", *CLASSES, *LONG_GAN,
                           "--axis", "data.n_per_class=10,20", "--seeds", "1", "--plan-only", "--study", study],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert plan.returncode == 0 and "2 new items" in plan.stderr, plan.stderr[-2000:]
    started = time.time()
    job = subprocess.run(["sbatch", "--parsable", "--array=0-1", "--cpus-per-task=1", f"--chdir={tmp_path}",
                          f"--output={tmp_path}/worker-%a.log", str(ROOT / "deploy/slurm/harness-worker.sbatch")],
                         env=env, capture_output=True, text=True, timeout=60)
    assert job.returncode == 0, job.stderr
    job_id = job.stdout.strip().split(";")[0]
    logs = lambda: {i: (tmp_path / f"worker-{i}.log").read_text() if (tmp_path / f"worker-{i}.log").exists() else ""  # noqa: E731
                    for i in (0, 1)}
    client = MlflowClient(tracking)
    try:
        # A generator with its epoch-40 checkpoint written: the task running its item is cancelled.
        deadline, victim = time.time() + 900, None
        while victim is None:
            exp = client.get_experiment_by_name("harness")
            for gen in client.search_runs([exp.experiment_id], "tags.`harness.phase` = 'generator' and "
                                          "attributes.status = 'RUNNING'") if exp else []:
                if "checkpoints/generator_epoch_0040.pt" in {a.path for a in client.list_artifacts(
                        gen.info.run_id, "checkpoints")}:
                    cell = client.get_run(gen.data.tags["mlflow.parentRunId"]).data.tags["harness.cell"]
                    victim = gen.info.run_id, next(i for i, text in logs().items() if f"grid item: {cell}," in text)
                    break
            assert time.time() < deadline, f"no epoch-40 checkpoint in 15 minutes: {logs()}"
            time.sleep(0.2)
        dead, task = victim
        cancelled = time.time()
        subprocess.run(["scancel", f"{job_id}_{task}"] if stop == "scancel" else
                       ["scontrol", "requeue", f"{job_id}_{task}"], env=env, check=True, timeout=60)
        if stop == "requeue":
            # Slurm holds a requeued job back (Reason=BeginTime, ~2 minutes): what a preempted job waits
            # on a real cluster too, and nothing this test checks. Release it as soon as it is pending.
            _release(env, f"{job_id}_{task}")
        while _squeue(env, job_id):
            assert time.time() < deadline + 900, f"the array did not end: {logs()}"
            time.sleep(1)
    finally:
        subprocess.run(["scancel", job_id], env=env, timeout=60)
    took = time.time() - started
    print(f"array of 2 workers: {took:.0f} s, of which {time.time() - cancelled:.0f} s after the {stop}")

    out = logs()
    assert "stopped by SIGTERM" in out[task] and "Traceback" not in out[task], out[task][-3000:]
    if stop == "requeue":  # the same task ran again, as a worker that found the queue's rest
        assert "restart 1" in out[task], out[task][-3000:]
    killed = client.get_run(dead)
    assert killed.info.status == "KILLED" and killed.data.tags["harness.stopped"] == "SIGTERM"
    exp = client.get_experiment_by_name("harness").experiment_id
    (resumed,) = client.search_runs([exp], f"tags.`harness.resumed_from` = '{dead}'")
    assert resumed.info.status == "FINISHED"
    steps = [m.step for m in client.get_metric_history(resumed.info.run_id, "gan/wasserstein")]
    assert sorted(steps) == list(range(1, 101))  # continued from its checkpoint: the epochs carried over, none twice
    assert len(client.get_metric_history(dead, "gan/wasserstein")) < 100
    gens = [g for g in client.search_runs([exp], "tags.`harness.phase` = 'generator'") if g.info.status == "FINISHED"
            and "harness.reused_from" not in g.data.tags]
    assert len(gens) == 2  # one per data size: the other cell's, and the continued one
    done = optuna.load_study(study_name=study, storage=storage).get_trials(
        states=(optuna.trial.TrialState.COMPLETE,))
    assert sorted((t.user_attrs["cell"], t.user_attrs["seed"]) for t in done) == \
        [("data.n_per_class=10", 0), ("data.n_per_class=20", 0)]  # every item done once
    assert client.search_runs([exp], "attributes.status = 'RUNNING'") == []
    (grid_run,) = client.search_runs([exp], "tags.`harness.phase` = 'grid'")
    assert "grid.md" in {a.path for a in client.list_artifacts(grid_run.info.run_id)}
