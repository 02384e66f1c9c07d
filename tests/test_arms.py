"""harness/arms.py, the arms as a library: a trained arm is logged (curves, report, weights, test metrics),
loads back as the same network, and one started from weights says so in its description."""
import dataclasses

import mlflow
import torch

CLASSES = ["data.classes=airplane,automobile,bird"]


def test_an_arm_logs_what_it_trained_and_loads_back_the_same_network(client, tree, tmp_path):
    from harness import arms, config, precision
    from harness.context import Context
    from harness.tracking import store
    from harness.tracking.store import NOTE
    cpu = torch.device("cpu")
    cfg = precision.resolve_config(config.load("tiny", [*CLASSES, "classifier.epochs=1"]), cpu)
    ctx = Context(store.configure("harness"), cpu, str(tree))
    splits = ctx.splits(cfg.data)
    with mlflow.start_run() as run:
        model, m = arms.fit_and_report(cfg, splits, cpu, "baseline")
    logged = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"training_curves.png", "confusion_matrix.png", "classification_report.json", "model"} <= logged
    assert 0.0 <= m["test/accuracy"] <= 1.0 and "trained from scratch" in client.get_run(run.info.run_id).data.tags[NOTE]
    back, classes = arms.load_model(run.info.run_id)
    x = splits.test_x[:8]
    assert classes == list(splits.classes)
    assert torch.equal(model.eval()(x).argmax(1), back.eval()(x).argmax(1))
    # Started from those weights: fine-tuned, said so with the weights' name.
    start = ({k: v.clone() for k, v in model.state_dict().items()}, "weights:test")
    tuned = dataclasses.replace(cfg, classifier=dataclasses.replace(cfg.classifier, init="baseline.pt"))
    with mlflow.start_run() as again:
        arms.fit_and_report(tuned, splits, cpu, "synthetic", start=start)
    assert "fine-tuned from `baseline.pt`" in client.get_run(again.info.run_id).data.tags[NOTE]
