"""harness/runner/: how a phase runs on every path: its key (config fields, code, data, what its module's
`keyed_on` adds, upstream keys), reuse of a finished run with that key, recomputation of a failed one,
the records a run keeps of what it read."""
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import invoke

CLASSES = ["--set", "data.classes=airplane,automobile,bird"]


def test_a_key_is_what_the_phase_computes_from(tree):
    """The same config and inputs give the same key; a field the phase reads, or what its module's
    keyed_on adds, gives another; a field it does not read does not."""
    import torch

    from harness import config, precision
    from harness.context import Context
    from harness.runner import keys
    cfg = precision.resolve_config(config.load("tiny", ["data.classes=airplane,automobile,bird"]), torch.device("cpu"))
    ctx = Context(None, torch.device("cpu"), str(tree))
    key = lambda c: keys.key(ctx, keys.Row.of("baseline", c), c, {})  # noqa: E731
    again = precision.resolve_config(config.load("tiny", ["data.classes=airplane,automobile,bird"]), torch.device("cpu"))
    assert again is not cfg and key(again) == key(cfg)
    assert key(config.apply(cfg, {"classifier.lr": 0.01})) != key(cfg)
    assert key(config.apply(cfg, {"generate.n_samples": 7})) == key(cfg)  # the baseline never reads it
    w = tree.parent / "w.pt"
    from harness.classifiers import build
    torch.save(build(cfg.classifier, 3, 3, 32).state_dict(), w)
    assert key(config.apply(cfg, {"classifier.init": str(w)})) != key(cfg)  # keyed_on: the weights' content


def test_named_upstream_runs_key_the_cache(runner, client, tree):
    common = ["--preset", "tiny", "--data-dir", tree, *CLASSES]
    invoke(runner, ["generator", *common])
    gan_id = client.search_runs([client.get_experiment_by_name("harness").experiment_id])[0].info.run_id
    invoke(runner, ["generate", *common, "--gan-run", gan_id])
    invoke(runner, ["generate", *common, "--gan-run", gan_id])  # same named input: reused
    invoke(runner, ["generate", *common])  # the config's own gan run, found by key: its own cache entry
    exp = client.get_experiment_by_name("harness")
    gens = client.search_runs([exp.experiment_id], "tags.`harness.phase` = 'generate'",
                              order_by=["attributes.start_time ASC"])
    assert [("harness.reused_from" in g.data.tags) for g in gens] == [False, True, False]
    assert all(g.data.params["upstream.generator"] == gan_id for g in gens)


def _baseline_runs(client):
    exp = client.get_experiment_by_name("harness")
    return client.search_runs([exp.experiment_id], "tags.`harness.phase` = 'baseline'",
                              order_by=["attributes.start_time ASC"])


def _write_batches(tree, root):
    """The same images in the official cifar-10-batches-py layout (in the class folders' file order)."""
    import pickle

    from PIL import Image
    from conftest import TREE_CLASSES
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for split, names in (("train", [f"data_batch_{i}" for i in range(1, 6)]), ("test", ["test_batch"])):
        data, labels = [], []
        for label, name in enumerate(TREE_CLASSES):
            for path in sorted((tree / split / name).iterdir()):
                data.append(np.asarray(Image.open(path)).transpose(2, 0, 1).reshape(-1))
                labels.append(label)
        chunks = np.array_split(np.arange(len(data)), len(names))
        for batch, idx in zip(names, chunks):
            with open(folder / batch, "wb") as f:
                pickle.dump({"data": np.stack([data[i] for i in idx]), "labels": [labels[i] for i in idx]}, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": list(TREE_CLASSES)}, f)
    return root


def test_the_data_is_in_the_key(runner, client, tree, tmp_path):
    from PIL import Image
    common = ["--preset", "tiny", *CLASSES]
    invoke(runner, ["baseline", "--data-dir", tree, *common])
    # The same pixels through another path and another layout: the same key, reused.
    moved = Path(shutil.copytree(tree, tmp_path / "elsewhere" / "copy"))
    invoke(runner, ["baseline", "--data-dir", moved, *common])
    invoke(runner, ["baseline", "--data-dir", _write_batches(tree, tmp_path / "batches"), *common])
    first, *same = _baseline_runs(client)
    assert [r.data.tags.get("harness.reused_from") for r in same] == [first.info.run_id] * 2
    assert {r.data.tags["harness.data.test"] for r in [first, *same]} == {first.data.tags["harness.data.test"]}
    # One changed image of the test split, same config: computed anew, its own accuracy.
    path = sorted((moved / "test" / "bird").iterdir())[0]
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(path)
    invoke(runner, ["baseline", "--data-dir", moved, *common])
    changed = _baseline_runs(client)[-1]
    assert "harness.reused_from" not in changed.data.tags
    assert changed.data.tags["harness.data.test"] != first.data.tags["harness.data.test"]
    assert changed.data.tags["harness.data.train"] == first.data.tags["harness.data.train"]
    # The comparator refuses to pair runs tested on different images, though every setting agrees.
    invoke(runner, ["run", "--data-dir", moved, *common])
    exp = client.get_experiment_by_name("harness").experiment_id
    (syn,) = client.search_runs([exp], "tags.`harness.phase` = 'synthetic'")
    result = invoke(runner, ["compare", "--baseline", first.info.run_id, "--synthetic", syn.info.run_id], ok=False)
    assert result.exit_code == 2 and "tested on different images" in result.output


@pytest.mark.parametrize("setting,message,phase", [
    ("classifier.lr=1e12", "baseline training diverged at epoch", "baseline"),
    ("gan.lr=1e30", "GAN training diverged at epoch", "generator")])
def test_a_diverged_phase_fails_and_is_never_reused(runner, client, tree, setting, message, phase):
    args = ["run", "--preset", "tiny", "--data-dir", tree, *CLASSES, "--set", setting]
    result = invoke(runner, args, ok=False)
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output
    exp = client.get_experiment_by_name("harness")
    failed = client.search_runs([exp.experiment_id], "attributes.status = 'FAILED'")
    assert failed and not client.search_runs([exp.experiment_id], "attributes.status = 'RUNNING'")
    invoke(runner, args, ok=False)  # the same again: computed again, not a reused cache entry
    runs = client.search_runs([exp.experiment_id], f"tags.`harness.phase` = '{phase}'")
    assert [r.info.status for r in runs] == ["FAILED", "FAILED"]
    assert not any("harness.reused_from" in r.data.tags for r in runs)


def test_long_phases_sample_system_metrics(runner, client, tree, monkeypatch):
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.2")
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLES_BEFORE_LOGGING", "1")
    invoke(runner, ["generator", "--preset", "tiny", "--data-dir", tree, *CLASSES, "--set", "gan.epochs=30",
                    "--set", "gan.checkpoint_every=30", "--set", "gan.sample_every=30"])
    invoke(runner, ["generate", "--preset", "tiny", "--data-dir", tree, *CLASSES, "--set", "gan.epochs=30",
                    "--set", "gan.checkpoint_every=30", "--set", "gan.sample_every=30"])
    exp = client.get_experiment_by_name("harness")
    runs = {r.data.tags["harness.phase"]: r for r in client.search_runs([exp.experiment_id])}
    assert any(k.startswith("system/cpu_utilization") for k in runs["generator"].data.metrics)
    assert not any(k.startswith("system/") for k in runs["generate"].data.metrics)  # seconds long: none


def test_a_sweep_of_synthetic_share_trains_one_baseline(runner, client, tree):
    invoke(runner, ["run", "--preset", "tiny", "--data-dir", tree, *CLASSES, "--set", "classifier.synthetic_share=0.2"])
    invoke(runner, ["run", "--preset", "tiny", "--data-dir", tree, *CLASSES, "--set", "classifier.synthetic_share=0.4"])
    exp = client.get_experiment_by_name("harness").experiment_id
    bases = client.search_runs([exp], "tags.`harness.phase` = 'baseline'", order_by=["attributes.start_time ASC"])
    syn = client.search_runs([exp], "tags.`harness.phase` = 'synthetic'")
    assert len(bases) == 2 and bases[1].data.tags["harness.reused_from"] == bases[0].info.run_id
    assert "classifier.synthetic_share" not in bases[0].data.params  # the baseline logs what its key covers
    assert len(syn) == 2 and not any("harness.reused_from" in s.data.tags for s in syn)
