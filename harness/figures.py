"""Figures: fonts that draw any class name, one look for every figure (colours, markers, a layout that
keeps legends and labels inside the canvas and off the data), the confusion matrix, training curves.
Drawing only: no phase's key covers this module (harness/tracking/provenance.py), so a change of style
retrains nothing."""
from __future__ import annotations

import textwrap
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from harness.metrics import Evaluation


def readable(fig) -> None:
    """Every text of the figure in a font that has its characters: class names may be in any script.
    A text the default font cannot draw takes an installed font that can (Noto CJK, say); with none,
    its missing characters are written as U+XXXX, instead of empty boxes and a warning per glyph."""
    from matplotlib import font_manager, ft2font
    from matplotlib.text import Text

    def charmap(path: str) -> set[int]:
        try:
            return set(ft2font.FT2Font(path).get_charmap())
        except (OSError, RuntimeError):
            return set()

    fonts: dict[str, set[int]] = {}  # this figure's look-ups only

    def covers(path: str, text: str) -> bool:
        if path not in fonts:
            fonts[path] = charmap(path)
        return all(ord(ch) in fonts[path] for ch in text if not ch.isspace())

    for t in fig.findobj(Text):
        text = t.get_text()
        if text.isascii() or covers(font_manager.findfont(t.get_fontproperties()), text):
            continue
        other = next((f for f in font_manager.fontManager.ttflist if covers(f.fname, text)), None)
        if other is not None:
            t.set_fontfamily(other.name)
        else:
            have = fonts[font_manager.findfont(t.get_fontproperties())]
            t.set_text("".join(ch if ch.isspace() or ord(ch) in have else f"U+{ord(ch):04X}" for ch in text))


# Okabe and Ito's palette stays distinct under the common colour-vision deficiencies; a marker per
# series keeps series apart in greyscale too.
COLOURS = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#000000", "#F0E442")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
ARMS = {"baseline": "#0072B2", "control": "#999999", "synthetic": "#E69F00"}  # one colour per arm everywhere


def style(i: int) -> dict:
    """The i-th series' colour and marker."""
    return {"color": COLOURS[i % len(COLOURS)], "marker": MARKERS[i % len(MARKERS)]}


def wrap(text: str, width: int) -> str:
    """A long label on several lines, so that it fits beside its neighbours rather than over them."""
    return "\n".join(textwrap.wrap(text, width, break_long_words=True, break_on_hyphens=False)) or text


def tight(fig) -> None:
    """Fonts that draw every text, then the layout: constrained figures lay themselves out when drawn
    (legends placed outside their axes included), others get tight_layout."""
    readable(fig)
    if fig.get_layout_engine() is None:
        fig.tight_layout()
    else:
        # One layout pass now: constrained layout settles over two draws (wrapped legends below their
        # axes came out a few pixels off the canvas in a figure saved at its first draw).
        fig.draw_without_rendering()


def subplots(*args, layout: str | None = "constrained", **kwargs):
    """A figure and its axes, outside pyplot's global figure registry: cheaper per figure (a sweep
    draws a few per trial), nothing to close, no display backend to pick. Constrained layout by default:
    it makes room for legends and labels outside the axes instead of letting them spill off the canvas."""
    from matplotlib.figure import Figure
    figsize = kwargs.pop("figsize", None)
    fig = Figure(figsize=figsize, layout=layout)
    return fig, fig.subplots(*args, **kwargs)


def confusion_figure(ev: Evaluation, classes, title: str = ""):
    from sklearn.metrics import ConfusionMatrixDisplay
    fig, ax = subplots(figsize=(2.4 + 0.75 * len(classes), 2.2 + 0.7 * len(classes)))
    # Class names wrapped, the x ones vertical: long names side by side would run into each other.
    names = [wrap(c, 16) for c in classes]
    ConfusionMatrixDisplay(ev.confusion, display_labels=names).plot(ax=ax, cmap="Blues", colorbar=False,
                                                                    xticks_rotation="vertical")
    if len(classes) > 6:  # the counts would not fit their cells at a readable size: the colour says it
        for t in ax.texts:
            t.set_visible(False)
    ax.set_title(wrap(title or f"accuracy {ev.metrics[next(iter(ev.metrics))]:.4f}", 12 + 7 * len(classes)))
    tight(fig)
    return fig


def curves_figure(epochs: list[dict[str, float]], title: str = ""):
    fig, (ax_loss, ax_acc) = subplots(1, 2, figsize=(9, 3.8))
    xs = range(1, len(epochs) + 1)
    for i, key in enumerate(epochs[0] if epochs else []):
        ax = ax_loss if key.endswith("loss") else ax_acc
        ax.plot(xs, [row[key] for row in epochs], label=key, markersize=4, **style(i))
    for ax, name in ((ax_loss, "loss"), (ax_acc, "accuracy")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:  # below the axes: off the curves, which run anywhere
            ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.22), ncols=2, frameon=False)
    fig.suptitle(wrap(title, 90))
    tight(fig)
    return fig
