"""Figures: fonts that draw any class name, the confusion matrix, training curves. Drawing only:
no phase's key covers this module (harness/tracking/provenance.py), so a change of style retrains nothing."""
from __future__ import annotations

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


def tight(fig) -> None:
    """tight_layout, after the texts have fonts that draw them (layout draws them once)."""
    readable(fig)
    fig.tight_layout()


def subplots(*args, **kwargs):
    """A figure and its axes, outside pyplot's global figure registry: cheaper per figure (a sweep
    draws a few per trial), nothing to close, no display backend to pick."""
    from matplotlib.figure import Figure
    figsize = kwargs.pop("figsize", None)
    fig = Figure(figsize=figsize)
    return fig, fig.subplots(*args, **kwargs)


def confusion_figure(ev: Evaluation, classes, title: str = ""):
    from sklearn.metrics import ConfusionMatrixDisplay
    fig, ax = subplots(figsize=(1.6 + 1.1 * len(classes), 1.2 + 1.0 * len(classes)))
    ConfusionMatrixDisplay(ev.confusion, display_labels=list(classes)).plot(ax=ax, cmap="Blues", colorbar=False)
    ax.set_title(title or f"accuracy {ev.metrics[next(iter(ev.metrics))]:.4f}")
    tight(fig)
    return fig


def curves_figure(epochs: list[dict[str, float]], title: str = ""):
    fig, (ax_loss, ax_acc) = subplots(1, 2, figsize=(9, 3.2))
    xs = range(1, len(epochs) + 1)
    for key in epochs[0] if epochs else []:
        ax = ax_loss if key.endswith("loss") else ax_acc
        ax.plot(xs, [row[key] for row in epochs], label=key, marker=".")
    for ax, name in ((ax_loss, "loss"), (ax_acc, "accuracy")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        ax.legend(loc="upper right" if name == "loss" else "lower right")  # "best" costs ~0.1 s a figure
    fig.suptitle(title)
    tight(fig)
    return fig
