"""`harness baseline` end to end through the real CLI, checked through MlflowClient."""
import json

import mlflow
import mlflow.pytorch

import pytest
import torch

from conftest import invoke
from harness.classifiers.simplecnn import SimpleCNN

TREE = ["--set", "data.classes=airplane,automobile,bird"]


def _only_run(client):
    exp = client.get_experiment_by_name("harness")
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1
    return runs[0]


def test_baseline_tiny_logs_params_metrics_artifacts(runner, client, tree, tmp_path):
    result = invoke(runner, ["baseline", "--preset", "tiny", "--data-dir", tree, *TREE])
    run = _only_run(client)
    assert run.info.status == "FINISHED"
    assert run.info.run_id in result.output and "F1 weighted" in result.output
    # The experiment opens in the UI's classic-ML view.
    exp = client.get_experiment(run.info.experiment_id)
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    p = run.data.params
    assert p["data.n_per_class"] == "20" and p["classifier.epochs"] == "2"
    assert p["data.classes"] == "airplane,automobile,bird"
    # The run logs the sections its key covers, not the whole config: no GAN settings on a baseline.
    assert not any(k.startswith(("gan.", "generate.", "pseudolabel.")) for k in p)
    assert run.data.tags["harness.preset"] == "tiny"
    t = run.data.tags
    assert t["harness.phase"] == "baseline" and len(t["harness.config_hash"]) == 12
    assert t["harness.versions.torch"] == torch.__version__ and "harness.code_version" in t
    m = run.data.metrics
    for key in ["test/accuracy", "test/f1_weighted", "test/f1_macro", "test/bird/precision",
                "test/airplane/recall", "test/automobile/f1"]:
        assert 0.0 <= m[key] <= 1.0, key
    # The coloured toy classes are easy: even 2 tiny epochs learn them.
    assert m["test/accuracy"] > 0.6
    history = client.get_metric_history(run.info.run_id, "val/accuracy")
    assert [h.step for h in history] == [1, 2]
    assert len(client.get_metric_history(run.info.run_id, "train/loss")) == 2
    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"classification_report.json", "classification_report.txt", "confusion_matrix.png",
            "predictions.json", "training_curves.png", "model"} <= names
    local = client.download_artifacts(run.info.run_id, "", str(tmp_path / "dl"))
    report = json.load(open(f"{local}/classification_report.json"))
    assert report["bird"]["support"] == 12
    assert abs(report["accuracy"] - m["test/accuracy"]) < 1e-9
    table = mlflow.load_table("predictions.json", run_ids=[run.info.run_id])
    assert list(table.columns[:4]) == ["index", "label", "predicted", "confidence"] and len(table) == 36
    assert (table["predicted"] == table["label"]).mean() == pytest.approx(m["test/accuracy"])
    # The same network as an MLflow LoggedModel (pickle-free), with its test metrics: the Models tab.
    (logged,) = mlflow.search_logged_models(experiment_ids=[run.info.experiment_id], output_format="list")
    assert logged.name == "baseline" and logged.source_run_id == run.info.run_id
    assert {mm.key: mm.value for mm in logged.metrics}["test/accuracy"] == m["test/accuracy"]
    net = mlflow.pytorch.load_model(logged.model_uri)
    assert net(torch.zeros((2, 3, 32, 32), dtype=torch.uint8)).shape == (2, 3)
    saved = torch.load(f"{local}/model/model.pt", weights_only=True)
    model = SimpleCNN(len(saved["classes"]))
    model.load_state_dict(saved["state_dict"])
    assert saved["config"]["classifier"]["epochs"] == 2


def _error(result):
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    return lines[-1]


@pytest.mark.parametrize("args, message", [
    (["--set", "data.classes=airplane,plane"], "unknown class 'plane'; valid classes: 'airplane', 'automobile', 'bird', 'cat'"),
    (["--set", "data.n_per_class=100"], "class 'airplane' has 40 training images"),
    (["--set", "classifier.epochz=1"], "unknown config key 'classifier.epochz'; valid keys:"),
    (["--set", "classifier.epochs=many"], "classifier.epochs must be an integer, got 'many'"),
    (["--preset", "nosuch"], "unknown preset 'nosuch'"),
])
def test_bad_input_is_one_line_exit_2(runner, client, tree, args, message):
    result = invoke(runner, ["baseline", "--preset", "tiny", "--data-dir", tree, *args], ok=False)
    assert message in _error(result)
    exp = client.get_experiment_by_name("harness")
    # Input is checked before a run starts: nothing half-done is left in the store.
    assert exp is None or not client.search_runs([exp.experiment_id])


def test_bad_data_dirs(runner, client, tmp_path):
    result = invoke(runner, ["baseline", "--preset", "tiny", "--data-dir", tmp_path / "missing"], ok=False)
    assert "does not exist; expected a class-folder tree" in _error(result)
    (tmp_path / "odd").mkdir()
    result = invoke(runner, ["baseline", "--preset", "tiny", "--data-dir", tmp_path / "odd"], ok=False)
    assert "holds no class folders; expected a class-folder tree (train/<class>/*" in _error(result)


def test_corrupt_image(runner, client, tree):
    (tree / "train" / "bird" / "bird_0007.png").write_bytes(b"\x89PNG broken")
    result = invoke(runner, ["baseline", "--preset", "tiny", "--data-dir", tree, *TREE], ok=False)
    assert "bird_0007.png" in _error(result)


@pytest.mark.parametrize("uri", ["sqlite:///{tmp}/a-file/mlflow.db", "http://127.0.0.1:9"])
def test_unreachable_tracking_store(runner, tree, monkeypatch, tmp_path, uri):
    (tmp_path / "a-file").write_text("a file where the store's folder should be")
    uri = uri.format(tmp=tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    result = invoke(runner, ["baseline", "--preset", "tiny", "--data-dir", tree, *TREE], ok=False)
    assert f"cannot reach the MLflow tracking store '{uri}'" in _error(result)


def test_baseline_on_real_data(runner, client, real_data):
    invoke(runner, ["baseline", "--preset", "tiny", "--data-dir", real_data])
    run = _only_run(client)
    assert run.info.status == "FINISHED"
    # 3 classes x 1000 test images, whatever the preset's training size.
    assert client.get_metric_history(run.info.run_id, "test/accuracy")[0].value > 0.4
    assert run.data.tags["harness.data_source"].startswith("class folders with train/ and test/ at")
