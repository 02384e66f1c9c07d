"""How many steps does the plain baseline need? Its test accuracy against classifier.steps, doubling,
with paired seeds, so that a preset's budget can be chosen where doubling it moves the baseline by
less than a stated amount (issue "The delta is the images' own", item 4).

    python studies/budget.py --data-dir ../shared/datasets/cifar10 --preset strong-baseline \
        --sizes 100,300 --steps 1880,3760,7520 --seeds 3 [--set classifier.augmentation=trivialaugment] \
        [--out studies/results/budget/strong-baseline]

Each point trains the baseline exactly as the preset's `baseline` phase does (harness.train with the
preset's classifier section; data.seed and classifier.seed = the seed), on the data draw of that seed,
and tests it on every test image of the classes. No MLflow run: the curve is the product, written as
OUT.json and OUT.md (per size and steps: mean and std over the seeds, and the paired change from the
previous budget with its 95% t interval). `--smoke` runs a seconds-long version on the tiny preset.
A preset's reports read its curve from harness/experiments/<preset>.budget.json: add the measured
points there (tests/test_plateau.py checks them against the exports they name).
"""
from __future__ import annotations

import time
from pathlib import Path

import click
import numpy as np
import torch

from harness import config, train
from harness.analysis import plateau
from harness.data import load_splits
from harness.tracking import codecs

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "cifar10"


def point(cfg, splits, device) -> float:
    model, _ = train.train_classifier(splits.train_x, splits.train_y, len(splits.classes), cfg.classifier, device,
                                      label=f"steps {cfg.classifier.steps}")
    pred = train.predict_proba(model, splits.test_x, device).argmax(1)
    return float((pred == splits.test_y).float().mean())


def paired(a: list[float], b: list[float]) -> dict:
    """Mean of b - a (points) over paired seeds, with its 95% t interval (the one reports read back)."""
    mean, low, high = plateau.paired_change(a, b)
    return {"mean": mean, "low": None if low != low else low, "high": None if high != high else high}


def markdown(rows: list[dict], preset: str, overrides: tuple[str, ...], threshold: float) -> str:
    lines = [f"Baseline budget curve, preset `{preset}`{' with ' + ' '.join(overrides) if overrides else ''}: test "
             f"accuracy (%) over paired seeds; the change from the previous budget in points [95% CI]. "
             f"Plateau: doubling moves the baseline by less than {threshold:g} points.", "",
             "| per class | steps | mean ± std | seeds | change from half the steps | seconds per run |",
             "| ---: | ---: | ---: | --- | ---: | ---: |"]
    for r in rows:
        ch = r.get("change")
        change = "" if ch is None else f"{ch['mean']:+.2f}" + (
            f" [{ch['low']:+.2f}, {ch['high']:+.2f}]" if ch["low"] is not None else "")
        lines.append(f"| {r['n_per_class']} | {r['steps']} | {100 * np.mean(r['accuracy']):.2f} ± "
                     f"{100 * np.std(r['accuracy'], ddof=1) if len(r['accuracy']) > 1 else 0:.2f} | "
                     f"{', '.join(f'{100 * a:.2f}' for a in r['accuracy'])} | {change} | {r['seconds']:.0f} |")
    return "\n".join(lines) + "\n"


@click.command()
@click.option("--data-dir", default=str(DEFAULT_DATA), show_default=True)
@click.option("--preset", default="strong-baseline", show_default=True)
@click.option("--sizes", default="100,300", show_default=True, help="data.n_per_class values.")
@click.option("--steps", "steps_list", default="1880,3760,7520", show_default=True, help="classifier.steps values.")
@click.option("--seeds", default=3, show_default=True)
@click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE")
@click.option("--threshold", default=0.5, show_default=True, help="Points: the plateau's definition.")
@click.option("--out", default=None, help="Write OUT.json and OUT.md.")
@click.option("--smoke", is_flag=True, help="Seconds: the tiny preset, 2 sizes x 2 budgets x 2 seeds.")
def main(data_dir, preset, sizes, steps_list, seeds, overrides, threshold, out, smoke):
    if smoke:
        preset, sizes, steps_list, seeds = "tiny", "10,20", "4,8", 2
        overrides = (*overrides, "data.val_per_class=0")
    device = train.pick_device()
    rows = []
    budgets = [int(v) for v in steps_list.split(",")]
    for n in map(int, sizes.split(",")):
        accs = {steps: [] for steps in budgets}
        seconds = {steps: 0.0 for steps in budgets}
        for seed in range(seeds):
            splits = None
            for steps in budgets:
                cfg = config.apply(config.load(preset, overrides), {
                    "data.n_per_class": n, "classifier.steps": steps, "data.seed": seed, "classifier.seed": seed})
                splits = splits or load_splits(cfg.data, data_dir)  # one draw per seed: the budgets are paired
                t = time.perf_counter()
                accs[steps].append(point(cfg, splits, device))
                seconds[steps] += time.perf_counter() - t
                click.echo(f"{n} per class, seed {seed}, {steps} steps: {100 * accs[steps][-1]:.2f}%", err=True)
        for i, steps in enumerate(budgets):
            rows.append({"n_per_class": n, "steps": steps, "accuracy": accs[steps], "seconds": seconds[steps] / seeds,
                         "change": paired(accs[budgets[i - 1]], accs[steps]) if i else None})
    md = markdown(rows, preset, overrides, threshold)
    click.echo(md)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(f"{out}.json").write_text(codecs.dumps({"preset": preset, "overrides": list(overrides), "rows": rows,
                                                     "threshold_points": threshold, "device": str(device),
                                                     "torch_threads": torch.get_num_threads()}, indent=2))
        Path(f"{out}.md").write_text(md)


if __name__ == "__main__":
    main()
