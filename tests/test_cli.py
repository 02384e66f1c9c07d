"""The `harness` entry point as users run it: a real process, its exit code and its output."""
import subprocess
import sys

from conftest import invoke


def _harness(*args):
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True, timeout=120)


def test_success_exits_zero_with_all_output():
    # A successful command leaves through os._exit: nothing it printed may be lost on the way.
    out = _harness("config", "--preset", "tiny")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("preset = tiny") and "# config hash" in out.stdout.splitlines()[-1]


def test_bad_input_exits_two_with_one_line():
    out = _harness("config", "--preset", "nope")
    assert out.returncode == 2
    assert "Error: unknown preset 'nope'" in out.stderr and "Traceback" not in out.stderr


def test_help_lists_the_commands():
    out = _harness("--help")
    assert out.returncode == 0 and all(c in out.stdout for c in ("run", "sweep", "compare", "ui"))


def test_sigterm_handler_is_the_callers_again_after_a_command(runner):
    import signal
    before = signal.getsignal(signal.SIGTERM)
    invoke(runner, ["config", "--preset", "tiny"])
    assert signal.getsignal(signal.SIGTERM) is before


def test_processes_starting_together_on_a_new_store_all_succeed(tree, tmp_path):
    # MLflow migrates a new SQLite store on first use; without the lock beside it, processes started
    # together raced through the migration and left the store unusable.
    import os
    env = dict(os.environ, MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'new.db'}", HARNESS_CACHE_DIR=str(tmp_path / "c"))
    env.pop("MLFLOW_RUN_ID", None)
    args = [sys.executable, "-m", "harness", "baseline", "--preset", "tiny", "--data-dir", str(tree),
            "--set", "data.classes=airplane,bird", "--set", "classifier.epochs=1"]
    procs = [subprocess.Popen(args, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(3)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [o[1][-500:] for o in outs]
    from mlflow.tracking import MlflowClient
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    exp = client.get_experiment_by_name("harness")
    assert len(client.search_runs([exp.experiment_id], "attributes.status = 'FINISHED'")) == 3
