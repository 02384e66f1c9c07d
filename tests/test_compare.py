"""The comparator's statistics on constructed inputs with known answers, run filters, refusals,
and a tiny two-seed study compared end to end."""
import json

import numpy as np
import pytest
from scipy import stats

from conftest import invoke
from harness.analysis import plateau, render, stats as compare
from harness.analysis.stats import SeedReport, Stat

CLASSES = ["--set", "data.classes=airplane,automobile,bird"]


def _report(base, aug, mcn=None):
    seeds = [str(i) for i in range(len(base))]
    return SeedReport(seeds, [Stat("Accuracy", base, aug, True)], mcn or [(s, 10, 10, 1.0) for s in seeds], True, [])


def test_deltas_without_spread_are_not_tested():
    # Identical arms, or every pair shifted by the same amount: there is no spread to test against,
    # and a p of 0 (or 1) would be a number that means nothing. The verdict says so.
    acc = [0.85, 0.86, 0.84, 0.87, 0.855]
    for shift in (0.0, 0.01):
        r = _report(acc, [a + shift for a in acc])
        t = r.stats[0].tests()
        assert t["no_spread"] and t["t_p"] != t["t_p"]  # NaN: no test
        assert t["delta_mean"] == pytest.approx(shift) and t["ci_low"] == t["ci_high"]
        assert r.verdict().startswith("no test possible: every one of the 5 pairs has the same delta")
        assert "| n/a | n/a |" in render.report_markdown(r)


def test_clear_shift_is_significant_and_matches_scipy():
    rng = np.random.default_rng(0)
    base = list(0.85 + rng.normal(0, 0.005, 8))
    aug = [b + 0.02 + e for b, e in zip(base, rng.normal(0, 0.003, 8))]
    r = _report(base, aug)
    t = r.stats[0].tests()
    want = stats.ttest_rel(aug, base)
    assert t["t_p"] == pytest.approx(want.pvalue) and t["t_p"] < 1e-4
    ci = want.confidence_interval(0.95)
    assert (t["ci_low"], t["ci_high"]) == pytest.approx((ci.low, ci.high))
    assert t["ci_low"] > 0 and t["delta_mean"] == pytest.approx(np.mean(np.subtract(aug, base)))
    assert t["wilcoxon_p"] == pytest.approx(stats.wilcoxon(aug, base).pvalue) and t["wilcoxon_p"] < 0.05
    assert r.verdict().startswith("significant gain")
    assert _report(aug, base).verdict().startswith("significant loss")
    md = render.report_markdown(r)
    assert "| Accuracy (%) |" in md and "**Verdict**" in md


def test_noise_without_shift_is_not_significant():
    rng = np.random.default_rng(1)
    base = list(0.85 + rng.normal(0, 0.01, 5))
    aug = list(0.85 + rng.normal(0, 0.01, 5))
    r = _report(base, aug)
    assert r.stats[0].tests()["t_p"] > 0.05
    assert r.verdict().startswith("inconclusive")  # a 90% CI wider than the 1-point margin: we cannot tell
    assert "smallest possible p = 0.0625" in render.report_markdown(r)


def test_a_tight_null_cell_is_equivalent_and_a_shift_beyond_the_margin_is_not():
    """Four-way verdict: the 90% CI inside +-margin is "equivalent"; the margin is the user's."""
    rng = np.random.default_rng(2)
    base = list(0.85 + rng.normal(0, 0.01, 6))
    same = [b + e for b, e in zip(base, rng.normal(0, 0.001, 6))]
    r = _report(same, base)
    assert r.verdict().startswith("equivalent within ±1 points") and "TOST" in r.verdict()
    from harness.analysis import stats as hstats
    r.margin = 0.05  # a margin far inside the noise: the same data cannot show it
    assert r.verdict().startswith(("inconclusive", "significant"))
    eq = hstats.tost(np.subtract(same, base), 1.0)
    d = 100 * np.subtract(same, base)
    half = stats.t.ppf(0.95, 5) * d.std(ddof=1) / 6 ** 0.5
    assert (eq["ci90_low"], eq["ci90_high"]) == pytest.approx((d.mean() - half, d.mean() + half))
    assert eq["tost_p"] < 0.05


def test_tost_reaches_equivalence_at_the_rate_its_power_says_and_rarely_beyond_the_margin():
    """Simulated null cells (true delta 0, SD 1.5 points, 10 seeds, margin 1): the share called
    equivalent matches tost_power; at a true delta of 2 margins at most 5% are, with fixed seeds and
    with the two-stage rule (first 5 seeds, half-width target 1 point, at most 15)."""
    from harness.analysis import stats as hstats
    rng = np.random.default_rng(0)
    n_sim, sd, margin = 3000, 1.5, 1.0
    null = [hstats.tost(rng.normal(0, sd, 10) / 100, margin)["tost_p"] < 0.05 for _ in range(n_sim)]
    want = hstats.tost_power(0.0, sd, 10, margin)
    assert abs(np.mean(null) - want) < 3 * (want * (1 - want) / n_sim) ** 0.5 + 0.01
    far = [hstats.tost(rng.normal(2 * margin, sd, 10) / 100, margin)["tost_p"] < 0.05 for _ in range(n_sim)]
    assert np.mean(far) <= 0.05
    staged = []
    for _ in range(1000):
        first = rng.normal(2 * margin, sd, 5) / 100
        n, _ = hstats.seeds_needed(list(first), 1.0, 15)
        d = np.concatenate([first, rng.normal(2 * margin, sd, n - 5) / 100])
        staged.append(hstats.tost(d, margin, n0=5)["tost_p"] < 0.05)
    assert np.mean(staged) <= 0.05


def test_mcnemar_counts_discordant_pairs():
    labels = np.array([0, 1, 2, 0, 1, 2, 0, 1])
    base = np.stack([np.arange(8), labels, np.array([0, 1, 2, 0, 1, 2, 1, 2])], 1)  # wrong on the last two
    aug = np.stack([np.arange(8), labels, np.array([0, 1, 2, 1, 1, 0, 0, 1])], 1)  # wrong on 3, 5; right on 6, 7
    b, c, p = compare.mcnemar(base, aug)
    assert (b, c) == (2, 2) and p == pytest.approx(1.0)
    many = np.stack([np.arange(40), np.zeros(40, int), np.r_[np.ones(20, int), np.zeros(20, int)]], 1)
    right = np.stack([np.arange(40), np.zeros(40, int), np.zeros(40, int)], 1)
    b, c, p = compare.mcnemar(many, right)
    assert (b, c) == (0, 20) and p == pytest.approx(stats.binomtest(20, 20, 0.5).pvalue) and p < 1e-5
    r = SeedReport(["0"], [Stat("Accuracy", [0.5], [1.0], True)], [("0", b, c, p)], False, [])
    assert r.verdict().startswith("significant gain (one seed only: McNemar")


def test_two_seed_study_end_to_end(runner, client, tree, tmp_path, monkeypatch):
    # A budget curve for this recipe (4 steps, the tiny preset's 2 epochs of 2 steps): the reports say it.
    curve = {"overrides": CLASSES[1::2], "exports": ["made-up"],
             "points": [{"n_per_class": 20, "steps": s, "accuracy": a} for s, a in ((4, [0.5, 0.6]), (8, [0.6, 0.8]))]}
    monkeypatch.setattr(plateau, "curves", lambda preset: {"plateau_points": 0.5, "curves": [curve]}
                        if preset == "tiny" else None)
    common = ["--preset", "tiny", "--data-dir", tree, *CLASSES, "--set", "classifier.steps=4"]
    out = invoke(runner, ["run", *common, "--seeds", "2", "--share-generator"]).output
    budget = "Distance to the plateau: doubling this baseline's 4 steps to 8 adds +15.00"
    assert budget in out
    exp = client.get_experiment_by_name("harness")
    (study,) = client.search_runs([exp.experiment_id], "tags.`harness.phase` = 'seeds'")
    pipes = client.search_runs([exp.experiment_id], f"tags.`mlflow.parentRunId` = '{study.info.run_id}'")
    phases = sorted(r.data.tags["harness.phase"] for r in pipes)
    assert phases == ["compare", "pipeline", "pipeline"]
    seeds = sorted(r.data.params["data.seed"] for r in pipes if r.data.tags["harness.phase"] == "pipeline")
    assert seeds == ["0", "1"]
    assert all(budget in r.data.tags["mlflow.note.content"] for r in pipes if r.data.tags["harness.phase"] == "pipeline")
    # ... and each pipeline's own compare run (its report.html's words are its description's).
    pipe_ids = {r.info.run_id for r in pipes if r.data.tags["harness.phase"] == "pipeline"}
    compares = [r for r in client.search_runs([exp.experiment_id], "tags.`harness.phase` = 'compare'")
                if r.data.tags.get("mlflow.parentRunId") in pipe_ids]
    assert len(compares) == 2 and all(budget in r.data.tags["mlflow.note.content"] for r in compares)
    # One GAN served both seeds: the second pipeline's gan child reuses the first one's.
    gans = client.search_runs([exp.experiment_id], "tags.`harness.phase` = 'generator'")
    assert len(gans) == 2 and sum("harness.reused_from" in g.data.tags for g in gans) == 1
    assert "Paired seeds: n = 2 (0, 1); generator shared across seeds" in out and "**Verdict**" in out
    page = open(out.rstrip().splitlines()[-1].removeprefix("report: ")).read()
    assert "Verdict" in page and "<table>" in page and "data:image/png;base64," in page
    assert study.data.metrics["seeds/count"] == 2
    (cmp_run,) = [r for r in pipes if r.data.tags["harness.phase"] == "compare"]
    local = client.download_artifacts(cmp_run.info.run_id, "", str(tmp_path / "dl"))
    report = json.load(open(f"{local}/comparison.json"))
    assert report["seeds"] == ["0", "1"] and report["share_generator"] is True
    acc = report["metrics"][0]  # the headline: the images' effect, synthetic minus control
    assert report["controlled"] is True and report["effect"].startswith("synthetic - control")
    assert acc["delta_mean"] == pytest.approx(np.mean(np.subtract(acc["synthetic"], acc["control"])))
    recipe, total = report["recipe"][0], report["synthetic_minus_baseline"][0]
    assert recipe["delta_mean"] == pytest.approx(np.mean(np.subtract(recipe["control"], recipe["baseline"])))
    assert total["delta_mean"] == pytest.approx(acc["delta_mean"] + recipe["delta_mean"])
    for key in ("images/accuracy", "recipe/accuracy", "delta/accuracy", "control/accuracy_mean"):
        assert key in study.data.metrics, key
    assert study.data.metrics["delta/accuracy"] == pytest.approx(total["delta_mean"])
    assert len(report["mcnemar"]) == 2 and {"comparison.md", "comparison.png"} <= set(__import__("os").listdir(local))

    # The same two pipelines, found again by parent and by filter.
    out = invoke(runner, ["compare", "--parent", study.info.run_id]).output
    assert "Paired seeds: n = 2" in out
    out = invoke(runner, ["compare", "--filter", "params.`data.seed` = '1'"]).output
    assert "McNemar on synthetic - control" in out and "| Accuracy |" in out  # one pair: the single-run table
    result = invoke(runner, ["compare", "--filter", "params.`data.seed` = '7'"], ok=False)
    assert result.exit_code == 2 and "no finished pipeline runs" in result.output


def test_pooling_refuses_different_data_configs(runner, client, tree):
    common = ["--preset", "tiny", "--data-dir", tree, *CLASSES]
    invoke(runner, ["run", *common])
    invoke(runner, ["run", *common, "--set", "data.n_per_class=15"])
    result = invoke(runner, ["compare", "--filter", "params.preset = 'tiny'"], ok=False)
    assert result.exit_code == 2
    assert "different data configs" in result.output and "data.n_per_class = 20 vs 15" in result.output


def test_compare_argument_errors(runner, client):
    result = invoke(runner, ["compare", "--baseline", "abc"], ok=False)
    assert result.exit_code == 2 and "give exactly one of" in result.output
    result = invoke(runner, ["compare", "--parent", "0123456789abcdef0123456789abcdef"], ok=False)
    assert result.exit_code == 2 and "no run" in result.output
    result = invoke(runner, ["run", "--preset", "tiny", "--seeds", "2", "--seed-list", "1,2"], ok=False)
    assert result.exit_code == 2 and "not both" in result.output


def test_a_reused_pipeline_is_not_counted_twice(runner, client, tree):
    args = ["run", "--preset", "tiny", "--data-dir", tree, "--set", "data.classes=airplane,automobile,bird"]
    invoke(runner, args)
    invoke(runner, args)  # every phase reused: the same computation again
    result = invoke(runner, ["compare", "--filter", "params.preset = 'tiny'"])
    assert "1 pair(s) repeat a pair already counted" in result.output
    assert "compare run" in result.output and "McNemar" in result.output  # one pair left: the one-pair report


def test_seeds_until_precision_keep_the_coverage_and_false_positive_rate():
    """Simulated sequential grids: three cells each, paired deltas normal with known means and SDs
    (points), 5 first seeds, seeds added by the harness's rule until the CI half-width is at most 1
    point or 15 seeds. The reported 95% CIs must cover the true delta 93-97% of the time, and over
    null cells the Holm-adjusted verdict may call at most 5% of grids significant (Monte Carlo error
    allowed: 3000 grids give a standard error of 0.4 points)."""
    import numpy as np

    from harness.analysis import stats
    rng = np.random.default_rng(7)
    sds = (0.5, 1.5, 3.0)  # stops at 5; grows to ~12; hits the cap

    def grid(means):
        out = []
        for mean, sd in zip(means, sds):
            d = list(rng.normal(mean, sd, 5) / 100)
            n, _ = stats.seeds_needed(d, 1.0, 15)
            d += list(rng.normal(mean, sd, n - 5) / 100)
            out.append(stats.two_stage(d, 5))
        return out

    covered, cells, false = 0, 0, 0
    for _ in range(3000):
        means = (0.0, 0.0, 0.0)
        rows = grid(means)
        covered += sum(r["ci_low"] <= m / 100 <= r["ci_high"] for r, m in zip(rows, means))
        cells += 3
        false += min(stats.holm([r["t_p"] for r in rows])) < 0.05
    for _ in range(1000):
        means = (1.0, -2.0, 0.5)
        rows = grid(means)
        covered += sum(r["ci_low"] <= m / 100 <= r["ci_high"] for r, m in zip(rows, means))
        cells += 3
    assert 0.93 <= covered / cells <= 0.97, covered / cells
    assert false / 3000 <= 0.05 + 2 * (0.05 * 0.95 / 3000) ** 0.5, false / 3000


def test_the_variance_split_recovers_known_components():
    """Many generators, many seeds each, drawn with a between-generator SD of 2 points and a
    within-generator SD of 1: the split recovers 4 and 1 (and agrees with scipy's one-way ANOVA F)."""
    import numpy as np
    from scipy import stats as sps

    from harness.analysis import stats
    rng = np.random.default_rng(0)
    k, per = 200, 6
    effects = rng.normal(0, 2.0, k)
    d = np.concatenate([e + rng.normal(0, 1.0, per) for e in effects])
    g = np.repeat(np.arange(k), per)
    split = stats.variance_split(d, g)
    assert split.between == pytest.approx(4.0, rel=0.15) and split.within == pytest.approx(1.0, rel=0.1)
    assert split.share == pytest.approx(0.8, abs=0.04)
    f = sps.f_oneway(*[d[g == i] for i in range(k)]).statistic
    assert (split.within + per * split.between) / split.within == pytest.approx(f, rel=1e-6)
    assert split.new_low < effects.mean() < split.new_high
    assert stats.variance_split(d[:6], g[:6]) is None  # one generator: nothing to split
    assert stats.variance_split([1.0, 2.0, 3.0], [0, 1, 2]) is None  # one seed each: no within spread
