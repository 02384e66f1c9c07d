"""The control arm (harness/phases/control.py): the synthetic arm's recipe with the real training images in
the slot. The headline is synthetic minus control; one control serves every generator that asks for the
same slot; runs without one are said to be "recipe not controlled" and never pooled with controlled ones."""
import json

import pytest

from conftest import invoke, write_tree

CLASSES = ["--set", "data.classes=airplane,automobile,bird"]


def _runs(client, phase):
    exp = client.get_experiment_by_name("harness")
    return client.search_runs([exp.experiment_id], f"tags.`harness.phase` = '{phase}'",
                              order_by=["attributes.start_time ASC"])


def _source(run) -> str:
    return run.data.tags.get("harness.reused_from", run.info.run_id)


def test_recipe_alone_gains_and_the_images_add_nothing(runner, client, tmp_path):
    # An under-trained baseline (one epoch: two steps) on classes that differ by a shade of grey under
    # heavy noise, and "images" that are the training images again with their true labels: ten times the
    # steps make the synthetic arm gain tens of points, and the control, which takes the same steps with
    # the same images, gains as much. The headline must say the images add nothing, while synthetic
    # minus baseline (delta/accuracy) is large.
    grey = {"airplane": (120, 128, 128), "automobile": (128, 120, 128), "bird": (128, 128, 120)}
    tree = write_tree(tmp_path / "grey", n_test=40, colours=grey, noise=60)
    args = ["run", "--preset", "tiny", "--data-dir", tree, "--seeds", "3",
            "--set", "generator.kind=replay", "--set", "generate.n_samples=600", "--set", "pseudolabel.mode=none",
            "--set", "classifier.epochs=1", "--set", "classifier.lr=0.003", "--set", "data.val_per_class=0"]
    out = invoke(runner, args).output
    (seeds,) = _runs(client, "seeds")
    m = seeds.data.metrics
    assert m["delta/accuracy"] > 0.10, m  # the recipe's steps: ten times the baseline's
    assert m["recipe/accuracy"] > 0.10 and abs(m["images/accuracy"]) < m["delta/accuracy"] / 3, m
    verdict = seeds.data.tags["mlflow.note.content"]
    assert "Headline: synthetic - control (the images' effect)" in out
    (cmp_run,) = [r for r in _runs(client, "compare") if r.data.tags.get("mlflow.parentRunId") == seeds.info.run_id]
    assert not cmp_run.data.tags["harness.verdict"].startswith("significant gain"), cmp_run.data.tags["harness.verdict"]
    assert "The recipe alone adds" in out and "train it longer before judging images" in verdict
    for pipe in _runs(client, "pipeline"):
        p = pipe.data.metrics
        assert p["delta/accuracy"] == pytest.approx(p["images/accuracy"] + p["recipe/accuracy"])


def test_one_control_serves_every_generator_of_a_slot(runner, client, tree):
    base = ["run", "--preset", "tiny", "--data-dir", tree, *CLASSES]
    # An epoch budget (the tiny preset's): the slot is the kept count. Every image kept (threshold 0):
    # two generator kinds that keep 64 images share one control.
    invoke(runner, base)
    invoke(runner, [*base, "--set", "generator.kind=noise"])
    controls = _runs(client, "control")
    assert len(controls) == 2 and _source(controls[1]) == controls[0].info.run_id
    assert {r.data.metrics["data/n_replayed"] for r in controls} == {64}
    # Another kept count is another control.
    invoke(runner, [*base, "--set", "generator.kind=noise", "--set", "generate.n_samples=40"])
    third = _runs(client, "control")[-1]
    assert "harness.reused_from" not in third.data.tags and third.data.metrics["data/n_replayed"] == 40
    # A fixed-share recipe adds the same images to every step whatever their count: the slot is the
    # training set once, and one control serves both sample counts...
    share = ["--set", "classifier.synthetic_share=0.25"]
    invoke(runner, [*base, *share])
    invoke(runner, [*base, *share, "--set", "generate.n_samples=40"])
    a, b = _runs(client, "control")[-2:]
    assert a.data.metrics["data/n_replayed"] == 60 and _source(b) == a.info.run_id
    # ...until the recipe changes: then the control is recomputed with it, the baseline is not.
    invoke(runner, [*base, *share, "--set", "classifier.synthetic_weight=0.5"])
    last = _runs(client, "control")[-1]
    assert "harness.reused_from" not in last.data.tags and last.data.params["classifier.synthetic_weight"] == "0.5"
    baselines = _runs(client, "baseline")
    assert _source(baselines[-1]) == baselines[0].info.run_id


def test_runs_without_a_control_say_so_and_are_never_pooled(runner, client, tree, tmp_path):
    common = ["--preset", "tiny", "--data-dir", tree, *CLASSES]
    out = invoke(runner, ["run", *common, "--set", "control.enabled=false"]).output
    assert "recipe not controlled" in out
    (old,) = _runs(client, "pipeline")
    assert "images/accuracy" not in old.data.metrics and "delta/accuracy" in old.data.metrics
    assert not _runs(client, "control")
    out = invoke(runner, ["compare", "--parent", old.info.run_id]).output
    assert "recipe not controlled" in out and "McNemar on synthetic - baseline" in out
    # A controlled pipeline of another seed beside it: pooled, the mean would be neither quantity.
    invoke(runner, ["run", *common, "--set", "data.seed=1", "--set", "classifier.seed=1", "--set", "generate.seed=1",
                    "--set", "gan.seed=1"])
    result = invoke(runner, ["compare", "--filter", "params.preset = 'tiny'"], ok=False)
    assert result.exit_code == 2 and "1 of the 2 pipelines have a control arm" in result.output
    assert "never pooled" in result.output and "Traceback" not in result.output
    # Named runs: --control makes a one-pair comparison the images' effect.
    runs = {p: _runs(client, p)[-1] for p in ("baseline", "synthetic", "control")}
    out = invoke(runner, ["compare", "--baseline", runs["baseline"].info.run_id, "--synthetic",
                          runs["synthetic"].info.run_id, "--control", runs["control"].info.run_id]).output
    assert "McNemar on synthetic - control" in out and "| Metric | Baseline | Control | Synthetic |" in out
    result = invoke(runner, ["compare", "--baseline", runs["baseline"].info.run_id, "--synthetic",
                             runs["synthetic"].info.run_id, "--control", runs["baseline"].info.run_id], ok=False)
    assert result.exit_code == 2 and "--control" in result.output and "pass it as --baseline" in result.output
    cmp = _runs(client, "compare")[-1]
    local = client.download_artifacts(cmp.info.run_id, "comparison.json", str(tmp_path))
    assert json.load(open(local))["controlled"] is True


def test_pretrain_use_trains_two_stages_and_the_control_mirrors_them(runner, client, tree):
    """classifier.synthetic_use=pretrain: the synthetic arm trains on the kept images alone (synthetic_stage),
    then on the real ones from those weights; the control does the same with as many replayed real images
    (control_stage). The second stages read no mixing field: changing one reuses every run."""
    import torch

    from harness import arms
    args = ["run", "--preset", "tiny", "--data-dir", tree, *CLASSES, "--set", "classifier.synthetic_use=pretrain"]
    invoke(runner, args)
    (base,), (syn_stage,), (ctl_stage,) = _runs(client, "baseline"), _runs(client, "synthetic_stage"), _runs(client, "control_stage")
    (syn,), (ctl,), (kept,) = _runs(client, "synthetic"), _runs(client, "control"), _runs(client, "pseudolabel")
    n = kept.data.metrics["kept/count"]
    assert n > 0 and syn_stage.data.metrics["data/n_synthetic"] == n == ctl_stage.data.metrics["data/n_replayed"]
    assert syn.data.params["upstream.synthetic_stage"] == syn_stage.info.run_id
    assert ctl.data.params["upstream.control_stage"] == ctl_stage.info.run_id
    assert "alone" in syn_stage.data.tags["mlflow.note.content"]
    assert f"`{syn_stage.info.run_id}`" in syn.data.tags["mlflow.note.content"]
    # The second stage is the baseline's training (same seed, same real images, same recipe) from other
    # weights: the same step count, and a network that is not the baseline's.
    history = [client.get_metric_history(r.info.run_id, "train/loss") for r in (base, syn, ctl)]
    assert len(history[0]) == len(history[1]) == len(history[2])
    models = [arms.load_model(r.info.run_id)[0].state_dict() for r in (base, syn, ctl)]
    for other in models[1:]:
        assert not all(torch.equal(models[0][k], other[k]) for k in models[0])
    # No mixing field is read under `pretrain`: every phase is reused.
    invoke(runner, [*args, "--set", "classifier.synthetic_weight=0.5", "--set", "classifier.real_only_epochs=1"])
    for phase in ("synthetic_stage", "control_stage", "synthetic", "control"):
        assert _source(_runs(client, phase)[-1]) == _runs(client, phase)[0].info.run_id, phase
