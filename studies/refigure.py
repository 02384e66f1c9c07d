"""Redraw an exported grid's figures (STUDY.png: the effect per cell; STUDY.worth.png: what the images
are worth in real ones) from its committed STUDY.json, with today's drawing code: the figures of an
old study read like a new one's without rerunning anything.

    python studies/refigure.py studies/results/grid/sb-regimes.json [--out DIR]      # every STUDY.json given
    python studies/refigure.py --smoke                                               # a made-up grid, seconds
"""
import json
import math
import tempfile
from pathlib import Path

import click

from harness.analysis import render


def cells_of(path: Path) -> list[dict]:
    """The export's cells with their nested fields as objects (some exports hold them as JSON text) and
    its infinities back (strict JSON writes them as null beside a words field)."""
    cells = json.loads(path.read_text())["cells"]
    for row in cells:
        for key in ("worth", "variance", "beyond_replay", "recipe", "synthetic_minus_baseline"):
            if isinstance(row.get(key), str):
                row[key] = json.loads(row[key])
        w = row.get("worth")
        if w:
            for key in ("real_images", "low", "high"):
                if w.get(key) is None and w.get(f"{key}_words"):
                    w[key] = -math.inf if "minus" in w[f"{key}_words"] else math.inf
        for key in ("ci_low", "ci_high", "delta_mean"):
            if row.get(key) is None and row.get("n"):
                row[key] = float("nan")
    return cells


def redraw(path: Path, out: Path) -> list[Path]:
    cells = cells_of(path)
    study = path.name.removesuffix(".json")
    written = []
    for fig, name in ((render.grid_figure(cells, []), f"{study}.png"), (render.worth_figure(cells), f"{study}.worth.png")):
        if fig is not None:
            fig.savefig(out / name, dpi=100)
            written.append(out / name)
    return written


def smoke_export(folder: Path) -> Path:
    cells = [{"cell": f"data.n_per_class={n} generator.kind={k}", "n": 3, "controlled": True, "delta_mean": d,
              "ci_low": d - 0.01, "ci_high": d + 0.01} for n in (100, 300) for k, d in (("gan", -0.01), ("oracle", 0.02))]
    path = folder / "smoke-grid.json"
    path.write_text(json.dumps({"study": "smoke-grid", "cells": cells}))
    return path


@click.command()
@click.argument("exports", nargs=-1, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where the PNGs go [default: beside each export].")
@click.option("--smoke", is_flag=True, help="Redraw a made-up two-size grid in a temporary folder.")
def main(exports, out, smoke):
    if smoke:
        folder = Path(tempfile.mkdtemp(prefix="refigure-"))
        exports, out = (smoke_export(folder),), folder
    if not exports:
        raise click.UsageError("give at least one STUDY.json (or --smoke)")
    for path in exports:
        target = out or path.parent
        target.mkdir(parents=True, exist_ok=True)
        for written in redraw(path, target):
            click.echo(written)


if __name__ == "__main__":
    main()
