"""Every figure kind the harness draws, rendered from fixtures with many cells and long labels: no text
or legend may leave the canvas, no two texts may overlap, and no legend may sit on the data
(matplotlib's renderer gives every artist's window extent)."""
import math

import numpy as np
import pytest
import torch

from harness import figures
from harness.analysis import render
from harness.analysis.stats import SeedReport, Stat
from harness.generators import diffusion, gan
from harness.metrics import evaluate
from harness.phases.pseudolabel import histogram_figure

LONG = ["airplane", "automobile", "bird", "a very long class name indeed", "Pseudomonas aeruginosa colonies",
        "cat", "deer", "dog", "frog", "horse with a long name"]


def _drawn_texts(fig, renderer):
    """The texts the renderer actually drew: visible, non-empty, in a visible axes, tick labels only of the
    ticks in view."""
    from matplotlib.text import Text
    hidden_ticks = set()
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            shown = {id(t) for t in axis._update_ticks()}  # the ticks draw() draws: those inside the view
            for tick in axis.get_major_ticks() + axis.get_minor_ticks():
                if id(tick) not in shown:
                    hidden_ticks |= {id(tick.label1), id(tick.label2)}
    out = []
    for t in fig.findobj(Text):
        if (not t.get_visible() or not t.get_text().strip() or id(t) in hidden_ticks
                or (t.axes is not None and not t.axes.get_visible())):
            continue
        out.append((t, t.get_window_extent(renderer)))
    return out


def problems(fig) -> list[str]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.legend import Legend
    figures.readable(fig)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    W, H = fig.bbox.width, fig.bbox.height
    out = []

    def inside(box, what):
        if box.x0 < -1 or box.y0 < -1 or box.x1 > W + 1 or box.y1 > H + 1:
            out.append(f"{what} leaves the canvas ({box.x0:.0f},{box.y0:.0f})-({box.x1:.0f},{box.y1:.0f}) of {W:.0f}x{H:.0f}")

    def overlap(a, b) -> bool:
        return min(a.x1, b.x1) - max(a.x0, b.x0) > 1 and min(a.y1, b.y1) - max(a.y0, b.y0) > 1

    texts = _drawn_texts(fig, renderer)
    for t, box in texts:
        inside(box, f"text {t.get_text()!r}")
    for i, (a, box_a) in enumerate(texts):
        for b, box_b in texts[i + 1:]:
            if overlap(box_a, box_b):
                out.append(f"texts {a.get_text()!r} and {b.get_text()!r} overlap")
    for legend in fig.findobj(Legend):
        if not legend.get_visible():
            continue
        box = legend.get_window_extent(renderer)
        inside(box, "a legend")
        for ax in fig.axes:
            if ax.get_visible() and overlap(box, ax.get_window_extent(renderer)):
                out.append(f"a legend lies on the data of axes {ax.get_title()!r}")
        own = {id(t) for t in legend.get_texts()} | {id(legend.get_title())}
        for t, tbox in texts:
            if id(t) not in own and overlap(box, tbox):
                out.append(f"a legend covers the text {t.get_text()!r}")
    return out


def _grid_rows(controlled=True):
    rows = []
    regimes = ["classifier.init=scratch classifier.mode=train", "classifier.init=pretrain classifier.mode=train",
               "classifier.init=runs:/0123456789abcdef0123456789abcdef/model classifier.mode=probe"]
    rng = np.random.default_rng(0)
    for size in (100, 300, 1000):
        for kind, n in (("gan", None), ("diffusion", None), ("oracle", 500), ("oracle", 1500)):
            for regime in regimes:
                d = rng.normal(0, 0.02)
                cell = f"data.n_per_class={size} generator.kind={kind}" + (f" generate.n_samples={n}" if n else "")
                rows.append({"cell": f"{cell} {regime}", "n": 5, "controlled": controlled, "delta_mean": d,
                             "ci_low": d - 0.01, "ci_high": d + 0.012})
    return rows


def _worth_rows():
    rows = []
    for size in (100, 300, 1000):
        for kind in ("gan", "diffusion", "text2image with a long model name"):
            rows.append({"cell": f"data.n_per_class={size} generator.kind={kind} classifier.init=pretrain",
                         "controlled": True,
                         "worth_text": f"1,500 {kind} images = worth 130 real images [115, 146] at this size",
                         "worth": {"real_images": 130.0 if kind == "gan" else -math.inf, "low": 115.0 if kind == "gan" else -math.inf,
                                   "high": math.inf,
                                   "top": 1500, "delta_points": 0.4, "rungs": [0, 150, 500, 1500],
                                   "oracle_points": [0.0, 1.0, 2.0, 3.0],
                                   "curve": [[0, 0.0], [150, 1.0], [500, 2.0], [1500, 3.0]]}})
    return rows


def _seed_report():
    rng = np.random.default_rng(1)
    stats = [Stat(label, list(0.8 + rng.normal(0, 0.01, 5)), list(0.81 + rng.normal(0, 0.01, 5)), i < 3)
             for i, label in enumerate(["Accuracy", "F1 (weighted)", "F1 (macro)"] + [f"{c} F1" for c in LONG])]
    return SeedReport([str(i) for i in range(5)], stats, [(str(i), 10, 12, 0.5) for i in range(5)], True, [],
                      controlled=True)


def _evaluation(classes):
    rng = np.random.default_rng(2)
    y = rng.integers(0, len(classes), 400)
    proba = rng.dirichlet(np.ones(len(classes)), 400)
    proba[np.arange(400), y] += 1.0
    return evaluate(y, proba / proba.sum(1, keepdims=True), classes)


def _comparison(classes):
    rng = np.random.default_rng(3)
    keys = ["accuracy", "f1_weighted", "f1_macro"] + [f"{c}/{m}" for c in classes for m in ("precision", "recall", "f1")]
    base, syn, ctl = ({f"test/{k}": float(rng.uniform(0.6, 0.95)) for k in keys} for _ in range(3))
    return render.rows(base, syn, classes), ctl


def _figures():
    classes = LONG
    rows, control = _comparison(classes)
    history = [{"gan/critic_loss": -1.0 / e, "gan/wasserstein": 1.0 / e, "gan/gradient_penalty": 0.1,
                "gan/generator_loss": 0.5, "diffusion/loss": 1.0 / e, "diffusion/lr": 1e-3} for e in range(1, 30)]
    epochs = [{"train/loss": 1.0 / e, "val/loss": 1.2 / e, "train/accuracy": 1 - 1.0 / e, "val/accuracy": 1 - 1.2 / e,
               "val/f1_weighted": 1 - 1.3 / e} for e in range(1, 16)]
    ev = _evaluation(classes)
    return {
        "grid": lambda: render.grid_figure(_grid_rows(), [("data.n_per_class", ["100", "300", "1000"])]),
        "grid, uncontrolled, no numeric axis": lambda: render.grid_figure(
            [r | {"cell": r["cell"].replace("data.n_per_class=", "data.root=/a/long/path/size")}
             for r in _grid_rows(False)], []),
        "grid, one panel": lambda: render.grid_figure(
            [r for r in _grid_rows() if "scratch" in r["cell"] and "diffusion" not in r["cell"]], []),
        # A confirmation's cells lie on one joint axis, which no cell's label names.
        "grid, a confirmation's joint axis": lambda: render.grid_figure(
            [{"cell": cell, "n": 5, "controlled": True, "delta_mean": d, "ci_low": d - 0.01, "ci_high": d + 0.01}
             for cell, d in (("gan.init=pretrain classifier.synthetic_use=pretrain generate.n_samples=15000", -0.005),
                             ("gan.init=scratch classifier.synthetic_use=mix generate.n_samples=15000", -0.005),
                             ("gan.init=scratch classifier.synthetic_use=mix generator.kind=oracle "
                              "generate.n_samples=1500", 0.03))],
            [("gan.init+classifier.synthetic_use+generate.n_samples", ["pretrain+pretrain+15000", "scratch+mix+15000"])]),
        "worth": lambda: render.worth_figure(_worth_rows()),
        "comparison": lambda: render.figure(rows, classes, control),
        "comparison, uncontrolled": lambda: render.figure(rows, classes[:3]),
        "seeds": lambda: render.seed_figure(_seed_report()),
        "confusion, 10 long classes": lambda: figures.confusion_figure(ev, classes, "baseline: test accuracy 0.8123"),
        "confusion, 3 classes": lambda: figures.confusion_figure(_evaluation(classes[:3]), classes[:3]),
        "training curves": lambda: figures.curves_figure(epochs, "synthetic arm of a rather long pipeline name, seed 12"),
        "gan curves": lambda: gan.curves_figure(history),
        "diffusion curves": lambda: diffusion.curves_figure(history),
        "kept histogram": lambda: histogram_figure(ev.confidence, ev.pred, classes, 0.9),
    }


@pytest.mark.parametrize("name", list(_figures()))
def test_every_figure_keeps_its_texts_apart_and_on_the_canvas(name):
    fig = _figures()[name]()
    assert fig is not None
    assert problems(fig) == []


def test_the_checker_sees_what_it_is_for():
    # A legend over the data, a label off the canvas and two texts on top of each other: each is found.
    fig, ax = figures.subplots(figsize=(4, 3), layout=None)
    ax.plot([0, 1], [0, 1], label="a line")
    ax.legend(loc="center")
    ax.text(0.5, 0.1, "here")
    ax.text(0.5, 0.1, "here too")
    fig.text(0.98, 0.5, "a label running off the right edge")
    found = "\n".join(problems(fig))
    assert "a legend lies on the data" in found
    assert "leaves the canvas" in found
    assert "'here' and 'here too' overlap" in found


def test_class_grid_names_fit(tmp_path, monkeypatch):
    # The image grid of a run (samples per class): its long class names stay on the canvas.
    from harness.tracking import codecs
    drawn = {}
    monkeypatch.setattr(codecs, "log_figure", lambda fig, path, **_: drawn.setdefault(path, fig))
    images = torch.randint(0, 255, (40, 3, 8, 8), dtype=torch.uint8)
    codecs.log_class_grid(images, torch.arange(40) % 10, LONG, "samples.png", per_class=4)
    assert problems(drawn["samples.png"]) == []
