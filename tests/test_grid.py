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
from harness.errors import HarnessError
from harness.analysis import render, stats

T = ["--preset", "tiny", "--set", "data.classes=airplane,automobile,bird"]
AXES = ["--axis", "data.n_per_class=10,20", "--axis", "pseudolabel.threshold=0.0,0.9"]


def _grid(runner, tree, tmp_path, *extra):
    return invoke(runner, ["grid", *T, "--data-dir", tree, *AXES, "--study", "g",
                           "--storage", f"sqlite:///{tmp_path / 'optuna.db'}", *extra])


def test_a_grid_builds_its_run_tree_and_a_report_that_checks_out(runner, client, tree, tmp_path):
    _grid(runner, tree, tmp_path, "--seeds", "2", "--set", "quality.enabled=true")
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
    # Each cell's generated images, from its pipelines' own metrics: kept count and sample quality per seed.
    for row in report["cells"]:
        mine = [p for p in pipes if p.data.tags["harness.cell"] == row["cell"]]
        for name in ("count", "fd", "kid", "precision", "recall"):
            metric = f"kept/{name}" if name == "count" else f"quality/{name}"
            assert sorted(row["generated"][name]) == sorted(p.data.metrics[metric] for p in mine)
    md = client.download_artifacts(parent.info.run_id, "grid.md", str(tmp_path))
    assert "| cell | kept | FD | KID | precision | recall |" in open(md).read()
    assert {"grid.png", "report.html"} <= {a.path for a in client.list_artifacts(parent.info.run_id)}
    # The MLflow UI's saved views of this grid: its filter finds exactly its pipelines, and every column
    # it shows is a metric or a param those runs have.
    tags = client.get_experiment(exp).tags
    table = json.loads(tags[grid.VIEW + report["ui_views"]["table"]])
    chart = json.loads(tags[grid.VIEW + report["ui_views"]["chart"]])
    assert {r.info.run_id for r in client.search_runs([exp], table["searchFilter"])} == {p.info.run_id for p in pipes}
    for column in table["selectedColumns"]:
        kind, name = column.split(".", 1)
        assert all(name.strip("`") in getattr(p.data, kind) for p in pipes), column
    assert "data.n_per_class" in str(table["selectedColumns"]) and chart["groupBy"] == table["groupBy"]


def test_the_report_matches_an_independent_computation():
    from harness.analysis.stats import SeedReport, Stat
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
    # Three tables of the 4 cells: the deltas, the seeds spent, the generated images (their quality unmeasured).
    assert out.count("| data.n_per_class=") == 12 and "| 2 |" in out and "Sample quality was not measured" in out


def test_grid_helpers_on_known_values():
    assert stats.holm([0.01, 0.04, 0.03, float("nan")])[:3] == pytest.approx([0.03, 0.06, 0.06])
    assert math.isnan(stats.holm([float("nan")])[0])
    # 5 seeds at a paired-delta SD of 1.5 points detect ~2.5 points at 80% power; 1 point needs ~20.
    assert stats.mde(5) == pytest.approx(2.52, abs=0.05) and stats.mde(20) < 1.0 < stats.mde(18)
    assert grid.parse_axes(("a.b=1,2",)) == [("a.b", ["1", "2"])]
    for bad in (("a.b",), ("a.b=",), ("a.b=1,1",), ("data.seed=1,2",), ("a.b+c.d=1+2,3",), ("a.b+data.seed=1+2",),
                ("a.b=1", "c.d+a.b=1+2")):
        with pytest.raises(HarnessError):
            grid.parse_axes(bad)


def test_a_joint_axis_varies_its_keys_together():
    """Regimes that are not a cross product (probe needs pretrained weights): one axis of joined keys,
    each cell setting every key, labelled key by key like any other cell; the ladder prices each regime."""
    from harness import config
    cfg = config.load("tiny", [])
    axes = grid.parse_axes(("classifier.init + classifier.mode=scratch+train, pretrain + probe",
                            "data.n_per_class=10,20"))
    assert axes[0] == ("classifier.init+classifier.mode", ["scratch+train", "pretrain+probe"])
    cells = grid.cells(cfg, axes, ladder=[5])
    assert [c.label for c in cells[:2]] == ["classifier.init=scratch classifier.mode=train data.n_per_class=10",
                                            "classifier.init=scratch classifier.mode=train data.n_per_class=20"]
    assert [(c.cfg.classifier.init, c.cfg.classifier.mode) for c in cells[2:4]] == [("pretrain", "probe")] * 2
    rungs = [c for c in cells if c.cfg.generator.kind == "oracle"]
    assert len(rungs) == 4 and {(c.cfg.classifier.mode, c.cfg.data.n_per_class) for c in rungs} == \
        {("train", 10), ("train", 20), ("probe", 10), ("probe", 20)}
    assert grid.axis_keys(axes) == ["classifier.init", "classifier.mode", "data.n_per_class"]
    # A joint axis holding a ladder key beside others (a confirmation's): rungs per setting of the others.
    joint = grid.cells(cfg, grid.parse_axes(("generate.n_samples+data.n_per_class=10+10,20+10,10+20",)), ladder=[5])
    assert sorted(c.cfg.data.n_per_class for c in joint if c.rung is not None) == [10, 20]


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


def _constructed(tmp_path, precision=1.0, max_seeds=10, seeds=(0, 1, 2)):
    """A planned grid of two cells in a fresh storage, nothing run: items are completed by hand."""
    from harness import config, optuna_storage
    cfg = config.load("tiny", ["data.classes=airplane,automobile,bird"])
    study, _ = grid.open_grid("g", f"sqlite:///{tmp_path / 'optuna.db'}")
    axes = [("pseudolabel.threshold", ["0.5", "0.9"])]
    added = grid.plan(study, cfg, axes, list(seeds), precision, max_seeds)
    return study, cfg, axes, added, optuna_storage.storage_of(study)[0]


def _complete(study, storage, deltas: dict[str, list[float]]) -> None:
    """Claim every waiting item as a worker would and finish it with its cell's next delta."""
    while (item := grid.claim_item(study)) is not None:
        trial_id, cell, seed = item
        storage.set_trial_state_values(trial_id, grid.COMPLETE, [deltas[cell.split("=")[1]][seed]])


def test_a_tight_cell_stops_at_its_first_seeds_while_a_spread_one_grows(tmp_path):
    study, *_, added, storage = _constructed(tmp_path)
    assert added == 6
    # Cell 0.5: deltas within 0.1 points (half-width ~0.25 < 1); cell 0.9: 2.5 points apart.
    deltas = {"0.5": [0.010, 0.011, 0.009] + [0.01] * 10, "0.9": [0.0, 0.03, -0.02] + [0.005] * 10}
    assert grid.extend(study) == 0  # nothing decided before the first seeds are done
    _complete(study, storage, deltas)
    # t(2) * 2.5 / 1 squared is ~116 seeds: the cell gets its --max-seeds, 7 more; the tight one none.
    assert grid.extend(study) == 7
    waiting = study.get_trials(deepcopy=False, states=(grid.WAITING,))
    assert sorted(t.user_attrs["seed"] for t in waiting) == list(range(3, 10))
    assert {t.user_attrs["cell"] for t in waiting} == {"pseudolabel.threshold=0.9"}
    assert grid.extend(study) == 0  # decided from the first seeds: asking again adds nothing
    _complete(study, storage, deltas)
    assert grid.extend(study) == 0
    rows = {r["cell"].split("=")[1]: r for r in _rows(study, deltas)}
    assert rows["0.5"]["stopped"] == "half-width reached" and rows["0.5"]["n"] == 3
    assert rows["0.9"]["stopped"] == "max seeds" and rows["0.9"]["n"] == 10
    assert rows["0.9"]["interval"].startswith("two-stage")


def _rows(study, deltas):
    """The report's rows for a constructed grid (no MLflow runs: SeedReports made from the deltas)."""
    from harness.analysis.stats import Design, SeedReport, Stat
    _, cells, seeds = grid.plan_of(study)
    held = study.user_attrs[grid.PLAN]
    reports, designs = [], {}
    for cell in cells:
        done = sorted(t.user_attrs["seed"] for t in study.get_trials(deepcopy=False, states=(grid.COMPLETE,))
                      if t.user_attrs["cell"] == cell.label)
        d = deltas[cell.label.split("=")[1]]
        base = [0.8] * len(done)
        reports.append((cell.label, SeedReport([str(s) for s in done], [Stat("Accuracy", base, [0.8 + d[s] for s in done])],
                                               [], False, [])))
        designs[cell.label] = Design(tuple(seeds), grid.halfwidth_of(held), held["max_seeds"], held["generators"])
    return stats.summarize(reports, designs)


def test_a_worker_takes_an_item_whose_generator_and_baseline_nobody_else_is_computing(tmp_path):
    """Items that share a generator or a baseline with an item another worker holds wait for it: a worker
    takes one that shares nothing where there is one, and the queue's order among equals."""
    study, *_, storage = _constructed(tmp_path, seeds=(0, 1, 2))
    _, cells, seeds = grid.plan_of(study)
    k = study.user_attrs[grid.PLAN]["generators"] or grid.generators_of(cells[0].cfg, seeds)
    by_label = {c.label: c for c in cells}
    assert k == 3 and by_label["pseudolabel.threshold=0.5"].cfg.generator.kind == "gan"

    def slots_of(label, seed):
        return grid.slots(by_label[label], seed, seeds[0], k)
    # The two cells differ in the pseudo-labelling only: seed s of either uses generator s and baseline s.
    assert slots_of("pseudolabel.threshold=0.5", 1) == slots_of("pseudolabel.threshold=0.9", 1)
    assert slots_of("pseudolabel.threshold=0.5", 1) != slots_of("pseudolabel.threshold=0.5", 2)
    held = [grid.claim_item(study, slots_of) for _ in range(2)]
    assert [item[1:] for item in held] == [("pseudolabel.threshold=0.5", 0), ("pseudolabel.threshold=0.5", 1)]
    storage.set_trial_state_values(held[1][0], grid.COMPLETE, [0.0])
    assert grid.claim_item(study, slots_of)[1:] == ("pseudolabel.threshold=0.5", 2)
    # Seeds 0 and 2 are held (their generators training): seed 1 of the next cell goes first, then the rest
    # in the queue's order, as without slots.
    assert grid.claim_item(study, slots_of)[1:] == ("pseudolabel.threshold=0.9", 1)
    assert grid.claim_item(study, slots_of)[1:] == ("pseudolabel.threshold=0.9", 0)
    claimed = study.get_trials(deepcopy=False, states=(grid.RUNNING,))
    assert all(t.user_attrs["slots"] == list(slots_of(t.user_attrs["cell"], t.user_attrs["seed"])) for t in claimed)


def test_a_rerun_or_a_racing_worker_enqueues_nothing_twice(tmp_path):
    study, cfg, axes, _, storage = _constructed(tmp_path)
    deltas = {"0.5": [0.0, 0.03, -0.02] + [0.0] * 10, "0.9": [0.0, 0.03, -0.02] + [0.0] * 10}
    first = grid.claim_item(study)  # interrupted mid-round: one item claimed, the rest waiting
    assert grid.plan(study, cfg, axes, [0, 1, 2], 1.0, 10) == 0  # the command again: nothing new
    storage.set_trial_state_values(first[0], grid.COMPLETE, [deltas[first[1].split("=")[1]][first[2]]])
    _complete(study, storage, deltas)
    assert grid.extend(study) == 14
    # A second worker that decided at the same moment enqueues the same seed again: the copy is pruned
    # when claimed, and the item is worked once.
    study.enqueue_trial({}, user_attrs={"cell": "pseudolabel.threshold=0.5", "seed": 3})
    _complete(study, storage, deltas)
    done = [(t.user_attrs["cell"], t.user_attrs["seed"]) for t in study.get_trials(states=(grid.COMPLETE,))]
    assert len(done) == len(set(done)) == 20
    (dup,) = study.get_trials(states=(grid.PRUNED,))
    assert dup.user_attrs["duplicate"] and dup.user_attrs["seed"] == 3


def test_another_base_config_is_refused_by_name_and_an_upgrade_is_not_another(tmp_path):
    from harness import config
    study, cfg, axes, _, storage = _constructed(tmp_path)
    other = config.apply(cfg, {"classifier.epochs": cfg.classifier.epochs + 1})
    with pytest.raises(HarnessError, match=r"another base config \(classifier.epochs = '\d+' there, '\d+' here\)"):
        grid.plan(study, other, axes, [0, 1, 2], 1.0, 10)
    # A plan made before pretrain.data_dir existed: that setting held its default, so the same command
    # after the upgrade continues the grid instead of refusing it.
    held = study.user_attrs[grid.PLAN]
    held["config"].pop("pretrain.data_dir")
    study.set_user_attr(grid.PLAN, held)
    assert grid.plan(study, cfg, axes, [0, 1, 2], 1.0, 10) == 0


def test_the_report_splits_the_generators_variance_and_says_how_seeds_stopped():
    from harness.analysis.stats import Design, SeedReport, Stat
    # 6 seeds on K = 3 generators: generator means +2, 0, -2 points, seeds within +-0.5.
    gen = [2.0, 0.0, -2.0]
    d = [gen[s % 3] + (0.5 if s < 3 else -0.5) for s in range(6)]
    rep = SeedReport([str(s) for s in range(6)], [Stat("Accuracy", [0.8] * 6, [0.8 + x / 100 for x in d])], [], False, [])
    (row,) = stats.summarize([("c", rep)], {"c": Design(tuple(range(6)), None, 6, 3)})
    split = row["variance"]
    assert split["k"] == 3 and split["within"] == pytest.approx(0.5)  # each pair differs by 1 point
    assert split["between"] == pytest.approx(4.0 - 0.5 / 2) and split["share"] > 0.85
    assert split["new_low"] < row["ci_low"] * 100 and split["new_high"] > row["ci_high"] * 100  # a new generator: wider
    md = render.grid_markdown("g", 1, list(range(6)), stats.mde(6), [row])
    assert "| c | 0, 1, 2, 3, 4, 5 |" in md and "| fixed count | 3 |" in md and "a new generator" in md


def test_the_exchange_rate_reads_the_oracle_curve_and_says_less_than_nothing():
    """A constructed grid with an oracle ladder: a generator cell whose deltas equal the oracle's at
    500 images is worth ~500 real images, one below zero "less than nothing", one beyond the top rung
    "more than" it; the oracle cells share everything but the generator with the cells they price."""
    from harness import config
    cfg = config.load("tiny", ["data.classes=airplane,automobile,bird"])
    axes = [("data.n_per_class", ["10", "20"]), ("generator.kind", ["gan", "mixup"])]
    cells = grid.cells(cfg, axes, ladder=[150, 500, 1500])
    rungs = [c for c in cells if c.cfg.generator.kind == "oracle"]
    assert len(cells) == 4 + 6 and {c.cfg.generate.n_samples for c in rungs} == {150, 500, 1500}
    assert {grid.ladder_group(c.cfg) for c in rungs} == {grid.ladder_group(c.cfg) for c in cells[:4]}
    rng = np.random.default_rng(0)
    seeds = range(10)
    noise = {s: rng.normal(0, 0.004) for s in seeds}  # each seed's own luck, shared by its cells (paired)
    curve = {150: 0.01, 500: 0.02, 1500: 0.03}
    deltas = {c.label: {s: curve[c.cfg.generate.n_samples] + noise[s] for s in seeds} for c in rungs}
    deltas["data.n_per_class=10 generator.kind=gan"] = {s: 0.02 + noise[s] for s in seeds}
    deltas["data.n_per_class=10 generator.kind=mixup"] = {s: -0.01 + noise[s] for s in seeds}
    deltas["data.n_per_class=20 generator.kind=gan"] = {s: 0.05 + noise[s] for s in seeds}
    priced = grid.worth_of(cells, deltas)
    gan = priced["data.n_per_class=10 generator.kind=gan"]
    assert gan["worth"]["real_images"] == pytest.approx(500, abs=1)
    assert gan["worth"]["low"] <= 500 <= gan["worth"]["high"]
    assert gan["worth_text"].startswith("64 gan images = 500 real images [")
    assert priced["data.n_per_class=10 generator.kind=mixup"]["worth_text"] == \
        "64 mixup images = worth less than nothing (the whole 95% interval too)"
    assert "more than 1,500 real images" in priced["data.n_per_class=20 generator.kind=gan"]["worth_text"]
    assert "data.n_per_class=20 generator.kind=mixup" not in priced  # no finished item: nothing to price
    rows = [{"cell": label, "n": 10, "delta_mean": float(np.mean(list(d.values()))), **priced.get(label, {})}
            for label, d in deltas.items()]
    assert render.worth_figure(rows) is not None
    # A cell grown past its ladder's seeds (Stein's rule asked for more) is placed at the mean of the
    # seeds it shares with the ladder, and its report says so beside that number, not beside its own mean.
    gan = "data.n_per_class=10 generator.kind=gan"
    grown = deltas[gan] | {s: 0.10 for s in range(100, 110)}
    row = {"cell": gan, "n": 20, "delta_mean": float(np.mean(list(grown.values()))),
           **grid.worth_of(cells, deltas | {gan: grown})[gan]}
    assert row["worth"]["real_images"] == pytest.approx(500, abs=1)  # the extra seeds' +10 points are not read
    shared = 100 * float(np.mean(list(deltas[gan].values())))
    assert render._placed(row) == f"{shared:+.2f} (on the 10 of 20 seeds the ladder ran)"
    assert render._placed(rows[[r["cell"] for r in rows].index(gan)]) == f"{shared:+.2f}"  # all seeds shared

    # A rung at 0 is the replay control (the training images through the same recipe), and the curve
    # starts there: a gain the recipe alone makes is no real image's worth.
    cells = grid.cells(cfg, axes, ladder=[0, 150, 500, 1500])
    replay = [c for c in cells if c.cfg.generator.kind == "replay"]
    assert [c.label for c in replay] == ["data.n_per_class=10 generator.kind=replay", "data.n_per_class=20 generator.kind=replay"]
    assert {grid.ladder_group(c.cfg) for c in replay} == {grid.ladder_group(c.cfg) for c in cells[:4]}
    deltas["data.n_per_class=10 generator.kind=replay"] = {s: 0.015 + noise[s] for s in seeds}
    deltas["data.n_per_class=20 generator.kind=replay"] = {s: 0.015 + noise[s] for s in seeds}
    priced = grid.worth_of(cells, deltas)
    assert "data.n_per_class=10 generator.kind=replay" not in priced
    # +2 points is still 500 images' delta on the curve from (0, +1.5)
    assert priced["data.n_per_class=10 generator.kind=gan"]["worth"]["real_images"] == pytest.approx(500, abs=1)
    # ... and +1 point, which a curve from (0, 0) prices at ~100 real images, is below what the recipe alone gives:
    deltas["data.n_per_class=20 generator.kind=gan"] = {s: 0.01 + noise[s] for s in seeds}
    below = grid.worth_of(cells, deltas)["data.n_per_class=20 generator.kind=gan"]
    assert below["worth_text"].startswith("64 gan images = worth less than nothing")
    assert below["worth"]["curve"][0] == [0.0, pytest.approx(1.5, abs=0.3)]
    # and says so paired seed by seed: its images take half a point off what the recipe alone gives
    assert below["beyond_replay"]["mean"] == pytest.approx(-0.5) and below["beyond_replay"]["high"] < 0
    rows = [{"cell": label, "n": 10, "delta_mean": float(np.mean(list(d.values()))),
             **grid.worth_of(cells, deltas).get(label, {})} for label, d in deltas.items()]
    assert render.worth_figure(rows) is not None
    # Regimes that differ only in classifier.init (which no key hashes: a key holds its weights' digest)
    # are each priced on their own oracle's curve, never on the other's.
    regimes = grid.cells(cfg, [("generator.kind", ["gan", "oracle"]),
                               ("classifier.init+classifier.mode", ["scratch+train", "pretrain+train"])])
    assert len({grid.ladder_group(c.cfg) for c in regimes}) == 2
    gain = {("oracle", "scratch"): 0.03, ("oracle", "pretrain"): 0.01}
    deltas = {c.label: {s: gain.get((c.cfg.generator.kind, c.cfg.classifier.init), 0.0) + noise[s] for s in seeds}
              for c in regimes}
    priced = grid.worth_of(regimes, deltas)
    for init, points in (("scratch", 3.0), ("pretrain", 1.0)):
        label = f"generator.kind=gan classifier.init={init} classifier.mode=train"
        assert priced[label]["worth"]["oracle_points"] == [pytest.approx(points, abs=0.2)]
    for bad in ("0", "-1,5", "5,5"):
        with pytest.raises(HarnessError):
            grid.parse_ladder(bad)
    assert grid.parse_ladder("1500,0,150") == [0, 150, 1500]


def test_a_ladder_is_planned_beside_the_axes_and_kept_when_the_grid_grows(runner, tree, tmp_path, tracking_uri):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    args = ["grid", *T, "--data-dir", tree, "--axis", "data.n_per_class=10,20", "--axis", "generator.kind=mixup",
            "--study", "l", "--storage", storage, "--plan-only", "--seeds", "2"]
    out = invoke(runner, [*args, "--oracle-ladder", "8,24", "--margin", "0.5"])
    assert "12 new items" in out.stderr  # (2 axes cells + 2 sizes x 2 rungs) x 2 seeds
    study = optuna.load_study(study_name="l", storage=storage)
    held = study.user_attrs[grid.PLAN]
    assert held["ladder"] == [8, 24] and held["margin"] == 0.5
    again = invoke(runner, [*args, "--margin", "1.5"])  # the same grid again: nothing new, the change said
    assert "0 new items" in again.stderr and "margin changes from 0.5 to 1.5" in again.stderr
    labels = {c.label for c in grid.plan_of(study)[1]}
    assert "data.n_per_class=20 generator.kind=oracle generate.n_samples=24" in labels
    # Where a generator starts is in no config hash (gan.init's key holds the weights or the pretraining
    # run, which do not exist yet), yet the plan counts each start as a generator of its own.
    starts = invoke(runner, ["grid", *T, "--data-dir", tree, "--axis", "gan.init=scratch,pretrain", "--seeds", "2",
                             "--set", "seeds.generators=2", "--set", "data.classes=airplane,automobile",
                             "--set", "generator.kind=gan", "--set", "gan.conditional=projection", "--study", "s", "--storage", storage, "--plan-only"])
    assert ("generator trainings: 2 generator setting(s) x K = 2 = 4, after 1 generator pretraining(s) on other "
            "classes") in starts.stderr


def test_a_confirmation_tests_the_screens_best_cells_on_seeds_the_screen_never_ran(runner, tree, tmp_path):
    """Screen then confirm: the confirmation holds the --top cells by the screen's mean effect, as one
    joint axis, and its seeds start past every seed the screen ran, grown ones included; a plan that
    would reuse one is refused; Holm is over the confirmed cells."""
    screen, cfg, axes, _, storage = _constructed(tmp_path, seeds=(0, 1, 2))
    # Cell 0.9 is spread out, so the CI half-width target grows it to seeds 3..9; 0.5 is better on average.
    deltas = {"0.5": [0.030, 0.031, 0.029] + [0.03] * 10, "0.9": [0.0, 0.03, -0.02] + [0.005] * 10}
    with pytest.raises(HarnessError, match="have not finished"):
        grid.screened(screen, 1)  # a ranking needs every cell's screening seeds
    _complete(screen, storage, deltas)
    assert grid.extend(screen) == 7
    # Ranked on the screening seeds (the same count for every cell); the confirmation starts past every
    # seed the screen holds, the grown ones still waiting included.
    base, axis, first, info = grid.screened(screen, 1)
    assert info["chosen"] == ["pseudolabel.threshold=0.5"] and first == 10
    assert axis == [("pseudolabel.threshold", ["0.5"])] and base == cfg
    # The same from the screen's exported grid.json (its storage gone: a screen in one session, confirmed in
    # the next): its plan, outcomes and seeds travel in the report's JSON.
    values, used = grid.outcomes(screen)
    exported = tmp_path / "screen.json"
    exported.write_text(json.dumps({"study": "g", "plan": screen.user_attrs[grid.PLAN], "outcomes": values,
                                    "seeds_used": used}))
    assert grid.screened_export(str(exported), 1) == (base, axis, first, info)
    (tmp_path / "other.json").write_text("{}")
    with pytest.raises(HarnessError, match="not a grid.json exported by this version"):
        grid.screened_export(str(tmp_path / "other.json"), 1)
    confirm, _ = grid.open_grid("c", storage_url := f"sqlite:///{tmp_path / 'optuna.db'}")
    assert grid.plan(confirm, base, axis, [10, 11, 12], screen=info) == 3
    assert {t.user_attrs["seed"] for t in confirm.get_trials(deepcopy=False)} == {10, 11, 12}
    with pytest.raises(HarnessError, match="never reuses a screening seed"):
        grid.plan(confirm, base, axis, [2, 10, 11, 12])  # the plan remembers its screen
    with pytest.raises(HarnessError, match="--top 3"):
        grid.screened(screen, 3)
    # The CLI takes everything from the screen: an --axis beside --confirm is refused in one line.
    out = invoke(runner, ["grid", "--confirm", "g", "--study", "c2", "--storage", storage_url, "--axis",
                          "data.n_per_class=10"], ok=False)
    assert out.exit_code == 2 and "--confirm takes its config and cells from the screen 'g': drop --axis" in out.stderr
    # It plans the screen's config with what the screen set beyond its preset, so nothing is "ignored".
    out = invoke(runner, ["grid", "--confirm", "g", "--study", "c3", "--storage", storage_url, "--top", "1",
                          "--seeds", "2", "--data-dir", tree, "--plan-only"])
    assert "2 new items" in out.stderr and "ignored" not in out.stderr
    assert grid.plan_of(optuna.load_study(study_name="c3", storage=storage_url))[0] == base
    # The same command with --report reads that confirmation (its screen named in its report), planning nothing.
    out = invoke(runner, ["grid", "--confirm", "g", "--study", "c3", "--storage", storage_url, "--top", "1",
                          "--seeds", "2", "--data-dir", tree, "--report"])
    assert "## Screened, then confirmed" in out.stdout and "The screen `g` ran" in out.stdout, out.stdout
    assert len(optuna.load_study(study_name="c3", storage=storage_url).trials) == 2
    out = invoke(runner, ["grid", "--confirm", "g", "--storage", storage_url, "--report"], ok=False)
    assert out.exit_code == 2 and "name it with --study" in out.stderr
    # The report's screening section names the screen, its seeds, and what was confirmed.
    md = __import__("harness.grid.report", fromlist=["x"]).screening_markdown(info, [10, 11, 12])
    assert "no screening seed is reused" in md and "| pseudolabel.threshold=0.5 | +3.00 | **confirmed here** |" in md
    assert "0, 1, 2, 3, 4, 5, 6, 7, 8, 9" in md and "screened out" in md
