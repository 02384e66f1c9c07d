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


def test_a_built_wheel_runs_from_an_unrelated_folder(tmp_path, tree):
    """The package as a wheel, not the checkout: every subpackage and the presets inside it, installed
    into a fresh venv and run from a folder that knows nothing of the repository."""
    import importlib.util
    import sysconfig
    import zipfile
    from pathlib import Path
    repo = Path(__file__).resolve().parents[1]
    isolation = [] if importlib.util.find_spec("setuptools") is None else ["--no-build-isolation"]
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", *isolation, "-w", str(tmp_path / "dist"),
                    str(repo)], check=True, capture_output=True, timeout=300)
    (wheel,) = (tmp_path / "dist").glob("harness-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"harness/data/folders.py", "harness/generators/folder.py", "harness/experiments/tiny.toml",
            "harness/experiments/sweep.toml", "harness/precision.py"} <= names
    fresh = tmp_path / "fresh"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(fresh)], check=True, timeout=120)
    python = fresh / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", str(wheel)],
                   check=True, capture_output=True, timeout=300)
    # The dependencies (torch is gigabytes) come from this venv's site-packages, added as a plain
    # path: the .pth files there, this checkout's editable install among them, are not read.
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    Path(site, "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in __import__("os").environ.items() if k != "PYTHONPATH"}
    env.update(MLFLOW_TRACKING_URI=f"sqlite:///{elsewhere}/mlflow.db", HARNESS_CACHE_DIR=str(elsewhere / "cache"))
    where = subprocess.run([str(python), "-c", "import harness; print(harness.__file__)"], cwd=elsewhere, env=env,
                           capture_output=True, text=True, check=True).stdout.strip()
    assert where.startswith(str(fresh)), where
    out = subprocess.run([str(fresh / "bin" / "harness"), "run", "--preset", "tiny", "--data-dir", str(tree),
                          "--set", "data.classes=airplane,automobile,bird"], cwd=elsewhere, env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "| Accuracy |" in out.stdout


def test_long_work_prints_progress_lines_in_a_log(tree, tmp_path):
    """stderr a pipe, as under nohup or a scheduler: no bar, but lines with done/total, rate and ETA."""
    import os
    import re
    env = {**os.environ, "HARNESS_PROGRESS_SECONDS": "0", "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/m.db",
           "HARNESS_CACHE_DIR": str(tmp_path / "cache")}
    out = subprocess.run([sys.executable, "-m", "harness", "generator", "--preset", "tiny", "--data-dir", str(tree),
                          "--set", "data.classes=airplane,automobile,bird", "--set", "gan.epochs=4"],
                         capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    lines = [ln for ln in out.stderr.splitlines() if ln.startswith("gan: ")]
    assert re.fullmatch(r"gan: 1/4 epochs \(25%\), [\d.]+/s, ETA \d+s  W -?[\d.]+  G iters \d+", lines[0]), lines
    assert re.fullmatch(r"gan: 4/4 epochs \(100%\), [\d.]+/s, done in \d+s  .*", lines[-1]), lines
    assert len(lines) == 4  # one per epoch at interval 0, the last one saying it is done
    quiet = subprocess.run([sys.executable, "-m", "harness", "baseline", "--preset", "tiny", "--data-dir", str(tree),
                            "--set", "data.classes=airplane,automobile,bird"], capture_output=True, text=True,
                           timeout=300, env={**env, "HARNESS_PROGRESS_SECONDS": "30"}, cwd=tmp_path)
    steps = [ln for ln in quiet.stderr.splitlines() if ln.startswith("baseline: ")]
    # however loaded the machine: at most one line per 5% of the work, and the last says it is done
    assert 1 <= len(steps) <= 21 and "done in" in steps[-1] and all("done in" not in s for s in steps[:-1])


def test_ctrl_c_exits_130_with_the_runs_killed(tree, tmp_path):
    """SIGINT as a shell sends it: exit 128 + 2, one line, the run KILLED (not click's 'Aborted!' and 1)."""
    import os
    import signal
    import time

    from mlflow.tracking import MlflowClient
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/m.db", "HARNESS_CACHE_DIR": str(tmp_path / "c"),
           "PYTHONUNBUFFERED": "1", "HARNESS_PROGRESS_SECONDS": "0"}
    proc = subprocess.Popen([sys.executable, "-m", "harness", "generator", "--preset", "tiny", "--data-dir", str(tree),
                             "--set", "data.classes=airplane,automobile,bird", "--set", "gan.epochs=2000"],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    for line in proc.stderr:  # training has begun once the progress lines come
        if line.startswith("gan: ") or time.time() > deadline:
            break
    proc.send_signal(signal.SIGINT)
    err = proc.communicate(timeout=120)[1]
    assert proc.returncode == 130, err[-2000:]
    assert "stopped by SIGINT" in err and "Aborted!" not in err and "Traceback" not in err
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    (run,) = client.search_runs([client.get_experiment_by_name("harness").experiment_id])
    assert run.info.status == "KILLED"


