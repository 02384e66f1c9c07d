"""`harness sweep` on the tiny preset: trials as nested MLflow runs, resume, two workers on one
study, pruning, and spec errors."""
import types

import optuna
import pytest

from conftest import invoke, write_tree
from harness import sweep
from harness.context import Memo
from harness.errors import HarnessError

CLASSES = ["--set", "data.classes=airplane,automobile,bird"]
SPEC = """
[space."generate.checkpoint_epoch"]
type = "checkpoint"
[space."generate.n_samples"]
type = "int"
low = 16
high = 64
log = true
[space."pseudolabel.threshold"]
type = "float"
low = 0.0
high = 0.5
[sampler]
n_startup_trials = 2
[pruner]
type = "{pruner}"
warmup_epochs = 0
lower = 1.01
"""


def _spec(tmp_path, pruner="none"):
    path = tmp_path / f"spec-{pruner}.toml"
    path.write_text(SPEC.format(pruner=pruner))
    return path


def _finished(storage, name):
    study = optuna.load_study(study_name=name, storage=storage)
    return study, study.get_trials(states=sweep.FINISHED)


def test_sweep_then_resume(runner, client, tree, tmp_path, tracking_uri):
    args = ["sweep", "--preset", "tiny", "--data-dir", tree, *CLASSES, "--spec", _spec(tmp_path), "--study", "s1"]
    out = invoke(runner, [*args, "--trials", "3"]).output
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"  # beside the tracking database
    study, done = _finished(storage, "s1")
    assert len(done) == 3 and "best params" in out and "| Accuracy |" in out
    assert "Best trial" in open(out.rstrip().splitlines()[-1].removeprefix("report: ")).read()
    invoke(runner, [*args, "--trials", "6"])
    study, done = _finished(storage, "s1")
    assert sorted(t.number for t in done) == list(range(6))
    exp = client.get_experiment_by_name("harness")
    trial_runs = client.search_runs([exp.experiment_id], "tags.`harness.phase` = 'trial'")
    assert len(trial_runs) == 6
    by_id = {r.info.run_id: r for r in trial_runs}
    for t in done:  # each trial knows its MLflow run, and the run knows its trial
        run = by_id[t.user_attrs["mlflow_run_id"]]
        assert run.data.tags["harness.trial"] == str(t.number)
        assert run.info.run_name == f"sweep trial {t.number}"
        assert run.data.tags["harness.study"] == "s1"
        assert float(run.data.params["pseudolabel.threshold"]) == pytest.approx(t.params["pseudolabel.threshold"])
        # Trials never evaluate on the test set.
        assert not any(k.startswith("test/") for k in run.data.metrics)
    sweeps = client.search_runs([exp.experiment_id], "tags.`harness.phase` = 'sweep'",
                                order_by=["attributes.start_time ASC"])
    assert len(sweeps) == 1 and sweeps[0].info.status == "FINISHED"  # one study, one parent: the rerun joined it
    parents = {r.data.tags["mlflow.parentRunId"] for r in trial_runs}
    assert parents == {s.info.run_id for s in sweeps} == {study.user_attrs["harness.mlflow_run"]}
    last = sweeps[-1]
    arts = {a.path for a in client.list_artifacts(last.info.run_id)} | \
        {a.path for a in client.list_artifacts(last.info.run_id, "optuna")}
    assert {"best_params.json", "optuna/optimization_history.png", "optuna/slice.png",
            "optuna/intermediate_values.png", "optuna/timeline.png"} <= arts
    # The first trial is the preset's own values (checkpoint 0 = the last one): the reference point.
    first = min(done, key=lambda t: t.number)
    assert first.params == {"generate.checkpoint_epoch": 2, "generate.n_samples": 64, "pseudolabel.threshold": 0.0}
    assert 0 <= last.data.metrics["best/test_accuracy"] <= 1
    # Trials log generation and labelling as metrics on their own run; only the augmented model is
    # a child run. The best trial's model is the one tested: no retrained copy.
    assert all({"generate/n_samples", "kept/count"} <= set(r.data.metrics) for r in trial_runs)
    children = [r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get("mlflow.parentRunId") in by_id]
    assert {r.data.tags["harness.phase"] for r in children} == {"control", "synthetic"}
    best = study.best_trial

    def tested(phase):
        return [r for r in client.search_runs([exp.experiment_id], f"tags.`harness.phase` = '{phase}'",
                                              order_by=["attributes.start_time DESC"])
                if r.data.tags.get("mlflow.parentRunId") == last.info.run_id]
    syn, control = tested("synthetic"), tested("control")
    assert len(syn) == len(control) == 2  # each of the two sweep commands tested the best trial it ended with
    assert syn[0].data.params["synthetic.model_run"] == best.user_attrs["synthetic_run_id"]
    assert control[0].data.params["control.model_run"] == best.user_attrs["control_run_id"]
    # The objective is the images' effect on validation: the synthetic arm beyond its control.
    assert syn[0].data.metrics["val/accuracy"] - control[0].data.metrics["val/accuracy"] == pytest.approx(best.value)
    swept = client.get_run(last.info.run_id).data.metrics
    assert syn[0].data.metrics["test/accuracy"] == pytest.approx(swept["best/test_accuracy"])
    assert swept["images/accuracy"] == pytest.approx(syn[0].data.metrics["test/accuracy"] -
                                                     control[0].data.metrics["test/accuracy"])
    # Baseline and GAN are trained once per study: the second sweep reused both.
    gans = client.search_runs([exp.experiment_id], "tags.`harness.phase` = 'generator'")
    assert len(gans) == 2 and sum("harness.reused_from" in g.data.tags for g in gans) == 1


def test_pruned_trials_show_in_mlflow(runner, client, tree, tmp_path):
    # A threshold pruner no accuracy can pass: every trial is pruned after its first epoch.
    optuna.logging.set_verbosity(optuna.logging.DEBUG)  # a library caller's choice, which the command keeps
    try:
        result = invoke(runner, ["sweep", "--preset", "tiny", "--data-dir", tree, *CLASSES, "--spec",
                                 _spec(tmp_path, "threshold"), "--study", "p", "--trials", "2"], ok=False)
        assert optuna.logging.get_verbosity() == optuna.logging.DEBUG
    finally:
        optuna.logging.set_verbosity(optuna.logging.INFO)
    assert result.exit_code == 2 and "no completed trial (all pruned or failed)" in result.output
    study = optuna.load_study(study_name="p", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.PRUNED] * 2
    exp = client.get_experiment_by_name("harness")
    for t in study.trials:
        run = client.get_run(t.user_attrs["mlflow_run_id"])
        assert run.info.status == "KILLED" and run.data.tags["harness.pruned"] == "true"
    augmented = client.search_runs([exp.experiment_id], "tags.`harness.phase` = 'synthetic'")
    assert all(r.info.status == "KILLED" for r in augmented)
    # One epoch was reported before the pruner stopped each trial.
    assert all(len(client.get_metric_history(r.info.run_id, "val/accuracy")) == 1 for r in augmented)


@pytest.mark.parametrize("body, message", [
    ('[space."gan.epoch"]\ntype = "int"\nlow = 1\nhigh = 2\n', "unknown config field; valid fields:"),
    ('[space."generate.n_samples"]\ntype = "int"\nlow = 100\nhigh = 10\n', "low (100) must be below high (10)"),
    ('[space."pseudolabel.threshold"]\ntype = "float"\nlow = 0.0\nhigh = 0.5\nlog = true\n', "a log range needs low > 0"),
    ('[space."pseudolabel.threshold"]\ntype = "float"\nlow = 0.5\nhigh = 1.5\n', "pseudolabel.threshold must be in [0, 1]"),
    ('[space."generate.n_samples"]\ntype = "normal"\n', "type must be int, float, categorical or checkpoint"),
    ('[space."generate.n_samples"]\ntype = "checkpoint"\n', "type checkpoint only fits generate.checkpoint_epoch"),
    ('[space."gan.lr"]\ntype = "float"\nlow = 0.1\nhigh = 0.2\n', "trained once per study, so a trial cannot change gan.lr"),
    ('[space]\n"generate.seed" = 3\n', "expected a table"),
    ('[spaces."gan.width"]\n', "unknown section(s) spaces"),
    ('[pruner]\ntype = "median"\n', "declares no"),
    ('[space."generate.n_samples"]\ntype = "int"\nlow = 1\nhigh = 2\n[sampler]\nseed = 3\n',
     "unknown [sampler] option(s) seed; valid: n_startup_trials, type"),
    ('[space."generate.n_samples"]\ntype = "int"\nlow = 1\nhigh = 2\n[sampler]\ntype = "cmaes"\n',
     "sampler type must be tpe, gp or random"),
    ('[space."generate.n_samples"]\ntype = "int"\nlow = 1\nhigh = 2\n[pruner]\nwarmup = 3\n',
     "unknown [pruner] option(s) warmup"),
])
def test_spec_errors(tmp_path, body, message):
    path = tmp_path / "bad.toml"
    path.write_text(body)
    with pytest.raises(HarnessError) as info:
        sweep.space.load_spec(path)
    assert message in str(info.value)


@pytest.mark.parametrize("kind,cls", [("tpe", "TPESampler"), ("gp", "GPSampler"), ("random", "RandomSampler")])
def test_spec_chooses_the_sampler(tmp_path, kind, cls):
    path = tmp_path / "s.toml"
    path.write_text(f'[space."generate.n_samples"]\ntype = "int"\nlow = 1\nhigh = 2\n[sampler]\ntype = "{kind}"\n')
    spec = sweep.space.load_spec(path)
    study, created = sweep.open_study("s", f"sqlite:///{tmp_path / 'o.db'}", spec, sampler_seed=1)
    assert type(study.sampler).__name__ == cls and created  # a new study: this call made it
    assert sweep.open_study("s", f"sqlite:///{tmp_path / 'o.db'}", spec, sampler_seed=1)[1] is False


def test_spec_error_through_cli(runner, tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('[space."nope.x"]\ntype = "int"\nlow = 1\nhigh = 2\n')
    result = invoke(runner, ["sweep", "--preset", "tiny", "--spec", path], ok=False)
    assert result.exit_code == 2 and "unknown config field" in result.output and "Traceback" not in result.output


def test_default_spec_is_valid():
    spec = sweep.space.load_spec(None)
    assert {p.field for p in spec.params} == {"generate.checkpoint_epoch", "generate.n_samples", "pseudolabel.threshold"}


def test_incremental_labelling_matches_labelling_from_scratch(monkeypatch):
    # A sweep labels a checkpoint's stream once, extending it for larger sample counts; the memo
    # must give what labelling each request from scratch would (up to float noise of batching).
    import torch

    from harness import train
    from harness.classifiers.simplecnn import SimpleCNN
    from harness.phases import pseudolabel
    model = SimpleCNN(3)
    calls = []
    real_predict = train.predict_proba
    monkeypatch.setattr(train, "predict_proba", lambda m, x, d: calls.append(len(x)) or real_predict(m, x, d))
    images = torch.randint(0, 256, (700, 3, 32, 32), dtype=torch.uint8)
    dev = torch.device("cpu")
    ctx = types.SimpleNamespace(memo=Memo(), device=dev)  # the memo lives in the caller's context
    base = types.SimpleNamespace(source_run_id="run", model=model)  # the baseline phase's result
    fresh = real_predict(model, images, dev).numpy()
    a = pseudolabel._baseline_proba(ctx, base, images[:300])
    b = pseudolabel._baseline_proba(ctx, base, images[:100])  # a prefix: nothing to label
    c = pseudolabel._baseline_proba(ctx, base, images)  # longer: only the 400 new images
    assert calls == [300, 400]
    for got, n in ((a, 300), (b, 100), (c, 700)):
        assert got.shape == (n, 3) and abs(got - fresh[:n]).max() < 1e-5
    other = images.clone()
    other[0] = 255 - other[0]
    pseudolabel._baseline_proba(ctx, base, other[:50])  # different images: labelled afresh
    assert calls[-1] == 50


def test_a_study_of_another_config_is_not_resumed(runner, client, tree, tmp_path):
    args = ["sweep", "--preset", "tiny", "--data-dir", tree, *CLASSES, "--spec", _spec(tmp_path), "--study", "mine",
            "--trials", "1"]
    invoke(runner, args)
    result = invoke(runner, [*args, "--set", "classifier.epochs=3"], ok=False)
    assert result.exit_code == 2 and "holds trials of another config or data set" in result.output


def test_a_sweep_whose_trials_all_fail_stops(runner, client, tree, tmp_path):
    """Every trial's classifier diverges: the sweep stops after a few, in one line naming why, instead
    of failing trials until it is killed."""
    spec = tmp_path / "diverge.toml"
    spec.write_text('[space."classifier.lr"]\ntype = "float"\nlow = 1e10\nhigh = 1e12\nlog = true\n')
    result = invoke(runner, ["sweep", "--preset", "tiny", "--data-dir", tree, *CLASSES, "--spec", spec, "--trials", "50",
                             "--study", "diverge", "--storage", f"sqlite:///{tmp_path / 'o.db'}"], ok=False)
    assert result.exit_code == 2 and "Traceback" not in result.output
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"Error: {sweep.MAX_FAILED_IN_A_ROW} sweep trials failed in a row") and "diverged" in last
    study = optuna.load_study(study_name="diverge", storage=f"sqlite:///{tmp_path / 'o.db'}")
    # (the preset's own lr lies outside the space: no reference trial) one line per failed trial
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.FAIL] * sweep.MAX_FAILED_IN_A_ROW
    assert all("diverged" in t.user_attrs["error"] for t in study.trials)  # why, in the study too
    said = [ln for ln in result.stderr.splitlines() if ln.startswith("sweep trial ")]
    assert len(said) == sweep.MAX_FAILED_IN_A_ROW and all("diverged" in ln for ln in said)
    exp = client.get_experiment_by_name("harness").experiment_id
    assert client.search_runs([exp], "attributes.status = 'RUNNING'") == []


def test_a_live_trial_a_peer_took_for_dead_does_not_stop_the_worker(tmp_path, monkeypatch):
    """A loaded machine delays a worker's heartbeat past the grace period: a peer fails its trial as dead
    and queues a copy. Optuna then refuses the worker's result; the worker says so and goes on, and the
    copy is run, instead of the sweep ending in a traceback."""
    monkeypatch.setenv("HARNESS_HEARTBEAT_SECONDS", "1")
    from harness import optuna_storage
    study, _ = optuna_storage.open_study("late", f"sqlite:///{tmp_path / 'o.db'}", optuna.samplers.RandomSampler(0),
                                         optuna.pruners.NopPruner())
    storage, _ = optuna_storage.storage_of(study)
    said, ran = [], []

    def objective(trial):
        ran.append(trial.number)
        if trial.number == 0:  # what a peer's fail_stale does to a trial whose heartbeat came late
            storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)
            optuna.storages.RetryHeartbeatStaleTrialCallback()(study, storage.get_trial(trial._trial_id))
        return 0.5

    ctx = types.SimpleNamespace(store=types.SimpleNamespace(say=said.append, pause=lambda: None))
    sweep._work(ctx, study, objective, 2, [], ran)
    states = [t.state.name for t in study.trials]
    assert states[0] == "FAIL" and states.count("COMPLETE") == 2
    assert study.trials[1].system_attrs["failed_trial"] == 0  # the copy ran
    assert said == ["sweep trial 0: another worker took it over (this worker's heartbeat came late); its copy "
                    "reuses the phases finished here"]


STEPS_SPEC = """
[space."generate.n_samples"]
type = "categorical"
choices = [64, 600]
[sampler]
type = "random"
[pruner]
type = "none"
"""


@pytest.mark.parametrize("control", ["true", "false"])
def test_a_knob_that_only_adds_steps_does_not_win(runner, client, tmp_path, control):
    # The training images replayed with their true labels (generator.kind=replay, pseudolabel.mode=none) carry
    # nothing new; 600 of them bring an under-trained baseline (one epoch) five times the steps of 64. A
    # sweep of the synthetic arm alone (control.enabled=false) sees validation accuracy rise and picks 600.
    # Its control replays the same images in the same order (the same seed): beyond it, every trial is
    # worth exactly nothing, so 600 gets no credit and the sweep keeps its first trial (the preset's 64).
    grey = {"airplane": (120, 128, 128), "automobile": (128, 120, 128), "bird": (128, 128, 120)}
    tree = write_tree(tmp_path / "grey", n_test=10, colours=grey, noise=60)
    spec = tmp_path / "steps.toml"
    spec.write_text(STEPS_SPEC)
    out = invoke(runner, ["sweep", "--preset", "tiny", "--data-dir", tree, "--spec", spec, "--study", "steps",
                          "--trials", "4", "--set", "generator.kind=replay", "--set", "pseudolabel.mode=none",
                          "--set", "classifier.epochs=1", "--set", "classifier.lr=0.003",
                          "--set", f"control.enabled={control}"]).output
    study = optuna.load_study(study_name="steps", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    values = {}
    for t in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)):
        values.setdefault(t.params["generate.n_samples"], []).append(t.value)
    assert set(values) == {64, 600}, values  # both choices were tried
    if control == "true":
        assert all(v == 0.0 for vs in values.values() for v in vs), values
        assert study.best_trial.params["generate.n_samples"] == 64 and "the images' effect on validation" in out
    else:
        assert min(values[600]) > max(values[64]) and study.best_trial.params["generate.n_samples"] == 600, values
