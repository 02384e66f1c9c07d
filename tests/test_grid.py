"""`harness grid` on the tiny preset: the run tree of a 2x2 grid with 2 seeds, a report whose CIs and
Holm-adjusted p-values match an independent computation, a grid grown without recomputing, and the
helpers (axes, MDE, Holm) on values known by hand."""
import json
import math

import numpy as np
import optuna
import pytest
from scipy import stats as scipy_stats

from conftest import invoke
from harness import grid
from harness.compare import stats

T = ["--preset", "tiny", "--set", "data.classes=airplane,automobile,bird"]
AXES = ["--axis", "data.n_per_class=10,20", "--axis", "pseudolabel.threshold=0.0,0.9"]


def _grid(runner, tree, tmp_path, *extra):
    return invoke(runner, ["grid", *T, "--data-dir", tree, *AXES, "--study", "g",
                           "--storage", f"sqlite:///{tmp_path / 'optuna.db'}", *extra])


def test_a_grid_builds_its_run_tree_and_a_report_that_checks_out(runner, client, tree, tmp_path):
    _grid(runner, tree, tmp_path, "--seeds", "2")
    exp = client.get_experiment_by_name("harness").experiment_id
    (parent,) = client.search_runs([exp], "tags.`harness.phase` = 'grid'")
    pipes = client.search_runs([exp], "tags.`harness.phase` = 'pipeline'")
    assert len(pipes) == 8 and {p.data.tags["mlflow.parentRunId"] for p in pipes} == {parent.info.run_id}
    assert {p.data.tags["harness.cell"] for p in pipes} == {
        f"data.n_per_class={n} pseudolabel.threshold={t}" for n in (10, 20) for t in ("0.0", "0.9")}
    assert all(p.info.status == "FINISHED" for p in pipes)
    report = json.loads(open(client.download_artifacts(parent.info.run_id, "grid.json", str(tmp_path))).read())
    assert {r["cell"] for r in report["cells"]} == {p.data.tags["harness.cell"] for p in pipes}
    assert all(r["n"] == 2 for r in report["cells"]) and report["mde_points"] == pytest.approx(stats.mde(2))
    assert "Holm p" in client.get_run(parent.info.run_id).data.tags["mlflow.note.content"]
    assert "grid.png" in {a.path for a in client.list_artifacts(parent.info.run_id)}  # the dose-response figure


def test_the_report_matches_an_independent_computation():
    from harness.compare.stats import SeedReport, Stat
    rng = np.random.default_rng(3)
    cells = {}
    for i, shift in enumerate((0.0, 0.01, 0.03)):  # three cells, 4 seeds each, growing true effects
        base = list(0.80 + rng.normal(0, 0.01, 4))
        cells[f"c{i}"] = (base, [b + shift + e for b, e in zip(base, rng.normal(0, 0.006, 4))])
    reports = [(label, SeedReport([str(k) for k in range(4)], [Stat("Accuracy", b, a, True)],
                                  [(str(k), 1, 1, 1.0) for k in range(4)], False, []))
               for label, (b, a) in cells.items()] + [("empty", None)]
    rows = stats.summarize(reports)
    ps = []
    for row, (b, a) in zip(rows, cells.values()):
        t = scipy_stats.ttest_rel(a, b)
        ci = t.confidence_interval(0.95)
        assert (row["ci_low"], row["ci_high"], row["t_p"]) == pytest.approx((ci.low, ci.high, t.pvalue))
        assert row["baseline_std"] == pytest.approx(np.std(b, ddof=1))
        ps.append(t.pvalue)
    order = np.argsort(ps)  # Holm by hand: the k-th smallest times (m - k), kept monotone
    want, running = {}, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (3 - rank) * ps[i]))
        want[i] = running
    assert [r["holm_p"] for r in rows[:3]] == pytest.approx([want[0], want[1], want[2]])
    assert rows[3]["n"] == 0 and math.isnan(rows[3]["holm_p"])
    assert rows[2]["t_p"] < 0.05 and rows[2]["verdict"].startswith("significant gain")
    # The verdict follows the Holm-adjusted p: a cell whose raw p passes and adjusted p fails reads "no".
    for row in rows[:3]:
        assert row["verdict"].startswith("significant") == (row["holm_p"] < 0.05), row
        assert "Holm-adjusted over 3 cells" in row["verdict"]


def test_a_grid_grows_without_recomputing(runner, client, tree, tmp_path):
    _grid(runner, tree, tmp_path, "--seeds", "1")
    exp = client.get_experiment_by_name("harness").experiment_id
    computed = lambda: [r for r in client.search_runs([exp], "tags.`harness.phase` = 'baseline'")  # noqa: E731
                        if "harness.reused_from" not in r.data.tags]
    first = len(computed())
    result = _grid(runner, tree, tmp_path, "--seeds", "2")
    assert "4 new items" in result.stderr  # only the new seed of each cell
    # Seed 1's baselines are new (2 data sizes); the thresholds share them by key: no cell recomputed.
    assert len(computed()) == first + 2
    study = optuna.load_study(study_name="g", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    assert len(study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))) == 8
    out = invoke(runner, ["grid", *T, "--data-dir", tree, *AXES, "--study", "g", "--report",
                          "--storage", f"sqlite:///{tmp_path / 'optuna.db'}"]).output
    assert out.count("| data.n_per_class=") == 4 and "| 2 |" in out


def test_grid_helpers_on_known_values():
    assert stats.holm([0.01, 0.04, 0.03, float("nan")])[:3] == pytest.approx([0.03, 0.06, 0.06])
    assert math.isnan(stats.holm([float("nan")])[0])
    # 5 seeds at a paired-delta SD of 1.5 points detect ~2.5 points at 80% power; 1 point needs ~20.
    assert stats.mde(5) == pytest.approx(2.52, abs=0.05) and stats.mde(20) < 1.0 < stats.mde(18)
    assert grid.parse_axes(("a.b=1,2",)) == [("a.b", ["1", "2"])]
    for bad in ("a.b", "a.b=", "a.b=1,1", "data.seed=1,2"):
        with pytest.raises(grid.HarnessError):
            grid.parse_axes((bad,))


def test_every_cell_is_checked_before_anything_is_enqueued(runner, client, tree, tmp_path):
    """The base config need not be a study of its own (pseudolabel.mode=filter with the default gan),
    as long as every cell is; a cell that `run` would refuse stops the grid before any item or run."""
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    bad = invoke(runner, ["grid", *T, "--data-dir", tree, "--axis", "generator.kind=oracle,mixup", "--set",
                          "pseudolabel.mode=filter", "--set", "generate.n_samples=20", "--seeds", "1", "--study", "bad", "--storage", storage], ok=False)
    assert bad.exit_code == 2 and "generator.kind=mixup does not" in bad.output
    over = invoke(runner, ["grid", *T, "--data-dir", tree, "--axis", "generator.kind=oracle,noise", "--set",
                           "generate.n_samples=100000", "--seeds", "1", "--study", "over", "--storage", storage], ok=False)
    assert over.exit_code == 2 and "100000" in over.output
    assert client.search_runs([e.experiment_id for e in client.search_experiments()]) == []
    assert optuna.get_all_study_names(storage) == []  # nothing enqueued
    invoke(runner, ["grid", *T, "--data-dir", tree, "--axis", "generator.kind=oracle,noise", "--set",
                    "pseudolabel.mode=filter", "--set", "generate.n_samples=20", "--seeds", "1", "--study", "ok",
                    "--storage", storage])
    exp = client.get_experiment_by_name("harness").experiment_id
    assert len(client.search_runs([exp], "tags.`harness.phase` = 'pipeline'")) == 2


@pytest.mark.parametrize("stop, handed_back", [(KeyboardInterrupt, True), (RuntimeError, False)])
def test_a_stopped_worker_hands_its_item_back_and_a_crashed_one_does_not(runner, client, tree, tmp_path,
                                                                          monkeypatch, stop, handed_back):
    # Stopped (Ctrl-C, or SIGTERM from a scheduler): the next worker redoes the item. A bug would only
    # crash the next worker the same way: that item fails, with nothing queued again.
    from harness import pipeline

    def stopped(*a, **k):
        raise stop("stopped here")
    monkeypatch.setattr(pipeline, "run", stopped)
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    args = ["grid", *T, "--data-dir", tree, "--axis", "data.n_per_class=10", "--seeds", "1", "--study", "h",
            "--storage", storage]
    if handed_back:  # the command ends as a stopped one: exit 130, the item back in the queue
        result = invoke(runner, args, ok=False)
        assert result.exit_code == 130 and "a grid item goes back to the queue" in result.output
    else:
        with pytest.raises(stop):
            invoke(runner, args, ok=False)
    trials = optuna.load_study(study_name="h", storage=storage).get_trials()
    assert [t.state for t in trials] == [optuna.trial.TrialState.FAIL] + [optuna.trial.TrialState.WAITING] * handed_back
    if handed_back:
        assert (trials[1].user_attrs["cell"], trials[1].user_attrs["seed"]) == ("data.n_per_class=10", 0)
