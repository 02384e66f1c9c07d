"""`harness run` end to end on the tiny preset: the nested run tree, tags, metrics, artifacts,
phase reuse, an interrupted GAN resumed, and `mlflow run . -e full`."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import invoke

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ["--set", "data.classes=airplane,automobile,bird"]
PHASES = ["baseline", "generator", "generate", "pseudolabel", "control", "synthetic", "compare"]


def _tree_runs(client, parent_id):
    parent = client.get_run(parent_id)
    children = client.search_runs([parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent_id}'")
    return parent, {r.data.tags["harness.phase"]: r for r in children}


def _pipelines(client):
    exp = client.get_experiment_by_name("harness")
    return client.search_runs([exp.experiment_id], "tags.`harness.phase` = 'pipeline'",
                              order_by=["attributes.start_time ASC"])


def _artifacts(client, run_id, path=""):
    out = set()
    for a in client.list_artifacts(run_id, path):
        out |= _artifacts(client, run_id, a.path) if a.is_dir else {a.path}
    return out


def test_run_tiny_end_to_end_then_reused(runner, client, tree, tmp_path, monkeypatch):
    args = ["run", "--preset", "tiny", "--data-dir", tree, *CLASSES]
    result = invoke(runner, args)
    (first,) = _pipelines(client)
    parent, kids = _tree_runs(client, first.info.run_id)
    assert parent.info.status == "FINISHED" and parent.data.tags["harness.phase"] == "pipeline"
    assert parent.info.run_name == "pipeline seed=0"
    assert sorted(kids) == sorted(PHASES)
    assert all(k.info.status == "FINISHED" for k in kids.values())
    assert not any("harness.reused_from" in k.data.tags for k in kids.values())
    # Each phase run records the sections its key covers and the runs it consumed; the parent, all.
    assert kids["generate"].data.params["upstream.generator"] == kids["generator"].info.run_id
    assert kids["synthetic"].data.params["upstream.pseudolabel"] == kids["pseudolabel"].info.run_id
    assert not any(k.startswith(("classifier.", "pseudolabel.")) for k in kids["generator"].data.params)
    assert set(kids["compare"].data.params) == {"upstream.baseline", "upstream.control", "upstream.synthetic",
                                                "data.classes"}
    assert parent.data.params["gan.epochs"] == "2" and parent.data.params["generator.kind"] == "gan"
    # The page to forward: its path is the command's last line, and it holds the three arms' table.
    where = result.output.rstrip().splitlines()[-1]
    assert where.startswith("report: ") and ">Control</th>" in open(where.removeprefix("report: ")).read()

    # generator: losses per epoch, sample grids, checkpoints carrying their config, loss curves
    gan = kids["generator"]
    assert len(client.get_metric_history(gan.info.run_id, "gan/wasserstein")) == 2
    assert {"gan/critic_loss", "gan/gradient_penalty", "gan/generator_loss"} <= set(gan.data.metrics)
    arts = _artifacts(client, gan.info.run_id)
    assert {"checkpoints/generator_epoch_0001.pt", "checkpoints/generator_epoch_0002.pt",
            "checkpoints/training_state_0.pt", "checkpoints/training_state_1.pt", "loss_curves.png"} <= arts
    # Sample grids as one image series (key gan/samples, step = epoch): the run page's step slider.
    assert {a.split("+")[2] for a in arts if a.startswith("images/gan~samples+step+") and a.endswith(".png")} == {"1", "2"}
    # Each checkpoint is a LoggedModel of the run (step = epoch), loadable without pickle.
    import mlflow
    import mlflow.pytorch
    models = mlflow.search_logged_models(experiment_ids=[gan.info.experiment_id], output_format="list",
                                         filter_string=f"source_run_id = '{gan.info.run_id}'")
    assert sorted(int(m.params["epoch"]) for m in models) == [1, 2] and {m.name for m in models} == {"generator"}
    g = mlflow.pytorch.load_model(models[0].model_uri)
    assert g(torch.randn(3, 16)).shape == (3, 3, 32, 32)
    ckpt = torch.load(client.download_artifacts(gan.info.run_id, "checkpoints/generator_epoch_0002.pt", str(tmp_path)),
                      weights_only=True)
    assert ckpt["epoch"] == 2 and ckpt["config"]["width"] == 8 and ckpt["config"]["critic_steps"] == 2

    # generate: 64 uint8 images + preview
    gen = kids["generate"]
    assert {"synthetic.npz", "preview.png", "memorization.png"} <= _artifacts(client, gen.info.run_id)
    assert 0.0 <= gen.data.metrics["memorization/near_copy_share"] <= 1.0 < gen.data.metrics["memorization/median_rms"] + 1
    synth = np.load(client.download_artifacts(gen.info.run_id, "synthetic.npz", str(tmp_path)))["images"]
    assert synth.shape == (64, 3, 32, 32) and synth.dtype == np.uint8
    assert gen.data.params["generate.checkpoint_used"] == "2"

    # pseudolabel: threshold 0 keeps everything; counts add up
    pl = kids["pseudolabel"].data.metrics
    assert pl["kept/count"] == 64 and pl["kept/fraction"] == 1.0
    assert sum(pl[f"kept/{c}/count"] for c in ("airplane", "automobile", "bird")) == 64
    assert {"kept.npz", "pseudo_labels.json", "confidence_histogram.png", "kept.png"} <= \
        _artifacts(client, kids["pseudolabel"].info.run_id)

    # synthetic: logged exactly like the baseline, plus the data sizes
    aug, base = kids["synthetic"], kids["baseline"]
    assert aug.data.metrics["data/n_real"] == 60 and aug.data.metrics["data/n_synthetic"] == 64
    # system/* are sampled every few seconds of a run: present or not by how long each arm took.
    assert {k for k in base.data.metrics if not k.startswith("system/")} <= set(aug.data.metrics)
    assert _artifacts(client, base.info.run_id) <= _artifacts(client, aug.info.run_id)

    # control: the synthetic arm's recipe with as many replayed real images as were kept (an epoch budget)
    control = kids["control"]
    assert control.data.metrics["data/n_real"] == 60 and control.data.metrics["data/n_replayed"] == 64
    assert control.data.params["upstream.pseudolabel"] == kids["pseudolabel"].info.run_id
    assert _artifacts(client, base.info.run_id) <= _artifacts(client, control.info.run_id)
    assert "64 replayed real images" in control.data.tags["mlflow.note.content"]

    # compare: the images' effect (synthetic - control), the recipe's (control - baseline), their sum (delta)
    cmp = kids["compare"].data.metrics
    for key in ("accuracy", "f1_weighted", "airplane/f1", "automobile/f1", "bird/f1"):
        syn_, ctl, bas = (r.data.metrics[f"test/{key}"] for r in (aug, control, base))
        assert abs(cmp[f"delta/{key}"] - (syn_ - bas)) < 1e-9, key
        assert abs(cmp[f"images/{key}"] - (syn_ - ctl)) < 1e-9 and abs(cmp[f"recipe/{key}"] - (ctl - bas)) < 1e-9, key
    assert "comparison.md" in _artifacts(client, kids["compare"].info.run_id)
    lines = result.output.strip().splitlines()[:-2]  # before the blank line and "report: PATH"
    assert lines[-14].startswith("| Metric | Baseline | Control | Synthetic | Images (synthetic - control) |")
    assert lines[-1].startswith("| bird F1 |")
    assert lines[-16].startswith(f"The images' effect: {100 * cmp['images/accuracy']:+.2f} points")
    for name in ("images/accuracy", "recipe/accuracy", "delta/accuracy", "images/f1_weighted", "recipe/f1_macro"):
        assert abs(parent.data.metrics[name] - cmp[name]) < 1e-12, name
    assert abs(parent.data.metrics["control/test_accuracy"] - control.data.metrics["test/accuracy"]) < 1e-12
    assert parent.data.tags["mlflow.note.content"].count("The images' effect") == 1

    # An identical rerun reuses every phase and reports the same numbers, in seconds, asking the store
    # once per phase for its key (each search is a round trip on a team's tracking server).
    from mlflow.tracking import MlflowClient
    lookups, search = [], MlflowClient.search_runs

    def counted(self, experiment_ids, filter_string="", *a, **k):
        if "harness.cache_key" in filter_string:
            lookups.append(filter_string)
        return search(self, experiment_ids, filter_string, *a, **k)
    monkeypatch.setattr(MlflowClient, "search_runs", counted)
    t = time.perf_counter()
    invoke(runner, args)
    monkeypatch.setattr(MlflowClient, "search_runs", search)
    assert len(lookups) == len(PHASES) == len(set(lookups)), lookups
    second = _pipelines(client)[-1]
    _, kids2 = _tree_runs(client, second.info.run_id)
    assert time.perf_counter() - t < 30
    assert sorted(kids2) == sorted(PHASES)
    for phase, run in kids2.items():
        assert run.data.tags["harness.reused_from"] == kids[phase].info.run_id, phase
        # A reused run leads to its source: the link first in its description, and an artifact.
        assert run.data.tags["mlflow.note.content"].startswith(f"**Reused** [run {kids[phase].info.run_id}](#/experiments/")
        assert "reused_from.md" in _artifacts(client, run.info.run_id)
    # ...and lists the source's logged models as its inputs.
    assert {m.model_id for m in client.get_run(kids2["baseline"].info.run_id).inputs.model_inputs} == \
        {m.model_id for m in client.get_run(kids["baseline"].info.run_id).outputs.model_outputs}
    assert second.data.metrics["delta/accuracy"] == parent.data.metrics["delta/accuracy"]

    # A changed downstream setting recomputes only what depends on it...
    invoke(runner, args + ["--set", "pseudolabel.threshold=0.99"])
    _, kids3 = _tree_runs(client, _pipelines(client)[-1].info.run_id)
    reused = {p for p, r in kids3.items() if "harness.reused_from" in r.data.tags}
    assert kids3["pseudolabel"].data.metrics["kept/count"] < 64
    assert reused == {"baseline", "generator", "generate"}
    # ...and a threshold that keeps the very same images (all 64, as threshold 0 did) retrains nothing
    # downstream: the synthetic phase is keyed by the kept images, not by the threshold.
    import mlflow
    lowest = mlflow.load_table("pseudo_labels.json", run_ids=[kids["pseudolabel"].info.run_id])["confidence"].min()
    invoke(runner, args + ["--set", f"pseudolabel.threshold={np.floor(lowest * 1e4) / 1e4}"])
    _, kids3b = _tree_runs(client, _pipelines(client)[-1].info.run_id)
    assert kids3b["pseudolabel"].data.metrics["kept/count"] == 64
    assert "harness.reused_from" not in kids3b["pseudolabel"].data.tags
    assert kids3b["synthetic"].data.tags["harness.reused_from"] == kids["synthetic"].info.run_id

    # --no-cache recomputes everything.
    invoke(runner, args + ["--no-cache"])
    _, kids4 = _tree_runs(client, _pipelines(client)[-1].info.run_id)
    assert not any("harness.reused_from" in r.data.tags for r in kids4.values())


def test_compare_refuses_different_data(runner, client, tree):
    common = ["--preset", "tiny", "--data-dir", tree]
    invoke(runner, ["run", *common, *CLASSES])
    invoke(runner, ["run", *common, "--set", "data.classes=airplane,automobile,cat"])
    exp = client.get_experiment_by_name("harness").experiment_id
    a = client.search_runs([exp], "tags.`harness.phase` = 'baseline'", order_by=["attributes.start_time ASC"])[0]
    b = client.search_runs([exp], "tags.`harness.phase` = 'synthetic'", order_by=["attributes.start_time ASC"])[1]
    result = invoke(runner, ["compare", "--baseline", a.info.run_id, "--synthetic", b.info.run_id], ok=False)
    assert result.exit_code == 2 and "different data" in result.output and "data.classes" in result.output


def _env(tracking_uri, tmp_path):
    env = dict(os.environ, MLFLOW_TRACKING_URI=tracking_uri, HARNESS_CACHE_DIR=str(tmp_path / "cache"),
               PYTHONUNBUFFERED="1", PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    for var in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME"):
        env.pop(var, None)
    return env


def test_interrupted_gan_is_killed_then_resumed(runner, client, tree, tracking_uri, tmp_path):
    gan_args = ["--preset", "tiny", "--data-dir", str(tree), *CLASSES, "--set", "gan.epochs=400",
                "--set", "gan.checkpoint_every=20", "--set", "gan.sample_every=100"]
    proc = subprocess.Popen([sys.executable, "-m", "harness", "generator", *gan_args], cwd=tmp_path,
                            env=_env(tracking_uri, tmp_path), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    run_id = None
    # Wait for the second checkpoint, however long a loaded machine takes; the bound only turns a hung
    # process into a failure that says so, instead of carrying on with fewer epochs than the test needs.
    deadline = time.time() + 1800
    while True:
        exp = client.get_experiment_by_name("harness")
        runs = client.search_runs([exp.experiment_id]) if exp else []
        if runs:
            run_id = runs[0].info.run_id
            ckpts = [a.path for a in client.list_artifacts(run_id, "checkpoints")]
            if "checkpoints/generator_epoch_0040.pt" in ckpts:
                break
        assert proc.poll() is None, proc.stdout.read().decode()
        if time.time() > deadline:
            proc.kill()
            pytest.fail("the generator run wrote no epoch-40 checkpoint in 30 minutes")
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out = proc.communicate(timeout=60)[0].decode()
    assert proc.returncode == 143 and "stopped by SIGTERM" in out and "Aborted!" not in out, out[-2000:]
    killed = client.get_run(run_id)
    assert killed.info.status == "KILLED", out
    done_before = len(client.get_metric_history(run_id, "gan/wasserstein"))
    assert 40 <= done_before < 400

    assert killed.data.tags["harness.stopped"] == "SIGTERM"
    # SIGTERM is a scheduler's time limit or a preemption: the next run continues it without --resume
    invoke(runner, ["generator", *gan_args])
    exp = client.get_experiment_by_name("harness")
    resumed = client.search_runs([exp.experiment_id], "attributes.status = 'FINISHED'")[0]
    assert resumed.data.tags["harness.resumed_from"] == run_id
    steps = [m.step for m in client.get_metric_history(resumed.info.run_id, "gan/wasserstein")]
    assert sorted(steps) == list(range(1, 401))  # the killed run's epochs carried over, none twice
    ckpts = {a.path for a in client.list_artifacts(resumed.info.run_id, "checkpoints")}
    assert {"checkpoints/generator_epoch_0020.pt", "checkpoints/generator_epoch_0400.pt"} <= ckpts
    assert resumed.data.metrics["gan/epochs"] == 400


def test_mlflow_run_full_entry_point(client, tree, tracking_uri, tmp_path):
    mlflow_bin = Path(sys.executable).parent / "mlflow"
    cmd = [str(mlflow_bin), "run", str(ROOT), "-e", "full", "--env-manager", "local", "--experiment-name", "harness",
           "-P", "preset=tiny", "-P", f"data_dir={tree}", "-P", "overrides=data.classes=airplane,bird gan.epochs=1"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=_env(tracking_uri, tmp_path), capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    exp = client.get_experiment_by_name("harness")
    runs = client.search_runs([exp.experiment_id])
    tops = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    # The run `mlflow run` started is the pipeline parent, not a sibling of it.
    assert len(tops) == 1, [(r.info.run_name, r.data.tags.get("harness.phase")) for r in runs]
    (top,) = tops
    assert top.data.tags["harness.phase"] == "pipeline" and top.info.status == "FINISHED"
    assert top.data.tags.get("mlflow.project.entryPoint") == "full"
    assert {r.data.tags["harness.phase"] for r in runs if r is not top} == set(PHASES)
    assert top.data.params["data.classes"] == "airplane,bird" and top.data.params["gan.epochs"] == "1"


def _pip_sources() -> dict:
    """uv reads no pip.conf: hand it the wheel folders and indexes pip is configured with here."""
    def get(key):
        out = subprocess.run([sys.executable, "-m", "pip", "config", "get", key], capture_output=True, text=True)
        return out.stdout.strip() if out.returncode == 0 else ""
    env = {}
    if get("global.find-links"):
        env["UV_FIND_LINKS"] = get("global.find-links")
    if get("global.extra-index-url"):
        env["UV_EXTRA_INDEX_URL"] = get("global.extra-index-url")
    return env


def test_mlflow_run_with_the_uv_env_manager(client, tree, tracking_uri, tmp_path):
    """MLflow builds the project's own environment with uv from python_env.yaml (a local Python
    3.11, the wheels pip is configured with): no download of Python itself, unlike virtualenv."""
    import shutil
    if shutil.which("uv", path=str(Path(sys.executable).parent)) is None:
        pytest.skip("uv is not installed (pip install -e '.[test]' installs it)")
    cmd = [str(Path(sys.executable).parent / "mlflow"), "run", str(ROOT), "-e", "full", "--env-manager", "uv",
           "--experiment-name", "harness", "-P", "preset=tiny", "-P", f"data_dir={tree}",
           "-P", "overrides=data.classes=airplane,bird gan.epochs=1"]
    # An env root of its own: MLflow names an env by python_env.yaml alone, so an env built by an older
    # checkout (`-e .` of another tree, fewer dependencies) would be reused, and this checkout never run.
    env = {**_env(tracking_uri, tmp_path), **_pip_sources(), "MLFLOW_ENV_ROOT": str(tmp_path / "envs")}
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "/envs/mlflow-" in proc.stderr and "bin/activate" in proc.stderr  # it ran in the env uv built
    exp = client.get_experiment_by_name("harness")
    (top,) = [r for r in client.search_runs([exp.experiment_id]) if "mlflow.parentRunId" not in r.data.tags]
    assert top.info.status == "FINISHED" and top.data.tags["harness.phase"] == "pipeline"


@pytest.mark.parametrize("setting,shape", [("data.image_size=64", (3, 64, 64)), ("data.channels=1", (1, 32, 32))])
def test_run_at_64_pixels_and_in_gray(runner, client, tree, tmp_path, setting, shape):
    invoke(runner, ["run", "--preset", "tiny", "--data-dir", tree, *CLASSES, "--set", setting])
    (pipe,) = _pipelines(client)
    _, kids = _tree_runs(client, pipe.info.run_id)
    assert sorted(kids) == sorted(PHASES) and all(k.info.status == "FINISHED" for k in kids.values())
    synth = np.load(client.download_artifacts(kids["generate"].info.run_id, "synthetic.npz", str(tmp_path)))["images"]
    assert synth.shape == (64, *shape)
    ckpt = torch.load(client.download_artifacts(kids["baseline"].info.run_id, "model/model.pt", str(tmp_path)),
                      weights_only=True)
    assert (ckpt["channels"], ckpt["image_size"]) == (shape[0], shape[1])
    # What each run read is in MLflow's dataset records: context and the digest of the full content.
    inputs = {d.tags[0].value: d.dataset for d in client.get_run(kids["synthetic"].info.run_id).inputs.dataset_inputs}
    assert set(inputs) == {"train", "validation", "test", "synthetic"}
    assert inputs["test"].digest == kids["baseline"].data.tags["harness.data.test"].split(":")[1]
    assert f'"features_shape": [36, {shape[0]}, {shape[1]}, {shape[2]}]' in inputs["test"].profile


def test_a_bad_tree_is_one_line_and_leaves_no_run(runner, client, tree):
    (tree / "train" / "bird" / "notes.txt").write_text("not an image")
    result = invoke(runner, ["run", "--preset", "tiny", "--data-dir", tree, *CLASSES], ok=False)
    assert result.exit_code == 2 and "notes.txt is not an image" in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    exp = client.get_experiment_by_name("harness")
    assert client.search_runs([exp.experiment_id]) == []


def test_all_classes_and_a_standalone_generator_with_quality(runner, client, tree):
    out = invoke(runner, ["run", "--preset", "tiny", "--data-dir", tree, "--set", "data.classes=all"]).output
    assert "| cat F1 |" in out  # the tree's four classes, by name
    exp = client.get_experiment_by_name("harness")
    (pipe,) = _pipelines(client)
    assert pipe.data.params["data.classes"] == "airplane,automobile,bird,cat"
    # The evaluator has no command of its own: a generator run that needs one trains it.
    invoke(runner, ["generator", "--preset", "tiny", "--data-dir", tree, *CLASSES, "--set", "quality.enabled=true",
                    "--set", "quality.evaluator_epochs=1"])
    assert client.search_runs([exp.experiment_id], "tags.`harness.phase` = 'evaluator'")
