"""harness/analysis/plateau.py: a preset's measured budget curve says, in every report of a run made with
that preset, how far the baseline is from its plateau; a recipe the curve did not measure says so."""
import json
from pathlib import Path

import pytest

from harness import config
from harness.analysis import plateau, render
from harness.analysis.stats import SeedReport, Stat

ROOT = Path(__file__).resolve().parents[1]


def line(preset: str, *sets: str) -> str | None:
    return plateau.line(config.flat(config.load(preset, sets)))


def test_the_shipped_curve_is_the_committed_measurement():
    shipped = plateau.curves("strong-baseline")
    for curve in shipped["curves"]:
        points = {(p["n_per_class"], p["steps"]): p["accuracy"] for p in curve["points"]}
        measured = {}
        for export in curve["exports"]:
            data = json.loads((ROOT / export).read_text())
            assert data["preset"] == "strong-baseline" and data["overrides"] == curve["overrides"], export
            for row in data["rows"]:
                measured[(row["n_per_class"], row["steps"])] = row["accuracy"]
                assert points[(row["n_per_class"], row["steps"])] == row["accuracy"], (export, row)
                if row["change"] is not None:  # the same paired interval the study printed
                    before = points[(row["n_per_class"], row["steps"] // 2)]
                    assert plateau.paired_change(before, row["accuracy"]) == pytest.approx(
                        (row["change"]["mean"], row["change"]["low"], row["change"]["high"]))
        assert measured.keys() == points.keys()


def test_the_line_says_what_was_measured_for_this_recipe_and_nothing_more():
    at_300 = line("strong-baseline", "data.n_per_class=300")
    assert "doubling this baseline's 3760 steps to 7520 adds +0.79 [-0.27, +1.84] points" in at_300
    assert "short of its plateau" in at_300
    at_100 = line("strong-baseline", "data.n_per_class=100")
    assert "1880 to 3760 steps, added +0.46" in at_100 and "at its plateau" in at_100
    ta = line("strong-baseline", "data.n_per_class=100", "classifier.augmentation=trivialaugment")
    assert "+0.94 [+0.68, +1.21]" in ta and "classifier.augmentation=trivialaugment" in ta
    half_lr = line("strong-baseline", "data.n_per_class=300", "classifier.lr=0.025")
    assert "+0.19 [+0.09, +0.28]" in half_lr and "it is at its plateau" in half_lr
    # How the synthetic arm uses its images is not the baseline's recipe: the same line, whatever it is.
    assert line("strong-baseline", "data.n_per_class=100", "classifier.synthetic_use=pretrain",
                "classifier.synthetic_share=0.5") == at_100
    # Any other recipe, data size or budget is not what the curve measured.
    for sets in (("data.n_per_class=100", "classifier.lr=0.1"), ("data.n_per_class=1000",),
                 ("data.n_per_class=100", "classifier.steps=100")):
        assert line("strong-baseline", *sets).startswith("Distance to the plateau: not measured"), sets
    assert line("cpu") is None  # a preset without a curve says nothing


def test_reports_carry_the_line():
    text = "Distance to the plateau: doubling this baseline's 4 steps to 8 adds +9.00 points"
    report = SeedReport(["0", "1"], [Stat("Accuracy", [0.5, 0.6], [0.55, 0.62], True)], [], True, [], plateau=text)
    assert text in render.report_markdown(report)
    cell = {"n": 0, "cell": "a", "plateau": text}
    assert text + " (cells: a)." in render.grid_markdown("g", 2, [0], None, [cell, {"n": 0, "cell": "b"}])
