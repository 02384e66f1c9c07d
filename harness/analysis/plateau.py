"""How far is the baseline from its plateau? A preset that ships a measured budget curve
(`harness/experiments/<preset>.budget.json`, written from studies/budget.py's exports) gets one line
in every report of a run made with it: what doubling the baseline's steps added where that was measured
for exactly this recipe, or that it was not measured. An under-trained baseline makes any recipe that
adds steps look like a gain, so a reader needs the distance beside the images' effect."""
from __future__ import annotations

import functools
import json
import math
import typing
from importlib import resources

from harness import config


@functools.cache
def curves(preset: str) -> dict | None:
    """The preset's measured budget curves, or None when it ships none."""
    path = resources.files("harness") / "experiments" / f"{preset}.budget.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _recipe(params: typing.Mapping[str, str]) -> dict[str, str]:
    """What decides the plain baseline's accuracy, less the seeds the curve's pairs vary: the data draw's
    settings and the classifier's (its init included: a curve is measured from scratch), less those only
    the synthetic arm reads (how its images mix in, or that it trains on them first). Less its
    arithmetic too: a run logs the precision `auto` resolved to, and bf16 against fp32 is measured
    equivalent (docs/precision.md)."""
    left_out = {*config.fields_where("seed"), *config.fields_where("precision"), *config.SYNTHETIC_ONLY}
    return {k: v for k, v in params.items() if k.startswith(("data.", "classifier.")) and k not in left_out}


@functools.cache
def _measured(preset: str, overrides: tuple[str, ...], n: int, steps: int) -> tuple[tuple[str, str], ...]:
    cfg = config.load(preset, (*overrides, f"data.n_per_class={n}", f"classifier.steps={steps}"))
    return tuple(sorted(_recipe(config.flat(cfg)).items()))


def paired_change(before: list[float], after: list[float]) -> tuple[float, float, float]:
    """Mean of after - before in points over paired seeds, with its 95% paired t interval (nan with one pair)."""
    from scipy import stats
    mean = 100 * (sum(after) - sum(before)) / len(after)
    if len(after) < 2:
        return mean, math.nan, math.nan
    ci = stats.ttest_rel(after, before).confidence_interval(0.95)
    return mean, 100 * float(ci.low), 100 * float(ci.high)


def line(params: typing.Mapping[str, str]) -> str | None:
    """The report line for a run (or grid cell) whose flat config is `params` (`config.flat`, or a
    pipeline run's params); None when its preset ships no budget curve."""
    preset = params.get("preset", "")
    shipped = curves(preset) if preset and "/" not in preset else None
    if shipped is None:
        return None
    mine = tuple(sorted(_recipe(params).items()))
    rule = shipped["plateau_points"]
    n, steps = params.get("data.n_per_class"), params.get("classifier.steps")
    for curve in shipped["curves"]:
        points = {(p["n_per_class"], p["steps"]): p["accuracy"] for p in curve["points"]}
        here = next(((pn, ps) for pn, ps in points
                     if _measured(preset, tuple(curve["overrides"]), pn, ps) == mine), None)
        if here is None:
            continue
        pn, ps = here
        what = (f"{len(points[here])} paired seeds at {pn} per class"
                f"{' with ' + ' '.join(curve['overrides']) if curve['overrides'] else ''}: the `{preset}` preset's "
                f"measured budget curve, harness/experiments/{preset}.budget.json")
        if (pn, 2 * ps) in points:
            mean, low, high = paired_change(points[here], points[(pn, 2 * ps)])
            where = (f"by the {rule:g}-point rule (doubling adds less) it is at its plateau" if mean < rule else
                     "it is short of its plateau by at least about that much (a plateau: doubling adds less than "
                     f"{rule:g} points)")
            return (f"Distance to the plateau: doubling this baseline's {ps} steps to {2 * ps} adds {mean:+.2f} "
                    f"[{low:+.2f}, {high:+.2f}] points ({what}): {where}.")
        if ps % 2 == 0 and (pn, ps // 2) in points:
            mean, low, high = paired_change(points[(pn, ps // 2)], points[here])
            where = (f"by the {rule:g}-point rule it is at its plateau (the next doubling was not measured)"
                     if mean < rule else "it was short of its plateau there; what doubling these steps adds was not "
                     "measured")
            return (f"Distance to the plateau: the last doubling measured, {ps // 2} to {ps} steps, added "
                    f"{mean:+.2f} [{low:+.2f}, {high:+.2f}] points ({what}): {where}.")
    return (f"Distance to the plateau: not measured for this baseline ({n} per class, {steps} steps, this "
            f"recipe; the `{preset}` preset's budget curve covers other settings): studies/budget.py measures it.")
